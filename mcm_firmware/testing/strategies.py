"""Hypothesis strategies derived from the frame declarations, and mutators of frames.

:func:`messages` walks the construct declaration of a message type (``protocol.frames.BODIES``)
together with the type hints of its typed class (``protocol.messages``) and draws a valid message:
integers within their field's width, floats of the field's precision, UTF-8 text that fits its
count byte, arrays sized by their count fields, enum fields from their enum, the cases of a
``Switch`` keyed by an earlier field, ``If`` branches by their condition. A new message type or
field is fuzzed without new code here.

:data:`MUTATIONS` are the ways a frame goes wrong on the wire; :func:`malformed` draws one
applied to a valid frame. Each says what the decoder must answer (a set of reasons), so a
campaign can tell an expected rejection from a bug.
"""

from __future__ import annotations

import re
import struct
import typing
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal, cast

import construct as c
from hypothesis import strategies as st

from ..protocol import Command, FrameFlags, Message, MsgType, Reason, decode, frame_bytes, frames
from ..protocol.frames import CRC_SIZE, HEADER_SIZE, KNOWN_FLAGS, MAX_PAYLOAD
from ..protocol.messages import MESSAGE_TYPES
from ..protocol.ops import ARG_TYPES, RESULT_TYPES, Op
from ..protocol.vocabulary import MESSAGE_FLAGS

MAX_ITEMS = 6
"""Arrays drawn hold at most this many items (the count fields allow far more)."""

_THIS = re.compile(r"^this\['(\w+)'\]$")
# The Switch fields whose case decides the typed class of their value.
_SWITCH_TYPES: dict[str, dict[Any, type]] = {"args": dict(ARG_TYPES), "data": dict(RESULT_TYPES)}


def _hints(cls: type | None) -> dict[str, Any]:
    return typing.get_type_hints(cls) if cls is not None else {}


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, IntEnum)


def _element(tp: Any) -> Any:
    """The item type of ``tuple[X, ...]``, else None."""
    return typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None


def _format(fmt: str, hint: Any, keys: frozenset[int] = frozenset()) -> st.SearchStrategy[Any]:
    code = fmt[-1]
    if code in "fde":
        widths: dict[str, Literal[16, 32, 64]] = {"e": 16, "f": 32, "d": 64}
        width = widths[code]
        # anything the width holds, and often a plain magnitude, where set-points and limits live
        return st.one_of(
            st.floats(width=width, allow_nan=False), st.floats(-1e4, 1e4, width=width).map(lambda x: float(round(x)))
        )
    size = struct.calcsize(fmt)
    if _is_enum(hint):
        return st.sampled_from([int(v) for v in hint])
    if code.islower():
        bits = 8 * size - 1
        return st.integers(-(2**bits), 2**bits - 1)
    anything = st.integers(0, 2 ** (8 * size) - 1)
    # a field that keys a Switch: mostly its cases, so that every case is reached
    return st.one_of(st.sampled_from(sorted(keys)), anything) if keys else anything


def _text(max_bytes: int = 255) -> st.SearchStrategy[str]:
    return st.text(max_size=max_bytes // 4 + 8).filter(lambda s: len(s.encode("utf8")) <= max_bytes)


def _switch_keys(con: c.Struct) -> dict[str, frozenset[int]]:
    """Fields that key a Switch of the same struct, with the Switch's case keys."""
    out: dict[str, frozenset[int]] = {}
    for sub in con.subcons:
        inner = getattr(sub, "subcon", None)
        while isinstance(inner, c.IfThenElse):
            inner = inner.thensubcon
        if isinstance(inner, c.Switch):
            m = _THIS.match(repr(inner.keyfunc))
            if m:
                out[m.group(1)] = frozenset(int(k) for k in inner.cases)
    return out


def _count_fields(con: c.Struct) -> set[str]:
    """Names of fields that size an Array of the same struct (``Array(this.n_x, ...)``)."""
    out = set()
    for sub in con.subcons:
        inner = getattr(sub, "subcon", None)
        if isinstance(inner, c.Array):
            m = _THIS.match(repr(inner.count))
            if m:
                out.add(m.group(1))
    return out


def container(con: c.Construct, cls: Any = None) -> st.SearchStrategy[Any]:
    """A value construct can build with ``con``; ``cls`` is the typed class (for enum hints)."""
    if isinstance(con, c.Struct):
        return _struct(con, cls)
    if isinstance(con, c.Renamed):
        return container(con.subcon, cls)
    if isinstance(con, c.FormatField):
        return _format(con.fmtstr, cls)
    if isinstance(con, c.StringEncoded):
        return _text()
    if isinstance(con, c.FocusedSeq):  # PrefixedArray: a count (rebuilt) and the items
        items = next(s for s in con.subcons if s.name == con.parsebuildfrom).subcon
        count = next(s for s in con.subcons if s.name != con.parsebuildfrom).subcon
        width = count.subcon.sizeof() if isinstance(count, c.Rebuild) else 1
        return st.lists(container(items.subcon, _element(cls)), max_size=min(MAX_ITEMS, 2 ** (8 * width) - 1))
    raise TypeError(f"no strategy for {type(con).__name__} (teach testing/strategies.py)")


@st.composite
def _struct(draw: Callable[..., Any], con: c.Struct, cls: Any) -> dict[str, Any]:
    hints = _hints(cls) if cls is not None and not _is_enum(cls) else {}
    counts = _count_fields(con)
    keys = _switch_keys(con)
    ctx: dict[str, Any] = {}
    for sub in con.subcons:
        name = sub.name
        if name is None:  # Terminated, Const padding
            continue
        inner = sub.subcon
        if isinstance(inner, c.Const):
            continue
        hint = hints.get(name)
        if name in counts:
            ctx[name] = draw(st.integers(0, MAX_ITEMS))
        elif isinstance(inner, c.Array):
            n = inner.count(ctx) if callable(inner.count) else inner.count
            ctx[name] = draw(st.lists(container(inner.subcon, _element(hint)), min_size=n, max_size=n))
        elif isinstance(inner, (c.Switch, c.IfThenElse)):
            ctx[name] = draw(_branch(inner, ctx, name))
        elif name in keys and isinstance(inner, c.FormatField) and not _is_enum(hint):
            ctx[name] = draw(_format(inner.fmtstr, hint, keys[name]))
        else:
            ctx[name] = draw(container(inner, hint))
    return ctx


def _branch(con: c.Construct, ctx: dict[str, Any], name: str) -> st.SearchStrategy[Any]:
    if isinstance(con, c.IfThenElse):
        chosen = con.thensubcon if con.condfunc(ctx) else con.elsesubcon
        return _branch(chosen, ctx, name)
    if isinstance(con, c.Switch):
        key = con.keyfunc(ctx)
        case = con.cases.get(key, con.default)
        types_ = _SWITCH_TYPES.get(name, {})
        cls = next((t for k, t in types_.items() if int(k) == key), None)
        return _branch(case, ctx, name) if not isinstance(case, c.Struct) else container(case, cls)
    if isinstance(con, c.Pass.__class__):
        return st.none()
    return container(con)


# --- whole messages -------------------------------------------------------------------------------


def _header() -> st.SearchStrategy[dict[str, int]]:
    flags = [0] + [int(f) for f in FrameFlags if f & MESSAGE_FLAGS] + [MESSAGE_FLAGS]
    return st.fixed_dictionaries(
        {
            "node_id": st.integers(0, 2**32 - 1),
            "seq": st.integers(0, 2**32 - 1),
            "timestamp_ns": st.integers(0, 2**64 - 1),
            "flags": st.sampled_from(flags),
        }
    )


@st.composite
def _message(draw: Callable[..., Any], msg_type: MsgType) -> Message:
    cls = MESSAGE_TYPES[msg_type]
    body = draw(container(frames.BODIES[msg_type], cls))
    head = draw(_header())
    payload = frames.BODIES[msg_type].build(body)
    if len(payload) > MAX_PAYLOAD:
        from hypothesis import reject

        reject()
    return decode(frame_bytes(msg_type, head["node_id"], head["seq"], head["timestamp_ns"], head["flags"], payload))


NODE_SENT = (
    MsgType.BIRTH,
    MsgType.DEATH,
    MsgType.TELEMETRY,
    MsgType.RESPONSE,
    MsgType.EVENT,
    MsgType.LINK,
    MsgType.SAMPLES,
)
"""The message types nodes and carriers send and a node must refuse on its command channel."""


def messages(*types: MsgType) -> st.SearchStrategy[Message]:
    """Valid messages of the given types (all types when none is given)."""
    chosen = types or tuple(MESSAGE_TYPES)
    return st.one_of(*(_message(t) for t in chosen))


def commands(ops: tuple[Op, ...] | None = None) -> st.SearchStrategy[Command]:
    """Valid COMMAND messages (optionally only some operations)."""
    m = cast("st.SearchStrategy[Command]", messages(MsgType.COMMAND))  # a COMMAND message is a Command
    return m if ops is None else m.filter(lambda x: x.op in ops)


# --- malformed frames -----------------------------------------------------------------------------


def fix_crc(frame: bytes | bytearray) -> bytes:
    """The frame with its CRC recomputed over header and payload, so the body is reached."""
    body = bytes(frame[:-CRC_SIZE])
    return body + struct.pack("<I", zlib.crc32(body))


def _set_u16(frame: bytes, offset: int, value: int) -> bytes:
    b = bytearray(frame)
    struct.pack_into("<H", b, offset, value)
    return bytes(b)


_PLEN = HEADER_SIZE - 2  # offset of payload_len in the header
_VERSION, _TYPE = 2, 3


@dataclass(frozen=True)
class Mutation:
    name: str
    expect: frozenset[Reason | None]
    """What the decoder may answer; ``None`` in it: the frame may still decode (the node judges it)."""
    apply: Callable[[Callable[..., Any], bytes], bytes]


def _truncate(draw: Callable[..., Any], f: bytes) -> bytes:
    return f[: draw(st.integers(0, len(f) - 1))]


def _bit_flip(draw: Callable[..., Any], f: bytes) -> bytes:
    i = draw(st.integers(0, len(f) * 8 - 1))
    b = bytearray(f)
    b[i // 8] ^= 1 << (i % 8)
    return bytes(b)


def _bit_flip_fixed(draw: Callable[..., Any], f: bytes) -> bytes:
    i = draw(st.integers(HEADER_SIZE * 8, max(HEADER_SIZE * 8, (len(f) - CRC_SIZE) * 8 - 1)))
    if i >= (len(f) - CRC_SIZE) * 8:
        return fix_crc(f)
    return fix_crc(_bit_flip(lambda s: i, f))


def _length_lies(draw: Callable[..., Any], f: bytes) -> bytes:
    plen = len(f) - HEADER_SIZE - CRC_SIZE
    lie = draw(st.integers(0, MAX_PAYLOAD).filter(lambda n: n != plen))
    return _set_u16(f, _PLEN, lie)


def _length_lies_fixed(draw: Callable[..., Any], f: bytes) -> bytes:
    return fix_crc(_length_lies(draw, f))


def _unknown_type(draw: Callable[..., Any], f: bytes) -> bytes:
    known = {int(t) for t in MsgType}
    b = bytearray(f)
    b[_TYPE] = draw(st.integers(0, 255).filter(lambda t: t not in known))
    return fix_crc(b)


def _unknown_version(draw: Callable[..., Any], f: bytes) -> bytes:
    b = bytearray(f)
    b[_VERSION] = draw(st.integers(0, 255).filter(lambda v: v != frames.VERSION))
    return fix_crc(b)


def _oversized(draw: Callable[..., Any], f: bytes) -> bytes:
    """Extra bytes in the payload, the header's length and the CRC made to agree."""
    extra = draw(st.binary(min_size=1, max_size=64))
    payload = f[HEADER_SIZE:-CRC_SIZE] + extra
    if len(payload) > MAX_PAYLOAD:
        payload = payload[:MAX_PAYLOAD]
    b = f[:_PLEN] + struct.pack("<H", len(payload)) + payload
    return b + struct.pack("<I", zlib.crc32(b))


def _body_byte(draw: Callable[..., Any], f: bytes) -> bytes:
    """One payload byte replaced (an enum, a count, a length inside the body), CRC fixed."""
    if len(f) <= HEADER_SIZE + CRC_SIZE:
        return fix_crc(f)
    i = draw(st.integers(HEADER_SIZE, len(f) - CRC_SIZE - 1))
    b = bytearray(f)
    b[i] = draw(st.integers(0, 255))
    return fix_crc(b)


def _reserved_flags(draw: Callable[..., Any], f: bytes) -> bytes:
    b = bytearray(f)
    b[4] |= draw(st.integers(1, 255).filter(lambda x: x & ~KNOWN_FLAGS)) & ~KNOWN_FLAGS & 0xFF
    return fix_crc(b)


_ANY = frozenset(Reason)
MUTATIONS: tuple[Mutation, ...] = (
    Mutation("truncate", frozenset({Reason.TRUNCATED, Reason.BAD_CRC}), _truncate),
    Mutation("bit-flip", _ANY, _bit_flip),
    Mutation("bit-flip-crc-fixed", _ANY | {None}, _bit_flip_fixed),
    Mutation("length-lies", frozenset({Reason.TRUNCATED, Reason.TRAILING_BYTES}), _length_lies),
    Mutation("length-lies-crc-fixed", frozenset({Reason.TRUNCATED, Reason.TRAILING_BYTES}), _length_lies_fixed),
    Mutation("unknown-type", frozenset({Reason.UNKNOWN_TYPE}), _unknown_type),
    Mutation("unknown-version", frozenset({Reason.UNSUPPORTED_VERSION}), _unknown_version),
    Mutation("oversized-payload", frozenset({Reason.LENGTH_MISMATCH, Reason.BAD_FIELD}) | {None}, _oversized),
    Mutation("body-byte-crc-fixed", _ANY | {None}, _body_byte),
    Mutation("reserved-flags", frozenset({Reason.BAD_FIELD}), _reserved_flags),
)
"""Ways a frame goes wrong; ``None`` in ``expect``: the mutated frame may still be valid."""


@st.composite
def malformed(draw: Callable[..., Any], base: st.SearchStrategy[Message] | None = None) -> tuple[str, bytes]:
    """(mutation name, bytes): a valid frame (of ``base``, default any message) made wrong."""
    from ..protocol import encode

    msg = draw(base if base is not None else messages())
    mutation = draw(st.sampled_from(MUTATIONS))
    return mutation.name, mutation.apply(draw, encode(msg))
