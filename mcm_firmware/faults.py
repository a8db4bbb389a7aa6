"""The fault model: one description of every fault, used by the wire protocol (INJECT and
CLEAR_FAULT), the Python API, ``mcm-emu ctl NODE inject`` and scenario files.

A fault is a kind, a target naming what it hits (a pump, a valve, a sensor, an HBM stack or
address, or nothing for module-wide faults) and up to two numbers. Targets are text so that each
node resolves them against its own profile: ``pump-fail C`` on a two-pump module is refused with
a message naming the pumps it has.

======================  ==================  ==========================================  ============
kind                    target              value, value2                               clear
======================  ==================  ==========================================  ============
pump-fail               pump (A, B or 0..)  —                                           pump runs
pump-overcurrent        pump                —                                           normal draw
valve-stuck             valve (0..)         position % (default: where it is)           moves again
sensor-stuck            BANK:N              the value it reads                          healthy
sensor-drift            BANK:N              units per second                            healthy
sensor-noise            BANK:N              standard deviation                          healthy
sensor-dropout          BANK:N              probability a reading is lost (0..1)        healthy
sensor-failed           BANK:N              —                                           healthy
vrm-overcurrent         —                   current reads this many times (default 1.5)  normal
inlet-step              —                   °C added to the coolant inlet               0 °C
power-brake             —                   —                                           released
hbm-flip                word address        bits flipped (default 1); value2=1: stuck   stuck cells
hbm-device              stack               device number                               repaired
ce-storm                stack               single-bit upsets per second                stops
pcie-errors             —                   corrupted TLPs per second (each replayed);  clean link
                                            value2 uncorrectable errors per second
link-drop               [out|in|both]       probability (0..1)                          clean link
link-corrupt            [out|in|both]       probability (0..1)                          clean link
link-duplicate          [out|in|both]       probability (0..1)                          clean link
link-delay              [out|in|both]       seconds                                     clean link
link-reorder            [out|in|both]       jitter, seconds                             clean link
crash                   —                   reboot after this many seconds (0: never)   —
reboot                  —                   —                                           —
======================  ==================  ==========================================  ============

``BANK`` is one of ``die``, ``hbm``, ``flow`` (one per valve) and ``rpm`` (one per pump). A link
fault acts on the frames the node sends (``out``, the default), receives (``in``) or both; the
fault control plane (INJECT, CLEAR_FAULT, GET_FAULTS and their answers) passes by link faults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .protocol.vocabulary import FaultKind


class FaultError(ValueError):
    """A fault that cannot be described or applied; the message says why."""


def fault_kind(text: str) -> FaultKind:
    """The kind a label names (``pump-fail``); FaultError lists the known ones."""
    try:
        return FaultKind[text.strip().upper().replace("-", "_")]
    except KeyError:
        known = ", ".join(k.label for k in FaultKind)
        raise FaultError(f"unknown fault {text!r} (known: {known})") from None


SENSOR_BANKS = ("die", "hbm", "flow", "rpm")
DIRECTIONS = ("out", "in", "both")


@dataclass(frozen=True)
class Param:
    name: str
    lo: float = -math.inf
    hi: float = math.inf
    default: float | None = None  # None: required


@dataclass(frozen=True)
class Spec:
    target: str | None  # what the target names, or None for module-wide faults
    value: Param | None = None
    value2: Param | None = None
    clearable: bool = True
    default_target: str | None = None  # the target when none is given (None: one is required)


PROB = Param("probability", 0.0, 1.0)
SPECS: dict[FaultKind, Spec] = {
    FaultKind.PUMP_FAIL: Spec("pump"),
    FaultKind.PUMP_OVERCURRENT: Spec("pump"),
    FaultKind.VALVE_STUCK: Spec("valve", Param("position %", 0.0, 100.0, math.nan)),
    FaultKind.SENSOR_STUCK: Spec("sensor", Param("value")),
    FaultKind.SENSOR_DRIFT: Spec("sensor", Param("rate per second")),
    FaultKind.SENSOR_NOISE: Spec("sensor", Param("standard deviation", 0.0)),
    FaultKind.SENSOR_DROPOUT: Spec("sensor", PROB),
    FaultKind.SENSOR_FAILED: Spec("sensor"),
    FaultKind.VRM_OVERCURRENT: Spec(None, Param("current factor", 1.0, 10.0, 1.5)),
    FaultKind.INLET_STEP: Spec(None, Param("inlet offset °C", -30.0, 100.0)),
    FaultKind.POWER_BRAKE: Spec(None),
    FaultKind.HBM_FLIP: Spec("address", Param("bits", 1, 160, 1), Param("stuck (0 or 1)", 0, 1, 0)),
    FaultKind.HBM_DEVICE: Spec("stack", Param("device", 0, 255)),
    FaultKind.CE_STORM: Spec("stack", Param("upsets per second", 0.0, 1e5)),
    FaultKind.PCIE_ERRORS: Spec(
        None, Param("corrupted TLPs per second", 0.0, 1e5), Param("uncorrectable errors per second", 0.0, 1e3, 0.0)
    ),
    FaultKind.LINK_DROP: Spec("direction", PROB, default_target="out"),
    FaultKind.LINK_CORRUPT: Spec("direction", PROB, default_target="out"),
    FaultKind.LINK_DUPLICATE: Spec("direction", PROB, default_target="out"),
    FaultKind.LINK_DELAY: Spec("direction", Param("seconds", 0.0, 60.0), default_target="out"),
    FaultKind.LINK_REORDER: Spec("direction", Param("jitter seconds", 0.0, 60.0), default_target="out"),
    FaultKind.CRASH: Spec(None, Param("reboot after s (0: never)", 0.0, 1e6, 0.0), clearable=False),
    FaultKind.REBOOT: Spec(None, clearable=False),
}
assert set(SPECS) == set(FaultKind)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    target: str = ""
    value: float = math.nan
    value2: float = math.nan

    def __str__(self) -> str:
        parts = [self.kind.label]
        if self.target:
            parts.append(self.target)
        for v in (self.value, self.value2):
            if not math.isnan(v):
                parts.append(f"{v:g}")
        return " ".join(parts)


def _number(text: str, param: Param, kind: FaultKind) -> float:
    try:
        value = float(int(text, 0)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        raise FaultError(f"{kind.label}: {param.name} must be a number, got {text!r}") from None
    return check_param(kind, param, value)


def check_param(kind: FaultKind, param: Param, value: float) -> float:
    if math.isnan(value) and param.default is not None and math.isnan(param.default):
        return value
    if not math.isfinite(value) or not param.lo <= value <= param.hi:
        raise FaultError(f"{kind.label}: {param.name} must be within {param.lo:g}..{param.hi:g}, got {value:g}")
    return value


def make_fault(
    kind: FaultKind | str, target: str = "", value: float | None = None, value2: float | None = None
) -> Fault:
    """A fault with its parameters checked and defaults filled in (not yet against a profile)."""
    kind = fault_kind(kind) if isinstance(kind, str) else kind
    spec = SPECS[kind]
    if spec.target is None and target:
        raise FaultError(f"{kind.label} takes no target (got {target!r})")
    if spec.target is not None and not target:
        if spec.default_target is None:
            raise FaultError(f"{kind.label} needs a {spec.target}")
        target = spec.default_target
    if spec.target == "direction":
        target = link_direction(target)
    values = []
    for param, given in ((spec.value, value), (spec.value2, value2)):
        if param is None:
            if given is not None and not math.isnan(given):
                raise FaultError(f"{kind.label} takes no further number (got {given:g})")
            values.append(math.nan)
        elif given is None or math.isnan(given):
            if param.default is None:
                raise FaultError(f"{kind.label} needs a {param.name}")
            values.append(param.default)
        else:
            values.append(check_param(kind, param, float(given)))
    return Fault(kind, target, values[0], values[1])


def parse_fault(tokens: list[str]) -> Fault:
    """``KIND [TARGET] [VALUE] [VALUE2]`` as typed after ``ctl NODE inject``."""
    if not tokens:
        raise FaultError("inject needs a fault kind")
    kind = fault_kind(tokens[0])
    spec = SPECS[kind]
    rest = list(tokens[1:])
    target = ""
    if spec.target is not None:
        if spec.default_target is not None and (not rest or _looks_numeric(rest[0])):
            target = spec.default_target
        elif spec.target == "direction" and rest[0] not in DIRECTIONS:
            what = spec.value.name if spec.value is not None else "number"
            raise FaultError(f"{kind.label}: {rest[0]!r} is neither a direction (out, in, both) nor a {what}")
        elif not rest:
            raise FaultError(f"{kind.label} needs a {spec.target}")
        else:
            target = rest.pop(0)
    params = [p for p in (spec.value, spec.value2) if p is not None]
    if len(rest) > len(params):
        raise FaultError(f"{kind.label}: too many arguments ({' '.join(rest)})")
    nums = [_number(text, p, kind) for text, p in zip(rest, params, strict=False)]
    return make_fault(kind, target, *(nums + [None] * (2 - len(nums))))


def _looks_numeric(text: str) -> bool:
    try:
        float(int(text, 0)) if text.lower().startswith("0x") else float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class ClearSpec:
    kind: FaultKind | None  # None: every fault
    target: str = ""


def parse_clear(tokens: list[str]) -> ClearSpec:
    """``KIND [TARGET]`` or ``all`` as typed after ``ctl NODE clear-fault``."""
    if not tokens or len(tokens) > 2:
        raise FaultError("clear-fault takes KIND [TARGET] or all")
    if tokens[0].lower() == "all":
        if len(tokens) > 1:
            raise FaultError("clear-fault all takes no target")
        return ClearSpec(None)
    kind = fault_kind(tokens[0])
    if not SPECS[kind].clearable:
        raise FaultError(f"{kind.label} cannot be cleared")
    target = tokens[1] if len(tokens) > 1 else ""
    if target and SPECS[kind].target is None:
        raise FaultError(f"{kind.label} takes no target (got {target!r})")
    return ClearSpec(kind, target)


# --- resolving targets against a module ------------------------------------------------------------


def pump_index(target: str, names: list[str]) -> int:
    if target in names:
        return names.index(target)
    if target.isdigit() and int(target) < len(names):
        return int(target)
    raise FaultError(f"no pump {target} on this module (pumps: {', '.join(names)})")


def index_in(target: str, count: int, what: str) -> int:
    if target.isdigit() and int(target) < count:
        return int(target)
    raise FaultError(f"no {what} {target} on this module ({what}s 0..{count - 1})")


def sensor_of(target: str, counts: dict[str, int]) -> tuple[str, int]:
    bank, sep, idx = target.partition(":")
    if not sep or bank not in SENSOR_BANKS:
        raise FaultError(f"sensor must be BANK:N with BANK one of {', '.join(SENSOR_BANKS)} (got {target!r})")
    return bank, index_in(idx, counts[bank], f"{bank} sensor")


def link_direction(target: str) -> str:
    """``out``, ``in`` or ``both``: the frames a link fault acts on."""
    if target not in DIRECTIONS:
        raise FaultError(f"a link fault's direction is out, in or both (got {target!r})")
    return target


def address_of(target: str) -> int:
    try:
        return int(target, 0)
    except ValueError:
        raise FaultError(f"HBM address must be a number (0x... or decimal), got {target!r}") from None
