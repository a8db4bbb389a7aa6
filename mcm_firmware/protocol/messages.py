"""Typed messages: what a decoder returns and an encoder takes.

Field names are those of the construct declarations in :mod:`frames`; the conversion between the
two is generic (driven by dataclass type hints), so a field added to a declaration and to its
dataclass needs no further code. Count fields (``n_dies`` ...) exist only on the wire.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from enum import IntEnum
from typing import Any, ClassVar, NamedTuple

from .frames import (
    CoolingMode,
    DeathReason,
    MsgType,
    NodeState,
    Op,
    Severity,
    Status,
)

MODULE_SUBJECT = 0xFFFF  # Event.subject when an event concerns the whole module


class FieldValueError(ValueError):
    """A decoded field holds a value the format does not allow (an unknown enum member ...)."""

    def __init__(self, field: str, value: Any, why: str) -> None:
        super().__init__(f"field {field!r}: {why} ({value!r})")
        self.field = field
        self.value = value


# --- body parts ---------------------------------------------------------------------------------
# Telemetry parts are NamedTuples: immutable, cheap to build on the hot path, and positional in the
# declaration's field order (checked at import by the codec).


class DieTelemetry(NamedTuple):
    temp_c: float
    power_w: float
    clock_mhz: int
    voltage_mv: int
    reasons: int
    pstate: int
    util_pct: int


class HbmTelemetry(NamedTuple):
    temp_c: float
    ce: int
    ue: int


class PumpTelemetry(NamedTuple):
    rpm: int
    flags: int


class ValveTelemetry(NamedTuple):
    position_pct: float
    flags: int


class Snapshot(NamedTuple):
    uptime_ns: int
    state: NodeState
    mode: CoolingMode
    flags: int
    power_w: float
    power_cap_w: float
    inlet_c: float
    outlet_c: float
    flow_lpm: float
    vrm_current_a: float
    rx_rejected: int
    recovery_action: int
    dies: tuple[DieTelemetry, ...]
    hbm: tuple[HbmTelemetry, ...]
    pumps: tuple[PumpTelemetry, ...]
    valves: tuple[ValveTelemetry, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusResult:
    profile: str
    firmware: str
    boot_count: int
    tx_seq: int
    rx_frames: int
    tx_frames: int
    tx_dropped: int
    reconnects: int
    link_util_permille: int
    pump_names: tuple[str, ...]
    faults: tuple[str, ...]
    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class PowerCapArgs:
    watts: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LockClocksArgs:
    mhz: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetValveArgs:
    valve: int
    auto: int  # 1: return the valve to automatic control
    pct: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectArgs:
    kind: int  # mcm_firmware.faults.FaultKind
    target: str
    value: float
    value2: float


@dataclass(frozen=True, slots=True, kw_only=True)
class ClearFaultArgs:
    kind: int  # 0: every fault
    target: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StackErrors:
    ce: tuple[int, ...]  # per channel
    ue: tuple[int, ...]
    failed_devices: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PendingRow:
    stack: int
    channel: int
    bank: int
    row: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RasResult:
    ecc: int  # 0 SECDED, 1 CHIPKILL
    flags: int  # bit 0 REMAP_PENDING, bit 1 REMAP_FAILED, bit 2 CE_STORM
    recovery_action: int
    ce: int
    ue: int
    remapped_rows: int
    spare_rows_free: int
    scrub_passes: int
    scrubbed_words: int
    stacks: tuple[StackErrors, ...]
    pending: tuple[PendingRow, ...]


# Argument and result types per operation; operations absent here carry none.
ARG_TYPES: dict[Op, type] = {
    Op.SET_POWER_CAP: PowerCapArgs,
    Op.LOCK_CLOCKS: LockClocksArgs,
    Op.SET_VALVE: SetValveArgs,
    Op.INJECT: InjectArgs,
    Op.CLEAR_FAULT: ClearFaultArgs,
}
RESULT_TYPES: dict[Op, type] = {Op.STATUS: StatusResult, Op.RAS: RasResult}


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


MESSAGE_TYPES: dict[MsgType, type[Message]] = {
    cls.TYPE: cls for cls in (Birth, Death, Telemetry, Command, Response, Event)
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
    return list(cls._fields)


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
