"""Encoding and decoding of frames. No I/O.

``decode`` returns a typed :class:`~.messages.Message` or raises :class:`FrameError`; no other
exception leaves it, whatever the bytes. Checks run in this order, so that each reason means one
thing:

1. fewer bytes than an empty frame                       -> TRUNCATED
2. magic is not ``MC``                                   -> BAD_MAGIC
3. version is not 1                                      -> UNSUPPORTED_VERSION
4. fewer / more bytes than the header's payload length   -> TRUNCATED / TRAILING_BYTES
5. CRC-32 over header and payload differs                -> BAD_CRC
6. message type unknown                                  -> UNKNOWN_TYPE
7. reserved header flag bits set                         -> BAD_FIELD
8. payload shorter or longer than its own layout         -> LENGTH_MISMATCH
9. a field holds a value the format does not allow       -> BAD_FIELD

Past step 5 the header is trustworthy: the error then carries it, and for a COMMAND whose request
id could be read, the request id too, so that a node can answer instead of dropping.

Telemetry, the hot path, bypasses construct: its payload is a packed numpy record whose layout is
derived from the ``Snapshot`` declaration (see :mod:`.layout`); the other bodies use construct's
compiled parsers. ``tests/protocol/test_codec.py`` checks all paths against the uncompiled declarations.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import construct as c
import numpy as np

from . import fields, frames, layout
from .frames import AUTH_TRAILER_SIZE, CRC_SIZE, HEADER_SIZE, KNOWN_FLAGS, MAGIC, MAX_PAYLOAD, VERSION
from .messages import (
    MESSAGE_TYPES,
    Command,
    Event,
    FieldValueError,
    Message,
    Response,
    Telemetry,
    from_container,
    to_container,
)
from .ops import ARG_LAYOUTS, ARG_TYPES, RESULT_LAYOUTS, RESULT_TYPES, Op
from .telemetry import DieTelemetry, HbmTelemetry, PumpTelemetry, Snapshot, ValveTelemetry
from .vocabulary import CoolingMode, FrameFlags, MsgType, NodeState, Reason, Status

_AUTH = int(FrameFlags.AUTH)


class FrameError(ValueError):
    """A frame that cannot be decoded. ``reason`` says why; header fields are set where readable.

    ``unforeseen`` marks an error that no check of the decoder classified, caught by its last
    safety net so that the caller still gets a FrameError: a decoder bug, which the tests look for.
    """

    def __init__(
        self,
        reason: Reason,
        detail: str,
        *,
        msg_type: int | None = None,
        node_id: int | None = None,
        seq: int | None = None,
        request_id: int | None = None,
        op: int | None = None,
        unforeseen: bool = False,
    ) -> None:
        super().__init__(f"{reason.name.lower()}: {detail}")
        self.unforeseen = unforeseen
        self.reason = reason
        self.detail = detail
        self.msg_type = msg_type
        self.node_id = node_id
        self.seq = seq
        self.request_id = request_id
        self.op = op


_HEADER = struct.Struct(layout.struct_format(frames.Header))
_CRC = struct.Struct("<I")
_REQ = struct.Struct("<IH")
assert _HEADER.size == HEADER_SIZE, "frames.HEADER_SIZE disagrees with the Header declaration"


def frame_bytes(msg_type: int, node_id: int, seq: int, timestamp_ns: int, flags: int, payload: bytes) -> bytes:
    """Wrap a payload in header and CRC. The one place a frame's envelope is assembled."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        head = _HEADER.pack(MAGIC, VERSION, msg_type, flags, node_id, seq & 0xFFFFFFFF, timestamp_ns, len(payload))
    except struct.error as e:
        raise ValueError(f"header field out of range: {e}") from None
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((head, payload, _CRC.pack(crc)))


_HEADER_DTYPE = layout.record_dtype(frames.Header)


def frame_block(
    msg_type: int,
    node_ids: np.ndarray,
    seqs: np.ndarray,
    timestamp_ns: int,
    payloads: np.ndarray,
    crc_rows: Callable[[np.ndarray, int], np.ndarray] | None = None,
) -> np.ndarray:
    """Many frames of one type and payload layout at once: ``payloads`` is a packed record array
    (one payload a row), the result a ``[rows, frame size]`` uint8 array whose row ``i`` is exactly
    ``frame_bytes(msg_type, node_ids[i], seqs[i], timestamp_ns, 0, payloads[i].tobytes())``. The
    header is filled in one vectorised pass; the CRCs by ``crc_rows(raw, n)`` (the CRC-32 of the
    first ``n`` bytes of each row of ``raw``: a compiled loop) when given, else a frame at a time
    through ``zlib.crc32``."""
    n, plen = len(payloads), payloads.dtype.itemsize
    if plen > MAX_PAYLOAD:
        raise ValueError(f"payload of {plen} bytes exceeds {MAX_PAYLOAD}")
    block = np.empty(n, [("h", _HEADER_DTYPE), ("p", payloads.dtype), ("crc", "<u4")])
    head = block["h"]
    head["magic"], head["version"], head["type"], head["flags"] = MAGIC, VERSION, msg_type, 0
    head["node_id"], head["seq"], head["timestamp_ns"], head["payload_len"] = node_ids, seqs, timestamp_ns, plen
    size = block.dtype.itemsize
    raw = block.view(np.uint8).reshape(n, size)
    at = _HEADER_DTYPE.itemsize  # the payloads' bytes copied as bytes (a record copy goes field by field)
    raw[:, at : at + plen] = np.ascontiguousarray(payloads).view(np.uint8).reshape(n, plen)
    if crc_rows is not None:
        block["crc"] = crc_rows(raw, size - CRC_SIZE)
        return raw
    view = memoryview(raw.data).cast("B")
    crc32 = zlib.crc32
    block["crc"] = [crc32(view[i * size : (i + 1) * size - CRC_SIZE]) for i in range(n)]
    return raw


# --- telemetry fast path ------------------------------------------------------------------------
# The Snapshot payload is fixed once its four counts are known: a struct format (and, for the
# vectorised node-side path, a numpy record dtype) is derived from the declaration per count tuple.

_ARRAYS = layout.array_names(frames.Snapshot)  # dies, hbm, pumps, valves
_PART_TYPES: tuple[type[NamedTuple], ...] = (DieTelemetry, HbmTelemetry, PumpTelemetry, ValveTelemetry)
_N_SCALARS = len(Snapshot._fields) - len(_ARRAYS)  # fields before the counts
COUNTS_OFFSET = struct.calcsize(layout.struct_format(frames.Snapshot, **dict.fromkeys(_ARRAYS, 0))) - len(_ARRAYS)


def _check_field_order() -> None:
    """The positional fast path relies on typed fields in declaration order."""
    decl = [n for n, _ in layout.fields(frames.Snapshot) if not n.startswith("n_")]
    if list(Snapshot._fields) != decl or decl[_N_SCALARS:] != _ARRAYS:
        raise TypeError("Snapshot fields differ from the Snapshot declaration")
    decls = dict(layout.fields(frames.Snapshot))
    for name, cls in zip(_ARRAYS, _PART_TYPES, strict=True):
        item = [n for n, _ in layout.fields(layout._unwrap(decls[name].subcon))]
        if list(cls._fields) != item:
            raise TypeError(f"{cls.__name__} fields differ from the declaration")


_check_field_order()
_TLM_STRUCTS: dict[tuple[int, ...], struct.Struct] = {}


def _tlm_struct(counts: tuple[int, ...]) -> struct.Struct:
    st = _TLM_STRUCTS.get(counts)
    if st is None:
        fmt = layout.struct_format(frames.Snapshot, **dict(zip(_ARRAYS, counts, strict=True)))
        st = _TLM_STRUCTS[counts] = struct.Struct(fmt)
    return st


def snapshot_dtype(dies: int, hbm: int, pumps: int, valves: int) -> np.dtype:
    """The packed numpy record of one telemetry payload with these array lengths."""
    return layout.record_dtype(frames.Snapshot, dies=dies, hbm=hbm, pumps=pumps, valves=valves)


def samples_dtype(samples: int, dies: int, hbm: int, pumps: int, valves: int) -> np.dtype:
    """The packed numpy record of one SAMPLES payload: ``samples`` samples of ``dies`` dice, then
    a Snapshot with these array lengths."""
    return layout.record_dtype(frames.Samples, samples=samples, dies=dies, hbm=hbm, pumps=pumps, valves=valves)


def samples_snapshot_offset(payload: bytes | memoryview) -> int:
    """Where the Snapshot starts in a SAMPLES payload (its samples walked by their counts);
    FrameError if the payload ends first."""
    off, n = SAMPLES_HEAD, len(payload)
    if n < off:
        raise FrameError(Reason.LENGTH_MISMATCH, "SAMPLES payload shorter than its head")
    for _ in range(payload[off - 1]):
        if off + _SAMPLE_HEAD > n:
            raise FrameError(Reason.LENGTH_MISMATCH, "SAMPLES payload ends inside a sample")
        off += _SAMPLE_HEAD + payload[off + _SAMPLE_HEAD - 1] * _DIE_SAMPLE
    if off > n:
        raise FrameError(Reason.LENGTH_MISMATCH, "SAMPLES payload ends inside a sample")
    return off


SAMPLES_HEAD = struct.calcsize(layout.struct_format(frames.Samples, samples=0, dies=0, hbm=0, pumps=0, valves=0)) - (
    COUNTS_OFFSET + len(_ARRAYS)
)  # layout, period_us, n_samples
_SAMPLE_HEAD = struct.calcsize(layout.struct_format(fields.Sample, dies=0))  # power_w, n_dies
_DIE_SAMPLE = struct.calcsize(layout.struct_format(fields.DieSample))


def snapshot_payload(snap: Snapshot) -> bytes:
    """Telemetry payload bytes of one snapshot."""
    # _check_field_order: the fields from _N_SCALARS on are the arrays of records
    parts = cast("tuple[tuple[NamedTuple, ...], ...]", snap[_N_SCALARS:])
    counts = tuple(len(p) for p in parts)
    flat = [*snap[:_N_SCALARS], *counts]
    for part in parts:
        for item in part:
            flat.extend(item)
    return _tlm_struct(counts).pack(*flat)


def snapshot_from_payload(payload: bytes | memoryview) -> Snapshot:
    """A typed Snapshot from telemetry payload bytes; FrameError if they do not fit."""
    if len(payload) < COUNTS_OFFSET + len(_ARRAYS):
        raise FrameError(Reason.LENGTH_MISMATCH, "telemetry payload shorter than its fixed part")
    counts = tuple(payload[COUNTS_OFFSET : COUNTS_OFFSET + len(_ARRAYS)])
    st = _tlm_struct(counts)
    if len(payload) != st.size:
        raise FrameError(
            Reason.LENGTH_MISMATCH,
            f"telemetry payload is {len(payload)} bytes, its counts {counts} need {st.size}",
        )
    vals = st.unpack(payload)
    try:
        state = NodeState(vals[1])
    except ValueError:
        raise FieldValueError("state", vals[1], "not a known NodeState") from None
    try:
        mode = CoolingMode(vals[2])
    except ValueError:
        raise FieldValueError("mode", vals[2], "not a known CoolingMode") from None
    i = _N_SCALARS + len(_ARRAYS)
    parts: list[tuple[NamedTuple, ...]] = []
    new = tuple.__new__
    for cls, n in zip(_PART_TYPES, counts, strict=True):
        w = len(cls._fields)
        end = i + n * w
        parts.append(tuple([new(cls, vals[j : j + w]) for j in range(i, end, w)]))
        i = end
    return Snapshot(vals[0], state, mode, *vals[3:_N_SCALARS], *parts)


# --- encode -------------------------------------------------------------------------------------


_EVENT_HEAD = struct.Struct("<BHHdB")  # frames.Event: severity, code, subject, value, the text's count


def event_payload(ev: Event) -> bytes:
    """EVENT payload bytes, equal to the declaration's build (tested): events come in storms (every
    zone of every module leaves failsafe at once after a fleet's boot), and building them through
    construct cost ~20 us each. Raises ``struct.error`` for a field out of its range."""
    text = ev.text.encode("utf-8")
    return _EVENT_HEAD.pack(ev.severity, ev.code, ev.subject, ev.value, len(text)) + text


_RSP_HEAD = struct.Struct("<IHBB")  # frames.Response: request_id, op, status, the message's count
_RESULT_OPS = frozenset(int(op) for op in RESULT_LAYOUTS)  # answers to these carry data when OK
_ARGLESS = {int(op): op for op in Op if op not in ARG_LAYOUTS}  # commands of these carry no arguments


def response_payload(rsp: Response) -> bytes | None:
    """RESPONSE payload bytes without data (a refusal, or an operation with no result), equal to
    the declaration's build (tested): every command is answered, and building an answer through
    construct cost ~15 us. ``None`` for any other answer, or a field out of its range: the
    declaration builds those (and says what is wrong)."""
    if rsp.data is not None or not isinstance(rsp.message, str):
        return None
    if rsp.status == Status.OK and rsp.op in _RESULT_OPS:
        return None
    text = rsp.message.encode("utf-8")
    try:
        return _RSP_HEAD.pack(rsp.request_id, rsp.op, rsp.status, len(text)) + text
    except struct.error:
        return None


def encode_body(msg: Message) -> bytes:
    """The payload bytes of a message."""
    if isinstance(msg, Telemetry):
        return snapshot_payload(msg.snapshot)
    if isinstance(msg, Event):
        return event_payload(msg)
    if isinstance(msg, Response):
        fast = response_payload(msg)
        if fast is not None:
            return fast
    return frames.COMPILED_BODIES[msg.TYPE].build(to_container(msg))


def encode(msg: Message) -> bytes:
    """A complete frame. Raises ValueError (never FrameError) for a message that cannot be sent."""
    try:
        payload = encode_body(msg)
    except (c.ConstructError, KeyError, TypeError, struct.error, OverflowError) as e:
        raise ValueError(f"cannot encode {type(msg).__name__}: {e}") from e
    # AUTH is the sealing's (protocol.auth): a message decoded from a sealed frame encodes plain
    return frame_bytes(msg.TYPE, msg.node_id, msg.seq, msg.timestamp_ns, msg.flags & ~_AUTH, payload)


# --- decode -------------------------------------------------------------------------------------


def _typed(msg_type: MsgType, body: Any, header: dict[str, int]) -> Message:
    cls = MESSAGE_TYPES[msg_type]
    msg = from_container(cls, body, **header)
    if isinstance(msg, Command):
        try:
            op = Op(msg.op)
        except ValueError:
            raise FieldValueError("op", int(msg.op), "not a known Op") from None
        arg_type = ARG_TYPES.get(op)
        args = from_container(arg_type, msg.args) if arg_type is not None else None
        return Command(**header, request_id=msg.request_id, op=op, args=args)
    if isinstance(msg, Response):
        try:
            response_op: int = Op(msg.op)
        except ValueError:
            response_op = int(msg.op)
        result_type = RESULT_TYPES.get(response_op) if isinstance(response_op, Op) else None
        data = None
        if msg.data is not None and result_type is not None:
            data = from_container(result_type, msg.data)
        return Response(
            **header,
            request_id=msg.request_id,
            op=response_op,
            status=msg.status,
            message=msg.message,
            data=data,
        )
    return msg


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Decode one frame; raises FrameError with a reason code for anything else."""
    try:
        return _decode(data)
    except FrameError:
        raise
    except Exception as e:
        # a decoder bug: the error says so in plain words (the exception is chained for a debugger)
        raise FrameError(Reason.BAD_FIELD, "undecodable: a check the decoder does not have", unforeseen=True) from e


class Envelope(NamedTuple):
    """A frame whose envelope (checks 1 to 6) holds: its header fields and its undecoded payload."""

    msg_type: int
    flags: int
    node_id: int
    seq: int
    timestamp_ns: int
    payload: memoryview


def envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """Checks 1 to 6 of :func:`decode` (length, magic, version, declared length both ways, CRC) and nothing
    more; FrameError for a frame that fails one. For readers that decode payloads in bulk."""
    n = len(data)
    if n < HEADER_SIZE + CRC_SIZE:
        raise FrameError(Reason.TRUNCATED, f"{n} bytes, an empty frame has {HEADER_SIZE + CRC_SIZE}")
    magic, version, msg_type, flags, node_id, seq, ts, plen = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise FrameError(Reason.BAD_MAGIC, f"magic {bytes(magic).hex()} is not {MAGIC.hex()}")
    if version != VERSION:
        raise FrameError(Reason.UNSUPPORTED_VERSION, f"version {version}, this decoder speaks {VERSION}")
    end = HEADER_SIZE + plen + CRC_SIZE  # the CRC's end; an authentication trailer may follow
    need = end + (AUTH_TRAILER_SIZE if flags & _AUTH else 0)
    if n < need:
        raise FrameError(Reason.TRUNCATED, f"{n} bytes, the header announces {need}")
    if n > need:
        raise FrameError(Reason.TRAILING_BYTES, f"{n - need} bytes after the frame's {need}")
    view = memoryview(data)
    (crc,) = _CRC.unpack_from(data, end - CRC_SIZE)
    calc = zlib.crc32(view[: end - CRC_SIZE])
    if crc != calc:
        raise FrameError(Reason.BAD_CRC, f"crc {crc:08x}, computed {calc:08x}")
    return Envelope(msg_type, flags, node_id, seq, ts, view[HEADER_SIZE : end - CRC_SIZE])


def request_id(data: bytes | bytearray | memoryview) -> int | None:
    """The request id of a COMMAND or RESPONSE frame whose envelope holds, else None (a link
    binding matches responses to requests by it: :attr:`Transport.correlate`)."""
    try:
        env = envelope(data)
    except FrameError:
        return None
    if env.msg_type not in (MsgType.COMMAND, MsgType.RESPONSE) or len(env.payload) < 4:
        return None
    return int.from_bytes(env.payload[:4], "little")  # frames.Command and frames.Response begin so


def answerable(node: int, data: bytes | bytearray | memoryview) -> bool:
    """Whether ``node`` answers this frame on its command channel: a COMMAND frame that names it,
    decodable or not, as long as its request id can be read (a node answers a frame it rejects when
    it can read that much; frames of another type or for another node, and frames whose header does
    not hold, go unanswered: docs/protocol.md). For :attr:`Transport.answerable`."""
    try:
        msg = decode(data)
    except FrameError as e:
        return e.msg_type == MsgType.COMMAND and e.request_id is not None and e.node_id == node
    return isinstance(msg, Command) and msg.node_id == node


def command_op(data: bytes | bytearray | memoryview) -> int | None:
    """The operation of a COMMAND frame whose envelope holds (checks 1 to 6), else None: what a
    link layer may look at before the frame is decoded."""
    try:
        env = envelope(data)
    except FrameError:
        return None
    if env.msg_type != MsgType.COMMAND or len(env.payload) < 6:
        return None
    return int.from_bytes(env.payload[4:6], "little")  # after request_id u32 (frames.Command)


def _misfit(mtype: MsgType, payload: bytes) -> str:
    """Why a payload does not fit its layout, in plain words: the field it ends in, or how many
    bytes are left over (the declaration parsed again, uncompiled, for construct's field path)."""
    head = f"{mtype.name} payload of {len(payload)} bytes"
    try:
        frames.BODIES[mtype].parse(payload)
    except c.TerminatedError:
        return f"{head} has bytes after its last field"
    except c.StreamError as e:
        field = (e.path or "").replace("(parsing)", "").strip(" ->").replace(" -> ", ".")
        return f"{head} ends inside field '{field}'" if field else f"{head} is too short"
    except c.ConstructError:
        pass
    return f"{head} does not fit its layout"


def _field_path(path: str) -> str:
    """construct's parse path (``(parsing) -> args -> target``) as a field name (``args.target``)."""
    parts = [p.strip() for p in path.replace("(parsing)", "").split("->")]
    return ".".join(p for p in parts if p and p != "items")


def _bad_text(mtype: MsgType, payload: bytes) -> str:
    """Which text field of a payload is not UTF-8: the declaration parsed again, uncompiled, and
    the parse path of the string adapter that failed read from the traceback (construct 2.10's
    StringError carries no path, and the compiled parser raises Python's UnicodeDecodeError)."""
    try:
        frames.BODIES[mtype].parse(payload)
    except (UnicodeDecodeError, c.StringError) as e:
        tb = e.__traceback__
        path = ""
        while tb is not None:
            found = tb.tb_frame.f_locals.get("path")
            if isinstance(found, str):
                path = found
            tb = tb.tb_next
        field = _field_path(path)
        return f"field {field!r}: not valid UTF-8" if field else "a text field is not valid UTF-8"
    except Exception:  # noqa: BLE001 - the compiled parser's verdict stands
        pass
    return "a text field is not valid UTF-8"


def _misfield(mtype: MsgType, payload: bytes, error: Exception) -> str:
    """A field whose value the format does not allow, named by construct's path where it has one."""
    path = getattr(error, "path", None)
    if not path:
        try:
            frames.BODIES[mtype].parse(payload)
        except c.ConstructError as e:
            path = e.path
        except Exception:  # noqa: BLE001 - the first verdict stands
            pass
    field = _field_path(path or "")
    return (
        f"field {field!r}: a value the format does not allow"
        if field
        else "payload holds a value the format does not allow"
    )


def _decode(data: bytes | bytearray | memoryview) -> Message:
    msg_type, flags, node_id, seq, ts, body = envelope(data)
    plen = len(body)
    known: dict[str, Any] = {"msg_type": msg_type, "node_id": node_id, "seq": seq}
    try:
        mtype = MsgType(msg_type)
    except ValueError:
        raise FrameError(Reason.UNKNOWN_TYPE, f"message type {msg_type}", **known) from None
    if mtype is MsgType.COMMAND and plen >= _REQ.size:
        known["request_id"], known["op"] = _REQ.unpack_from(data, HEADER_SIZE)
    if flags & ~KNOWN_FLAGS:
        raise FrameError(Reason.BAD_FIELD, f"reserved flag bits {flags & ~KNOWN_FLAGS:#04x} set", **known)
    header = dict(node_id=node_id, seq=seq, timestamp_ns=ts, flags=flags)
    if mtype is MsgType.COMMAND and plen == _REQ.size and known["op"] in _ARGLESS:
        # a command without arguments (PING, STATUS, ...): what the declaration parses, without it (tested)
        return Command(**header, request_id=known["request_id"], op=_ARGLESS[known["op"]], args=None)
    payload = bytes(body)
    try:
        if mtype is MsgType.TELEMETRY:
            return Telemetry(**header, snapshot=snapshot_from_payload(payload))
        body = frames.COMPILED_BODIES[mtype].parse(payload)
        return _typed(mtype, body, header)
    except FrameError as e:
        raise FrameError(e.reason, e.detail, **known) from None
    except (c.StreamError, c.TerminatedError, struct.error):  # compiled parsers raise struct.error
        raise FrameError(Reason.LENGTH_MISMATCH, _misfit(mtype, payload), **known) from None
    except FieldValueError as e:
        raise FrameError(Reason.BAD_FIELD, f"{mtype.name} {e}", **known) from None
    except UnicodeDecodeError:
        raise FrameError(Reason.BAD_FIELD, f"{mtype.name} {_bad_text(mtype, payload)}", **known) from None
    except (c.ConstructError, ValueError, TypeError, KeyError, IndexError, OverflowError) as e:
        # an array count that contradicts the payload, a constant that differs (SAMPLES' layout) ...
        raise FrameError(Reason.BAD_FIELD, f"{mtype.name} {_misfield(mtype, payload, e)}", **known) from None
