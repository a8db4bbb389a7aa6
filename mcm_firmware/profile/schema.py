"""The hardware-profile schema: what a module variant is made of and how its firmware is tuned.

Every section forbids unknown keys; ranges are checked field by field and across fields, so a
profile that loads is one the plant and the controllers can run.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Pos = Annotated[float, Field(gt=0)]
NonNeg = Annotated[float, Field(ge=0)]
Pct = Annotated[float, Field(ge=0, le=100)]
Hz = Annotated[float, Field(gt=0, le=10_000)]
Celsius = Annotated[float, Field(ge=-40, le=200)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PState(_Section):
    mhz: Annotated[int, Field(ge=1, le=10_000)]
    mv: Annotated[int, Field(ge=100, le=2_000)]


class DieSpec(_Section):
    count: Annotated[int, Field(ge=1, le=16)]
    tdp_w: Pos
    """Power of one die at the highest P-state, full activity and the leakage reference temperature."""
    leakage_w: NonNeg
    """Leakage at the reference temperature and the highest P-state's voltage (part of tdp_w)."""
    leakage_ref_c: Celsius
    leakage_doubling_c: Annotated[float, Field(gt=1, le=100)]
    """Leakage doubles for every this many degrees above the reference (roughly exponential)."""
    idle_activity: Annotated[float, Field(ge=0, le=1)]
    """Switching activity of an idle die, as a fraction of full load."""
    uncore_w: NonNeg = 0.0
    """Always-on power of one die while it is powered, whatever its core clock and activity: fabric,
    I/O and memory PHYs, caches and the die's share of board losses (part of tdp_w). With the
    leakage it sets the idle power."""
    heat_capacity_j_per_k: Pos
    r_die_plate_c_per_w: Pos
    """Thermal resistance from a die's junction to its cold-plate region."""
    pstates: Annotated[list[PState], Field(min_length=1, max_length=32)]
    """P0 first: the fastest state, then strictly slower ones."""

    @field_validator("pstates")
    @classmethod
    def _descending(cls, pstates: list[PState]) -> list[PState]:
        for i in range(1, len(pstates)):
            if not (pstates[i].mhz < pstates[i - 1].mhz and pstates[i].mv <= pstates[i - 1].mv):
                raise ValueError(
                    f"P{i} ({pstates[i].mhz} MHz, {pstates[i].mv} mV) must be slower than P{i - 1} "
                    "and not need more voltage"
                )
        return pstates

    @model_validator(mode="after")
    def _static_within_tdp(self) -> DieSpec:
        if not self.leakage_w + self.uncore_w < self.tdp_w:
            raise ValueError("leakage_w + uncore_w must be below tdp_w (the rest is the dynamic power at P0)")
        return self


class HbmSpec(_Section):
    count: Annotated[int, Field(ge=0, le=32)]
    capacity_gb: Pos
    bandwidth_tbps: Pos
    channels: Annotated[int, Field(ge=1, le=64)]
    power_w: NonNeg
    """Power of one stack at full bandwidth."""
    heat_capacity_j_per_k: Pos
    r_stack_plate_c_per_w: Pos


class ThermalSpec(_Section):
    slowdown_c: Celsius
    """Software thermal slowdown starts here (SwThermalSlowdown)."""
    hw_slowdown_c: Celsius
    """The hardware comparator halves the clock here (HwThermalSlowdown)."""
    shutdown_c: Celsius
    """The module powers its dice off here."""
    hysteresis_c: Annotated[float, Field(gt=0, le=30)]
    """How far below a threshold a temperature must fall before the action is released."""
    hbm_max_c: Celsius
    target_c: Celsius
    """Die temperature the coolant controller aims for."""

    @model_validator(mode="after")
    def _ordered(self) -> ThermalSpec:
        if not self.target_c < self.slowdown_c:
            raise ValueError("target_c must be below slowdown_c")
        if not self.slowdown_c <= self.hw_slowdown_c < self.shutdown_c:
            raise ValueError("need slowdown_c <= hw_slowdown_c < shutdown_c")
        return self


class PowerSpec(_Section):
    default_cap_w: Pos
    min_cap_w: Pos
    max_cap_w: Pos
    long_window_s: Annotated[float, Field(gt=0, le=600)]
    """Window of the long (exponentially weighted) average of module power, which the cap holds too."""
    short_window_s: Annotated[float, Field(gt=0, le=60)]
    """Window of the short average: power it shows over the cap is paid back below the cap."""
    short_limit_factor: Annotated[float, Field(ge=1, le=3)]
    """A payback aims no lower than the cap times ``2 - short_limit_factor``."""
    vrm_voltage_v: Pos
    vrm_current_limit_a: Pos

    @model_validator(mode="after")
    def _ranges(self) -> PowerSpec:
        if not self.min_cap_w <= self.default_cap_w <= self.max_cap_w:
            raise ValueError("need min_cap_w <= default_cap_w <= max_cap_w")
        if not self.short_window_s < self.long_window_s:
            raise ValueError("short_window_s must be shorter than long_window_s")
        return self


class PumpSpec(_Section):
    name: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9_-]+$")]
    nominal_rpm: Annotated[int, Field(ge=100, le=20_000)]
    flow_lpm: Pos
    """Loop flow with this pump running and every valve fully open."""


class CoolingSpec(_Section):
    valves: Annotated[int, Field(ge=1, le=32)]
    """Flow-control valves; die i is cooled by valve i mod valves."""
    pumps: Annotated[list[PumpSpec], Field(min_length=1, max_length=8)]
    inlet_c: Celsius
    coolant_heat_capacity_j_per_l_k: Pos
    plate_heat_capacity_j_per_k: Pos
    r_plate_coolant_c_per_w: Pos
    """Plate-to-coolant resistance of one die's region at its nominal flow."""
    valve_rangeability: Annotated[float, Field(gt=1, le=1000)]
    """R of the equal-percentage characteristic Cv = Cv_max * R^(x-1)."""
    valve_slew_pct_per_s: Pos
    natural_convection_fraction: Annotated[float, Field(gt=0, lt=1)]
    """Heat removal with no pump running, as a fraction of removal at nominal flow."""
    failsafe_pct: Pct
    min_valve_pct: Pct
    sensor_timeout_s: Annotated[float, Field(gt=0, le=60)]
    """A required sensor older than this puts its zone in failsafe."""
    pump_alternate_h: Annotated[float, Field(gt=0, le=24 * 365)]
    """The lead pump hands over to the lag pump this often, to even out wear."""

    @field_validator("pumps")
    @classmethod
    def _unique_names(cls, pumps: list[PumpSpec]) -> list[PumpSpec]:
        names = [p.name for p in pumps]
        if len(set(names)) != len(names):
            raise ValueError(f"pump names must be unique, got {names}")
        return pumps


class RasSpec(_Section):
    """HBM error handling: ECC scheme, geometry for addressing, spare rows, error rates."""

    ecc: Literal["secded", "chipkill"]
    """SEC-DED Hamming (39,32) per 32-bit word, or chipkill RS(20,16) per 16-byte line."""
    banks: Annotated[int, Field(ge=1, le=256)]
    rows_per_bank: Annotated[int, Field(ge=1, le=1 << 20)]
    words_per_row: Annotated[int, Field(ge=4, le=1 << 12)]
    spare_rows_per_bank: Annotated[int, Field(ge=0, le=64)]
    sbe_rate_per_s: NonNeg
    """Single-bit upsets per stack and second at the reference temperature."""
    dbe_rate_per_s: NonNeg
    """Double-bit upsets (one codeword) per stack and second at the reference temperature."""
    rate_ref_c: Celsius
    rate_doubling_c: Annotated[float, Field(gt=1, le=100)]
    """Error rates double for every this many degrees of HBM temperature above the reference."""
    scrub_interval_s: NonNeg
    """The patrol scrubber reads all of the HBM once in this long (0: no patrol scrub)."""
    access_rate_hz: NonNeg
    """How often the workload reads a given faulty word at full bandwidth."""
    ce_storm_threshold: Annotated[int, Field(ge=1, le=1_000_000)]
    ce_storm_window_s: Annotated[float, Field(gt=0, le=86_400)]

    @model_validator(mode="after")
    def _chipkill_lines(self) -> RasSpec:
        if self.words_per_row % 4:
            raise ValueError("words_per_row must be a multiple of 4 (chipkill lines are 4 words)")
        return self


class ControlSpec(_Section):
    """Controller tuning. Flows are in fractions of one valve's full flow on one pump."""

    thermal_kp: Annotated[float, Field(ge=0, le=10)]
    """Flow demand per °C above the temperature setpoint."""
    thermal_ki: Annotated[float, Field(ge=0, le=10)]
    """Flow demand per °C·s above the setpoint."""
    flow_floor: Annotated[float, Field(ge=0, le=1)]
    """Least flow the thermal loop asks for."""
    valve_kp: Annotated[float, Field(ge=0, le=1000)]
    """Valve stroke (%) per unit of flow error."""
    valve_ki: Annotated[float, Field(ge=0, le=1000)]
    """Valve stroke (%) per unit of flow error and second."""
    valve_slew_pct_per_s: Pos
    """How fast the valve loop may move its command."""


class RatesSpec(_Section):
    tick_hz: Hz
    """Rate of the plant integration and the fast (hardware) protections."""
    telemetry_hz: Hz
    dvfs_hz: Hz
    thermal_hz: Hz
    valve_hz: Hz
    samples_per_frame: Annotated[int, Field(ge=1, le=64)] = 1
    """Samples each telemetry frame carries: 1 sends TELEMETRY frames; more sends SAMPLES frames
    with that many (module power, die temperature and power) taken at ``telemetry_hz *
    samples_per_frame`` since the previous frame: the same sample rate for fewer messages."""

    @property
    def sample_hz(self) -> float:
        return self.telemetry_hz * self.samples_per_frame

    @model_validator(mode="after")
    def _divides(self) -> RatesSpec:
        for name in ("telemetry_hz", "dvfs_hz", "thermal_hz", "valve_hz"):
            rate = getattr(self, name)
            if rate > self.tick_hz:
                raise ValueError(f"{name} ({rate}) exceeds tick_hz ({self.tick_hz})")
        if self.sample_hz > self.tick_hz:
            raise ValueError(
                f"telemetry_hz x samples_per_frame ({self.sample_hz:g} samples/s) exceeds tick_hz ({self.tick_hz})"
            )
        ratio = self.tick_hz / self.sample_hz
        if self.samples_per_frame > 1 and abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(
                f"tick_hz ({self.tick_hz}) is not a whole multiple of the sample rate ({self.sample_hz:g}/s)"
            )
        return self


class Profile(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    description: str
    sources: Annotated[list[str], Field(min_length=1)]
    """Where the figures come from (datasheets, public captures, papers)."""
    die: DieSpec
    hbm: HbmSpec
    thermal: ThermalSpec
    power: PowerSpec
    cooling: CoolingSpec
    control: ControlSpec
    ras: RasSpec
    rates: RatesSpec

    @property
    def max_mhz(self) -> int:
        return self.die.pstates[0].mhz

    @property
    def min_mhz(self) -> int:
        return self.die.pstates[-1].mhz
