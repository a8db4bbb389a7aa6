"""MCTP message tags as DSP0236 has them, checked by a requester written here from DSP0236 and
DSP0253 alone (none of the project's serial code): a response carries TO=0 and the tag of the
request it answers, so a requester that owns its eight tags until their answers arrive can send
request after request without running out."""

from __future__ import annotations

import asyncio
import os
import re
import select
import time
import tty

from mcm_firmware.host.client import HostClient
from mcm_firmware.protocol import Command, FrameFlags, MsgType, Op, Response, decode, encode
from mcm_firmware.protocol.mctp import ChannelCode, Kind, VendorMessage
from mcm_firmware.transport.serial import SerialLink, SerialTransport
from mcm_firmware.transport.serial.link import TAG_EXPIRY_S

HOST_EID, IANA_PEN = 8, 32473  # the serial binding's host EID; the vendor-defined messages' enterprise number


def fcs16(data: bytes) -> int:
    """DSP0253's frame check sequence (the FCS-16 of RFC 1662, without the final complement)."""
    fcs = 0xFFFF
    for byte in data:
        fcs ^= byte
        for _ in range(8):
            fcs = (fcs >> 1) ^ 0x8408 if fcs & 1 else fcs >> 1
    return fcs


def frame(packet: bytes) -> bytes:
    """One DSP0253 frame: flag, revision 1, byte count, the escaped packet, FCS high first, flag."""
    body = bytes((0x01, len(packet))) + packet
    escaped = packet.replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")
    return b"\x7e" + body[:2] + escaped + fcs16(body).to_bytes(2, "big") + b"\x7e"


def unframe(stream: bytearray) -> list[bytes]:
    """The packets of the complete frames at the front of ``stream`` whose FCS holds, each read by
    its byte count (the count and the FCS are not escaped: either may be 0x7E, so a frame is not
    cut at the next flag). A frame that does not hold is skipped up to the next flag after its
    opening one."""
    out = []
    while True:
        start = stream.find(b"\x7e")
        if start < 0:
            stream.clear()
            return out
        del stream[:start]
        if len(stream) > 1 and stream[1] == 0x7E:  # repeated or shared flags
            del stream[:1]
            continue
        if len(stream) < 3:
            return out
        revision, count, i, packet = stream[1], stream[2], 3, bytearray()
        while len(packet) < count and i < len(stream):
            if stream[i] == 0x7D and i + 1 < len(stream):
                packet.append(stream[i + 1] ^ 0x20)
                i += 2
            elif stream[i] == 0x7D:
                break
            else:
                packet.append(stream[i])
                i += 1
        if len(packet) < count or i + 3 > len(stream):
            return out  # the rest has not arrived yet
        fcs, closing = int.from_bytes(stream[i : i + 2], "big"), stream[i + 2]
        if revision == 1 and count and closing == 0x7E and fcs16(bytes((revision, count)) + packet) == fcs:
            out.append(bytes(packet))
            del stream[: i + 2]  # the closing flag stays: it may be shared with the next frame
        else:
            del stream[:1]


def test_the_dsp0253_example_frame_checks():
    assert frame(bytes.fromhex("01 08 09 c8 00")) == bytes.fromhex("7e 01 05 01 08 09 c8 00 8e 35 7e")


def test_unframe_reads_by_the_byte_count_a_frame_whose_fcs_is_a_flag():
    packets = [bytes((1, 9, 8, 0xC8, k & 0xFF, k >> 8)) for k in range(2000)]
    flagged = [p for p in packets if 0x7E in fcs16(bytes((1, len(p))) + p).to_bytes(2, "big")][:4]
    assert len(flagged) == 4
    own_flags = b"".join(frame(p) for p in flagged)
    shared = frame(flagged[0]) + b"".join(frame(p)[1:] for p in flagged[1:])  # one 7E between frames
    assert unframe(bytearray(own_flags)) == flagged
    assert unframe(bytearray(shared)) == flagged
    rest = bytearray(own_flags[:-5])  # the last frame not all here yet: kept for the next read
    assert unframe(rest) == flagged[:3] and unframe(rest + own_flags[-5:]) == flagged[3:]


def test_an_independent_requester_sends_twenty_requests_on_eight_tags(cli_process):
    run = cli_process("run", "--nodes", "1", "--serial", "pty", "--fleet", "tags")
    line = run.wait_line("serial: node 0 at", timeout=30)
    run.wait_line("up: 1 nodes", timeout=30)  # the node listens: a request now is not lost
    path, eid = re.search(r"at (\S+) \(EID (\d+)", line).groups()
    node_eid = int(eid)
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    try:
        free, in_flight, answered, rx = list(range(8)), {}, {}, bytearray()
        partial: dict[tuple[int, int], bytearray] = {}
        seq, next_rid, total, deadline = 0, 1000, 20, time.monotonic() + 30

        def send(tag: int) -> None:
            """A request on ``tag``: no retries, so a frame lost or misread on the line fails the test."""
            nonlocal seq, next_rid
            rid = next_rid
            cmd = encode(
                Command(node_id=0, seq=seq, timestamp_ns=0, flags=int(FrameFlags.HOST), request_id=rid, op=Op.PING)
            )
            vendor = bytes((0x7F,)) + IANA_PEN.to_bytes(4, "big") + bytes((1, 4, 0)) + (0).to_bytes(4, "big") + cmd
            assert len(vendor) <= 64  # one packet at the baseline MTU
            header = bytes((0x01, node_eid, HOST_EID, 0xC0 | 0x08 | tag))  # SOM, EOM, seq 0, TO=1, tag
            os.write(fd, frame(header + vendor))
            in_flight[tag] = rid
            seq = seq + 1
            next_rid += 1

        sent = 0
        while sent < total and free:  # eight requests back to back: every tag owned
            send(free.pop(0))
            sent += 1
        while len(answered) < total and time.monotonic() < deadline:
            select.select([fd], [], [], 0.2)
            try:
                rx += os.read(fd, 65536)
            except BlockingIOError:
                continue
            for packet in unframe(rx):
                dest, src, flags = packet[1], packet[2], packet[3]
                som, eom, to, tag = flags & 0x80, flags & 0x40, flags & 0x08, flags & 0x07
                key = (src, (to << 4) | tag)
                if som:
                    partial[key] = bytearray()
                if key not in partial or dest != HOST_EID:
                    continue
                partial[key] += packet[4:]
                if not eom:
                    continue
                message = bytes(partial.pop(key))
                if to or message[0] != 0x7F or message[5] != 1 or message[6] != 5:
                    continue  # not a response (telemetry, events, keepalives are the node's own requests)
                resp = decode(message[12:])
                assert isinstance(resp, Response)
                assert resp.request_id not in answered, f"request {resp.request_id} answered twice"
                assert in_flight.get(tag) == resp.request_id, (tag, resp.request_id, in_flight)
                answered[resp.request_id] = tag
                del in_flight[tag]
                if sent < total:  # the tag is free again: the next request takes it
                    send(tag)
                    sent += 1
        assert len(answered) == total and not in_flight  # every response matched by its tag
        assert set(answered.values()) == set(range(8))
    finally:
        os.close(fd)


class Listener:
    """An endpoint on a link that keeps what reaches its EID: (source, message, TO, tag)."""

    def __init__(self, eid: int) -> None:
        self.eid = eid
        self.got: list[tuple[int, VendorMessage, bool, int]] = []

    def _on_message(self, src: int, vm: VendorMessage, tag_owner: bool = True, tag: int = 0) -> None:
        self.got.append((src, vm, tag_owner, tag))

    def _link_down(self, why: str) -> None:
        pass


async def _until(pred, timeout: float = 20.0) -> None:
    """Wait for ``pred`` (a generous bound: a slow machine only takes longer)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def _request(k: int) -> VendorMessage:
    return VendorMessage(Kind.FRAME, k, ChannelCode.CMD, 0, b"request %d" % k)


async def test_a_ninth_request_waits_for_a_response_to_free_a_tag():
    """On loop:// the link hears what it sends: eight requests from EID 8 to EID 9 own the eight
    tags; a ninth waits (not sent, counted) until a response to tag 5 (TO=0, sent as EID 9)
    comes back, and then goes out on tag 5. No owned tag is taken back."""
    link = await SerialLink("loop://").open()
    node = Listener(9)
    link.attach(node)
    try:
        for k in range(8):
            link.send(_request(k), src=8, dest=9, request=True)
        await _until(lambda: len(node.got) == 8)
        assert [(to, tag) for _, _, to, tag in node.got] == [(True, k) for k in range(8)]
        link.send(_request(8), src=8, dest=9, request=True)
        assert link.stats.tag_waits == 1 and "waited for a tag 1" in link.summary()
        await asyncio.sleep(0.2)
        assert len(node.got) == 8  # still waiting: every tag is owned
        link.send(VendorMessage(Kind.FRAME, 5, ChannelCode.RSP, 0, b"answer"), src=9, dest=8, reply_tag=5)
        await _until(lambda: len(node.got) == 9)
        src, vm, to, tag = node.got[8]
        assert (src, vm.data, to, tag) == (8, b"request 8", True, 5)
        assert link.stats.tags_reused == 0
    finally:
        await link.close()


async def test_an_unanswered_tag_is_taken_back_only_after_its_expiry():
    """Nothing answers: the ninth request waits until the oldest tag's expiry, then takes it, and
    the link counts the tag taken back."""
    expiry = 0.5
    link = await SerialLink("loop://", tag_expiry=expiry).open()
    node = Listener(9)
    link.attach(node)
    loop = asyncio.get_running_loop()
    try:
        for k in range(8):
            link.send(_request(k), src=8, dest=9, request=True)
        t0 = loop.time()
        link.send(_request(8), src=8, dest=9, request=True)
        link.send(_request(9), src=8, dest=9, request=True)
        assert link.stats.tag_waits == 2
        await _until(lambda: len(node.got) == 10)
        assert loop.time() - t0 >= expiry * 0.9  # not before the tags expired
        assert [tag for *_, tag in node.got[8:]] == [0, 1]  # the oldest first
        assert link.stats.tags_reused == 2 and "unanswered 2" in link.summary()
        # another destination has eight tags of its own: no wait
        link.send(_request(10), src=8, dest=10, request=True)
        assert link.stats.tag_waits == 2
    finally:
        await link.close()
    assert TAG_EXPIRY_S > 2.0  # longer than a host's default timeout


def test_twenty_requests_in_flight_to_one_node_are_all_answered_and_matched(cli_process):
    """The project's own host (HostClient over serial, no retries) sends twenty PINGs at once to a
    node of a real run: twelve wait for a tag, every one is answered, none is sent again."""
    run = cli_process("run", "--nodes", "1", "--serial", "pty", "--fleet", "tags")
    line = run.wait_line("serial: node 0 at", timeout=30)
    run.wait_line("up: 1 nodes", timeout=30)
    path = re.search(r"at (\S+) \(EID", line).group(1)

    async def main() -> tuple[list[float], HostClient]:
        transport = SerialTransport.host(path)
        async with HostClient(transport, fleet="tags", timeout=30, retries=0) as client:
            rtts = await asyncio.gather(*(client.ping(0) for _ in range(20)))
            return list(rtts), client

    rtts, client = asyncio.run(main())
    link = client.transport.link
    assert len(rtts) == 20 and client.unmatched == 0 and client.unanswered == 0
    assert link.stats.tag_waits >= 12 and link.stats.tags_reused == 0, link.summary()


def test_a_unit_above_the_baseline_is_warned_of():
    from ..conftest import run_cli

    r = run_cli("run", "--nodes", "1", "--serial", "pty?mtu=128", "--duration", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "MTU 128" in r.stdout and "warning: MTU 128 is above DSP0236's baseline of 64" in r.stdout
    r = run_cli("run", "--nodes", "1", "--serial", "pty", "--duration", "1", timeout=60)
    assert "MTU 64" in r.stdout and "warning" not in r.stdout


def _strict_reader(path: str, enough) -> tuple[int, list[int]]:
    """A peer held to DSP0236's baseline: it refuses every packet with more than 64 message bytes
    and reassembles the rest. Reads until ``enough(refused, frame types)``; returns both."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(fd)
    refused, types, rx = 0, [], bytearray()
    partial: dict[tuple[int, int], bytearray] = {}
    deadline = time.monotonic() + 30
    try:
        while not enough(refused, types):
            assert time.monotonic() < deadline, (refused, types)
            select.select([fd], [], [], 0.2)
            try:
                rx += os.read(fd, 65536)
            except BlockingIOError:
                continue
            for packet in unframe(rx):
                if len(packet) - 4 > 64:
                    refused += 1
                    partial.clear()  # the message it belonged to cannot be completed
                    continue
                som, eom, key = packet[3] & 0x80, packet[3] & 0x40, (packet[2], packet[3] & 0x0F)
                if som:
                    partial[key] = bytearray()
                if key not in partial:
                    continue
                partial[key] += packet[4:]
                if eom:
                    message = bytes(partial.pop(key))
                    if message[0] == 0x7F and message[5] == 1:  # a FRAME: a protocol frame follows
                        types.append(decode(message[12:]).TYPE)
    finally:
        os.close(fd)
    return refused, types


def test_a_node_above_the_baseline_is_silent_to_a_strict_64_byte_reader(cli_process):
    """The documented outcome of ?mtu=128 with a peer not set to it: every packet of the node's
    telemetry is above 64 bytes, the peer refuses them and hears no telemetry (nor a BIRTH); the
    same node at the default unit is heard."""
    for url, heard in (("pty?mtu=128", False), ("pty", True)):
        run = cli_process("run", "--nodes", "1", "--serial", url, "--fleet", "strict")
        line = run.wait_line("serial: node 0 at", timeout=30)
        path = re.search(r"at (\S+) \(EID", line).group(1)
        if heard:
            refused, types = _strict_reader(path, lambda refused, types: types.count(MsgType.TELEMETRY) >= 2)
            assert refused == 0
        else:
            refused, types = _strict_reader(path, lambda refused, types: refused >= 9)
            assert MsgType.TELEMETRY not in types and MsgType.BIRTH not in types  # the node looks silent
        run.close()


def test_frames_a_node_will_not_answer_own_no_tag(cli_process):
    """A host's frames on a node's command channel that the node leaves unanswered (a command for
    another node, another frame type, a frame whose header does not hold) go with TO=1 and no tag owned:
    twenty of them before a PING leave every tag free, so the PING needs no wait; a COMMAND the node
    rejects but answers (no HOST flag) is still a request."""
    from mcm_firmware.protocol import Event, Severity
    from mcm_firmware.protocol.codec import answerable
    from mcm_firmware.transport import Address, Channel

    ping = encode(Command(node_id=0, seq=1, timestamp_ns=0, flags=int(FrameFlags.HOST), request_id=7, op=Op.PING))
    other = encode(Command(node_id=5, seq=1, timestamp_ns=0, flags=int(FrameFlags.HOST), request_id=8, op=Op.PING))
    no_host = encode(Command(node_id=0, seq=1, timestamp_ns=0, flags=0, request_id=9, op=Op.PING))
    event = encode(Event(node_id=0, severity=Severity.INFO, code=1))
    bad_crc = ping[:-1] + bytes([ping[-1] ^ 1])
    assert answerable(0, ping) and answerable(0, no_host)  # answered, run or rejected
    assert not answerable(0, other) and not answerable(0, event) and not answerable(0, b"\x00junk")
    assert not answerable(0, bad_crc)  # a header that does not hold: the node cannot answer it
    run = cli_process("run", "--nodes", "1", "--serial", "pty", "--fleet", "tags")
    line = run.wait_line("serial: node 0 at", timeout=30)
    run.wait_line("up: 1 nodes", timeout=30)
    path = re.search(r"at (\S+) \(EID", line).group(1)

    async def main() -> tuple[HostClient, float]:
        async with HostClient(SerialTransport.host(path), fleet="tags", timeout=30, retries=0) as client:
            for k in range(20):
                junk = (other, event, b"\x00junk", bad_crc)[k % 4]
                await client.transport.publish(Address("tags", 0, Channel.CMD), junk, reliable=True)
            return client, await client.ping(0)

    client, rtt = asyncio.run(main())
    link = client.transport.link
    assert rtt is not None and link.stats.tag_waits == 0 and link.stats.tags_reused == 0, link.summary()
