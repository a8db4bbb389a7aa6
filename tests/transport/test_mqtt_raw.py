"""The carrier's control connection on raw MQTT packets (:mod:`mcm_firmware.transport.mqtt_raw`):
its packets byte for byte paho-mqtt's, and its behaviour that of the library transport, against a
real Mosquitto: wills, QoS 1 both ways (acknowledged, or the broker would stop after its in-flight
limit), retained state, a clean close that loses nothing, a half-open link noticed."""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as paho
import pytest

from mcm_firmware.transport import Address, Channel, Subscription, TransportError, Will
from mcm_firmware.transport import mqtt_wire as w
from mcm_firmware.transport.mqtt import MqttTransport
from mcm_firmware.transport.mqtt_raw import RawMqttTransport

from .test_mqtt_wire import _paho, _queued
from .test_reconnect import StallingProxy

# --- packets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("retain", [False, True])
def test_connect_with_a_will_equals_paho(retain):
    c, a, b = _paho("mcm-f-link-0-9")
    try:
        c.will_set("mcm/v1/f/0/link", b"\x01\x02will", qos=1, retain=retain)
        c.username_pw_set("fleet-host", "pw")
        c._send_connect(10)
        (packet,) = _queued(c)
    finally:
        a.close()
        b.close()
    ours = w.connect(
        "mcm-f-link-0-9",
        keepalive=10,
        username="fleet-host",
        password=b"pw",
        will=("mcm/v1/f/0/link", b"\x01\x02will", 1, retain),
    )
    assert ours == packet


@pytest.mark.parametrize("qos", [0, 1])
def test_retained_publish_and_puback_equal_paho(qos):
    c, a, b = _paho()
    try:
        info = c.publish("mcm/v1/f/3/state", b"birth", qos=qos, retain=True)
        (packet,) = _queued(c)
        c._send_puback(513)
        (_, ack) = _queued(c)
    finally:
        a.close()
        b.close()
    ours = (
        w.publish("mcm/v1/f/3/state", b"birth", retain=True)
        if qos == 0
        else w.publish_qos1("mcm/v1/f/3/state", info.mid, b"birth", retain=True)
    )
    assert ours == packet
    assert w.puback(513) == ack


# --- against Mosquitto ------------------------------------------------------------------------------


def raw(port: int, client_id: str, **kw) -> RawMqttTransport:
    return RawMqttTransport(port=port, client_id=client_id, **kw)


async def test_qos1_both_ways_retained_state_and_wills(mosquitto):
    port = mosquitto.port
    carrier = raw(port, "mcm-f-link-0-9")
    will = Will(Address("f", 0, Channel.LINK), b"lost")
    await carrier.connect(will=will)
    await carrier.subscribe(Subscription("f", None, Channel.CMD))
    host = MqttTransport(port=port, client_id="host")
    await host.connect()
    for ch in (Channel.RSP, Channel.STATE, Channel.LINK):
        await host.subscribe(Subscription("f", None, ch))

    # 300 QoS 1 commands in a burst: more than Mosquitto keeps in flight unacknowledged (20)
    for k in range(300):
        await host.publish(Address("f", k % 10, Channel.CMD), k.to_bytes(2, "big"), reliable=True)
    got = [await asyncio.wait_for(carrier.receive(), 10) for _ in range(300)]
    assert [int.from_bytes(d.payload, "big") for d in got] == list(range(300))
    assert [d.address for d in got[:3]] == [Address("f", k, Channel.CMD) for k in range(3)]

    # answers and state, QoS 1 (retained for state), then a clean close: nothing lost, no will
    for k in range(500):
        await carrier.publish(Address("f", k % 10, Channel.RSP), b"r%d" % k, reliable=True)
    await carrier.publish(Address("f", 3, Channel.STATE), b"birth", retain=True, reliable=True)
    await carrier.close()
    seen = []
    while len(seen) < 501:
        seen.append(await asyncio.wait_for(host.receive(), 10))
    assert [d.payload for d in seen[:500]] == [b"r%d" % k for k in range(500)]
    assert seen[500].address == Address("f", 3, Channel.STATE)
    late = MqttTransport(port=port, client_id="late")
    await late.connect()
    await late.subscribe(Subscription("f", 3, Channel.STATE))
    d = await asyncio.wait_for(late.receive(), 5)
    assert d.payload == b"birth" and d.retained
    with pytest.raises(asyncio.TimeoutError):  # a clean close publishes no will
        await asyncio.wait_for(host.receive(), 0.5)

    # abort: the broker publishes the will, retained
    crashing = raw(port, "mcm-f-link-0-9")
    await crashing.connect(will=will)
    await crashing.abort()
    d = await asyncio.wait_for(host.receive(), 5)
    assert (d.address, d.payload) == (will.address, b"lost")
    with pytest.raises(TransportError):
        await crashing.receive()
    with pytest.raises(TransportError):
        await crashing.publish(will.address, b"x")
    await host.close()
    await late.close()


async def test_refusals_are_transport_errors(mosquitto, tmp_path):
    with pytest.raises(TransportError, match="cannot connect"):
        await raw(1, "x").connect()
    t = raw(mosquitto.port, "x")
    await t.connect()
    with pytest.raises(TransportError, match="already connected"):
        await t.connect()
    await t.close()
    await t.close()  # idempotent


async def test_a_half_open_link_is_noticed_within_one_and_a_half_keepalives(mosquitto):
    proxy = StallingProxy(mosquitto.port)
    port = await proxy.start()
    t = raw(port, "mcm-f-link-0-0", keepalive=2)
    await t.connect()
    await t.subscribe(Subscription("f", None, Channel.CMD))
    proxy.stalled = True
    t0 = time.monotonic()
    with pytest.raises(TransportError, match="half-open"):
        await asyncio.wait_for(t.receive(), 10)
    assert time.monotonic() - t0 <= 1.5 * 2 + 1.5
    assert paho  # the reference library the packets are checked against


async def test_in_flight_slots_serve_waiters_in_order_and_pass_on_a_cancelled_ones_slot():
    from mcm_firmware.transport.mqtt_raw import Slots

    slots = Slots(2)
    order: list[int] = []

    async def take(k: int) -> None:
        await slots.acquire()
        order.append(k)

    await take(0)
    await take(1)  # both held
    waiters = [asyncio.create_task(take(k)) for k in range(2, 7)]
    await asyncio.sleep(0)
    assert order == [0, 1] and slots.free == 0
    waiters[1].cancel()  # 3 gives up while waiting: skipped
    await asyncio.sleep(0)
    slots.release()
    slots.release()  # 2 and 4 are handed a slot ...
    waiters[2].cancel()  # ... 4 is cancelled before it runs: its slot goes on to 5
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == [0, 1, 2, 5] and waiters[1].cancelled() and waiters[2].cancelled()
    slots.release()
    await asyncio.sleep(0)
    assert order == [0, 1, 2, 5, 6]
    for _ in range(3):
        slots.release()
    assert slots.free == 3 and not slots._waiters


async def test_a_thousand_releases_in_one_go_wake_a_thousand_waiters_in_order():
    from mcm_firmware.transport.mqtt_raw import Slots

    slots = Slots(0)
    order: list[int] = []

    async def take(k: int) -> None:
        await slots.acquire()
        order.append(k)

    tasks = [asyncio.create_task(take(k)) for k in range(1000)]
    await asyncio.sleep(0)
    for _ in range(1000):  # one read's PUBACKs: each release hands its slot to the next waiter at once
        slots.release()
    assert not slots._waiters and slots.free == 0
    await asyncio.gather(*tasks)
    assert order == list(range(1000))
