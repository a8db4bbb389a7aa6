"""Command operations: each declared once, here.

An operation is its number (:class:`Op`) and an :class:`OpSpec`: the typed class of its arguments
and of its answer, whose fields carry their own ``construct`` declarations (so one line declares a
field's name, Python type and bytes), the words ``mcm-emu ctl`` shows for it, and the example
arguments of its golden frame. Everything else is derived from this table: the COMMAND and
RESPONSE bodies in :mod:`.frames`, the codec's typed decoding, the Hypothesis strategies, the ctl
parser for plain arguments, the golden frames of :mod:`mcm_firmware.testing.golden`. The node's
handlers (:mod:`mcm_firmware.runtime.handlers`) and the ctl views (:mod:`mcm_firmware.host.commands`)
are keyed by :class:`Op`; a test fails when an operation lacks either, a golden frame or a row in
``docs/protocol.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any, TypeVar, dataclass_transform

import construct as c

from . import fields as f
from .telemetry import Snapshot
from .vocabulary import FaultKind


class Op(IntEnum):
    """Command operations."""

    PING = 0x0001
    STATUS = 0x0002
    REBIRTH = 0x0003
    STATS = 0x0004
    SET_POWER_CAP = 0x0010
    LOCK_CLOCKS = 0x0011
    RESET_CLOCKS = 0x0012
    SET_VALVE = 0x0013
    SET_POWER_LIMIT = 0x0014
    RAS = 0x0020
    CLEAR_RAS = 0x0021
    RESET = 0x0022
    INJECT = 0x0030
    CLEAR_FAULT = 0x0031
    GET_FAULTS = 0x0032

    @property
    def label(self) -> str:
        """The command's name on the command line: ``set-power-cap``."""
        return self.name.lower().replace("_", "-")


def wire(subcon: c.Construct) -> Any:
    """A field whose bytes ``subcon`` declares (required, keyword-only)."""
    return dataclasses.field(metadata={"wire": subcon})


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(wire,))
def record(cls: type[_T]) -> type[_T]:
    """A typed class of :func:`wire` fields: frozen, slotted, keyword-only."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


@cache
def layout(cls: type) -> c.Struct:
    """The construct Struct of a class declared with :func:`wire` fields, in field order."""
    return c.Struct(*(fld.name / fld.metadata["wire"] for fld in dataclasses.fields(cls)))


# --- arguments ------------------------------------------------------------------------------------


@record
class PowerCapArgs:
    watts: float = wire(c.Float32l)


@record
class PowerLimitArgs:
    """A power limit of one source (``PowerLimitSource``: 1 in band, 2 out of band); NaN watts
    clears that source's limit."""

    source: int = wire(c.Int8ul)  # PowerLimitSource
    watts: float = wire(c.Float32l)  # NaN: clear


@record
class LockClocksArgs:
    mhz: int = wire(c.Int16ul)


@record
class SetValveArgs:
    valve: int = wire(c.Int8ul)
    auto: int = wire(c.Int8ul)  # 1: back to automatic control (pct ignored)
    pct: float = wire(c.Float32l)


@record
class InjectArgs:
    """A fault of :mod:`mcm_firmware.faults`: kind, target text, two numbers (NaN: not given)."""

    kind: int = wire(c.Int8ul)  # FaultKind
    target: str = wire(f.Text8)
    value: float = wire(c.Float64l)
    value2: float = wire(c.Float64l)


@record
class ClearFaultArgs:
    kind: int = wire(c.Int8ul)  # 0: every fault
    target: str = wire(f.Text8)  # empty: every target of the kind


# --- answers --------------------------------------------------------------------------------------


@record
class PowerLimits:
    """The power limits of every source and their constraints (NVML: the default, the power
    management limit set in band, the limit the enforced one also takes in, min and max)."""

    default_w: float = wire(c.Float32l)  # the board's default (the profile's default cap)
    in_band_w: float = wire(c.Float32l)  # set by the host (SET_POWER_CAP); NaN: none, the default holds
    out_of_band_w: float = wire(c.Float32l)  # set by the BMC; NaN: none
    min_w: float = wire(c.Float32l)  # the range a limit may take
    max_w: float = wire(c.Float32l)


@record
class StatusResult:
    profile: str = wire(f.Text8)
    firmware: str = wire(f.Text8)
    boot_count: int = wire(c.Int32ul)
    tx_seq: int = wire(c.Int32ul)
    rx_frames: int = wire(c.Int32ul)
    tx_frames: int = wire(c.Int32ul)
    tx_dropped: int = wire(c.Int32ul)
    reconnects: int = wire(c.Int32ul)
    link_util_permille: int = wire(c.Int16ul)  # share of a rate-limited link (serial) in use
    pump_names: tuple[str, ...] = wire(c.PrefixedArray(c.Int8ul, f.Text8))
    faults: tuple[str, ...] = wire(c.PrefixedArray(c.Int8ul, f.Text8))  # in force: "kind target value"
    power_limits: PowerLimits = wire(layout(PowerLimits))  # the enforced one, the lowest, is the snapshot's cap
    snapshot: Snapshot = wire(f.Snapshot)


@record
class LinkFaultCounts:
    """What the emulated link faults (``link-*``) did to the frames of one direction, since boot:
    cumulative, a cleared fault's counts stay."""

    dropped: int = wire(c.Int32ul)
    corrupted: int = wire(c.Int32ul)  # one bit flipped
    duplicated: int = wire(c.Int32ul)
    delayed: int = wire(c.Int32ul)  # copies held back by a delay or jitter


@record
class StatsResult:
    """How the node and the emulator around it keep their rates (the run's self-measurement)."""

    tlm_due: int = wire(c.Int32ul)  # telemetry frames due since boot
    tlm_sent: int = wire(c.Int32ul)  # handed to the link
    tlm_dropped: int = wire(c.Int32ul)  # the link was down or refused them
    tlm_decimated: int = wire(c.Int32ul)  # replaced by a newer frame before they could leave
    rsp_dropped: int = wire(c.Int32ul)  # responses lost to a full outbox
    evt_dropped: int = wire(c.Int32ul)  # events lost to a full outbox
    rx_duplicates: int = wire(c.Int32ul)  # commands answered again from the cache
    cmd_refused: int = wire(c.Int32ul)  # commands above the node's rate, answered REFUSED
    cmd_bad_argument: int = wire(c.Int32ul)  # commands refused for an argument (BAD_ARGUMENT), since boot
    auth_refused: int = wire(c.Int32ul)  # frames refused by frame authentication (bad tag, replayed ...)
    tx_queued: int = wire(c.Int16ul)  # frames waiting in the node's outbox now
    ticks: int = wire(c.Int16ul)  # control ticks of the node's shard the three figures below cover
    tick_late_p50_us: int = wire(c.Int32ul)
    tick_late_p99_us: int = wire(c.Int32ul)
    tick_late_max_us: int = wire(c.Int32ul)
    periods_late: int = wire(c.Int32ul)  # tick periods the shard integrated late (real time only)
    loop_lag_p99_us: int = wire(c.Int32ul)  # of the emulator's event loop, recently
    loop_lag_max_us: int = wire(c.Int32ul)
    gc_ms: int = wire(c.Int32ul)  # time the emulator's garbage collector held the loop, since start
    link_out: LinkFaultCounts = wire(layout(LinkFaultCounts))  # frames the node sent
    link_in: LinkFaultCounts = wire(layout(LinkFaultCounts))  # frames it received (the fault plane passes by)


@record
class StackErrors:
    ce: tuple[int, ...] = wire(c.PrefixedArray(c.Int8ul, c.Int32ul))  # per channel
    ue: tuple[int, ...] = wire(c.PrefixedArray(c.Int8ul, c.Int32ul))
    failed_devices: tuple[int, ...] = wire(c.PrefixedArray(c.Int8ul, c.Int8ul))


@record
class PendingRow:
    stack: int = wire(c.Int8ul)
    channel: int = wire(c.Int8ul)
    bank: int = wire(c.Int16ul)
    row: int = wire(c.Int32ul)


@record
class RasResult:
    ecc: int = wire(c.Int8ul)  # EccMode
    flags: int = wire(c.Int8ul)  # RasFlags
    recovery_action: int = wire(c.Int8ul)  # RecoveryAction
    ce: int = wire(c.Int64ul)
    ue: int = wire(c.Int64ul)
    remapped_rows: int = wire(c.Int32ul)  # rows moved onto spare rows (applied by a reset)
    spare_rows_free: int = wire(c.Int32ul)
    # nvmlDeviceGetRemappedRows: rows remapped for correctable / uncorrectable errors, pending included
    remapped_correctable: int = wire(c.Int32ul)
    remapped_uncorrectable: int = wire(c.Int32ul)
    # nvmlDeviceGetRowRemapperHistogram: banks with max / high / partial / low / no spare rows available
    banks_max: int = wire(c.Int32ul)
    banks_high: int = wire(c.Int32ul)
    banks_partial: int = wire(c.Int32ul)
    banks_low: int = wire(c.Int32ul)
    banks_none: int = wire(c.Int32ul)
    last_xid: int = wire(c.Int16ul)  # the last XID logged since boot, 0: none
    scrub_passes: int = wire(c.Int32ul)
    scrubbed_words: int = wire(c.Int64ul)
    stacks: tuple[StackErrors, ...] = wire(c.PrefixedArray(c.Int8ul, layout(StackErrors)))
    pending: tuple[PendingRow, ...] = wire(c.PrefixedArray(c.Int16ul, layout(PendingRow)))


@record
class FaultInForce:
    kind: FaultKind = wire(c.Int8ul)
    target: str = wire(f.Text8)  # as the node names it (pump A, die:2, 0x944d2310)
    value: float = wire(c.Float64l)  # NaN: not given
    value2: float = wire(c.Float64l)


@record
class FaultList:
    faults: tuple[FaultInForce, ...] = wire(c.PrefixedArray(c.Int8ul, layout(FaultInForce)))


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpSpec:
    op: Op
    help: str
    """One line for ``mcm-emu ctl --help`` and docs."""
    args: type | None = None
    """Typed class of the arguments (declared with :func:`wire` fields); None: no arguments."""
    result: type | None = None
    """Typed class of a successful answer's data; None: the answer carries none."""
    usage: str = ""
    """What follows the command's name on the ctl command line, e.g. ``W``."""
    example: Any = None
    """Arguments of the operation's golden COMMAND frame."""
    example_result: Any = None
    """Data of its golden RESPONSE frame (operations with a result)."""

    @property
    def name(self) -> str:
        return self.op.label


_SPECS = (
    OpSpec(Op.PING, "round trip to the node"),
    OpSpec(Op.STATUS, "the node's state, sensors and actuators", result=StatusResult),
    OpSpec(Op.REBIRTH, "ask the node to publish its BIRTH again"),
    OpSpec(
        Op.STATS,
        "how the node and the emulator keep their rates: telemetry due and sent, drops, tick lateness",
        result=StatsResult,
        example_result=StatsResult(
            tlm_due=1200,
            tlm_sent=1190,
            tlm_dropped=4,
            tlm_decimated=6,
            rsp_dropped=0,
            evt_dropped=0,
            rx_duplicates=2,
            cmd_refused=3,
            cmd_bad_argument=2,
            auth_refused=0,
            tx_queued=1,
            ticks=1200,
            tick_late_p50_us=350,
            tick_late_p99_us=4200,
            tick_late_max_us=9100,
            periods_late=0,
            loop_lag_p99_us=2100,
            loop_lag_max_us=6300,
            gc_ms=12,
            link_out=LinkFaultCounts(dropped=40, corrupted=3, duplicated=2, delayed=0),
            link_in=LinkFaultCounts(dropped=0, corrupted=0, duplicated=0, delayed=5),
        ),
    ),
    OpSpec(
        Op.SET_POWER_CAP,
        "software power cap of the module, within the profile's range",
        args=PowerCapArgs,
        usage="W",
        example=PowerCapArgs(watts=800.0),
    ),
    OpSpec(
        Op.SET_POWER_LIMIT,
        "power limit of one source (in-band, out-of-band), or clear it; the lowest set is enforced",
        args=PowerLimitArgs,
        usage="SOURCE W|clear",
        example=PowerLimitArgs(source=2, watts=650.0),
    ),
    OpSpec(
        Op.LOCK_CLOCKS,
        "lock the dice's application clocks (the P-state at or below MHZ)",
        args=LockClocksArgs,
        usage="MHZ",
        example=LockClocksArgs(mhz=1500),
    ),
    OpSpec(Op.RESET_CLOCKS, "release locked clocks"),
    OpSpec(
        Op.SET_VALVE,
        "hold valve N at PCT %, or give it back to the controller",
        args=SetValveArgs,
        usage="N PCT|auto",
        example=SetValveArgs(valve=2, auto=0, pct=62.5),
    ),
    OpSpec(Op.RAS, "HBM error counters, remap state, recovery action", result=RasResult),
    OpSpec(Op.CLEAR_RAS, "clear the HBM error counters"),
    OpSpec(Op.RESET, "module reset: applies pending row remaps"),
    OpSpec(
        Op.INJECT,
        "inject a fault (see docs/faults.md)",
        args=InjectArgs,
        usage="FAULT [TARGET] [VALUE] [VALUE2]",
        example=InjectArgs(kind=4, target="die:2", value=95.0, value2=0.0),
    ),
    OpSpec(
        Op.CLEAR_FAULT,
        "clear injected faults",
        args=ClearFaultArgs,
        usage="FAULT [TARGET]|all",
        example=ClearFaultArgs(kind=1, target="A"),
    ),
    OpSpec(
        Op.GET_FAULTS,
        "the injected faults in force",
        result=FaultList,
        example_result=FaultList(
            faults=(
                FaultInForce(kind=FaultKind.HBM_FLIP, target="0x944d2310", value=2.0, value2=1.0),
                FaultInForce(kind=FaultKind.INLET_STEP, target="", value=5.0, value2=0.0),
            )
        ),
    ),
)
OPS: dict[Op, OpSpec] = {s.op: s for s in _SPECS}
FAULT_CONTROL = frozenset({Op.INJECT, Op.CLEAR_FAULT, Op.GET_FAULTS})
"""The fault control plane: these commands and their answers pass by the node's emulated link
faults (as an emulator's monitor port is apart from the link it emulates), so a fault on the link
can always be seen and cleared."""
if set(OPS) != set(Op):
    raise TypeError(f"operations without a spec: {sorted(o.name for o in set(Op) - set(OPS))}")

ARG_TYPES: dict[Op, type] = {s.op: s.args for s in _SPECS if s.args is not None}
RESULT_TYPES: dict[Op, type] = {s.op: s.result for s in _SPECS if s.result is not None}
ARG_LAYOUTS: dict[Op, c.Construct] = {op: layout(t) for op, t in ARG_TYPES.items()}
RESULT_LAYOUTS: dict[Op, c.Construct] = {op: layout(t) for op, t in RESULT_TYPES.items()}
