"""DVFS: the clock and voltage of every die, and why they are what they are.

Each die's clock is the governor's choice limited by every ceiling in force; the NVML-compatible
clock-event-reasons bitmask names the limits that bind:

* governor (schedutil-like): ``f = 1.25 * f_max * util``, rounded up to a P-state; idle dice
  report ``GpuIdle``;
* locked application clocks (``lock-clocks``): ``ApplicationsClocksSetting``;
* software power cap, RAPL-like: the module's power is averaged over a long window (PL1) and a
  short one (PL2). The short average is regulated to a setpoint that equals the cap once the long
  average has used its budget and may rise to ``cap * short_limit_factor`` while the long average
  is below the cap. An integral loop moves a frequency ceiling; the dice dither between the two
  P-states around it so that the average clock, and so the average power, meets the cap:
  ``SwPowerCap``;
* software thermal slowdown above ``slowdown_c`` (on the firmware's sensor readings), released
  ``hysteresis_c`` below it: ``SwThermalSlowdown``;
* forced minimum clock in natural-convection mode (both pumps lost): ``SwThermalSlowdown``;
* hardware slowdown, a fast comparator on the die's own diode and on the VRM current: above
  ``hw_slowdown_c`` or the VRM current limit the clock is at least halved at once:
  ``HwSlowdown`` (+ ``HwThermalSlowdown`` for temperature);
* shutdown above ``shutdown_c``: the dice lose power until every die has cooled below
  ``slowdown_c - hysteresis_c``.

Pure numpy over ``[N, D]`` arrays; no asyncio.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from ..profile import Profile


class ClockReason(IntFlag):
    """NVML ``nvmlClocksEventReasons`` bits."""

    GPU_IDLE = 0x1
    APPLICATIONS_CLOCKS_SETTING = 0x2
    SW_POWER_CAP = 0x4
    HW_SLOWDOWN = 0x8
    SYNC_BOOST = 0x10
    SW_THERMAL_SLOWDOWN = 0x20
    HW_THERMAL_SLOWDOWN = 0x40
    HW_POWER_BRAKE_SLOWDOWN = 0x80


def reason_names(mask: int) -> list[str]:
    return [r.name for r in ClockReason if mask & r]  # type: ignore[misc]


IDLE_UTIL = 0.02
SCHEDUTIL_HEADROOM = 1.25
POWER_KI = 2.5  # 1/s: relative ceiling change per relative power error per second
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
    long_window_s: float
    short_window_s: float
    short_limit_factor: float
    vrm_limit_a: float
    min_cap_w: float
    max_cap_w: float

    @classmethod
    def from_profile(cls, p: Profile) -> DvfsConfig:
        return cls(
            mhz=np.array([s.mhz for s in p.die.pstates], float),
            mv=np.array([s.mv for s in p.die.pstates], float),
            slowdown_c=p.thermal.slowdown_c,
            hw_slowdown_c=p.thermal.hw_slowdown_c,
            shutdown_c=p.thermal.shutdown_c,
            hysteresis_c=p.thermal.hysteresis_c,
            long_window_s=p.power.long_window_s,
            short_window_s=p.power.short_window_s,
            short_limit_factor=p.power.short_limit_factor,
            vrm_limit_a=p.power.vrm_current_limit_a,
            min_cap_w=p.power.min_cap_w,
            max_cap_w=p.power.max_cap_w,
        )

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
        self.cap_w = np.full(n, cap_w)
        self.lock_mhz = np.zeros(n)  # 0: not locked
        self.f_cap = np.full(n, cfg.f_max)  # power-cap ceiling
        self.f_therm = np.full((n, dies), cfg.f_max)  # software thermal ceiling
        self.dither = np.zeros((n, dies))
        self.avg_long = np.zeros(n)
        self.avg_short = np.zeros(n)
        self.hw_therm = np.zeros((n, dies), bool)
        self.hw_ocp = np.zeros(n, bool)
        self.shutdown = np.zeros(n, bool)
        self.forced_min = np.zeros(n, bool)  # natural-convection mode


def _pstate_at_least(cfg: DvfsConfig, f: np.ndarray) -> np.ndarray:
    """Index of the slowest P-state whose clock is >= f (P0 when none is)."""
    # mhz is descending; count how many states are >= f, the last of them is the answer
    idx = (cfg.mhz[None, None, :] >= f[..., None] - 1e-9).sum(axis=-1) - 1
    return np.clip(idx, 0, len(cfg.mhz) - 1)


def _pstate_at_most(cfg: DvfsConfig, f: np.ndarray) -> np.ndarray:
    """Index of the fastest P-state whose clock is <= f (the slowest state when none is)."""
    idx = (cfg.mhz[None, None, :] > f[..., None] + 1e-9).sum(axis=-1)
    return np.clip(idx, 0, len(cfg.mhz) - 1)


def update_power_average(cfg: DvfsConfig, st: DvfsState, power_w: np.ndarray, dt: float) -> None:
    """Exponentially weighted averages of module power over the long and short windows."""
    st.avg_long += (power_w - st.avg_long) * (-np.expm1(-dt / cfg.long_window_s))
    st.avg_short += (power_w - st.avg_short) * (-np.expm1(-dt / cfg.short_window_s))


def hw_protect(cfg: DvfsConfig, st: DvfsState, t_die_true: np.ndarray, vrm_a: np.ndarray) -> None:
    """The fast comparators (every plant tick): latch hardware slowdown and shutdown."""
    st.hw_therm = np.where(st.hw_therm, t_die_true > cfg.hw_slowdown_c - cfg.hysteresis_c,
                           t_die_true > cfg.hw_slowdown_c)
    st.hw_ocp = np.where(st.hw_ocp, vrm_a > cfg.vrm_limit_a * OCP_RELEASE, vrm_a > cfg.vrm_limit_a)
    hottest = t_die_true.max(axis=1)
    st.shutdown = np.where(st.shutdown, hottest > cfg.slowdown_c - cfg.hysteresis_c,
                           hottest > cfg.shutdown_c)


def dvfs_step(cfg: DvfsConfig, st: DvfsState, util: np.ndarray, t_die_sensor: np.ndarray,
              dt: float) -> None:
    """One DVFS period: choose every die's P-state, clock, voltage and reasons."""
    f_max, f_min = cfg.f_max, cfg.f_min
    # governor
    f_gov = np.clip(SCHEDUTIL_HEADROOM * f_max * util, f_min, f_max)
    p_gov = _pstate_at_least(cfg, f_gov)
    reasons = np.where(util < IDLE_UTIL, ClockReason.GPU_IDLE, 0).astype(np.uint32)

    # locked application clocks
    locked = st.lock_mhz > 0
    p_lock = _pstate_at_most(cfg, np.where(locked, st.lock_mhz, f_max)[:, None] * np.ones_like(util))
    p_lock = np.where(locked[:, None], p_lock, 0)
    lock_binds = locked[:, None] & (p_lock > p_gov)
    reasons |= np.where(lock_binds, ClockReason.APPLICATIONS_CLOCKS_SETTING, 0).astype(np.uint32)
    p = np.where(locked[:, None], p_lock, p_gov)

    # power cap (PL1 budget sets the PL2-bounded setpoint of the short average)
    budget = np.clip(2.0 * st.cap_w - st.avg_long, st.cap_w, st.cap_w * cfg.short_limit_factor)
    rel_err = (budget - st.avg_short) / st.cap_w
    st.f_cap = np.clip(st.f_cap * np.exp(POWER_KI * rel_err * dt), f_min, f_max)

    # software thermal slowdown on sensor readings (NaN readings do not move it)
    t = np.nan_to_num(t_die_sensor, nan=cfg.slowdown_c - cfg.hysteresis_c)
    over = t - cfg.slowdown_c
    down = np.where(over > 0, THERMAL_DOWN * (over + 1.0) * f_max * dt, 0.0)
    up = np.where(t < cfg.slowdown_c - cfg.hysteresis_c, THERMAL_UP * f_max * dt, 0.0)
    st.f_therm = np.clip(st.f_therm - down + up, f_min, f_max)
    f_therm = np.where(st.forced_min[:, None], f_min, st.f_therm)

    # The ceilings act through dithering between the P-states around the lower of them. A reason
    # bit is set while its (continuous) ceiling is below the requested clock, whichever P-state
    # the dithering picks in a given period.
    f_req = cfg.mhz[p]
    cap_binds = st.f_cap[:, None] < f_req - 1e-6
    therm_binds = f_therm < f_req - 1e-6
    ceiling = np.minimum(st.f_cap[:, None], f_therm)
    binds = cap_binds | therm_binds
    p_ceil_hi = _pstate_at_least(cfg, ceiling)
    p_ceil_lo = _pstate_at_most(cfg, ceiling)
    f_hi, f_lo = cfg.mhz[p_ceil_hi], cfg.mhz[p_ceil_lo]
    frac = np.where(f_hi > f_lo, (ceiling - f_lo) / np.maximum(f_hi - f_lo, 1e-9), 1.0)
    st.dither = np.where(binds, st.dither + frac, 0.0)
    take_hi = st.dither >= 1.0
    st.dither -= take_hi
    p_ceil = np.where(take_hi, p_ceil_hi, p_ceil_lo)
    p = np.where(binds, np.maximum(p, p_ceil), p)
    reasons |= np.where(cap_binds, ClockReason.SW_POWER_CAP, 0).astype(np.uint32)
    reasons |= np.where(therm_binds, ClockReason.SW_THERMAL_SLOWDOWN, 0).astype(np.uint32)

    st.pstate = p.astype(np.int16)
    st.reasons = reasons
    apply_hw_limits(cfg, st)


def apply_hw_limits(cfg: DvfsConfig, st: DvfsState) -> None:
    """Clock and voltage from the P-state, at least halved by a hardware slowdown, zero when off."""
    mhz = cfg.mhz[st.pstate]
    mv = cfg.mv[st.pstate]
    hw = st.hw_therm | st.hw_ocp[:, None]
    if hw.any():
        p_half = _pstate_at_most(cfg, mhz / 2.0)
        mhz = np.where(hw, cfg.mhz[p_half], mhz)
        mv = np.where(hw, cfg.mv[p_half], mv)
    reasons = st.reasons & ~np.uint32(ClockReason.HW_SLOWDOWN | ClockReason.HW_THERMAL_SLOWDOWN)
    reasons |= np.where(hw, ClockReason.HW_SLOWDOWN, 0).astype(np.uint32)
    reasons |= np.where(st.hw_therm, ClockReason.HW_THERMAL_SLOWDOWN, 0).astype(np.uint32)
    off = st.shutdown[:, None]
    st.mhz = np.where(off, 0.0, mhz)
    st.mv = np.where(off, 0.0, mv)
    st.reasons = np.where(off, 0, reasons).astype(np.uint32)
