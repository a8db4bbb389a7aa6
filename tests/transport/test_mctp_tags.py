"""MCTP message tags as DSP0236 has them, checked by a requester written here from DSP0236 and
DSP0253 alone (none of the project's serial code): a response carries TO=0 and the tag of the
request it answers, so a requester that owns its eight tags until their answers arrive can send
request after request without running out."""

from __future__ import annotations

import os
import re
import select
import time
import tty

from mcm_firmware.protocol import Command, FrameFlags, Op, Response, decode, encode

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
    """The packets of the complete frames at the front of ``stream`` whose FCS holds."""
    out = []
    while True:
        start = stream.find(b"\x7e")
        if start < 0:
            stream.clear()
            return out
        end = stream.find(b"\x7e", start + 1)
        if end < 0:
            del stream[:start]
            return out
        raw = bytes(stream[start + 1 : end])
        del stream[:end]  # the closing flag may open the next frame
        if len(raw) < 4:
            continue
        packet = raw[2:-2].replace(b"\x7d\x5e", b"\x7e").replace(b"\x7d\x5d", b"\x7d")
        if raw[0] == 1 and raw[1] == len(packet) and fcs16(raw[:2] + packet) == int.from_bytes(raw[-2:], "big"):
            out.append(packet)


def test_the_dsp0253_example_frame_checks():
    assert frame(bytes.fromhex("01 08 09 c8 00")) == bytes.fromhex("7e 01 05 01 08 09 c8 00 8e 35 7e")


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

        sent_at: dict[int, float] = {}

        def send(tag: int, rid: int | None = None) -> None:
            """A request on ``tag``; with ``rid``, that request again (a requester's retry after
            its timeout: same tag, same request id, answered once by the node's cache)."""
            nonlocal seq, next_rid
            retry = rid is not None
            rid = next_rid if rid is None else rid
            flags = int(FrameFlags.HOST) | (int(FrameFlags.RETRY) if retry else 0)
            cmd = encode(Command(node_id=0, seq=seq, timestamp_ns=0, flags=flags, request_id=rid, op=Op.PING))
            vendor = bytes((0x7F,)) + IANA_PEN.to_bytes(4, "big") + bytes((1, 4, 0)) + (0).to_bytes(4, "big") + cmd
            assert len(vendor) <= 64  # one packet at the baseline MTU
            header = bytes((0x01, node_eid, HOST_EID, 0xC0 | 0x08 | tag))  # SOM, EOM, seq 0, TO=1, tag
            os.write(fd, frame(header + vendor))
            in_flight[tag] = rid
            sent_at[tag] = time.monotonic()
            seq = seq + 1
            if not retry:
                next_rid += 1

        sent = 0
        while sent < total and free:  # eight requests back to back: every tag owned
            send(free.pop(0))
            sent += 1
        while len(answered) < total and time.monotonic() < deadline:
            for tag in [t for t, at in sent_at.items() if t in in_flight and time.monotonic() - at > 2.0]:
                send(tag, in_flight[tag])  # a frame lost on the line (a loaded machine): sent again
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
                if resp.request_id in answered:
                    continue  # the answer to a retry of a request already answered
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


def test_a_requester_owns_a_tag_until_the_answer_or_the_expiry():
    import asyncio

    from mcm_firmware.transport.serial import link as link_mod

    async def main() -> tuple[list[int], int, int, int]:
        link = link_mod.SerialLink("loop://")
        tags = [link._own_tag(8, 9, True) for _ in range(8)]
        reused_before = link.stats.tags_reused
        ninth = link._own_tag(8, 9, True)  # all eight owned: the oldest is taken back, and counted
        other = link._own_tag(8, 10, True)  # another destination has tags of its own
        return tags, reused_before, link.stats.tags_reused, ninth * 100 + other

    tags, before, after, ninth_other = asyncio.run(main())
    assert tags == list(range(8)) and before == 0 and after == 1 and ninth_other // 100 in range(8)
    assert link_mod.TAG_EXPIRY_S > 2.0  # longer than a host's default timeout


def test_a_unit_above_the_baseline_is_warned_of():
    from ..conftest import run_cli

    r = run_cli("run", "--nodes", "1", "--serial", "pty?mtu=128", "--duration", "1", timeout=60)
    assert r.returncode == 0, r.stderr
    assert "MTU 128" in r.stdout and "warning: MTU 128 is above DSP0236's baseline of 64" in r.stdout
    r = run_cli("run", "--nodes", "1", "--serial", "pty", "--duration", "1", timeout=60)
    assert "MTU 64" in r.stdout and "warning" not in r.stdout
