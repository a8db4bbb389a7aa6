"""The firmware's command handlers: what each operation of :mod:`mcm_firmware.protocol.ops` does
to a node.

A handler gets the node and the decoded command (its ``args`` typed by the operation's spec) and
returns the answer's data (None for none), or raises :class:`~.node.CommandError` with a status and
a message, having changed nothing. :data:`HANDLERS` is the command set a node runs; a test fails
when an operation has no handler.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ..control import dvfs
from ..faults import SPECS, ClearSpec, Fault, FaultError, FaultKind, make_fault
from ..protocol import Command, EventCode, Op, PowerLimitSource, RasResult, Severity, Status, StatusResult
from ..protocol.ops import FaultInForce, FaultList, StatsResult
from .injection import apply_fault, canonical_target, clear_faults
from .node import CommandError, Handler, Node

HANDLERS: dict[Op, Handler] = {}


def handler(op: Op) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if op in HANDLERS:
            raise TypeError(f"two handlers for {op.name}")
        HANDLERS[op] = fn
        return fn

    return register


@handler(Op.PING)
def _ping(node: Node, cmd: Command) -> None:
    pass


@handler(Op.STATUS)
def _status(node: Node, cmd: Command) -> StatusResult:
    return node.status()


@handler(Op.REBIRTH)
def _rebirth(node: Node, cmd: Command) -> None:
    node.rebirth()


@handler(Op.SET_POWER_CAP)
def _set_power_cap(node: Node, cmd: Command) -> None:
    """The host's in-band limit (``nvidia-smi -pl``); the lowest limit set is enforced."""
    _set_limit(node, PowerLimitSource.IN_BAND, cmd.args.watts, what="power cap", can_clear=False)


@handler(Op.SET_POWER_LIMIT)
def _set_power_limit(node: Node, cmd: Command) -> None:
    """A limit of one source, or (NaN) its clearing; the lowest limit set is enforced."""
    try:
        source = PowerLimitSource(cmd.args.source)
    except ValueError:
        source = None
    if source not in (PowerLimitSource.IN_BAND, PowerLimitSource.OUT_OF_BAND):
        raise CommandError(
            Status.BAD_ARGUMENT,
            f"power limit source {cmd.args.source} is not one that can be set (1 in-band, 2 out-of-band)",
        )
    _set_limit(node, source, cmd.args.watts, what=f"{source.label} power limit", can_clear=True)


def _set_limit(node: Node, source: PowerLimitSource, watts: float, *, what: str, can_clear: bool) -> None:
    pw = node.profile.power
    clear = can_clear and math.isnan(watts)
    if not clear and (not math.isfinite(watts) or not pw.min_cap_w <= watts <= pw.max_cap_w):
        raise CommandError(Status.BAD_ARGUMENT, f"{what} {watts:g} W outside {pw.min_cap_w:g}..{pw.max_cap_w:g} W")
    st, row = node.shard.dvfs, node.row
    limits = st.limit_in_band if source is PowerLimitSource.IN_BAND else st.limit_out_of_band
    limits[row] = math.nan if clear else watts
    dvfs.enforce_limits(node.shard.dvfs_cfg, st, row)
    cap, by = float(st.cap_w[row]), PowerLimitSource(int(st.cap_source[row])).label
    said = f"{source.label} power limit cleared" if clear else f"{what} {watts:g} W"
    node.emit_event(Severity.NOTICE, EventCode.POWER_CAP_SET, value=cap, text=f"{said}; {cap:g} W enforced ({by})")


@handler(Op.LOCK_CLOCKS)
def _lock_clocks(node: Node, cmd: Command) -> None:
    mhz = cmd.args.mhz
    lo, hi = node.profile.min_mhz, node.profile.max_mhz
    if not lo <= mhz <= hi:
        raise CommandError(Status.BAD_ARGUMENT, f"clock {mhz} MHz outside {lo}..{hi} MHz")
    node.shard.dvfs.lock_mhz[node.row] = mhz
    node.emit_event(Severity.NOTICE, EventCode.CLOCKS_LOCKED, value=mhz, text=f"clocks locked at {mhz} MHz")


@handler(Op.RESET_CLOCKS)
def _reset_clocks(node: Node, cmd: Command) -> None:
    node.shard.dvfs.lock_mhz[node.row] = 0
    node.emit_event(Severity.NOTICE, EventCode.CLOCKS_RESET, text="application clocks reset")


@handler(Op.SET_VALVE)
def _set_valve(node: Node, cmd: Command) -> None:
    a = cmd.args
    valves = node.profile.cooling.valves
    if not 0 <= a.valve < valves:
        raise CommandError(Status.BAD_ARGUMENT, f"no valve {a.valve} (valves 0..{valves - 1})")
    manual = node.shard.cool.manual
    if a.auto:
        manual[node.row, a.valve] = math.nan
        node.emit_event(
            Severity.NOTICE, EventCode.VALVE_AUTO, subject=a.valve, text=f"valve {a.valve} under automatic control"
        )
        return
    if not (math.isfinite(a.pct) and 0.0 <= a.pct <= 100.0):
        raise CommandError(Status.BAD_ARGUMENT, f"valve position {a.pct:g} % outside 0..100 %")
    manual[node.row, a.valve] = a.pct
    node.emit_event(
        Severity.WARNING,
        EventCode.VALVE_MANUAL,
        subject=a.valve,
        value=a.pct,
        text=f"valve {a.valve} held at {a.pct:g} % by the operator",
    )


@handler(Op.RAS)
def _ras(node: Node, cmd: Command) -> RasResult:
    return node.ras_result()


@handler(Op.CLEAR_RAS)
def _clear_ras(node: Node, cmd: Command) -> None:
    node.shard.ras[node.row].clear()
    node.shard.ras_sync(node.row)
    node.emit_event(Severity.NOTICE, EventCode.RAS_CLEARED, text="RAS error counters cleared")


@handler(Op.RESET)
def _reset(node: Node, cmd: Command) -> None:
    ctl = node.shard.ras[node.row]
    events = ctl.reset()
    node.shard.ras_events(node.row, events)
    node.emit_event(
        Severity.NOTICE, EventCode.RESET_DONE, value=len(events), text=f"reset: {len(events)} pending row(s) remapped"
    )


@handler(Op.INJECT)
def _inject(node: Node, cmd: Command) -> None:
    a = cmd.args
    try:
        kind = FaultKind(a.kind)
        fault = apply_fault(node, make_fault(kind, a.target, a.value, a.value2))
    except ValueError as e:  # FaultError, or an unknown kind number
        raise CommandError(
            Status.BAD_ARGUMENT, str(e) if isinstance(e, FaultError) else f"unknown fault kind {a.kind}"
        ) from None
    node.emit_event(Severity.WARNING, EventCode.FAULT_INJECTED, subject=int(kind), text=str(fault))


@handler(Op.CLEAR_FAULT)
def _clear_fault(node: Node, cmd: Command) -> None:
    """Clear the injected faults of a kind (on a target); BAD_ARGUMENT when none of them is in
    force, naming the faults that are. ``all`` (kind 0) clears whatever is in force, even nothing."""
    a = cmd.args
    try:
        kind = None if a.kind == 0 else FaultKind(a.kind)
        if kind is not None and not SPECS[kind].clearable:
            raise FaultError(f"{kind.label} cannot be cleared")
        cleared = clear_faults(node, ClearSpec(kind, a.target))
        if kind is not None and not cleared:
            wanted = Fault(kind, canonical_target(node, Fault(kind, a.target)) if a.target else "")
            in_force = ", ".join(str(f) for f in node.faults.values()) or "none"
            raise FaultError(f"no fault '{wanted}' in force (in force: {in_force})")
    except ValueError as e:
        raise CommandError(
            Status.BAD_ARGUMENT, str(e) if isinstance(e, FaultError) else f"unknown fault kind {a.kind}"
        ) from None
    what = ", ".join(str(f) for f in cleared) or "nothing"
    node.emit_event(Severity.NOTICE, EventCode.FAULT_CLEARED, subject=a.kind, text=f"cleared {what}")


@handler(Op.GET_FAULTS)
def _get_faults(node: Node, cmd: Command) -> FaultList:
    return FaultList(
        faults=tuple(
            FaultInForce(kind=f.kind, target=f.target, value=f.value, value2=f.value2)
            for f in list(node.faults.values())[:255]
        )
    )


@handler(Op.STATS)
def _stats(node: Node, cmd: Command) -> StatsResult:
    return node.stats()
