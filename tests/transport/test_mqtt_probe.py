"""The broker probe: a connection that only listens finds a half-open link within one keep-alive
(a PINGREQ after half a keep-alive of silence, the connection shut when it is unanswered half a
keep-alive later), and costs nothing on a link that brings packets. Real Mosquitto, a stalling
proxy."""

from __future__ import annotations

import asyncio
import time

import pytest

from mcm_firmware.transport import Subscription, TransportError
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport
from mcm_firmware.transport.mqtt import MqttTransport
from mcm_firmware.transport.mqtt_probe import PERIOD_S, probe_of

from .test_reconnect import StallingProxy


async def test_a_listening_connection_finds_a_half_open_link_within_one_keepalive(mosquitto):
    keepalive = 2
    proxy = StallingProxy(mosquitto.port)
    port = await proxy.start()
    tr = MqttTransport(port=port, client_id="probe-test", keepalive=keepalive)
    assert probe_of(tr) is None  # not connected yet
    await tr.connect()
    try:
        await tr.subscribe(Subscription("probe"))
        probe = probe_of(tr)
        assert probe is not None
        task = asyncio.create_task(probe.run(), name="probe-test")
        await asyncio.sleep(keepalive * 1.5)  # a quiet live link: pinged, answered, kept
        assert probe.pings >= 1 and not probe.lost and not probe.unanswered() and not task.done()
        proxy.stalled = True
        t0 = time.monotonic()
        with pytest.raises(TransportError):
            await asyncio.wait_for(tr.receive(), keepalive + 2.0)
        took = time.monotonic() - t0
        await asyncio.wait_for(task, 1.0)  # the probe ends with the connection
        assert probe.unanswered()
        # the stall came at most half a keep-alive after the last packet; the probe looks every PERIOD_S
        assert took <= keepalive + 2 * PERIOD_S + 0.5, took
    finally:
        await tr.close()
        assert proxy.server is not None
        proxy.server.close()
        await asyncio.sleep(0.3)  # the proxy's pipes end as their connections close
    assert probe.check(time.monotonic()) is False  # closed: nothing to watch


async def test_a_transport_without_a_broker_gets_no_probe():
    tr = LoopbackTransport(LoopbackBus(), client_id="x")
    await tr.connect()
    try:
        assert probe_of(tr) is None
    finally:
        await tr.close()
