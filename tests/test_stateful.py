"""The node as a Hypothesis state machine (mcm_firmware/testing/stateful.py): commands, faults,
time, malformed and wrong-direction frames, replays, against a reference model."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

from mcm_firmware.testing.stateful import NodeMachine

TestNodeMachine = NodeMachine.TestCase
TestNodeMachine.settings = settings(settings.default, stateful_step_count=25,
                                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
