"""Serial links: DSP0253 framing and its check values, MCTP fragmentation, resynchronisation,
endpoints over real pseudo-terminals, pacing to the baud rate, the partial-write guard."""

from __future__ import annotations

import asyncio
import os
import re
import time
import tty
from pathlib import Path

import pytest
import serial_asyncio_fast
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcm_firmware.protocol import mctp
from mcm_firmware.protocol.mctp import (
    ChannelCode,
    Drop,
    FrameDecoder,
    Kind,
    Loss,
    Reassembler,
    VendorMessage,
    crc16_mcrf4xx,
    encode_frame,
    fragment,
    parse_vendor,
)
from mcm_firmware.testing.golden import SERIAL_GOLDEN, serial_wire
from mcm_firmware.transport import Address, Channel, Subscription, TransportError, Will
from mcm_firmware.transport.serial import (
    FIRST_NODE_EID,
    SerialLink,
    SerialTransport,
    parse_port_url,
    plan_node_links,
)
from mcm_firmware.transport.serial.port import GuardedSerialTransport, _PtyPort

DOC = Path(__file__).resolve().parents[2] / "docs" / "serial.md"


# --- DSP0253 check values ------------------------------------------------------------------------


def test_crc16_mcrf4xx_check_value():
    assert crc16_mcrf4xx(b"123456789") == 0x6F91
    assert crc16_mcrf4xx(b"") == 0xFFFF
    # chaining gives the same as one call
    assert crc16_mcrf4xx(b"56789", crc16_mcrf4xx(b"1234")) == 0x6F91


def test_dsp0253_example_frame_both_ways():
    wire = bytes.fromhex("7E 01 05 01 08 09 C8 00 8E 35 7E")
    assert encode_frame(bytes.fromhex("01 08 09 C8 00")) == wire
    d = FrameDecoder()
    assert d.feed(wire) == [bytes.fromhex("01 08 09 C8 00")]
    assert d.dropped == 0


def test_escapes_in_the_body_and_not_elsewhere():
    packet = bytes([0x01, 0x7E, 0x7D, 0x00, 0x7D, 0x5E])
    wire = encode_frame(packet)
    assert wire[3:-3] == bytes([0x01, 0x7D, 0x5E, 0x7D, 0x5D, 0x00, 0x7D, 0x5D, 0x5E])
    assert wire[2] == len(packet)  # the count is of unescaped bytes
    assert FrameDecoder().feed(wire) == [packet]


def test_encode_refuses_empty_and_oversized_packets():
    with pytest.raises(ValueError, match=r"1\.\.255"):
        encode_frame(b"")
    with pytest.raises(ValueError, match=r"1\.\.255"):
        encode_frame(bytes(256))


# --- golden frames ---------------------------------------------------------------------------


def golden_from_doc() -> dict[str, bytes]:
    blocks = re.findall(r"<!-- serial-golden: ([\w-]+) -->\s*```hex\n(.*?)```", DOC.read_text(), re.S)
    return {name: bytes.fromhex(text) for name, text in blocks}


def test_doc_lists_every_serial_golden_frame():
    assert sorted(golden_from_doc()) == sorted(SERIAL_GOLDEN)


@pytest.mark.parametrize("name", sorted(SERIAL_GOLDEN))
def test_serial_golden_both_ways(name):
    wire = golden_from_doc()[name]
    assert serial_wire(name) == wire
    src, dest, tag, _mtu, msg = SERIAL_GOLDEN[name]
    packets = FrameDecoder().feed(wire)
    r = Reassembler()
    got = [x for x in (r.feed(p) for p in packets) if x is not None]
    assert len(got) == 1
    head, body = got[0]
    assert (head.src, head.dest, head.tag, head.tag_owner) == (src, dest, tag, True)
    assert body == (msg if isinstance(msg, bytes) else msg.to_bytes())
    if not isinstance(msg, bytes):
        assert parse_vendor(body) == msg


def test_construct_declarations_agree_with_the_fast_path():
    p = mctp.Packet(dest=0x12, src=0x34, som=True, eom=False, seq=3, tag_owner=True, tag=5, body=b"\x7f")
    ref = mctp.MctpHeader.build(dict(dest=0x12, src=0x34, som=True, eom=False, seq=3, tag_owner=True, tag=5))
    assert p.to_bytes()[:4] == ref
    parsed = mctp.MctpHeader.parse(p.to_bytes())
    assert (parsed.version, parsed.dest, parsed.src, parsed.seq, parsed.tag) == (1, 0x12, 0x34, 3, 5)
    vm = VendorMessage(Kind.FRAME, 0xDEADBEEF, ChannelCode.RSP, mctp.VENDOR_RETAIN, b"xyz")
    ref = mctp.VendorHeader.build(dict(kind="FRAME", channel=5, flags=1, node=0xDEADBEEF))
    assert vm.to_bytes() == ref + b"xyz"
    assert mctp.VendorHeader.parse(vm.to_bytes()).node == 0xDEADBEEF


@pytest.mark.parametrize(
    "data, why",
    [
        (b"\x7f\x00\x00", "shorter than"),
        (bytes([0x7E]) + bytes(11), "not vendor-defined"),
        (bytes([0xFF, 0, 0, 0x7E, 0xD9, 1, 1, 0, 0, 0, 0, 0]), "integrity check"),
        (bytes([0x7F, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0]), "enterprise number"),
        (bytes([0x7F, 0, 0, 0x7E, 0xD9, 9, 1, 0, 0, 0, 0, 0]), "unknown vendor message kind 9"),
        (bytes([0x7F, 0, 0, 0x7E, 0xD9, 1, 6, 0, 0, 0, 0, 0]), "unknown channel code 6"),
    ],
)
def test_vendor_messages_that_are_not_ours_are_refused_by_name(data, why):
    with pytest.raises(mctp.LinkError, match=why):
        parse_vendor(data)


# --- the stream decoder: bad input is dropped, counted, and decoding resumes -------------------


GOOD = encode_frame(b"\x01\x08\x09\xc8\x00")


@pytest.mark.parametrize(
    "bad, reason",
    [
        (b"garbage", Drop.GARBAGE),
        (b"\x7e\x02\x05\x01\x08\x09\xc8\x00\x8e\x35\x7e", Drop.BAD_REVISION),
        (b"\x7e\x01\x00\x7e", Drop.BAD_COUNT),
        (b"\x7e\x01\x04\x01\x08\x09\xc8\x00\x8e\x35\x7e", Drop.BAD_COUNT),  # count smaller than the body
        (b"\x7e\x01\x09\x01\x08\x09\xc8\x00\x8e\x35\x7e", Drop.TRUNCATED),  # count larger: runs into a flag
        (b"\x7e\x01\x05\x01\x08\x09\xc8\x01\x8e\x35\x7e", Drop.BAD_FCS),
        (b"\x7e\x01\x05\x01\x08\x09\xc8\x7d\x8e\x35\x7e", Drop.BAD_ESCAPE),  # escape at the end of the body
        (b"\x7e\x01\x05\x01\x7d\x41\x09\xc8\x8e\x35\x7e", Drop.BAD_ESCAPE),
    ],
)
def test_each_bad_frame_is_dropped_counted_and_the_next_decodes(bad, reason):
    d = FrameDecoder()
    out = d.feed(bad + GOOD)
    assert out == [b"\x01\x08\x09\xc8\x00"]
    assert d.drops[reason] >= 1
    assert d.frames == 1


def test_byte_at_a_time_equals_all_at_once():
    wire = b"junk" + b"".join(serial_wire(n) for n in SERIAL_GOLDEN) + b"\x7e\x01"
    whole = FrameDecoder().feed(wire)
    d = FrameDecoder()
    one = [p for i in range(len(wire)) for p in d.feed(wire[i : i + 1])]
    assert one == whole and len(whole) == 6


packets = st.binary(min_size=1, max_size=255)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    garbage=st.binary(max_size=600),
    good=st.lists(packets, min_size=1, max_size=5),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_resynchronises_after_any_garbage(garbage, good, cuts):
    """Whatever comes first, every valid frame after it is decoded, however the bytes arrive."""
    wire = garbage + b"".join(encode_frame(p) for p in good)
    d = FrameDecoder()
    out: list[bytes] = []
    last = 0
    for c in sorted(x for x in cuts if x < len(wire)):
        out += d.feed(wire[last:c])
        last = c
    out += d.feed(wire[last:])
    assert out[len(out) - len(good) :] == good
    assert len(out) >= len(good)


@settings(max_examples=300)
@given(st.binary(max_size=2000))
def test_any_bytes_never_raise(data):
    d = FrameDecoder()
    for p in d.feed(data):
        assert 1 <= len(p) <= 255
    r = Reassembler()
    for p in d.feed(data):
        r.feed(p)


# --- fragmentation and reassembly --------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 63, 64, 65, 128, 300, 1000])
@pytest.mark.parametrize("mtu", [1, 64, 251])
def test_fragment_and_reassemble(size, mtu):
    msg = bytes((i * 7) & 0xFF for i in range(size))
    pk = fragment(msg, dest=9, src=8, tag=5, mtu=mtu, seq=2)
    assert len(pk) == -(-size // mtu)
    heads = [mctp.parse_packet(p) for p in pk]
    assert heads[0].som and heads[-1].eom and sum(h.som for h in heads) == 1 and sum(h.eom for h in heads) == 1
    assert [h.seq for h in heads] == [(2 + k) % 4 for k in range(len(pk))]
    r = Reassembler()
    got = [x for x in (r.feed(p) for p in pk) if x is not None]
    assert len(got) == 1 and got[0][1] == msg and r.lost == 0


def test_lost_fragment_drops_that_message_and_the_next_arrives():
    a = fragment(bytes(200), dest=9, src=8, tag=1)
    b = fragment(b"next message", dest=9, src=8, tag=1)
    r = Reassembler()
    out = [x for x in (r.feed(p) for p in [a[0], a[2], a[3]] + b) if x is not None]
    assert [m for _, m in out] == [b"next message"]
    assert r.losses[Loss.OUT_OF_SEQUENCE] == 1 and r.losses[Loss.NO_SOM] == 1


def test_reordered_fragments_drop_the_message():
    a = fragment(bytes(range(200)), dest=9, src=8, tag=2)
    r = Reassembler()
    assert all(r.feed(p) is None for p in [a[0], a[2], a[1], a[3]])
    assert r.losses[Loss.OUT_OF_SEQUENCE] == 1 and r.messages == 0


def test_new_start_drops_the_unfinished_message_and_tags_do_not_mix():
    a = fragment(bytes(200), dest=9, src=8, tag=3)
    other = fragment(b"x" * 100, dest=9, src=10, tag=3)  # another source, same tag: independent
    r = Reassembler()
    out = [x for x in (r.feed(p) for p in [a[0], other[0], a[1], other[1]] + a) if x is not None]
    assert [len(m) for _, m in out] == [100, 200]
    assert r.losses[Loss.RESTARTED] == 1


def test_too_big_and_bad_headers_are_counted():
    r = Reassembler(max_message=100)
    assert all(r.feed(p) is None for p in fragment(bytes(300), dest=9, src=8, tag=0))
    assert r.losses[Loss.TOO_BIG] == 1
    assert r.feed(b"\x02\x09\x08\xc0\x00") is None and r.feed(b"\x01") is None
    assert r.losses[Loss.BAD_HEADER] == 2


# --- port URLs and link plans ----------------------------------------------------------------------


def test_port_urls():
    assert parse_port_url("pty") == parse_port_url("pty?baud=0")
    s = parse_port_url("pty?baud=921600&mtu=128")
    assert (s.url, s.baud, s.mtu) == ("pty", 921600, 128)
    assert parse_port_url("/dev/ttyUSB0").baud == 115200
    assert parse_port_url("loop://?logging=debug").url == "loop://?logging=debug"
    assert parse_port_url("socket://127.0.0.1:5000").baud == 0


@pytest.mark.parametrize(
    "url, why",
    [
        ("", "empty"),
        ("ttyUSB0", "not a device path"),
        ("http://x", "scheme 'http'"),
        ("pty?baud=fast", "baud='fast' is not an integer"),
        ("pty?mtu=0", "mtu 0 is outside"),
        ("pty?mtu=252", "mtu 252 is outside"),
        ("socket://host", "needs HOST:PORT"),
    ],
)
def test_bad_port_urls_are_named(url, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_port_url(url)


def test_link_plans():
    per_node = plan_node_links(["pty"], [1, 2, 3])
    assert len({id(p.link) for p in per_node}) == 3 and {p.eid for p in per_node} == {FIRST_NODE_EID}
    mux = plan_node_links(["pty"], [1, 2, 3], mux=True)
    assert len({id(p.link) for p in mux}) == 1 and [p.eid for p in mux] == [9, 10, 11]
    assert len({id(p.link) for p in plan_node_links(["loop://"], [1, 2])}) == 1
    assert len(plan_node_links(["/dev/a", "/dev/b"], [1, 2])) == 2
    with pytest.raises(ValueError, match="given 2 times for 3 nodes"):
        plan_node_links(["/dev/a", "/dev/b"], [1, 2, 3])
    with pytest.raises(ValueError, match="do not fit"):
        plan_node_links(["loop://"], list(range(300)))


# --- endpoints over a real pseudo-terminal ----------------------------------------------------------


async def _next(tr: SerialTransport, pred, timeout: float = 3.0):
    async def loop():
        while True:
            d = await tr.receive()
            if pred(d):
                return d

    return await asyncio.wait_for(loop(), timeout)


@pytest.mark.slow
async def test_node_and_host_over_a_pty_birth_commands_will_and_bye():
    link = await SerialLink("pty").open()
    node = SerialTransport(link, role="node", eid=FIRST_NODE_EID, node=7, fleet="f")
    state = Address("f", 7, Channel.STATE)
    await node.connect(will=Will(state, b"DEATH"))
    await node.subscribe(Subscription("f", 7, Channel.CMD))
    await node.publish(state, b"BIRTH", retain=True)
    host = SerialTransport.host(link.path)
    try:
        await host.connect()
        await host.subscribe(Subscription("f"))
        d = await _next(host, lambda d: d.address == state)
        assert d.payload == b"BIRTH" and d.retained  # asked for with HELLO
        # a command to a node whose EID the host learnt, longer than one packet
        await host.publish(Address("f", 7, Channel.CMD), bytes(range(256)) * 2, reliable=True)
        d = await asyncio.wait_for(node.receive(), 3)
        assert d.address == Address("f", 7, Channel.CMD) and d.payload == bytes(range(256)) * 2
        # a command for another node is not delivered to this one
        await host.publish(Address("f", 8, Channel.CMD), b"not yours")
        await host.publish(Address("f", 7, Channel.CMD), b"yours")
        assert (await asyncio.wait_for(node.receive(), 3)).payload == b"yours"
        # responses, events, telemetry come through in order
        for ch in (Channel.RSP, Channel.EVT, Channel.TLM):
            await node.publish(Address("f", 7, ch), ch.value.encode())
            d = await _next(host, lambda d, ch=ch: d.address.channel is ch)
            assert d.payload == ch.value.encode()
        # a silent node: the host publishes its will within 3 keepalive periods
        t0 = time.monotonic()
        await node.abort()
        d = await _next(host, lambda d: d.address == state, timeout=5)
        assert d.payload == b"DEATH" and 2.5 <= time.monotonic() - t0 <= 4.5
        # a clean close (BYE): no will
        node2 = SerialTransport(link, role="node", eid=FIRST_NODE_EID, node=7, fleet="f")
        await node2.connect(will=Will(state, b"DEATH2"))
        await node2.publish(state, b"BIRTH2", retain=True)
        assert (await _next(host, lambda d: d.address == state)).payload == b"BIRTH2"
        await node2.close()
        with pytest.raises(TimeoutError):
            await _next(host, lambda d: d.address == state, timeout=4)
    finally:
        await host.close()
        await link.close()
    assert link.decoder.dropped == 0 and host.link.decoder.dropped == 0


async def test_several_nodes_share_one_link_by_eid():
    link = await SerialLink("pty").open()
    nodes = [SerialTransport(link, role="node", eid=FIRST_NODE_EID + k, node=100 + k) for k in range(3)]
    for n in nodes:
        await n.connect()
        await n.subscribe(Subscription("default", n.node, Channel.CMD))
        await n.publish(Address("default", n.node, Channel.STATE), f"birth {n.node}".encode(), retain=True)
    with pytest.raises(TransportError, match="EID 9 is already in use"):
        await SerialTransport(link, role="node", eid=FIRST_NODE_EID, node=5).connect()
    host = SerialTransport.host(link.path)
    try:
        await host.connect()
        await host.subscribe(Subscription("default"))
        births = {(await _next(host, lambda d: d.address.channel is Channel.STATE)).payload for _ in range(3)}
        assert births == {b"birth 100", b"birth 101", b"birth 102"}
        for n in nodes:
            await host.publish(Address("default", n.node, Channel.CMD), f"to {n.node}".encode())
        for n in nodes:
            assert (await asyncio.wait_for(n.receive(), 3)).payload == f"to {n.node}".encode()
    finally:
        await host.close()
        for n in nodes:
            await n.close()
        await link.close()


async def _round_trip(link: SerialLink, node_id: int, command: bytes, answer: bytes) -> None:
    """A node and a host endpoint on one link that hears itself (loop://, an echo server): a
    command reaches the node, its answer reaches the host."""
    node = SerialTransport(link, role="node", eid=FIRST_NODE_EID, node=node_id)
    host = SerialTransport(link, role="host", eid=8)
    try:
        await node.connect()
        await node.subscribe(Subscription("default", node_id, Channel.CMD))
        await host.connect()
        await host.subscribe(Subscription("default", None, Channel.RSP))
        await host.publish(Address("default", node_id, Channel.CMD), command)
        assert (await asyncio.wait_for(node.receive(), 5)).payload == command
        await node.publish(Address("default", node_id, Channel.RSP), answer)
        assert (await asyncio.wait_for(host.receive(), 5)).payload == answer
    finally:
        await node.close()
        await host.close()


async def test_loop_url_carries_host_and_node_on_one_in_process_link():
    link = await SerialLink("loop://").open()
    try:
        await _round_trip(link, 1, b"ping", b"pong")
    finally:
        await link.close()


async def test_a_port_that_cannot_open_is_a_transport_error():
    with pytest.raises(TransportError, match="cannot open serial port /dev/nonexistent-tty"):
        await SerialLink("/dev/nonexistent-tty").open()


# --- pacing to the baud rate, priorities ------------------------------------------------------------


async def test_paced_link_keeps_line_timing_and_decimates_only_telemetry():
    baud = 115200
    link = await SerialLink(f"pty?baud={baud}&mtu=251").open()
    node = SerialTransport(link, role="node", eid=FIRST_NODE_EID, node=1)
    host = SerialTransport.host(link.path)
    try:
        await node.connect()
        await host.connect()
        await host.subscribe(Subscription("default"))
        payload = bytes(150 - 6 - 4 - 12 - 1)  # 150 bytes on the line per message (one escape)
        wire = len(
            encode_frame(
                mctp.Packet(
                    8, 9, True, True, 0, True, 0, VendorMessage(Kind.FRAME, 1, ChannelCode.EVT, 0, payload).to_bytes()
                ).to_bytes()
            )
        )
        assert wire == 150
        n = 100
        t0 = time.monotonic()
        for _ in range(n):
            await node.publish(Address("default", 1, Channel.EVT), payload)
        for _ in range(n):
            await _next(host, lambda d: d.address.channel is Channel.EVT)
        took = time.monotonic() - t0
        expected = n * 150 * 10 / baud  # 1.3 s: ~77 frames/s
        assert 0.9 * expected <= took <= 1.6 * expected, (took, expected)
        assert node.utilisation() > 0.9  # the last second was all transmission
        # saturate with telemetry while sending responses: every response, few telemetry frames
        got: dict[Channel, int] = {Channel.TLM: 0, Channel.RSP: 0}

        async def count():
            while True:
                d = await host.receive()
                got[d.address.channel] = got.get(d.address.channel, 0) + 1

        counter = asyncio.create_task(count())
        for k in range(200):
            await node.publish(Address("default", 1, Channel.TLM), payload)
            if k % 10 == 0:
                await node.publish(Address("default", 1, Channel.RSP), payload, reliable=True)
            await asyncio.sleep(0.002)
        await link.flush(3)
        await asyncio.sleep(0.1)
        counter.cancel()
        await asyncio.gather(counter, return_exceptions=True)
        assert got[Channel.RSP] == 20
        assert got[Channel.TLM] + link.stats.decimated == 200
        assert link.stats.decimated > 100
    finally:
        await node.close()
        await host.close()
        await link.close()
    assert link.utilisation() < 1.0


# --- the partial-write guard ---------------------------------------------------------------------


class _Sink:
    def connection_made(self, t):
        pass

    def connection_lost(self, exc):
        pass

    def pause_writing(self):
        pass

    def resume_writing(self):
        pass

    def data_received(self, data):
        pass


async def _fill_and_drain(cls) -> tuple[bytes, list[dict]]:
    loop = asyncio.get_running_loop()
    errors: list[dict] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    port = _PtyPort()
    tr = cls(loop, _Sink(), port)
    await asyncio.sleep(0)
    data = os.urandom(200_000)
    tr.write(data)  # far more than the pty holds: a partial write, the rest buffered
    assert tr.get_write_buffer_size() > 0
    fd = os.open(port.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    got = bytearray()
    try:
        deadline = time.monotonic() + 10
        while len(got) < len(data) and time.monotonic() < deadline:
            try:
                got += os.read(fd, 65536)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await asyncio.sleep(0.05)  # the loop calls the writer again if it is still armed
    finally:
        os.close(fd)
        tr.abort()
        await asyncio.sleep(0.05)
        loop.set_exception_handler(old)
    assert bytes(got) == data
    return bytes(got), errors


async def test_partial_write_then_drain_leaves_no_armed_writer():
    _, errors = await _fill_and_drain(GuardedSerialTransport)
    assert errors == []


@pytest.mark.skipif(serial_asyncio_fast.__version__ != "0.16", reason="documents the 0.16 bug")
async def test_upstream_0_16_fails_after_a_partial_write():
    _, errors = await _fill_and_drain(serial_asyncio_fast.SerialTransport)
    assert any("Write buffer should not be empty" in str(e.get("exception")) for e in errors)


# --- the CLI over serial, as real subprocesses -------------------------------------------------------


def _paths(run, nodes: int) -> dict[int, str]:
    out = {}
    run.wait_line("running ")  # printed after every serial line
    for line in [x for x in run.lines if x.startswith("serial: node ")]:
        m = re.search(r"serial: node (\d+) at (\S+) \(EID (\d+)", line)
        assert m, line
        out[int(m.group(1))] = m.group(2)
    assert len(out) == nodes
    return out


def test_run_on_ptys_with_ctl_and_monitor_over_serial(cli_process):
    import json
    import signal

    from ..conftest import run_cli

    run = cli_process("run", "--nodes", "2", "--serial", "pty", "--summary-interval", "0.5")
    paths = _paths(run, 2)
    assert len(set(paths.values())) == 2 and all(p.startswith("/dev/pts/") for p in paths.values())
    run.wait_line("node=1 state=RUNNING")
    ping = run_cli("ctl", "--serial", paths[1], "--json", "1", "ping")
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout)["ok"] is True
    st = run_cli("ctl", "--serial", paths[0], "--json", "0", "status")
    assert st.returncode == 0, st.stderr
    status = json.loads(st.stdout)
    assert status["node"] == 0 and status["state"] == "RUNNING" and status["link_util_pct"] == 0.0
    cap = run_cli("ctl", "--serial", paths[0], "0", "set-power-cap", "5000")
    assert cap.returncode == 2 and "outside" in cap.stderr
    mon = run_cli("monitor", "--serial", paths[1], "--json", "--count", "4")
    assert mon.returncode == 0, mon.stderr
    frames = [json.loads(x) for x in mon.stdout.splitlines()]
    assert frames[0]["type"] == "BIRTH" and frames[0]["retained"] and frames[0]["node"] == 1
    assert {f["type"] for f in frames[1:]} <= {"TELEMETRY", "EVENT", "BIRTH"}
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    run.wait_line("stopped 2 nodes")
    for path in paths.values():  # each link's counters at the end: ctl and monitor sent clean frames
        line = run.wait_line(f"serial: {path}: tx ")
        assert "dropped none" in line and re.search(r"rx [1-9]\d* messages", line), line


def test_several_nodes_on_one_paced_pty(cli_process):
    import json

    from ..conftest import run_cli

    run = cli_process(
        "run",
        "--nodes",
        "3",
        "--first-id",
        "40",
        "--serial",
        "pty?baud=921600",
        "--serial-mux",
        "--summary-interval",
        "0.5",
    )
    paths = _paths(run, 3)
    assert len(set(paths.values())) == 1
    run.wait_line("node=42 state=RUNNING")
    path = paths[40]
    for node in (40, 41, 42):
        st = run_cli("ctl", "--serial", f"{path}?baud=921600", "--json", str(node), "status")
        assert st.returncode == 0, st.stderr
        obj = json.loads(st.stdout)
        assert obj["node"] == node
        assert 0 < obj["link_util_pct"] < 50  # 3 nodes of telemetry use a little of 921600 baud


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "--serial", "ttyS0"], "not a device path"),
        (["run", "--serial", "pty?baud=x"], "baud='x' is not an integer"),
        (["run", "--nodes", "3", "--serial", "/dev/a", "--serial", "/dev/b"], "given 2 times for 3 nodes"),
        (["run", "--serial", "pty", "--broker", "mqtt://127.0.0.1:1"], "--broker and --record do not go with it"),
        (["run", "--serial-mux"], "--serial-mux goes with --serial"),
        (["ctl", "--serial", "pty?mtu=0", "1", "ping"], "mtu 0 is outside"),
        (["ctl", "--serial", "/dev/pts/1", "--broker", "mqtt://h", "1", "ping"], "not allowed with argument"),
    ],
)
def test_bad_serial_arguments_exit_2_naming_them(argv, needle):
    from ..conftest import run_cli

    r = run_cli(*argv)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_a_port_that_does_not_exist_exits_1():
    from ..conftest import run_cli

    r = run_cli("ctl", "--serial", "/dev/does-not-exist", "--timeout", "0.5", "1", "ping")
    assert r.returncode == 1 and "cannot open serial port /dev/does-not-exist" in r.stderr, r.stderr
    r = run_cli("run", "--serial", "/dev/does-not-exist", "--duration", "1")
    assert r.returncode == 1 and "cannot open serial port /dev/does-not-exist" in r.stderr, r.stderr


async def test_socket_url_carries_frames_over_tcp():
    """socket://HOST:PORT (a terminal server, ser2net): here an echo server on loopback, so the
    host and node endpoints on the one link hear each other as on loop://."""

    async def echo(reader, writer):
        while data := await reader.read(4096):
            writer.write(data)
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = await SerialLink(f"socket://127.0.0.1:{port}?baud=921600").open()
    try:
        await _round_trip(link, 4, b"over tcp" * 40, b"back")
    finally:
        await link.close()
        server.close()
        await server.wait_closed()


class _Rfc2217LoopServer:
    """An RFC 2217 (Telnet COM-port) server in front of pyserial's loop://, on a loopback port:
    what a terminal server does, with pyserial's own PortManager doing the protocol."""

    def __init__(self) -> None:
        import socket
        import threading

        import serial
        import serial.rfc2217

        self._serial_mod = serial
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, name="rfc2217-server", daemon=True)]
        self.threads[0].start()

    def _serve(self) -> None:
        import threading

        import serial.rfc2217

        self.sock.settimeout(5)
        conn, _ = self.sock.accept()
        conn.settimeout(0.05)
        ser = self._serial_mod.serial_for_url("loop://", timeout=0.05)

        class Out:
            def write(self, data: bytes) -> None:
                conn.sendall(data)

        pm = serial.rfc2217.PortManager(ser, Out())

        def back() -> None:
            while not self.stop.is_set():
                data = ser.read(max(1, ser.in_waiting))
                if data:
                    conn.sendall(b"".join(pm.escape(data)))

        t = threading.Thread(target=back, name="rfc2217-back", daemon=True)
        self.threads.append(t)
        t.start()
        while not self.stop.is_set():
            try:
                data = conn.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            for chunk in pm.filter(data):
                ser.write(chunk)
        self.stop.set()
        t.join(2)
        conn.close()
        ser.close()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(5)
        self.sock.close()


async def test_rfc2217_url_carries_frames_through_a_com_port_server():
    server = _Rfc2217LoopServer()
    link = SerialLink(f"rfc2217://127.0.0.1:{server.port}")
    try:
        await link.open()
        await _round_trip(link, 6, bytes(range(256)), b"\x7e\x7d" * 50)
    finally:
        await link.close()
        server.close()


# --- the MTU: DSP0236's baseline at least, each option once ------------------------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        ("pty?mtu=63", "mtu 63 is outside 64..251 (DSP0236's baseline transmission unit, 64 bytes"),
        ("pty?mtu=1", "mtu 1 is outside 64..251"),
        ("pty?mtu=64&mtu=65", "'pty?mtu=64&mtu=65': mtu is given more than once"),
        ("pty?baud=9600&baud=9600", "baud is given more than once"),
    ],
)
def test_a_unit_below_the_baseline_or_a_repeated_option_is_refused_by_name(url, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_port_url(url)
    assert parse_port_url("pty?mtu=64").mtu == 64 and parse_port_url("pty?mtu=251").mtu == 251


def test_ctl_refuses_a_unit_below_the_baseline_naming_it():
    from ..conftest import run_cli

    r = run_cli("ctl", "--serial", "pty?mtu=32", "1", "ping", timeout=60)
    assert r.returncode == 2 and "mtu 32 is outside 64..251" in r.stderr, r.stderr


# --- flags: every frame has its own; shared flags are read -------------------------------------------


class _Heard:
    eid = 8

    def __init__(self) -> None:
        self.got: list[tuple[int, VendorMessage]] = []

    def _on_message(self, src: int, vm: VendorMessage, tag_owner: bool = True, tag: int = 0) -> None:
        self.got.append((src, vm))

    def _link_down(self, why: str) -> None:
        pass


def _flagged_messages(n: int) -> list[VendorMessage]:
    """Messages whose one frame (9 -> 8, TO=0, tag 3) has a 0x7E in its FCS."""
    out = []
    for node in range(5000):
        vm = VendorMessage(Kind.FRAME, node, ChannelCode.RSP, 0, b"x")
        (packet,) = fragment(vm.to_bytes(), dest=8, src=9, tag=3, tag_owner=False)
        if 0x7E in encode_frame(packet)[-3:-1]:
            out.append(vm)
            if len(out) == n:
                return out
    raise AssertionError("no such messages")


async def test_a_frame_whose_fcs_holds_a_flag_leaves_with_flags_of_its_own_and_shared_flags_are_read():
    """Over a real pty: the link sends frames whose FCS contains 0x7E each between its own opening
    and closing flag (7E ... 7E 7E ... 7E), and a DSP0253 reader that cuts at flags reads them
    back; bytes written with one flag between frames (7E ... 7E ... 7E) are accepted too."""
    link = await SerialLink("pty").open()
    heard = _Heard()
    link.attach(heard)
    msgs = _flagged_messages(3)
    fd = os.open(link.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    try:
        for vm in msgs:
            link.send(vm, src=9, dest=8, reply_tag=3)
        await link.flush()
        raw = bytearray()
        deadline = time.monotonic() + 10
        frames_out = [encode_frame(fragment(vm.to_bytes(), dest=8, src=9, tag=3, tag_owner=False)[0]) for vm in msgs]
        while len(raw) < sum(map(len, frames_out)) and time.monotonic() < deadline:
            try:
                raw += os.read(fd, 4096)
            except BlockingIOError:
                await asyncio.sleep(0.005)
        assert bytes(raw) == b"".join(frames_out)  # each frame 7E ... 7E: never a shared flag
        assert all(f[0] == 0x7E and f[-1] == 0x7E for f in frames_out)
        d = FrameDecoder()
        assert [parse_vendor(mctp.parse_packet(p).body) for p in d.feed(bytes(raw))] == msgs and d.dropped == 0
        # the peer shares flags: one 7E closes a frame and opens the next
        shared = frames_out[0] + b"".join(f[1:] for f in frames_out[1:])
        assert len(shared) == len(raw) - 2
        os.write(fd, shared)
        await asyncio.wait_for(_until(lambda: len(heard.got) == 3), 10)
        assert [vm for _, vm in heard.got] == msgs and link.decoder.dropped == 0
    finally:
        os.close(fd)
        await link.close()


async def _until(pred) -> None:
    while not pred():  # noqa: ASYNC110 - polled: the link calls no one back
        await asyncio.sleep(0.005)
