"""The node as a Hypothesis state machine (mcm_firmware/testing/stateful.py): commands, faults,
time, malformed and wrong-direction frames, replays, against a reference model."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from mcm_firmware.testing.stateful import NodeMachine

TestNodeMachine = NodeMachine.TestCase
TestNodeMachine.pytestmark = [pytest.mark.slow]
TestNodeMachine.settings = settings(
    settings.default, stateful_step_count=25, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@pytest.mark.slow
def test_the_machine_catches_a_planted_bug(monkeypatch):
    """A node that takes a cap 50 W above its profile's limit fails the model, shrunk to one rule."""
    from hypothesis.stateful import run_state_machine_as_test

    from mcm_firmware.protocol import Op
    from mcm_firmware.runtime.handlers import HANDLERS

    def lax(node, cmd):
        node.shard.dvfs.cap_w[node.row] = cmd.args.watts if cmd.args.watts <= 1450 else node.shard.dvfs.cap_w[node.row]

    monkeypatch.setitem(HANDLERS, Op.SET_POWER_CAP, lax)
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(
            NodeMachine,
            settings=settings(
                max_examples=300,
                stateful_step_count=20,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            ),
        )
    assert "set_power_cap" in "".join(getattr(info.value, "__notes__", [])) or "watts" in str(info.value)
