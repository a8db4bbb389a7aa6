"""The wire format: golden frames both ways, every decode error reason, fast paths against construct."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import construct
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcm_firmware.kernel import stream
from mcm_firmware.protocol import (
    Birth,
    Command,
    CoolingMode,
    DieTelemetry,
    Event,
    FrameError,
    HbmTelemetry,
    MsgType,
    NodeState,
    Op,
    PumpTelemetry,
    Reason,
    Severity,
    Snapshot,
    Telemetry,
    ValveTelemetry,
    codec,
    decode,
    encode,
    frame_bytes,
    frames,
    layout,
)
from mcm_firmware.protocol.codec import samples_snapshot_offset, snapshot_from_payload
from mcm_firmware.protocol.frames import CRC_SIZE, HEADER_SIZE
from mcm_firmware.protocol.messages import to_container
from mcm_firmware.protocol.vocabulary import AUTH_REASONS
from mcm_firmware.testing.golden import GOLDEN, SNAPSHOT
from mcm_firmware.testing.strategies import fix_crc

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def golden_from_doc() -> dict[str, bytes]:
    text = DOC.read_text()
    blocks = re.findall(r"<!-- golden: ([\w-]+) -->\s*```hex\n(.*?)```", text, re.S)
    return {name: bytes.fromhex(body) for name, body in blocks}


def test_doc_lists_every_golden_frame():
    assert sorted(golden_from_doc()) == sorted(GOLDEN)


def test_every_message_type_has_a_golden_frame():
    assert {m.TYPE for m in GOLDEN.values()} == set(MsgType)


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_frame_decodes_to_its_message(name):
    assert decode(golden_from_doc()[name]) == GOLDEN[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_message_encodes_to_its_frame(name):
    assert encode(GOLDEN[name]) == golden_from_doc()[name]


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_reference_declaration_agrees_with_codec(name):
    """The whole-frame construct declaration (RawCopy + Checksum) parses and builds the same bytes."""
    data = golden_from_doc()[name]
    parsed = frames.Frame.parse(data)
    head = parsed.raw.value.header
    msg = GOLDEN[name]
    assert (head.type, head.node_id, head.seq, head.timestamp_ns) == (msg.TYPE, msg.node_id, msg.seq, msg.timestamp_ns)
    rebuilt = frames.Frame.build(
        {
            "raw": {
                "value": {
                    "header": {
                        k: head[k]
                        for k in ("version", "type", "flags", "node_id", "seq", "timestamp_ns", "payload_len")
                    },
                    "body": parsed.raw.value.body,
                }
            },
            "auth": parsed.auth,  # None: not sealed
        }
    )
    assert rebuilt == data


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_compiled_and_uncompiled_parsers_agree(name):
    data = golden_from_doc()[name]
    msg_type = MsgType(data[3])
    payload = data[frames.HEADER_SIZE : -frames.CRC_SIZE]
    plain = frames.BODIES[msg_type].parse(payload)
    fast = frames.COMPILED_BODIES[msg_type].parse(payload)
    assert _strip(plain) == _strip(fast)
    assert frames.COMPILED_BODIES[msg_type].build(plain) == frames.BODIES[msg_type].build(fast) == payload


def _strip(obj):
    """Containers without construct's bookkeeping keys, for comparison."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def test_header_format_is_derived_from_the_declaration():
    assert layout.struct_format(frames.Header) == "<2sBBBLLQH"
    assert struct.calcsize(layout.struct_format(frames.Header)) == frames.HEADER_SIZE


# --- every FrameError reason ---------------------------------------------------------------------

PING = encode(GOLDEN["command-ping"])


def refit(frame: bytes) -> bytes:
    """The same frame with its CRC recomputed, so that checks after the CRC are reached."""
    body = frame[:-4]
    return body + struct.pack("<I", zlib.crc32(body))


def with_payload(frame: bytes, payload: bytes) -> bytes:
    head = bytearray(frame[: frames.HEADER_SIZE])
    head[21:23] = struct.pack("<H", len(payload))
    return refit(bytes(head) + payload + b"\0\0\0\0")


CASES = {
    "empty": (b"", Reason.TRUNCATED),
    "short": (PING[:26], Reason.TRUNCATED),
    "magic": (b"XY" + PING[2:], Reason.BAD_MAGIC),
    "version": (PING[:2] + b"\x02" + PING[3:], Reason.UNSUPPORTED_VERSION),
    "cut payload": (PING[:-5] + PING[-4:], Reason.TRUNCATED),
    "trailing": (PING + b"\x00", Reason.TRAILING_BYTES),
    "crc": (PING[:-1] + bytes([PING[-1] ^ 0x01]), Reason.BAD_CRC),
    "flipped body bit": (PING[:24] + bytes([PING[24] ^ 0x80]) + PING[25:], Reason.BAD_CRC),
    "type": (refit(PING[:3] + b"\x09" + PING[4:]), Reason.UNKNOWN_TYPE),
    "reserved flag": (refit(PING[:4] + b"\x81" + PING[5:]), Reason.BAD_FIELD),
    "payload too short": (with_payload(PING, b"\x01\x02\x03"), Reason.LENGTH_MISMATCH),
    "payload too long": (with_payload(PING, PING[23:29] + b"\x00"), Reason.LENGTH_MISMATCH),
    # regression: construct's compiled PascalString accepted a count overrunning the payload
    "string overrun": (
        with_payload(encode(GOLDEN["response-ping"]), bytes.fromhex("0403020101000001")),
        Reason.LENGTH_MISMATCH,
    ),
    "unknown op": (with_payload(PING, struct.pack("<IH", 5, 0x7777)), Reason.BAD_FIELD),
    "bad utf8": (
        with_payload(encode(GOLDEN["event"]), b"\x03\x1e\x00\x02\x00" + b"\0" * 8 + b"\x02\xff\xfe"),
        Reason.BAD_FIELD,
    ),
    "unknown severity": (
        with_payload(encode(GOLDEN["event"]), b"\x09\x1e\x00\x02\x00" + b"\0" * 8 + b"\x00"),
        Reason.BAD_FIELD,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_error_reason(case):
    data, reason = CASES[case]
    with pytest.raises(FrameError) as info:
        decode(data)
    assert info.value.reason is reason, str(info.value)
    assert str(info.value).startswith(reason.name.lower())


def test_every_reason_is_exercised():
    assert {r for _, r in CASES.values()} == set(Reason) - AUTH_REASONS  # those: tests/protocol/test_auth.py


def test_error_past_the_crc_carries_the_request_id():
    with pytest.raises(FrameError) as info:
        decode(CASES["unknown op"][0])
    assert (info.value.request_id, info.value.op, info.value.node_id) == (5, 0x7777, 3)


def test_error_before_the_crc_carries_nothing_untrusted():
    with pytest.raises(FrameError) as info:
        decode(CASES["crc"][0])
    assert info.value.request_id is None and info.value.node_id is None


def test_telemetry_with_lying_counts_is_a_length_mismatch():
    frame = bytearray(encode(GOLDEN["telemetry"]))
    offset = frames.HEADER_SIZE + codec.COUNTS_OFFSET
    frame[offset] += 1  # one more die than the payload holds
    with pytest.raises(FrameError) as info:
        decode(refit(bytes(frame)))
    assert info.value.reason is Reason.LENGTH_MISMATCH


def test_telemetry_unknown_state_is_a_bad_field():
    frame = bytearray(encode(GOLDEN["telemetry"]))
    frame[frames.HEADER_SIZE + 8] = 77
    with pytest.raises(FrameError) as info:
        decode(refit(bytes(frame)))
    assert info.value.reason is Reason.BAD_FIELD and "state" in info.value.detail


# --- fast paths agree with construct ---------------------------------------------------------------

f32 = st.floats(width=32, allow_nan=False)
u8, u16, u32 = (st.integers(0, 2**b - 1) for b in (8, 16, 32))
dies = st.builds(DieTelemetry, f32, f32, u16, u16, u32, u8, u8)
hbms = st.builds(HbmTelemetry, f32, u32, u32)
pumps = st.builds(PumpTelemetry, u16, u8)
valves = st.builds(ValveTelemetry, f32, u8)
snapshots = st.builds(
    Snapshot,
    st.integers(0, 2**64 - 1),
    st.sampled_from(NodeState),
    st.sampled_from(CoolingMode),
    u16,
    f32,
    f32,
    f32,
    f32,
    f32,
    f32,
    u32,
    u8,
    st.integers(0, 2**64 - 1),  # energy_mj
    u32,
    u32,
    u32,
    u32,
    u8,  # power_limit_source
    u32,
    u32,
    st.integers(0, 2**64 - 1),  # ecc_ce_aggregate
    st.integers(0, 2**64 - 1),
    u32,
    u32,
    u32,
    st.lists(dies, max_size=8).map(tuple),
    st.lists(hbms, max_size=12).map(tuple),
    st.lists(pumps, max_size=4).map(tuple),
    st.lists(valves, max_size=8).map(tuple),
)


@given(snapshots)
def test_snapshot_fast_path_equals_construct(snap):
    payload = codec.snapshot_payload(snap)
    assert payload == frames.Telemetry.build({"snapshot": to_container(snap)})
    assert codec.snapshot_from_payload(payload) == snap
    dt = codec.snapshot_dtype(len(snap.dies), len(snap.hbm), len(snap.pumps), len(snap.valves))
    rec = np.frombuffer(payload, dt)[0]
    assert rec.tobytes() == payload and dt.itemsize == len(payload)


@given(snapshots, u32, u32, st.integers(0, 2**64 - 1))
def test_telemetry_round_trip(snap, node, seq, ts):
    msg = Telemetry(node_id=node, seq=seq, timestamp_ns=ts, snapshot=snap)
    assert decode(encode(msg)) == msg


@given(st.text(max_size=60), st.sampled_from(Severity), u16, u16, st.floats(allow_nan=False), u32)
def test_event_round_trip(text, sev, code, subject, value, node):
    msg = Event(node_id=node, severity=sev, code=code, subject=subject, value=value, text=text)
    assert decode(encode(msg)) == msg


@given(st.binary(max_size=300))
def test_every_decode_error_on_any_bytes_is_classified(data):
    try:
        decode(data)
    except FrameError as e:
        assert not e.unforeseen, e  # met a check of its own, not the decoder's last safety net


@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_every_decode_error_on_mutated_golden_frames_is_classified(name, data):
    frame = bytearray(encode(GOLDEN[name]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(frame) - 5))
        frame[i] = data.draw(u8)
    mutated = refit(bytes(frame))  # reach the body decoders
    try:
        msg = decode(mutated)
    except FrameError as e:
        assert not e.unforeseen, e
    else:
        assert encode(msg) == mutated or msg.TYPE in (MsgType.TELEMETRY, MsgType.EVENT)


def test_frame_bytes_rejects_an_oversized_payload():
    with pytest.raises(ValueError, match="exceeds"):
        frame_bytes(1, 0, 0, 0, 0, b"\0" * 70_000)


def test_encode_rejects_values_out_of_range():
    with pytest.raises(ValueError, match="cannot encode"):
        encode(
            Birth(
                node_id=1,
                profile="x" * 300,
                firmware="",
                capabilities=0,
                boot_count=0,
                bdseq=0,
                dies=1,
                hbm_stacks=0,
                pumps=1,
                valves=1,
            )
        )
    with pytest.raises(ValueError):
        encode(Command(node_id=2**32, request_id=1, op=Op.PING))


def test_snapshot_of_golden_is_self_consistent():
    assert decode(encode(GOLDEN["telemetry"])).snapshot == SNAPSHOT


def _python_crc_rows(raw: np.ndarray, stop: int) -> np.ndarray:
    out = np.empty(raw.shape[0], np.uint32)
    stream.crc_rows(raw, stop, stream.crc_table(), out)
    return out


CRC_ROWS = {"zlib": None, "python slicing-by-8": _python_crc_rows, "compiled": stream.compiled_crc_rows()}


@pytest.mark.parametrize("crc", list(CRC_ROWS))
@given(rows=st.lists(st.tuples(u32, u32, snapshots), min_size=1, max_size=12), ts=st.integers(0, 2**64 - 1))
def test_a_frame_block_is_frame_bytes_row_by_row(crc, rows, ts):
    assert CRC_ROWS["compiled"] is not None, "numba is a dependency: the compiled CRC must load"

    def shape(snap):
        return len(snap.dies), len(snap.hbm), len(snap.pumps), len(snap.valves)

    first = shape(rows[0][2])  # one payload layout a block: the rows of the first row's shape
    same = [r for r in rows if shape(r[2]) == first]
    dt = codec.snapshot_dtype(*first)
    payloads = np.frombuffer(b"".join(codec.snapshot_payload(s) for _, _, s in same), dt)
    ids = np.array([n for n, _, _ in same], np.uint32)
    seqs = np.array([q for _, q, _ in same], np.uint32)
    block = codec.frame_block(MsgType.TELEMETRY, ids, seqs, ts, payloads, CRC_ROWS[crc])
    for i, (node, seq, snap) in enumerate(same):
        expect = frame_bytes(MsgType.TELEMETRY, node, seq, ts, 0, codec.snapshot_payload(snap))
        assert block[i].tobytes() == expect
        assert decode(block[i].tobytes()).snapshot == snap


def test_a_samples_frame_of_another_layout_is_refused_naming_the_field():
    frame = bytearray(golden_from_doc()["samples"])
    frame[HEADER_SIZE] = 2  # layout
    with pytest.raises(FrameError) as info:
        decode(fix_crc(frame))
    assert info.value.reason is Reason.BAD_FIELD and "SAMPLES" in str(info.value)


def test_the_snapshot_of_a_samples_payload_is_found_by_walking_its_counts():
    msg = GOLDEN["samples"]
    payload = encode(msg)[HEADER_SIZE:-CRC_SIZE]
    start = samples_snapshot_offset(payload)
    assert snapshot_from_payload(payload[start:]) == msg.snapshot
    for cut in (3, 8, 20, start - 1):  # a payload that ends in its head or inside a sample
        with pytest.raises(FrameError) as info:
            samples_snapshot_offset(payload[:cut])
        assert info.value.reason is Reason.LENGTH_MISMATCH


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"\x01\x00\x00\x00\x10", "COMMAND payload of 5 bytes ends inside field 'op'"),
        (b"\x01\x00\x00\x00\x01\x00\x00\x00\x00", "COMMAND payload of 9 bytes has bytes after its last field"),
    ],
)
def test_a_payload_that_does_not_fit_is_named_in_plain_words(payload, says):
    from mcm_firmware.protocol.codec import frame_bytes

    with pytest.raises(FrameError) as info:
        decode(frame_bytes(int(MsgType.COMMAND), 1, 1, 0, 1, payload))
    assert info.value.reason is Reason.LENGTH_MISMATCH and says in str(info.value)
    assert "Error in path" not in str(info.value) and "???" not in str(info.value)


_texts = st.text(max_size=120).filter(lambda t: len(t.encode("utf-8")) <= 255)


@given(
    severity=st.sampled_from(list(Severity)),
    code=st.integers(0, 0xFFFF),
    subject=st.integers(0, 0xFFFF),
    value=st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**31), 2**31),
    text=_texts,
)
def test_the_event_fast_path_builds_what_the_declaration_builds(severity, code, subject, value, text):
    ev = Event(node_id=1, severity=severity, code=code, subject=subject, value=value, text=text)
    container = codec.to_container(ev)
    fast = codec.event_payload(ev)
    assert fast == frames.BODIES[MsgType.EVENT].build(container)
    assert fast == frames.COMPILED_BODIES[MsgType.EVENT].build(container)
    assert codec.encode_body(ev) == fast
    back = decode(encode(ev))
    assert (back.code, back.subject, back.text) == (code, subject, text)


@given(
    field=st.sampled_from(["code", "subject", "text"]),
    big=st.integers(0x10000, 2**40),
)
def test_an_event_out_of_range_is_refused_by_both_paths(field, big):
    fields = {"code": 1, "subject": 2, "text": "t"}
    fields[field] = "x" * (256 + big % 300) if field == "text" else big
    ev = Event(node_id=1, severity=Severity.INFO, **fields)
    with pytest.raises(struct.error):
        codec.event_payload(ev)
    with pytest.raises((construct.ConstructError, struct.error)):
        frames.BODIES[MsgType.EVENT].build(codec.to_container(ev))
    with pytest.raises(ValueError, match="cannot encode Event"):
        encode(ev)


# --- decode errors in plain words ----------------------------------------------------------------

PYTHON_NAME = re.compile(r"\b[A-Z]\w*(?:Error|Exception)\b|Traceback")


def text_fields(con: construct.Construct, path: str = "") -> set[str]:
    """The dotted paths of every Text8 field of a declaration (command arguments and answer data
    under ``args`` and ``data``, array items under their array's name)."""
    if con is codec.fields.Text8:
        return {path}
    out: set[str] = set()
    name = getattr(con, "name", None)
    if isinstance(con, construct.Renamed) and name and name != "items":
        path = f"{path}.{name}" if path else name
    for attr in ("subcon", "subcons", "cases", "thensubcon", "elsesubcon"):
        sub = getattr(con, attr, None)
        subs = sub.values() if isinstance(sub, dict) else sub if isinstance(sub, list | tuple) else [sub]
        for s in subs:
            if isinstance(s, construct.Construct):
                out |= text_fields(s, path)
    return out


TEXT_FIELDS = {(t.name, p) for t, body in frames.BODIES.items() for p in text_fields(body)}


def test_every_text_field_with_invalid_utf8_is_named_in_plain_words():
    """Each byte of each golden payload set to 0xFF in turn: wherever it lands in a text field, the
    error names that field (``field 'args.target': not valid UTF-8``), and no error of any byte
    names a Python exception."""
    named: set[tuple[str, str]] = set()
    for name in sorted(GOLDEN):
        frame = encode(GOLDEN[name])
        for i in range(HEADER_SIZE, len(frame) - CRC_SIZE):
            mutated = refit(frame[:i] + b"\xff" + frame[i + 1 :])
            try:
                decode(mutated)
            except FrameError as e:
                assert not PYTHON_NAME.search(str(e)), f"{name} byte {i}: {e}"
                assert not e.unforeseen, f"{name} byte {i}: {e}"
                if m := re.search(r"^bad_field: (\w+) field '([\w.]+)': not valid UTF-8$", str(e)):
                    named.add((m.group(1), m.group(2)))
                else:
                    assert "UTF-8" not in str(e), f"{name} byte {i}: {e}"
    assert named == TEXT_FIELDS, f"named {sorted(named)}, declared text fields {sorted(TEXT_FIELDS)}"


@pytest.mark.parametrize(
    ("golden", "text", "field"),
    [
        ("command-inject", b"die:2", "args.target"),
        ("command-clear-fault", b"A", "args.target"),
        ("birth", b"colossus-mcm", "profile"),
        ("birth", b"0.1.0", "firmware"),
        ("event", b"zone 2", "text"),
        ("link-lost", b"mcm-default", "link"),
        ("response-bad-argument", b"power cap", "message"),
        ("response-status", b"pump-fail", "data.faults"),
        ("response-get-faults", b"0x944d", "data.faults.target"),
    ],
)
def test_invalid_utf8_in_a_text_field_is_a_bad_field_naming_it(golden, text, field):
    frame = encode(GOLDEN[golden])
    i = frame.index(text, HEADER_SIZE)
    with pytest.raises(FrameError) as info:
        decode(refit(frame[:i] + b"\xff" + frame[i + 1 :]))
    assert info.value.reason is Reason.BAD_FIELD
    assert info.value.detail == f"{GOLDEN[golden].TYPE.name} field {field!r}: not valid UTF-8"
    if isinstance(GOLDEN[golden], Command):  # a node can answer it BAD_REQUEST
        assert info.value.request_id == GOLDEN[golden].request_id


@given(st.sampled_from(sorted(GOLDEN)), st.data())
def test_no_decode_error_names_a_python_exception(name, data):
    frame = bytearray(encode(GOLDEN[name]))
    for _ in range(data.draw(st.integers(1, 6))):
        frame[data.draw(st.integers(HEADER_SIZE, len(frame) - CRC_SIZE - 1))] = data.draw(u8)
    try:
        decode(refit(bytes(frame)))
    except FrameError as e:
        assert not PYTHON_NAME.search(str(e)), e


def test_the_last_safety_net_says_undecodable_in_plain_words():
    with pytest.raises(FrameError) as info:
        decode(None)  # type: ignore[arg-type] - not bytes at all: no check of the decoder's meets it
    assert info.value.unforeseen and info.value.reason is Reason.BAD_FIELD
    assert str(info.value) == "bad_field: undecodable: a check the decoder does not have"


@given(
    request_id=st.integers(0, 2**32 - 1) | st.integers(-5, 2**40),
    op=st.sampled_from([int(o) for o in Op]) | st.integers(0, 0x10000),
    status=st.integers(0, 6) | st.integers(-2, 300),
    message=st.text(max_size=140),
)
def test_the_response_fast_path_builds_what_the_declaration_builds(request_id, op, status, message):
    """An answer without data (a refusal, or an operation with no result) is built by struct: the
    same bytes as the declaration, and where a field is out of its range (or the answer needs its
    data) the declaration builds it, and refuses what it refuses."""
    from mcm_firmware.protocol import Response
    from mcm_firmware.protocol.vocabulary import Status

    rsp = Response(node_id=1, request_id=request_id, op=op, status=status, message=message, data=None)
    fast = codec.response_payload(rsp)
    try:
        want = frames.COMPILED_BODIES[MsgType.RESPONSE].build(codec.to_container(rsp))
    except (construct.ConstructError, struct.error, OverflowError, KeyError, TypeError):
        want = None
    if fast is not None:
        assert fast == want
        assert fast == frames.BODIES[MsgType.RESPONSE].build(codec.to_container(rsp))
        if status in {int(s) for s in Status}:  # a status the decoder knows: the answer reads back
            back = decode(encode(rsp))
            assert (back.request_id, int(back.op), back.status, back.message) == (request_id, op, status, message)
    elif want is None:
        with pytest.raises(ValueError, match="cannot encode Response"):
            encode(rsp)
    else:  # an answer the fast path leaves to the declaration: its data is due
        assert status == 0 and op in {int(o) for o in frames.RESULT_LAYOUTS}
        assert codec.encode_body(rsp) == want


@given(request_id=st.integers(0, 2**32 - 1), op=st.integers(0, 0xFFFF), flags=st.sampled_from([0, 1, 2, 3]))
def test_a_command_without_arguments_decodes_as_the_declaration_parses_it(request_id, op, flags):
    """Six bytes of COMMAND payload (no arguments) are read by struct when the operation takes
    none: the same Command as the declaration's parse; any other operation (unknown, or one whose
    arguments are missing) still fails as the declaration says."""
    payload = struct.pack("<IH", request_id, op)
    frame = frame_bytes(int(MsgType.COMMAND), 7, 3, 99, flags, payload)
    header = {"node_id": 7, "seq": 3, "timestamp_ns": 99, "flags": flags}
    try:
        want = codec._typed(MsgType.COMMAND, frames.COMPILED_BODIES[MsgType.COMMAND].parse(payload), header)
    except Exception as e:  # noqa: BLE001 -- whatever the declaration raises, decode must refuse
        want = e
    try:
        got = decode(frame)
    except FrameError as e:
        assert isinstance(want, Exception), f"{want} decoded, the fast path refused it: {e}"
        return
    assert not isinstance(want, Exception), f"the declaration refused {want!r}, the fast path gave {got}"
    assert got == want and type(got.op) is type(want.op)
