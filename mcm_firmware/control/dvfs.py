"""DVFS: the clock and voltage of every die, and why they are what they are.

Each die's clock is the governor's choice limited by every ceiling in force; the NVML-compatible
clock-event-reasons bitmask names the limits that bind:

* governor (schedutil-like): ``f = 1.25 * f_max * util`` on frequency-invariant utilisation
  (busy fraction times ``f / f_max``), rounded up to a P-state; idle dice report ``GpuIdle``;
* locked application clocks (``lock-clocks``): ``ApplicationsClocksSetting``;
* software power cap, a ceiling on every 1 s mean of module power (NVML's power reading is a
  1 s average and real boards hold it within a few watts of the limit): the power aimed for in
  every period is the cap, less what the short-window average (``short_window_s``) runs over
  it, never below ``cap * (2 - short_limit_factor)``; power saved in a lull buys no burst over
  the cap (RAPL's PL2 bursts on PL1 budget ran the 1 s mean several % over it for seconds). A
  power *estimator* (the firmware's own model: ``C_eff * V^2 * f * activity`` plus leakage at
  the measured temperature plus the uncore, with the activity each P-state would have at the
  present demand, plus the HBM) gives, every period, the clock at which the module would draw
  the target, so a load step is limited in the same period. A *trim* corrects the model by the
  ratio of measured to estimated power at the clocks that ran (:func:`learn_trim`, time constant
  ``TRIM_TAU_S``), whatever limits the power. The clock is set on a 15 MHz grid
  (``CLOCK_STEP_MHZ``, the voltage following the V/f curve between the P-states), dithering
  between the two grid clocks around the estimator's so that the average clock, and so the
  average power, meets the target: ``SwPowerCap``;
* software thermal slowdown above ``slowdown_c`` (on the firmware's sensor readings), released
  ``hysteresis_c`` below it, on the same clock grid: ``SwThermalSlowdown``;
* forced minimum clock in natural-convection mode (both pumps lost): ``SwThermalSlowdown``;
* hardware slowdown, a fast comparator on the die's own diode and on the VRM current: above
  ``hw_slowdown_c`` or the VRM current limit the clock is at least halved at once (to the grid):
  ``HwSlowdown`` (+ ``HwThermalSlowdown`` for temperature); the external power-brake input does
  the same: ``HwSlowdown`` + ``HwPowerBrakeSlowdown``;
* shutdown above ``shutdown_c``: the dice lose power until every die has cooled below
  ``slowdown_c - hysteresis_c``.

The cap enforced is the lowest of the power limits set (:func:`enforce_limits`): the board's
default (while the host has set no limit of its own), the host's in band and the BMC's out of
band, as NVML's enforced power limit.

Pure numpy over ``[N, D]`` arrays; no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..profile import Profile
from ..protocol.vocabulary import ClockReason, PowerLimitSource

# plain integers for the array code (IntFlag members are slow inside numpy expressions)
_IDLE = np.uint32(ClockReason.GPU_IDLE)
_APP = np.uint32(ClockReason.APPLICATIONS_CLOCKS_SETTING)
_SWCAP = np.uint32(ClockReason.SW_POWER_CAP)
_HW = np.uint32(ClockReason.HW_SLOWDOWN)
_SWTHERM = np.uint32(ClockReason.SW_THERMAL_SLOWDOWN)
_HWTHERM = np.uint32(ClockReason.HW_THERMAL_SLOWDOWN)
_BRAKE = np.uint32(ClockReason.HW_POWER_BRAKE_SLOWDOWN)
_HW_BITS = np.uint32(_HW | _HWTHERM | _BRAKE)


def _clip(x: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, lo), hi)


IDLE_UTIL = 0.02
SATURATED_UTIL = 0.97
SCHEDUTIL_HEADROOM = 1.25
TRIM_TAU_S = 0.1  # time constant of the estimator's trim
CLOCK_STEP_MHZ = 15.0  # the ceilings set clocks on this grid below f_max (NVIDIA's clocks move in 15 MHz steps)
TRIM_RANGE = (0.6, 1.4)  # how far the trim may correct the estimator
TRIM_MAX_STEP = 0.1  # largest log-error the trim takes in one period
OCP_HOLD_S = 1.0  # an over-current slowdown is held at least this long
THERMAL_DOWN = 0.04  # fraction of f_max per °C above slowdown per second
THERMAL_UP = 0.10  # fraction of f_max per second once cooled below the release point
OCP_RELEASE = 0.9  # VRM over-current is released below this fraction of the limit


@dataclass(frozen=True)
class DvfsConfig:
    mhz: np.ndarray  # [S] P-state table, P0 first
    mv: np.ndarray  # [S]
    slowdown_c: float
    hw_slowdown_c: float
    shutdown_c: float
    hysteresis_c: float
    hbm_max_c: float  # memory over it slows the module down (NVML: memory temperature thresholds)
    long_window_s: float
    short_window_s: float
    short_limit_factor: float
    vrm_limit_a: float
    min_cap_w: float
    max_cap_w: float
    # the firmware's power model (nominal part, no process spread)
    dyn_coef: float  # W per (V^2 * MHz) at full activity
    leak_w: float
    uncore_w: float  # per die, whatever the clock
    leak_ref_c: float
    leak_doubling_c: float
    idle_activity: float
    hbm_w: float  # all stacks at full bandwidth

    @classmethod
    def from_profile(cls, p: Profile) -> DvfsConfig:
        return cls(
            mhz=np.array([s.mhz for s in p.die.pstates], float),
            mv=np.array([s.mv for s in p.die.pstates], float),
            slowdown_c=p.thermal.slowdown_c,
            hw_slowdown_c=p.thermal.hw_slowdown_c,
            shutdown_c=p.thermal.shutdown_c,
            hysteresis_c=p.thermal.hysteresis_c,
            hbm_max_c=p.thermal.hbm_max_c,
            long_window_s=p.power.long_window_s,
            short_window_s=p.power.short_window_s,
            short_limit_factor=p.power.short_limit_factor,
            vrm_limit_a=p.power.vrm_current_limit_a,
            min_cap_w=p.power.min_cap_w,
            max_cap_w=p.power.max_cap_w,
            dyn_coef=max(p.die.tdp_w - p.die.leakage_w - p.die.uncore_w, 1.0)
            / ((p.die.pstates[0].mv / 1000) ** 2 * p.die.pstates[0].mhz),
            leak_w=p.die.leakage_w,
            uncore_w=p.die.uncore_w,
            leak_ref_c=p.die.leakage_ref_c,
            leak_doubling_c=p.die.leakage_doubling_c,
            idle_activity=p.die.idle_activity,
            hbm_w=p.hbm.count * p.hbm.power_w,
        )

    @cached_property
    def mhz_ascending(self) -> np.ndarray:
        # a copy, not a reversed view: the compiled kernels take C-ordered arrays (a view of another
        # layout would have them load a second variant in the middle of the first tick)
        return np.ascontiguousarray(self.mhz[::-1])

    @cached_property
    def speedup(self) -> np.ndarray:
        """f_max / f of each P-state: how much longer the same work keeps a die busy there."""
        return self.f_max / self.mhz

    @cached_property
    def dyn_per_state(self) -> np.ndarray:
        """Dynamic power of one fully active die at each P-state, W."""
        v = self.mv / 1000.0
        return self.dyn_coef * v * v * self.mhz

    @cached_property
    def v_ratio(self) -> np.ndarray:
        return self.mv / self.mv[0]

    @cached_property
    def mv_ascending(self) -> np.ndarray:
        return np.ascontiguousarray(self.mv[::-1])

    def mv_at(self, mhz: np.ndarray) -> np.ndarray:
        """Voltage of any clock: linear on the V/f curve between the P-states around it."""
        return np.interp(mhz, self.mhz_ascending, self.mv_ascending)

    def grid_floor(self, f: np.ndarray) -> np.ndarray:
        """The fastest clock of the grid (``f_max - k * CLOCK_STEP_MHZ``, and ``f_min``) at or below f."""
        k = np.ceil((self.f_max - f) / CLOCK_STEP_MHZ - 1e-9)
        return _clip(self.f_max - k * CLOCK_STEP_MHZ, self.f_min, self.f_max)

    def grid_ceil(self, f: np.ndarray) -> np.ndarray:
        """The slowest clock of the grid at or above f (``f_min`` below it, ``f_max`` above)."""
        k = np.floor((self.f_max - f) / CLOCK_STEP_MHZ + 1e-9)
        return _clip(self.f_max - k * CLOCK_STEP_MHZ, self.f_min, self.f_max)

    @property
    def f_max(self) -> float:
        return float(self.mhz[0])

    @property
    def f_min(self) -> float:
        return float(self.mhz[-1])


class DvfsState:
    def __init__(self, cfg: DvfsConfig, n: int, dies: int, cap_w: float) -> None:
        self.pstate = np.full((n, dies), len(cfg.mhz) - 1, np.int16)
        self.mhz = np.full((n, dies), cfg.f_min)
        self.mv = np.full((n, dies), float(cfg.mv[-1]))
        self.reasons = np.zeros((n, dies), np.uint32)
        self.cap_w = np.full(n, cap_w)  # the limit enforced: the lowest of those set (enforce_limits)
        self.cap_source = np.full(n, int(PowerLimitSource.DEFAULT), np.uint8)
        self.limit_default = np.full(n, cap_w)  # the board's default limit
        self.limit_in_band = np.full(n, np.nan)  # the host's (SET_POWER_CAP); NaN: none, the default holds
        self.limit_out_of_band = np.full(n, np.nan)  # the BMC's; NaN: none
        self.cap_seen = self.cap_w.copy()  # the limit the averages were last checked against
        self.lock_mhz = np.zeros(n)  # 0: not locked
        # the ceiling in force on each die this period, on the clock grid (f_max: none binds)
        self.f_cap = np.full((n, dies), cfg.f_max)
        self.trim = np.ones(n)  # estimator correction
        self.f_therm = np.full((n, dies), cfg.f_max)  # software thermal ceiling
        self.f_therm_hbm = np.full(n, cfg.f_max)  # the module's ceiling for its memory's temperature
        self.hbm_slow = np.zeros(n, bool)  # that ceiling held the clocks this period
        self.dither = np.zeros((n, dies))
        self.avg_long = np.zeros(n)
        self.avg_short = np.zeros(n)
        self.ocp_until = np.full(n, -np.inf)
        self.hw_therm = np.zeros((n, dies), bool)
        self.hw_ocp = np.zeros(n, bool)
        self.shutdown = np.zeros(n, bool)
        self.forced_min = np.zeros(n, bool)  # natural-convection mode
        self.brake = np.zeros(n, bool)  # external power-brake input asserted
        self.hw_slow = np.zeros((n, dies), bool)  # a hardware slowdown held the clock last tick


def enforce_limits(cfg: DvfsConfig, st: DvfsState, rows: int | slice | np.ndarray = slice(None)) -> None:
    """The cap enforced and its source on ``rows``, from the limits set (NVML's enforced power
    limit).

    The host's in-band limit replaces the board's default while it is set (``nvidia-smi -pl``
    sets the power management limit, whose value is the default until then); the out-of-band
    limit, when set, caps both. The lower is enforced, within ``min_cap_w..max_cap_w``; on a tie
    the out-of-band limit is named (clearing the in-band one would not lift it)."""
    in_band, oob = st.limit_in_band[rows], st.limit_out_of_band[rows]
    unset = np.isnan(in_band)
    managed = np.where(unset, st.limit_default[rows], in_band)
    managed_src = np.where(unset, int(PowerLimitSource.DEFAULT), int(PowerLimitSource.IN_BAND))
    oob_binds = ~np.isnan(oob) & (oob <= managed)
    st.cap_w[rows] = _clip(np.where(oob_binds, oob, managed), cfg.min_cap_w, cfg.max_cap_w)
    st.cap_source[rows] = np.where(oob_binds, int(PowerLimitSource.OUT_OF_BAND), managed_src)


def _pstate_at_least(cfg: DvfsConfig, f: np.ndarray) -> np.ndarray:
    """Index of the slowest P-state whose clock is >= f (P0 when none is)."""
    s = len(cfg.mhz)
    i = np.searchsorted(cfg.mhz_ascending, f - 1e-9, side="left")  # first ascending clock >= f
    return np.maximum(s - 1 - i, 0)


def _pstate_at_most(cfg: DvfsConfig, f: np.ndarray) -> np.ndarray:
    """Index of the fastest P-state whose clock is <= f (the slowest state when none is)."""
    s = len(cfg.mhz)
    i = np.searchsorted(cfg.mhz_ascending, f + 1e-9, side="right") - 1  # last ascending clock <= f
    return np.minimum(s - 1 - i, s - 1)


def work_demand(cfg: DvfsConfig, util: np.ndarray, mhz_now: np.ndarray) -> np.ndarray:
    """Work per second of each die as a fraction of the work at ``f_max``, from its utilisation at
    the present clock; a saturated die hides how much more work waits, so it is assumed to want
    all of it."""
    return np.where(util >= SATURATED_UTIL, 1.0, util * np.maximum(mhz_now, cfg.f_min) / cfg.f_max)


def estimate_power(cfg: DvfsConfig, demand: np.ndarray, t_die: np.ndarray) -> np.ndarray:
    """The module's power, W, if every die ran at each P-state ``[N, S]``: the firmware's model at
    the given demand (:func:`work_demand`).

    Per die and P-state ``s``: ``A_s * activity_s + L_die * B_s`` with ``A_s = C_eff V_s^2 f_s``,
    ``B_s = V_s / V_0`` and the leakage ``L_die`` at the die's temperature, plus the die's uncore
    power; summed over the dice, plus the HBM.
    """
    u = np.minimum(demand[:, None, :] * cfg.speedup[:, None], 1.0)  # [N,S,D] utilisation per P-state
    busy = u.sum(axis=2)  # [N,S]
    dies = demand.shape[1]
    act = cfg.idle_activity * dies + (1.0 - cfg.idle_activity) * busy
    temp = np.where(np.isnan(t_die), cfg.slowdown_c, t_die)
    leak = (cfg.leak_w * np.exp2((temp - cfg.leak_ref_c) / cfg.leak_doubling_c)).sum(axis=1)  # [N]
    # the memory's traffic follows the work done at each P-state (the demand, up to what the clock allows)
    done = np.minimum(demand[:, None, :], (1.0 / cfg.speedup)[:, None]).mean(axis=2)  # [N,S]
    hbm = cfg.hbm_w * (0.25 + 0.75 * np.minimum(done, 1.0)) + cfg.uncore_w * dies
    return cfg.dyn_per_state * act + leak[:, None] * cfg.v_ratio + hbm


def estimate_clock_for(cfg: DvfsConfig, goal_w: np.ndarray, demand: np.ndarray, t_die: np.ndarray) -> np.ndarray:
    """The clock (MHz, continuous between P-states) at which the estimate meets ``goal_w``."""
    est = estimate_power(cfg, demand, t_die)  # [N,S], falling with S
    goal = goal_w[:, None]
    fits = est <= goal
    first = np.where(fits.any(axis=1), fits.argmax(axis=1), len(cfg.mhz) - 1)
    rows = np.arange(est.shape[0])
    above = np.maximum(first - 1, 0)
    e_hi, e_lo = est[rows, above], est[rows, first]
    f_hi, f_lo = cfg.mhz[above], cfg.mhz[first]
    frac = _clip((goal[:, 0] - e_lo) / np.maximum(e_hi - e_lo, 1e-9), 0.0, 1.0)
    f = np.where(first == 0, cfg.f_max, f_lo + frac * (f_hi - f_lo))
    return np.where(fits.any(axis=1), f, cfg.f_min)


def update_power_average(cfg: DvfsConfig, st: DvfsState, power_w: np.ndarray, dt: float) -> None:
    """Exponentially weighted averages of module power over the long and short windows."""
    st.avg_long += (power_w - st.avg_long) * (-np.expm1(-dt / cfg.long_window_s))
    st.avg_short += (power_w - st.avg_short) * (-np.expm1(-dt / cfg.short_window_s))


def learn_trim(
    cfg: DvfsConfig, st: DvfsState, power_w: np.ndarray, util: np.ndarray, t_die_sensor: np.ndarray, dt: float
) -> None:
    """Correct the estimator by what the module drew (every tick, after the plant ran).

    The estimate at the clocks and voltages that ran, the utilisation seen there and the sensed
    temperatures is compared with the measured power; the trim follows the ratio, exponentially
    weighted over ``TRIM_TAU_S`` and bounded to ``TRIM_RANGE``. Learning from the model's error
    at every operating point, not from how far the power is from the cap, keeps it unbiased when
    the load rather than the cap limits the power.
    """
    on = ~st.shutdown
    if not on.any():
        return
    f = np.maximum(st.mhz, 1.0)
    v = st.mv / 1000.0
    demand = work_demand(cfg, util, f)
    act = cfg.idle_activity + (1.0 - cfg.idle_activity) * np.minimum(demand * cfg.f_max / f, 1.0)
    temp = np.where(np.isnan(t_die_sensor), cfg.slowdown_c, t_die_sensor)
    leak = cfg.leak_w * np.exp2((temp - cfg.leak_ref_c) / cfg.leak_doubling_c)
    est = (cfg.dyn_coef * v * v * f * act + leak * (st.mv / cfg.mv[0])).sum(axis=1)
    done = np.minimum(demand, f / cfg.f_max).mean(axis=1)  # the work done: what drives the memory
    est += cfg.hbm_w * (0.25 + 0.75 * np.minimum(done, 1.0)) + cfg.uncore_w * st.mv.shape[1]
    err = _clip(
        np.log(np.maximum(power_w, 1.0) / np.maximum(est, 1.0)) - np.log(st.trim), -TRIM_MAX_STEP, TRIM_MAX_STEP
    )
    gain = -np.expm1(-dt / TRIM_TAU_S)
    st.trim = np.where(on, _clip(st.trim * np.exp(gain * err), *TRIM_RANGE), st.trim)


def hw_protect(
    cfg: DvfsConfig, st: DvfsState, t: float, t_die_true: np.ndarray, vrm_a: np.ndarray, t_die_sensor: np.ndarray
) -> None:
    """The fast comparators (every plant tick): latch hardware slowdown and shutdown.

    Shutdown trips above ``shutdown_c``, or in natural-convection mode (``forced_min``) above
    ``slowdown_c``: at the lowest P-state the module still heats, so it powers its dice off. It is
    released once every die is below ``slowdown_c - hysteresis_c`` and a pump runs again.
    """
    st.hw_therm = np.where(
        st.hw_therm, t_die_true > cfg.hw_slowdown_c - cfg.hysteresis_c, t_die_true > cfg.hw_slowdown_c
    )
    over = vrm_a > cfg.vrm_limit_a
    st.ocp_until = np.where(over, t + OCP_HOLD_S, st.ocp_until)
    st.hw_ocp = np.where(st.hw_ocp, over | (t < st.ocp_until) | (vrm_a > cfg.vrm_limit_a * OCP_RELEASE), over)
    hottest = t_die_true.max(axis=1)
    trip = hottest > cfg.shutdown_c
    if st.forced_min.any():  # natural convection: the firmware trips on its own readings too
        sensed = np.where(np.isnan(t_die_sensor), -np.inf, t_die_sensor).max(axis=1)
        trip |= st.forced_min & (np.maximum(hottest, sensed) > cfg.slowdown_c)
    release = (hottest < cfg.slowdown_c - cfg.hysteresis_c) & ~st.forced_min
    st.shutdown = np.where(st.shutdown, ~release, trip)


def dvfs_step(
    cfg: DvfsConfig,
    st: DvfsState,
    util: np.ndarray,
    t_die_sensor: np.ndarray,
    dt: float,
    t_hbm_sensor: np.ndarray | None = None,
) -> None:
    """One DVFS period: choose every die's P-state, clock, voltage and reasons. ``t_hbm_sensor``:
    the HBM stacks' readings; memory above ``hbm_max_c`` slows the whole module down as a die
    above ``slowdown_c`` slows itself (SW_THERMAL_SLOWDOWN, as NVML reports memory over its
    limit), released ``hysteresis_c`` below it."""
    f_max, f_min = cfg.f_max, cfg.f_min
    # governor
    # on frequency-invariant utilisation (busy fraction scaled by f / f_max), as schedutil: a die
    # busy half the time at half clock asks for a quarter of f_max, not half, so the choice is a
    # fixed point rather than a swing between two P-states; a saturated die climbs 25 % a period
    u_inv = util * np.maximum(st.mhz, f_min) / f_max
    f_gov = _clip(SCHEDUTIL_HEADROOM * f_max * u_inv, f_min, f_max)
    p_gov = _pstate_at_least(cfg, f_gov)
    reasons = (util < IDLE_UTIL) * _IDLE

    # locked application clocks
    locked = st.lock_mhz > 0
    if locked.any():
        p_lock = _pstate_at_most(cfg, np.where(locked, st.lock_mhz, f_max))[:, None]
        lock_binds = locked[:, None] & (p_lock > p_gov)
        reasons = reasons | lock_binds * _APP
        p = np.where(locked[:, None], p_lock, p_gov)
    else:
        p = p_gov

    # power cap: a ceiling on the power of every period, so that every 1 s mean holds it; power
    # drawn over the cap (the short average above it) is paid back below it. The estimator turns
    # the target into a clock.
    cap = st.cap_w
    changed = cap != st.cap_seen
    if changed.any():  # a new limit starts with nothing to pay back for the power under the old one
        st.avg_long = np.where(changed, np.minimum(st.avg_long, cap), st.avg_long)
        st.avg_short = np.where(changed, np.minimum(st.avg_short, cap), st.avg_short)
        st.cap_seen = cap.copy()
    payback = np.maximum(st.avg_short - cap, 0.0)
    target = np.maximum(cap - payback, cap * (2.0 - cfg.short_limit_factor))
    f_cap = estimate_clock_for(cfg, target / st.trim, work_demand(cfg, util, st.mhz), t_die_sensor)

    # software thermal slowdown on sensor readings (NaN readings do not move it)
    t = np.where(np.isnan(t_die_sensor), cfg.slowdown_c - cfg.hysteresis_c, t_die_sensor)
    over = t - cfg.slowdown_c
    down = np.where(over > 0, THERMAL_DOWN * (over + 1.0) * f_max * dt, 0.0)
    up = np.where(t < cfg.slowdown_c - cfg.hysteresis_c, THERMAL_UP * f_max * dt, 0.0)
    st.f_therm = _clip(st.f_therm - down + up, f_min, f_max)
    f_therm = np.where(st.forced_min[:, None], f_min, st.f_therm)
    if t_hbm_sensor is not None and t_hbm_sensor.shape[1]:
        valid = ~np.isnan(t_hbm_sensor)
        hot = np.where(valid, t_hbm_sensor, -np.inf).max(axis=1)
        over_m = hot - cfg.hbm_max_c
        down_m = np.where(over_m > 0, THERMAL_DOWN * (over_m + 1.0) * f_max * dt, 0.0)
        up_m = np.where(hot < cfg.hbm_max_c - cfg.hysteresis_c, THERMAL_UP * f_max * dt, 0.0)
        st.f_therm_hbm = _clip(st.f_therm_hbm - down_m + up_m, f_min, f_max)
        f_therm = np.minimum(f_therm, st.f_therm_hbm[:, None])

    # The ceilings set the clock on the 15 MHz grid, dithering between the two grid clocks around
    # the lower of them so that the average clock meets it. A reason bit is set while its
    # (continuous) ceiling is below the requested clock. The P-state reported is the slowest at or
    # above the clock that runs.
    f_req = cfg.mhz[p]
    cap_binds = f_cap[:, None] < f_req - 1e-6
    therm_binds = f_therm < f_req - 1e-6
    ceiling = np.minimum(f_cap[:, None], f_therm)
    binds = cap_binds | therm_binds
    f_lo, f_hi = cfg.grid_floor(ceiling), cfg.grid_ceil(ceiling)
    frac = np.where(f_hi > f_lo, (ceiling - f_lo) / np.maximum(f_hi - f_lo, 1e-9), 1.0)
    st.dither = np.where(binds, st.dither + frac, 0.0)
    take_hi = st.dither >= 1.0
    st.dither -= take_hi
    f_ceil = np.where(take_hi, f_hi, f_lo)
    st.f_cap = np.where(binds, f_ceil, f_max)
    p = np.where(binds, _pstate_at_least(cfg, np.minimum(f_req, f_ceil)), p)
    reasons = reasons | cap_binds * _SWCAP | therm_binds * _SWTHERM
    st.hbm_slow = np.asarray((st.f_therm_hbm[:, None] < f_req - 1e-6).any(axis=1), bool)

    st.pstate = p.astype(np.int16)
    st.reasons = reasons.astype(np.uint32)
    # apply_hw_limits() turns P-states and ceilings into clocks and voltages: every tick, after hw_protect()


def apply_hw_limits(cfg: DvfsConfig, st: DvfsState) -> None:
    """Clock and voltage from the P-state and the ceiling in force, at least halved by a hardware
    slowdown, zero when off; the voltage follows the V/f curve.

    A slowdown that starts now halves the lower of the clock asked for and the clock that ran (the
    comparator cuts the running clock, whatever the governor asks in the same tick); one in force
    halves the clock asked for."""
    mhz = np.minimum(cfg.mhz[st.pstate], st.f_cap)
    hw = st.hw_therm | (st.hw_ocp | st.brake)[:, None]
    reasons = st.reasons & ~_HW_BITS
    onset = hw & ~st.hw_slow & (st.mhz > 0)
    st.hw_slow = hw
    if hw.any():
        base = np.where(onset, np.minimum(mhz, st.mhz), mhz)
        mhz = np.where(hw, cfg.grid_floor(base / 2.0), mhz)
        reasons = reasons | hw * _HW | st.hw_therm * _HWTHERM | st.brake[:, None] * _BRAKE
    on = ~st.shutdown[:, None]
    st.mhz = mhz * on
    st.mv = np.round(cfg.mv_at(mhz)) * on
    st.reasons = (reasons * on).astype(np.uint32)
