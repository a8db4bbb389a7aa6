"""Typed telemetry: the snapshot a TELEMETRY frame (and a STATUS answer) carries.

NamedTuples, immutable and cheap to build on the hot path, positional in the field order of the
``Snapshot`` declaration in :mod:`.fields` (the codec checks the order at import).
"""

from __future__ import annotations

from typing import NamedTuple

from .vocabulary import CoolingMode, NodeState


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


class DieSample(NamedTuple):
    temp_c: float
    power_w: float


class Sample(NamedTuple):
    power_w: float
    dies: tuple[DieSample, ...]


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
    energy_mj: int
    viol_power_ms: int
    viol_thermal_ms: int
    viol_hbm_thermal_ms: int
    viol_hw_slowdown_ms: int
    power_limit_source: int
    remapped_correctable: int
    remapped_uncorrectable: int
    ecc_ce_aggregate: int
    ecc_ue_aggregate: int
    pcie_replays: int
    pcie_aer_correctable: int
    pcie_aer_uncorrectable: int
    dies: tuple[DieTelemetry, ...]
    hbm: tuple[HbmTelemetry, ...]
    pumps: tuple[PumpTelemetry, ...]
    valves: tuple[ValveTelemetry, ...]
