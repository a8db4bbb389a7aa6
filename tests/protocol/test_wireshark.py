"""The generated Wireshark dissector, run by the real ``tshark`` (Debian package ``tshark``).

Every golden frame, over MQTT and over a serial line, and every frame of a live serial capture is
dissected by tshark with the plugin of ``mcm-emu wireshark``; the fields it shows must equal the
codec's decode of the same bytes, field by field. Corrupted frames must be flagged (CRC, FCS,
malformed), not decoded into wrong values.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
import signal
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any

import pytest

from mcm_firmware.protocol import Command, MsgType, Response, decode, encode
from mcm_firmware.protocol.mctp import FrameDecoder, Reassembler, parse_vendor
from mcm_firmware.protocol.wireshark import field_names
from mcm_firmware.testing.golden import GOLDEN, SERIAL_GOLDEN, T0, serial_wire
from mcm_firmware.transport.pcap import SerialCapture, mqtt_capture

from ..conftest import run_cli

TSHARK = shutil.which("tshark")
if TSHARK is None:
    if os.environ.get("CI"):
        raise RuntimeError("tshark is not installed: .ci/run installs the Debian package tshark")
    pytest.skip("tshark is not installed (apt-get install tshark)", allow_module_level=True)

# fields of the wire that the decoded message does not hold as such (derived or constant)
WIRE_ONLY = ("header.magic", "header.version", "header.payload_len", "crc", "samples.layout")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ws") / "mcm.lua"
    r = run_cli("wireshark", "-o", str(path))
    assert r.returncode == 0, r.stderr
    assert path.read_text().startswith("-- mcm-emu ")
    return path


def tshark(plugin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert TSHARK is not None
    r = subprocess.run(
        [TSHARK, *args, "-X", f"lua_script:{plugin}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HOME": str(plugin.parent)},  # no user preferences or plugins
    )
    assert r.returncode == 0, r.stderr
    assert "Lua: Error" not in r.stderr and "lua_script" not in r.stderr, r.stderr
    return r


def pdml(plugin: Path, capture: Path) -> list[ET.Element]:
    return ET.fromstring(tshark(plugin, "-n", "-2", "-r", str(capture), "-T", "pdml").stdout).findall("packet")


def leaves(proto: ET.Element) -> list[tuple[str, tuple[str, str]]]:
    """(field name without ``mcm.``, (shown value, its bytes in hex)) of every leaf field of one
    ``mcm`` tree."""
    out = []
    for el in proto.iter("field"):
        name = el.get("name", "")
        leaf = el.find("field") is None and el.get("show") is not None
        if leaf and name.startswith("mcm.") and not name.startswith(("mcm.malformed", "mcm.bad_crc", "mcm.trailing")):
            out.append((name[4:], (el.get("show", ""), el.get("value", ""))))
    return out


def experts(packet: ET.Element) -> set[str]:
    return {
        el.get("name", "")
        for el in packet.iter("field")
        if el.get("name", "").endswith((".malformed", ".bad_crc", ".bad_fcs", ".trailing", ".lost"))
    }


def flatten(value: Any, path: str, out: list[tuple[str, Any]]) -> None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for fld in dataclasses.fields(value):
            flatten(getattr(value, fld.name), f"{path}.{fld.name}", out)
    elif isinstance(value, tuple) and hasattr(value, "_fields"):  # the telemetry's NamedTuples
        for name in value._fields:
            flatten(getattr(value, name), f"{path}.{name}", out)
    elif isinstance(value, tuple):
        for item in value:
            flatten(item, path, out)
    elif value is not None:
        out.append((path, value))


def expected(frame: bytes) -> list[tuple[str, Any]]:
    """The codec's decode of ``frame`` as (dissector field path, value) pairs, in wire order."""
    msg = decode(frame)
    body = msg.TYPE.name.lower()
    out: list[tuple[str, Any]] = [
        ("header.type", int(msg.TYPE)),
        ("header.flags", msg.flags),
        ("header.node_id", msg.node_id),
        ("header.seq", msg.seq),
        ("header.timestamp_ns", msg.timestamp_ns),
    ]
    header_names = {"node_id", "seq", "timestamp_ns", "flags"}
    for fld in dataclasses.fields(msg):
        if fld.name in header_names:
            continue
        value = getattr(msg, fld.name)
        if isinstance(msg, Command) and fld.name == "args":
            flatten(value, f"command.args.{msg.op.name.lower()}", out)
        elif isinstance(msg, Response) and fld.name == "data":
            flatten(value, f"response.data.{op_name(msg.op)}", out)
        else:
            flatten(value, f"{body}.{fld.name}", out)
    return out


def op_name(op: Any) -> str:
    return op.name.lower() if hasattr(op, "name") else str(op)


def same(shown_raw: tuple[str, str], value: Any) -> bool:
    shown, raw = shown_raw
    if isinstance(value, float):  # shown with 6 (float) or 15 (double) digits; the bytes exactly
        got = float(shown)
        exact = struct.unpack("<f" if len(raw) == 8 else "<d", bytes.fromhex(raw))[0]
        if math.isnan(value):
            return math.isnan(got) and math.isnan(exact)
        return exact == value and math.isclose(got, value, rel_tol=1e-5, abs_tol=1e-9)
    if isinstance(value, str):
        return shown == value
    return int(shown, 0) == int(value)


def compare(shown: list[tuple[str, tuple[str, str]]], frame: bytes) -> int:
    """Assert the dissected fields equal the decode, path by path in order; fields compared."""
    got: dict[str, list[tuple[str, str]]] = {}
    for path, show in shown:
        if path.startswith("auth."):  # the trailer of a sealed frame: test_sealed_golden_frames...
            continue
        if path in WIRE_ONLY or path.rsplit(".", 1)[-1].startswith("n_") or path.endswith(".count"):
            continue
        got.setdefault(path, []).append(show)
    want: dict[str, list[Any]] = {}
    for path, value in expected(frame):
        want.setdefault(path, []).append(value)
    assert sorted(got) == sorted(want), (
        f"fields differ: only dissected {sorted(set(got) - set(want))}, only decoded {sorted(set(want) - set(got))}"
    )
    n = 0
    for path, values in want.items():
        assert len(got[path]) == len(values), (path, got[path], values)
        for shown_value, value in zip(got[path], values, strict=True):
            assert same(shown_value, value), f"{path}: tshark shows {shown_value!r}, the codec decodes {value!r}"
            n += 1
    return n


def mqtt_pcap(tmp_path: Path, frames: list[bytes], name: str = "mqtt.pcap") -> Path:
    path = tmp_path / name
    mqtt_capture(path, [(T0 + k * 1_000_000, f"mcm/v1/default/{k}/tlm", fr, False) for k, fr in enumerate(frames)])
    return path


def test_every_declared_field_is_registered_with_wireshark(plugin):
    r = tshark(plugin, "-G", "fields")
    registered = {line.split("\t")[2] for line in r.stdout.splitlines() if line.startswith("F\t")}
    missing = sorted(set(field_names()) - registered)
    assert not missing, f"fields of the declarations Wireshark does not know: {missing}"
    assert {"mcm_serial.fcs", "mcm_mctp.tag", "mcm_vdm.iana"} <= registered


def test_every_golden_frame_over_mqtt_dissects_to_the_codecs_decode(plugin, tmp_path):
    frames = [encode(m) for m in GOLDEN.values()]
    packets = pdml(plugin, mqtt_pcap(tmp_path, frames))
    assert len(packets) == len(frames)
    compared = 0
    for name, frame, packet in zip(GOLDEN, frames, packets, strict=True):
        protos = [p for p in packet.findall("proto") if p.get("name") == "mcm"]
        assert len(protos) == 1, f"{name}: the MQTT payload was not handed to the mcm dissector"
        assert not experts(packet), f"{name}: flagged {experts(packet)}"
        compared += compare(leaves(protos[0]), frame)
    print(f"golden MQTT: {len(frames)} frames dissected, {compared} fields compared, 0 mismatches")
    assert compared >= 10 * len(frames)


def test_sealed_golden_frames_show_their_trailer(plugin, tmp_path):
    from mcm_firmware.protocol.auth import trailer
    from mcm_firmware.testing.golden import AUTH_GOLDEN, sealed

    frames = [sealed(name) for name in AUTH_GOLDEN]
    packets = pdml(plugin, mqtt_pcap(tmp_path, frames))
    for frame, packet in zip(frames, packets, strict=True):
        assert not experts(packet), experts(packet)
        proto = next(p for p in packet.findall("proto") if p.get("name") == "mcm")
        shown = leaves(proto)
        compare(shown, frame)  # the body as the codec decodes it, flags with AUTH
        t = trailer(frame)
        assert t is not None
        auth = {path: show for path, (show, _) in shown if path.startswith("auth.")}
        assert auth == {"auth.key_id": str(t[0]), "auth.sender": f"0x{t[1]:08x}", "auth.tag": t[2].hex(":")}


def _split_frames(wire: bytes) -> list[bytes]:
    out: list[bytes] = []
    dec = FrameDecoder(tap=lambda raw, ok: out.append(raw))
    dec.feed(wire)
    dec.flush_tap()
    return out


def test_every_golden_serial_message_dissects_with_reassembly(plugin, tmp_path):
    path = tmp_path / "serial.pcap"
    cap = SerialCapture(path)
    records = 0
    for name in SERIAL_GOLDEN:
        for raw in _split_frames(serial_wire(name)):
            cap.frame(raw, T0 + records * 1000)
            records += 1
    cap.close()
    packets = pdml(plugin, path)
    assert len(packets) == records > len(SERIAL_GOLDEN)  # the BIRTH takes several packets
    frames = [
        m.data
        for *_, m in SERIAL_GOLDEN.values()
        if not isinstance(m, bytes) and m.data  # messages that carry a protocol frame
    ]
    dissected = [(packet, p) for packet in packets for p in packet.findall("proto") if p.get("name") == "mcm"]
    assert len(dissected) == len(frames)
    for (packet, proto), frame in zip(dissected, frames, strict=True):
        assert not experts(packet), experts(packet)
        compare(leaves(proto), frame)
    # the vendor header of every message, and the MCTP tags as sent
    kinds = [
        p.find("field[@name='mcm_vdm.kind']")
        for pk in packets
        for p in pk.findall("proto")
        if p.get("name") == "mcm_vdm"
    ]
    assert [k.get("show") for k in kinds if k is not None] == ["4", "3", "1", "1"]  # KEEPALIVE HELLO FRAME FRAME


def _corrupt(frame: bytes, at: int) -> bytes:
    b = bytearray(frame)
    b[at] ^= 0x5A
    return bytes(b)


def _recrc(frame: bytes) -> bytes:
    return frame[:-4] + struct.pack("<I", zlib.crc32(frame[:-4]))


def test_corrupted_frames_are_flagged_not_misdecoded(plugin, tmp_path):
    tlm = encode(GOLDEN["telemetry"])
    liar = bytearray(tlm)
    from mcm_firmware.protocol.codec import COUNTS_OFFSET

    liar[23 + COUNTS_OFFSET] = 9  # n_dies: 9 dice declared, 2 present (CRC made right: only the layout is wrong)
    cases = {
        "bad CRC": (_corrupt(tlm, 40), {"mcm.bad_crc"}),
        "cut short": (tlm[:60], {"mcm.malformed"}),
        "count overruns the body": (_recrc(bytes(liar)), {"mcm.malformed"}),
        "bad magic": (_recrc(_corrupt(tlm, 0)), {"mcm.malformed"}),
        "trailing bytes": (tlm + b"\x00\x00", {"mcm.trailing"}),
    }
    for _, (frame, _) in cases.items():  # the codec refuses each
        with pytest.raises(ValueError):
            decode(frame)
    packets = pdml(plugin, mqtt_pcap(tmp_path, [f for f, _ in cases.values()]))
    for (name, (_, flags)), packet in zip(cases.items(), packets, strict=True):
        assert flags <= experts(packet), f"{name}: flagged {experts(packet)}, expected {flags}"
        shown = dict(leaves(next(p for p in packet.findall("proto") if p.get("name") == "mcm")))
        assert "telemetry.snapshot.dies.temp_c" not in shown or name in ("bad CRC", "trailing bytes"), name
    # a serial frame with a bad FCS: flagged, and nothing above DSP0253 is dissected from it
    wire = _split_frames(serial_wire("command-ping"))[0]
    bad = tmp_path / "bad.pcap"
    cap = SerialCapture(bad)
    cap.frame(_corrupt(wire, 12), T0)
    cap.frame(wire[:20], T0 + 1000)
    cap.close()
    fcs, cut = pdml(plugin, bad)
    assert "mcm_serial.bad_fcs" in experts(fcs)
    assert not [p for p in fcs.findall("proto") if p.get("name") in ("mcm", "mcm_mctp")]
    assert "mcm_serial.malformed" in experts(cut)


def test_a_live_serial_capture_dissects_to_the_frames_on_the_line(plugin, tmp_path, cli_process):
    capture = tmp_path / "live.pcap"
    run = cli_process("run", "--nodes", "1", "--serial", "pty", "--capture", str(capture))
    line = run.wait_line("serial: node 0 at ")
    path = line.split(" at ")[1].split(" ")[0]
    run.wait_line("node=0 state=RUNNING")
    for argv in (["ping"], ["status"], ["ras"], ["set-power-cap", "900"], ["inject", "pump-fail", "A"]):
        r = run_cli("ctl", "--serial", path, "0", *argv)
        assert r.returncode == 0, r.stderr
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    summary = run.wait_line("serial: captured ")
    records = int(summary.split("captured ")[1].split(" ")[0])

    # the reference: the project's own MCTP stack and codec over the records of the capture
    from scapy.utils import rdpcap

    reference: list[bytes] = []
    reasm = Reassembler()
    dec = FrameDecoder()
    pkts = rdpcap(str(capture))
    assert len(pkts) == records > 10
    for pkt in pkts:
        for packet in dec.feed(bytes(pkt)):
            got = reasm.feed(packet)
            if got is not None and (vm := parse_vendor(got[1])).data:
                reference.append(vm.data)
    assert dec.dropped == 0 and reasm.lost == 0
    types = {decode(f).TYPE for f in reference}
    assert {MsgType.BIRTH, MsgType.TELEMETRY, MsgType.COMMAND, MsgType.RESPONSE, MsgType.EVENT} <= types

    packets = pdml(plugin, capture)
    dissected = [(pk, p) for pk in packets for p in pk.findall("proto") if p.get("name") == "mcm"]
    assert len(dissected) == len(reference)
    compared = 0
    for (packet, proto), frame in zip(dissected, reference, strict=True):
        assert not experts(packet), experts(packet)
        compared += compare(leaves(proto), frame)
    print(
        f"live serial: {len(pkts)} records, {len(reference)} frames dissected, {compared} fields compared, 0 mismatches"
    )


def test_a_recording_converted_to_pcap_dissects_to_the_recorded_frames(plugin, tmp_path, cli_process):
    import base64
    import gzip
    import json

    from ..conftest import free_port

    rec = tmp_path / "live.jsonl.gz"
    p = cli_process(
        "run", "--nodes", "2", "--embedded-port", str(free_port()), "--duration", "1.5", "--record", str(rec)
    )
    assert p.wait(60) == 0
    with gzip.open(rec, "rt") as f:
        lines = [json.loads(x) for x in f][1:]
    frames = [base64.b64decode(x["frame"]) for x in lines]
    out = tmp_path / "live.pcap"
    r = run_cli("record", "to-pcap", str(rec), str(out))
    assert r.returncode == 0, r.stderr
    assert f"wrote {len(frames)} frames" in r.stdout
    packets = pdml(plugin, out)
    dissected = [(pk, p) for pk in packets for p in pk.findall("proto") if p.get("name") == "mcm"]
    assert len(dissected) == len(frames) > 20
    compared = 0
    for (packet, proto), frame, line in zip(dissected, frames, lines, strict=True):
        assert not experts(packet), experts(packet)
        topic = packet.find(".//field[@name='mqtt.topic']")
        assert topic is not None and topic.get("show") == line["topic"]
        compared += compare(leaves(proto), frame)
    print(f"recording: {len(frames)} frames dissected, {compared} fields compared, 0 mismatches")
    # bad input: a file that is not a recording, an unwritable output
    bad = run_cli("record", "to-pcap", str(out), str(tmp_path / "x.pcap"))
    assert bad.returncode == 2 and str(out) in bad.stderr and "Traceback" not in bad.stderr
    unwritable = run_cli("record", "to-pcap", str(rec), str(tmp_path / "no" / "x.pcap"))
    assert unwritable.returncode == 2 and "x.pcap" in unwritable.stderr and "Traceback" not in unwritable.stderr


def test_capture_needs_a_serial_link_and_a_writable_file(tmp_path):
    r = run_cli("run", "--capture", str(tmp_path / "x.pcap"), "--duration", "1")
    assert r.returncode == 2 and "--capture goes with --serial" in r.stderr
    r = run_cli("run", "--serial", "pty", "--capture", str(tmp_path / "no" / "x.pcap"), "--duration", "1")
    assert r.returncode == 2 and "--capture" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("wireshark", "-o", str(tmp_path / "no" / "mcm.lua"))
    assert r.returncode == 2 and "mcm.lua" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("wireshark", "-o", "-")
    assert r.returncode == 0 and r.stdout.startswith("-- mcm-emu ") and 'Proto("mcm"' in r.stdout


def test_a_lost_middle_mctp_packet_is_flagged_and_the_next_message_reassembles(plugin, tmp_path):
    """A telemetry message of six packets with its third lost on the line: the dissector flags the
    gap (``mcm_mctp.lost``, as the reassembler counts ``out_of_sequence``), shows no frame made of
    the pieces, and reassembles the next message on the same tag into the codec's decode."""
    from mcm_firmware.protocol.mctp import ChannelCode, Kind, VendorMessage, encode_frame, fragment

    first, second = encode(GOLDEN["telemetry"]), encode(GOLDEN["event"])
    packets = fragment(VendorMessage(Kind.FRAME, 3, ChannelCode.TLM, 0, first).to_bytes(), dest=8, src=9, tag=2)
    assert len(packets) >= 4
    kept = packets[:2] + packets[3:]
    after = fragment(VendorMessage(Kind.FRAME, 3, ChannelCode.EVT, 0, second).to_bytes(), dest=8, src=9, tag=2, seq=1)
    reasm = Reassembler()  # the project's reassembler on the same packets, for the record
    got = [m for p in kept + after if (m := reasm.feed(p)) is not None]
    assert reasm.losses["out_of_sequence"] == 1 and len(got) == 1
    path = tmp_path / "lost.pcap"
    cap = SerialCapture(path)
    for k, p in enumerate(kept + after):
        cap.frame(encode_frame(p), T0 + k * 1000)
    cap.close()
    dissected = pdml(plugin, path)
    flagged = [k for k, pk in enumerate(dissected) if "mcm_mctp.lost" in experts(pk)]
    assert flagged == [2], flagged  # the packet after the gap
    frames = [(pk, p) for pk in dissected for p in pk.findall("proto") if p.get("name") == "mcm"]
    assert len(frames) == 1, "a frame was dissected from the pieces of the broken message"
    packet, proto = frames[0]
    assert dissected.index(packet) == len(dissected) - 1 and not experts(packet)
    compare(leaves(proto), second)
