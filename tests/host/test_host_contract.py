"""One host-side test class, run over every transport: loopback, MQTT (a real Mosquitto) and
serial (a real pseudo-terminal). The node under test is emulated in the test process on real time;
the host client is the same code whatever carries the frames."""

from __future__ import annotations

import asyncio
import math

import pytest

from mcm_firmware.faults import FaultKind
from mcm_firmware.host.client import NodeError, RequestTimeout
from mcm_firmware.protocol import Birth, ClearFaultArgs, InjectArgs, Op, PowerCapArgs, Status, decode
from mcm_firmware.target import emulated_target, host_client
from mcm_firmware.transport import Address, Channel, Subscription, transport_factory

NODE = 17


@pytest.fixture(params=["loopback", "mqtt", "serial"])
async def target(request):
    broker = request.getfixturevalue("mosquitto").url if request.param == "mqtt" else None
    async with emulated_target(request.param, broker=broker, node=NODE, fleet="contract") as t:
        yield t


@pytest.fixture
async def host(target):
    async with host_client(target) as h:
        yield h


class TestHostContract:
    async def test_ping_and_status(self, host, target):
        assert 0 < await host.ping(NODE) < 1.0
        st = await host.status(NODE)
        assert st.profile == "colossus-mcm" and st.pump_names == ("A", "B")
        assert st.rx_frames >= 2

    async def test_power_cap_applies_and_a_bad_one_is_refused(self, host, target):
        await host.request(NODE, Op.SET_POWER_CAP, PowerCapArgs(watts=800.0))
        assert (await host.status(NODE)).snapshot.power_cap_w == 800.0
        with pytest.raises(NodeError) as info:
            await host.request(NODE, Op.SET_POWER_CAP, PowerCapArgs(watts=5000.0))
        assert info.value.response.status is Status.BAD_ARGUMENT and "outside" in info.value.response.message
        assert (await host.status(NODE)).snapshot.power_cap_w == 800.0

    async def test_inject_and_clear_a_fault(self, host, target):
        await host.request(
            NODE, Op.INJECT, InjectArgs(kind=int(FaultKind.PUMP_FAIL), target="A", value=math.nan, value2=math.nan)
        )
        assert any(f.startswith("pump-fail A") for f in (await host.status(NODE)).faults)
        with pytest.raises(NodeError, match="pump C"):
            await host.request(
                NODE, Op.INJECT, InjectArgs(kind=int(FaultKind.PUMP_FAIL), target="C", value=math.nan, value2=math.nan)
            )
        await host.request(NODE, Op.CLEAR_FAULT, ClearFaultArgs(kind=0, target="all"))
        assert (await host.status(NODE)).faults == ()

    async def test_unknown_node_times_out(self, host, target):
        with pytest.raises(RequestTimeout):
            await host.request(NODE + 1, Op.PING, timeout=0.3)

    async def test_malformed_command_is_counted_and_the_node_keeps_answering(self, host, target):
        before = (await host.status(NODE)).snapshot.rx_rejected
        await host.transport.publish(Address("contract", NODE, Channel.CMD), b"MC\x01garbage", reliable=True)
        await asyncio.sleep(0.3)
        assert (await host.status(NODE)).snapshot.rx_rejected == before + 1
        assert await host.ping(NODE) > 0

    async def test_retained_birth_reaches_a_late_subscriber(self, target):
        tr = transport_factory(target.transport_url)("late-subscriber")
        await tr.connect()
        try:
            await tr.subscribe(Subscription("contract", None, Channel.STATE))
            async with asyncio.timeout(5):
                d = await tr.receive()
        finally:
            await tr.close()
        msg = decode(d.payload)
        assert isinstance(msg, Birth) and msg.node_id == NODE and d.retained
        assert d.address == Address("contract", NODE, Channel.STATE)
