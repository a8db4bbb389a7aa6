"""Typed messages: what a decoder returns and an encoder takes.

Field names are those of the construct declarations in :mod:`.frames` and :mod:`.fields`; the
conversion between the two is generic (driven by type hints), so a field added to a declaration and
to its class needs no further code. Count fields (``n_dies`` ...) exist only on the wire. The
arguments and answers of commands are declared, bytes and types together, in :mod:`.ops`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple, cast

from .ops import Op
from .telemetry import Sample, Snapshot
from .vocabulary import (
    MODULE_SUBJECT,
    DeathReason,
    LinkCondition,
    MsgType,
    Severity,
    Status,
)


class FieldValueError(ValueError):
    """A decoded field holds a value the format does not allow (an unknown enum member ...)."""

    def __init__(self, field: str, value: Any, why: str) -> None:
        super().__init__(f"field {field!r}: {why} ({value!r})")
        self.field = field
        self.value = value


# --- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    """Header fields shared by every message."""

    TYPE: ClassVar[MsgType]
    node_id: int
    seq: int = 0
    timestamp_ns: int = 0
    flags: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Birth(Message):
    TYPE: ClassVar[MsgType] = MsgType.BIRTH
    profile: str
    firmware: str
    capabilities: int
    boot_count: int
    bdseq: int
    dies: int
    hbm_stacks: int
    pumps: int
    valves: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Death(Message):
    TYPE: ClassVar[MsgType] = MsgType.DEATH
    boot_count: int
    bdseq: int
    reason: DeathReason


@dataclass(frozen=True, slots=True, kw_only=True)
class Telemetry(Message):
    TYPE: ClassVar[MsgType] = MsgType.TELEMETRY
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Message):
    TYPE: ClassVar[MsgType] = MsgType.COMMAND
    request_id: int
    op: Op
    args: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Response(Message):
    TYPE: ClassVar[MsgType] = MsgType.RESPONSE
    request_id: int
    op: int  # an Op when the node knew the operation, else the raw number it was sent
    status: Status
    message: str = ""
    data: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Message):
    TYPE: ClassVar[MsgType] = MsgType.EVENT
    severity: Severity
    code: int  # an EventCode where known
    subject: int = MODULE_SUBJECT
    value: float = 0.0
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Samples(Message):
    """TELEMETRY with the high-rate samples taken since the previous frame (oldest first, one every
    ``period_us``); ``snapshot`` is as in TELEMETRY."""

    TYPE: ClassVar[MsgType] = MsgType.SAMPLES
    period_us: int
    samples: tuple[Sample, ...]
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRange:
    first: int
    last: int  # inclusive


@dataclass(frozen=True, slots=True, kw_only=True)
class Link(Message):
    """The state of a carrier link; ``node_id`` is the first node it carries, and the frame is
    retained on that node's ``link`` channel."""

    TYPE: ClassVar[MsgType] = MsgType.LINK
    link: str
    bdseq: int
    condition: LinkCondition
    ranges: tuple[NodeRange, ...]

    def carries(self, node: int) -> bool:
        return any(r.first <= node <= r.last for r in self.ranges)


MESSAGE_TYPES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls for cls in (Birth, Death, Telemetry, Command, Response, Event, Link, Samples)
}
HEADER_FIELDS = ("node_id", "seq", "timestamp_ns", "flags")


# --- generic conversion between typed values and construct containers ---------------------------


def _is_record(tp: Any) -> bool:
    return isinstance(tp, type) and (is_dataclass(tp) or (issubclass(tp, tuple) and hasattr(tp, "_fields")))


def _names(cls: type) -> list[str]:
    if is_dataclass(cls):
        names = [f.name for f in fields(cls)]
        if issubclass(cls, Message):
            names = [n for n in names if n not in HEADER_FIELDS]
        return names
    # _is_record: a record that is not a dataclass is a NamedTuple
    return list(cast("type[NamedTuple]", cls)._fields)


def to_container(obj: Any) -> Any:
    """A typed value as the dict construct builds from: enums as numbers, arrays with their
    ``n_<name>`` counts."""
    cls = type(obj)
    if not _is_record(cls):
        return obj
    out: dict[str, Any] = {}
    for name in _names(cls):
        value = getattr(obj, name)
        if isinstance(value, IntEnum):
            value = int(value)
        elif _is_record(type(value)):
            value = to_container(value)
        elif isinstance(value, (tuple, list)):
            out["n_" + name] = len(value)
            value = [to_container(v) for v in value]
        out[name] = value
    return out


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _enum_value(cls: type[IntEnum], name: str, raw: Any) -> IntEnum:
    try:
        return cls(int(raw))
    except (ValueError, TypeError):
        raise FieldValueError(name, raw, f"not a known {cls.__name__}") from None


def _converter(tp: Any, name: str) -> typing.Callable[[Any], Any]:
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, IntEnum):
        return lambda raw: _enum_value(tp, name, raw)
    if _is_record(tp):
        return lambda raw: from_container(tp, raw)
    if origin is tuple:
        item = _converter(typing.get_args(tp)[0], name)
        return lambda raw: tuple(item(v) for v in raw)
    if tp in (int, float, str):
        return tp
    if origin in (typing.Union, types.UnionType) or tp is Any:
        return lambda raw: raw
    raise TypeError(f"no converter for {tp!r} ({name})")


_CONVERTERS: dict[type, list[tuple[str, typing.Callable[[Any], Any]]]] = {}


def _converters(cls: type) -> list[tuple[str, typing.Callable[[Any], Any]]]:
    conv = _CONVERTERS.get(cls)
    if conv is None:
        hints = _hints(cls)
        conv = _CONVERTERS[cls] = [(n, _converter(hints[n], n)) for n in _names(cls)]
    return conv


def from_container(cls: type, container: Any, **extra: Any) -> Any:
    """Build ``cls`` from a parsed container; ``extra`` supplies header fields."""
    values = {name: conv(container[name]) for name, conv in _converters(cls)}
    values.update(extra)
    return cls(**values)
