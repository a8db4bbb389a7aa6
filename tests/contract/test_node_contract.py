"""What any node must do for its host, whatever it is: run with the default ``--mcm-target
emulated`` in CI, and against a node over MQTT or serial, a rig or a bench with
``pytest tests/contract --mcm-target serial:///dev/ttyUSB0?node=3``. Tests marked ``hil`` run
only against a real target."""

from __future__ import annotations

import time

import pytest

from mcm_firmware.host.client import NodeError, RequestTimeout
from mcm_firmware.protocol import NodeState, Op, PowerCapArgs, Status


async def test_ping_answers(mcm_host, mcm_target):
    rtt = await mcm_host.ping(mcm_target.node)
    assert 0 < rtt < 1.0


async def test_status_names_the_node_and_its_profile(mcm_host, mcm_target):
    st = await mcm_host.status(mcm_target.node)
    assert st.snapshot.state in (int(NodeState.RUNNING), int(NodeState.BOOTING))
    assert st.profile and st.firmware
    assert len(st.pump_names) >= 1


async def test_a_refused_argument_changes_nothing(mcm_host, mcm_target):
    before = (await mcm_host.status(mcm_target.node)).snapshot.power_cap_w
    with pytest.raises(NodeError) as info:
        await mcm_host.request(mcm_target.node, Op.SET_POWER_CAP, PowerCapArgs(watts=1e9))
    assert info.value.response.status is Status.BAD_ARGUMENT
    assert (await mcm_host.status(mcm_target.node)).snapshot.power_cap_w == before


async def test_a_node_that_does_not_exist_times_out(mcm_host, mcm_target):
    with pytest.raises(RequestTimeout):
        await mcm_host.request(mcm_target.node + 1_000_000, Op.PING, timeout=0.3)


@pytest.mark.hil
async def test_round_trip_stays_short_over_many_requests(mcm_host, mcm_target):
    t0 = time.monotonic()
    rtts = [await mcm_host.ping(mcm_target.node) for _ in range(50)]
    assert max(rtts) < 0.25 and time.monotonic() - t0 < 10
