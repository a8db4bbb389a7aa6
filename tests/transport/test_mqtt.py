"""The MQTT contract against a real Mosquitto: retained births and deaths, Last Will on kill -9,
commands at QoS 1, reconnect after a broker restart, malformed frames."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import struct
import zlib

import pytest

from mcm_firmware.clock import RealClock
from mcm_firmware.host.client import HostClient, watch_states
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import (
    Birth,
    Command,
    Death,
    DeathReason,
    Event,
    EventCode,
    FrameFlags,
    Op,
    Reason,
    Response,
    Status,
    Telemetry,
    decode,
    encode,
)
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.transport import Address, Channel, Subscription, TransportError, transport_factory
from mcm_firmware.transport.mqtt import MqttTransport, parse_broker_url
from mcm_firmware.transport.topics import parse_topic, topic

from ..conftest import run_cli


def mqtt_fleet(url: str, nodes: int, fleet: str = "t") -> Fleet:
    return Fleet.uniform(
        nodes=nodes,
        profile=load_profile("colossus-mcm"),
        fleet=fleet,
        transport_factory=transport_factory(url),
        clock=RealClock(),
        seed=3,
    )


async def collect_states(url: str, fleet: str, want: int, timeout: float = 10.0) -> dict[int, Birth | Death]:
    tr = transport_factory(url)("test-states")
    await tr.connect()
    seen: dict[int, Birth | Death] = {}
    try:

        async def loop():
            async for addr, msg in watch_states(tr, fleet):
                seen[addr.node] = msg
                if len(seen) >= want:
                    return

        await asyncio.wait_for(loop(), timeout)
    finally:
        await tr.close()
    return seen


def test_topic_mapping():
    a = Address("f", 12, Channel.RSP)
    assert topic(a) == "mcm/v1/f/12/rsp"
    assert parse_topic("mcm/v1/f/12/rsp") == a
    for bad in ("mcm/v1/f/x/rsp", "mcm/v2/f/1/rsp", "mcm/v1/f/1/nope", "mcm/v1/f/1"):
        assert parse_topic(bad) is None
    assert parse_broker_url("mqtt://h:1234") == ("h", 1234)
    assert parse_broker_url("mqtt://h") == ("h", 1883)
    for bad in ("http://h", "mqtt://", "mqtt://h:99999", "mqtt://h/x"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


async def test_unreachable_broker_is_a_transport_error():
    from ..conftest import free_port

    tr = MqttTransport(port=free_port(), connect_timeout=2)
    with pytest.raises(TransportError, match="cannot connect to broker"):
        await tr.connect()


async def test_births_are_retained_and_deaths_replace_them(mosquitto):
    fleet = mqtt_fleet(mosquitto.url, 3)
    await fleet.start()
    await fleet.wait_connected(10)
    states = await collect_states(mosquitto.url, "t", 3)  # a late subscriber
    assert {n: type(m) for n, m in states.items()} == {0: Birth, 1: Birth, 2: Birth}
    await fleet.stop()
    states = await collect_states(mosquitto.url, "t", 3)
    assert {n: (type(m), m.reason) for n, m in states.items()} == dict.fromkeys(range(3), (Death, DeathReason.SHUTDOWN))


async def test_telemetry_and_events_flow(mosquitto):
    tr = transport_factory(mosquitto.url)("test-watch")
    await tr.connect()
    await tr.subscribe(Subscription("t", None, None))
    fleet = mqtt_fleet(mosquitto.url, 2)
    await fleet.start()
    got: list[tuple[Address, object]] = []
    try:

        async def loop():
            while sum(isinstance(m, Telemetry) for _, m in got) < 20:
                d = await tr.receive()
                got.append((d.address, decode(d.payload)))

        await asyncio.wait_for(loop(), 15)
    finally:
        await fleet.stop()
        await tr.close()
    assert {a.node for a, m in got if isinstance(m, Telemetry)} == {0, 1}
    assert any(isinstance(m, Event) and m.code == EventCode.BOOT for _, m in got)


async def test_ping_round_trips_over_mosquitto(mosquitto):
    fleet = mqtt_fleet(mosquitto.url, 2)
    await fleet.start()
    await fleet.wait_connected(10)
    try:
        async with HostClient(transport_factory(mosquitto.url)("test-host"), fleet="t") as host:
            rtts = [await host.ping(1) for _ in range(50)]
            status = await host.status(0)
    finally:
        await fleet.stop()
    assert len(rtts) == 50 and statistics.median(rtts) > 0
    assert status.profile == "colossus-mcm"


async def test_malformed_frames_are_rejected_and_the_node_keeps_working(mosquitto):
    fleet = mqtt_fleet(mosquitto.url, 1)
    await fleet.start()
    await fleet.wait_connected(10)
    tr = transport_factory(mosquitto.url)("test-raw")
    await tr.connect()
    await tr.subscribe(Subscription("t", 0, Channel.RSP))
    await tr.subscribe(Subscription("t", 0, Channel.EVT))
    addr = Address("t", 0, Channel.CMD)
    good = encode(Command(node_id=0, flags=int(FrameFlags.HOST), request_id=5, op=Op.PING))
    body = bytearray(encode(Command(node_id=0, flags=int(FrameFlags.HOST), request_id=6, op=Op.PING))[:-4])
    body[27:29] = struct.pack("<H", 0xBEEF)
    unknown = bytes(body) + struct.pack("<I", zlib.crc32(body))
    try:
        await tr.publish(addr, b"\x00" * 40, reliable=True)
        await tr.publish(addr, unknown, reliable=True)
        await tr.publish(addr, good, reliable=True)
        responses, rejected = {}, []

        async def loop():
            while len(responses) < 2 or len(rejected) < 2:
                m = decode((await tr.receive()).payload)
                if isinstance(m, Response):
                    responses[m.request_id] = m
                elif isinstance(m, Event) and m.code == EventCode.FRAME_REJECTED:
                    rejected.append(Reason(m.subject))

        await asyncio.wait_for(loop(), 10)
    finally:
        await tr.close()
        counters = fleet.nodes[0].counters
        await fleet.stop()
    assert responses[5].status is Status.OK
    assert responses[6].status is Status.UNKNOWN_OP and responses[6].op == 0xBEEF
    assert sorted(r.name for r in rejected) == ["BAD_FIELD", "BAD_MAGIC"]
    assert counters.rx_rejected == 2


async def test_nodes_reconnect_and_rebirth_after_a_broker_restart(mosquitto):
    fleet = mqtt_fleet(mosquitto.url, 2)
    await fleet.start()
    await fleet.wait_connected(10)
    try:
        mosquitto.stop()
        for _ in range(100):
            if not any(n.link_up for n in fleet.nodes.values()):
                break
            await asyncio.sleep(0.05)
        assert not any(n.link_up for n in fleet.nodes.values())
        mosquitto.start()
        states = await collect_states(mosquitto.url, "t", 2, timeout=20)
        assert all(isinstance(m, Birth) and m.bdseq >= 2 for m in states.values())
        assert all(n.counters.reconnects >= 1 for n in fleet.nodes.values())
        async with HostClient(transport_factory(mosquitto.url)("test-host"), fleet="t") as host:
            await host.ping(0)
    finally:
        await fleet.stop()


async def test_kill_9_leaves_retained_death_wills(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "k9")
    run.wait_line("running 2 nodes")
    births = await collect_states(mosquitto.url, "k9", 2, timeout=20)
    assert all(isinstance(m, Birth) for m in births.values())
    run.signal(signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        states = await collect_states(mosquitto.url, "k9", 2)
        if all(isinstance(m, Death) for m in states.values()) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert {n: (type(m), m.reason) for n, m in states.items()} == {
        0: (Death, DeathReason.CONNECTION_LOST),
        1: (Death, DeathReason.CONNECTION_LOST),
    }
    assert all(states[n].bdseq == births[n].bdseq for n in states)


async def test_ctl_cli_against_mosquitto(mosquitto):
    fleet = mqtt_fleet(mosquitto.url, 2, fleet="default")
    await fleet.start()
    await fleet.wait_connected(10)
    try:
        ping = await asyncio.to_thread(run_cli, "ctl", "--broker", mosquitto.url, "--json", "1", "ping")
        status = await asyncio.to_thread(run_cli, "ctl", "--broker", mosquitto.url, "--json", "0", "status")
        mon = await asyncio.to_thread(run_cli, "monitor", "--broker", mosquitto.url, "--json", "--count", "5")
    finally:
        await fleet.stop()
    assert ping.returncode == 0, ping.stderr
    obj = json.loads(ping.stdout)
    assert obj["node"] == 1 and obj["ok"] is True and obj["rtt_ms"] > 0
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    for key in (
        "node",
        "state",
        "profile",
        "uptime_s",
        "seq",
        "power_w",
        "power_cap_w",
        "failsafe",
        "rx_rejected",
        "dies",
        "hbm",
        "pumps",
        "valves",
    ):
        assert key in st, key
    assert set(st["dies"][0]) >= {"temp_c", "power_w", "clock_mhz", "voltage_mv", "reasons"}
    assert set(st["hbm"][0]) >= {"temp_c", "ce", "ue"}
    assert set(st["pumps"][0]) >= {"name", "running", "rpm"} and st["pumps"][0]["name"] == "A"
    assert set(st["valves"][0]) >= {"position_pct"}
    assert mon.returncode == 0, mon.stderr
    lines = [json.loads(x) for x in mon.stdout.splitlines()]
    assert len(lines) == 5 and all({"topic", "node", "type", "seq"} <= set(x) for x in lines)


async def test_embedded_broker_deliveries_match_our_own_subscriptions():
    """Regression: amqtt 0.12 replays, on connect, retained messages for every filter any client
    ever subscribed; the transport must still hand over only what matches its own filters."""
    from mcm_firmware.transport.broker import EmbeddedBroker

    from ..conftest import free_port

    async with EmbeddedBroker(port=free_port()) as broker:
        factory = transport_factory(broker.url)
        pub = factory("pub")
        await pub.connect()
        for n in range(3):
            await pub.publish(Address("r", n, Channel.STATE), f"state {n}".encode(), retain=True, reliable=True)
        await pub.close()
        wide = factory("wide")
        await wide.connect()
        await wide.subscribe(Subscription("r"))
        await wide.close()
        narrow = factory("narrow")
        await narrow.connect()
        await narrow.subscribe(Subscription("r", 1, Channel.STATE))
        got = []
        try:
            while True:
                got.append(await asyncio.wait_for(narrow.receive(), 1.0))
        except TimeoutError:
            pass
        unsolicited = narrow.unsolicited
        await narrow.close()
    # node 1's state may come twice (the replay and our own subscription): retained states are
    # idempotent; what must never come is another node's
    assert {(d.address.node, d.payload) for d in got} == {(1, b"state 1")}
    assert unsolicited >= 2  # the broker did send the others; they were dropped
