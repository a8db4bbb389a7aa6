"""Coolant control in the style of OpenBMC phosphor-pid-control: zones, cascaded PIDs, failsafe,
and pumps in lead/lag.

**Zones.** One zone per valve. Its inputs are the die temperatures of the dice that valve cools
(required) and the temperatures of the HBM stacks beside them (optional: a failed HBM sensor does
not put the zone in failsafe), plus the valve's flow reading (required).

**Thermal loop** (``thermal_hz``). Two reverse-acting PIDs per zone, one on the hottest die
against ``target_c`` and one on the hottest HBM stack against ``hbm_max_c - HBM_MARGIN_C``, each
asking for a coolant flow through the valve; the zone's flow setpoint is the larger demand, never
below a floor.

**Valve loop** (``valve_hz``). A PID per valve moves the valve command so that the measured flow
meets the setpoint, with output limits (``min_valve_pct``..100) and slew limits.

**Failsafe.** A zone starts in failsafe. At each thermal period it is in failsafe if any required
input is failed or stale: older than ``sensor_timeout_s``, or than two sensor sample periods when
the profile samples more slowly than that. It leaves only when all are fresh. In failsafe the
valve command is at least ``failsafe_pct``.

**Pumps.** The lead pump runs, the lag pump stands by. A lead pump whose driver reports a fault,
whose speed feedback is lost (failed or stale tachometer, or speed below ``PUMP_MIN_SPEED`` of
nominal after its spin-up time) or whose current exceeds its limit is latched faulty and the next
healthy pump becomes lead in the same period. A latched pump that is not running is released
after ``PUMP_RETRY_S`` (a restart attempt, as pump controllers make): if its fault persists it is
caught again when next started. The lead alternates every ``pump_alternate_h`` to
even out wear. With no healthy pump left, the module enters natural-convection mode (DVFS forces
the lowest P-state; if the dice still pass ``slowdown_c`` the module shuts down).

Pure numpy; the runtime calls these at their rates and turns the returned transitions into events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from ..profile import Profile
from .pid import PidConfig, PidState, pid_step

HBM_MARGIN_C = 15.0
PUMP_MIN_SPEED = 0.6  # of nominal, once spun up
PUMP_SPINUP_S = 2.0
PUMP_OVERCURRENT_A = 3.0  # the emulated pump driver's current limit
PUMP_RETRY_S = 600.0  # a faulted pump that is not running becomes eligible again after this long


@dataclass(frozen=True)
class CoolantConfig:
    valves: int
    pumps: int
    die_valve: np.ndarray  # [D] valve of each die
    target_c: float
    hbm_target_c: float
    failsafe_pct: float
    min_valve_pct: float
    sensor_timeout_s: float
    alternate_s: float
    pump_rpm_nom: np.ndarray  # [P]
    q_max: float  # L/min per valve at full opening on one pump
    thermal: PidConfig
    valve: PidConfig
    die_zones: Zones
    hbm_zones: Zones

    @classmethod
    def from_profile(cls, p: Profile) -> CoolantConfig:
        c, ctl = p.cooling, p.control
        die_valve = np.arange(p.die.count) % c.valves
        hbm_region = (np.arange(p.hbm.count) * p.die.count) // max(p.hbm.count, 1)
        q_max = c.pumps[0].flow_lpm / c.valves
        return cls(
            valves=c.valves,
            pumps=len(c.pumps),
            die_valve=die_valve,
            die_zones=Zones(die_valve, c.valves),
            hbm_zones=Zones(die_valve[hbm_region], c.valves),
            target_c=p.thermal.target_c,
            hbm_target_c=p.thermal.hbm_max_c - HBM_MARGIN_C,
            failsafe_pct=c.failsafe_pct,
            min_valve_pct=c.min_valve_pct,
            # a reading cannot be fresher than the sensors are sampled: at least two periods
            sensor_timeout_s=max(c.sensor_timeout_s, 2.0 / p.rates.tick_hz),
            alternate_s=c.pump_alternate_h * 3600.0,
            pump_rpm_nom=np.array([pp.nominal_rpm for pp in c.pumps], float),
            q_max=q_max,
            thermal=PidConfig(
                kp=ctl.thermal_kp * q_max,
                ki=ctl.thermal_ki * q_max,
                integral_min=0.0,
                integral_max=q_max,
                out_min=ctl.flow_floor * q_max,
                out_max=q_max,
                reverse=True,
            ),
            valve=PidConfig(
                kp=ctl.valve_kp / q_max,
                ki=ctl.valve_ki / q_max,
                integral_min=0.0,
                integral_max=100.0,
                out_min=c.min_valve_pct,
                out_max=100.0,
                slew_neg=ctl.valve_slew_pct_per_s,
                slew_pos=ctl.valve_slew_pct_per_s,
                reverse=False,
            ),
        )


class CoolantState:
    def __init__(self, cfg: CoolantConfig, n: int, t0: float = 0.0) -> None:
        v = cfg.valves
        self.failsafe = np.ones((n, v), bool)
        self.die_pid = PidState((n, v), cfg.q_max)
        self.hbm_pid = PidState((n, v), cfg.q_max)
        self.valve_pid = PidState((n, v), 100.0, integral=100.0)
        self.flow_setpoint = np.full((n, v), cfg.q_max)
        self.valve_cmd = np.full((n, v), 100.0)
        self.manual = np.full((n, v), np.nan)  # a fixed command set by the operator, NaN: auto
        self.external = np.full((n, v), np.nan)  # the command of an external controller, NaN: none
        self.lead = np.zeros(n, np.int16)
        self.pump_on = np.zeros((n, cfg.pumps), bool)
        self.pump_on[:, 0] = True
        self.pump_started = np.full((n, cfg.pumps), t0)
        self.pump_fault = np.zeros((n, cfg.pumps), bool)
        self.fault_t = np.zeros((n, cfg.pumps))  # when each pump was latched faulty
        self.last_alternate = np.full(n, t0)
        self.natural = np.zeros(n, bool)


class Zones:
    """Which members (dice or stacks) belong to which zone, for one-call reductions."""

    def __init__(self, member_zone: np.ndarray, zones: int) -> None:
        self.order = np.argsort(member_zone, kind="stable")
        sorted_zone = member_zone[self.order]
        self.present = np.unique(sorted_zone)
        self.starts = np.searchsorted(sorted_zone, self.present)
        self.zones = zones
        self.identity = len(member_zone) == zones and bool((member_zone == np.arange(zones)).all())

    def max(self, values: np.ndarray) -> np.ndarray:
        """Per row and zone, the largest member reading (NaN ignored; -inf where none)."""
        v = np.where(np.isnan(values), -np.inf, values)
        if self.identity:
            return v
        out = np.full((values.shape[0], self.zones), -np.inf)
        if len(self.present):
            out[:, self.present] = np.maximum.reduceat(v[:, self.order], self.starts, axis=1)
        return out

    def all(self, ok: np.ndarray) -> np.ndarray:
        if self.identity:
            return ok
        out = np.ones((ok.shape[0], self.zones), bool)
        if len(self.present):
            out[:, self.present] = np.logical_and.reduceat(ok[:, self.order], self.starts, axis=1)
        return out


def thermal_step(
    cfg: CoolantConfig,
    st: CoolantState,
    t: float,
    die_temp: np.ndarray,
    die_age: np.ndarray,
    die_failed: np.ndarray,
    hbm_temp: np.ndarray,
    flow_age: np.ndarray,
    flow_failed: np.ndarray,
    ts: float,
) -> np.ndarray:
    """Thermal period: failsafe decisions and flow setpoints. Returns the failsafe mask before."""
    before = st.failsafe.copy()
    fresh_die = (die_age <= cfg.sensor_timeout_s) & ~die_failed & ~np.isnan(die_temp)
    fresh_flow = (flow_age <= cfg.sensor_timeout_s) & ~flow_failed
    st.failsafe = ~(cfg.die_zones.all(fresh_die) & fresh_flow)
    hot_die = cfg.die_zones.max(die_temp)
    hot_hbm = cfg.hbm_zones.max(hbm_temp)
    hot_die = np.where(np.isfinite(hot_die), hot_die, cfg.target_c)
    hot_hbm = np.where(np.isfinite(hot_hbm), hot_hbm, cfg.hbm_target_c)
    q_die = pid_step(cfg.thermal, st.die_pid, cfg.target_c, hot_die, ts)
    q_hbm = pid_step(cfg.thermal, st.hbm_pid, cfg.hbm_target_c, hot_hbm, ts)
    st.flow_setpoint = np.maximum(q_die, q_hbm)
    return before


def valve_step(cfg: CoolantConfig, st: CoolantState, flow: np.ndarray, ts: float) -> None:
    """Valve period: flow PIDs to valve commands; failsafe, then an external controller's command
    (plant in the loop: the controller under test drives the valve), then the operator's manual
    override, each taking precedence over the one before."""
    measured = np.where(np.isnan(flow), 0.0, flow)
    cmd = pid_step(cfg.valve, st.valve_pid, st.flow_setpoint, measured, ts)
    cmd = np.where(st.failsafe, np.maximum(cmd, cfg.failsafe_pct), cmd)
    cmd = np.where(np.isnan(st.external), cmd, st.external)
    st.valve_cmd = np.where(np.isnan(st.manual), cmd, st.manual)


@dataclass(frozen=True)
class PumpTransitions:
    faulted: np.ndarray  # [N,P] pumps latched faulty this period
    retried: np.ndarray  # [N,P] latched pumps released for another attempt
    failed_over: np.ndarray  # [N] the lead changed because the old lead faulted
    alternated: np.ndarray  # [N] the lead changed for wear levelling
    natural: np.ndarray  # [N] natural-convection mode entered


def pump_step(
    cfg: CoolantConfig,
    st: CoolantState,
    t: float,
    rpm: np.ndarray,
    rpm_age: np.ndarray,
    rpm_failed: np.ndarray,
    driver_fault: np.ndarray,
    current_a: np.ndarray,
    ts: float,
) -> PumpTransitions:
    """Pump supervision every ``ts`` seconds: fault detection, failover, alternation.

    A pump's speed feedback is judged only once it has had its spin-up time and at least two
    periods (the tachometer reading lags by a sensor sample): a pump is never faulted on a
    reading taken before it could have been up to speed.
    """
    n = st.lead.shape[0]
    rows = np.arange(n)
    spun_up = (t - st.pump_started) >= max(PUMP_SPINUP_S, 2.0 * ts)
    slow = ~(rpm >= PUMP_MIN_SPEED * cfg.pump_rpm_nom)  # NaN (a failed tachometer) counts as slow
    # speed feedback is judged once the pump has had its spin-up time
    lost_feedback = (rpm_failed | (rpm_age > cfg.sensor_timeout_s) | slow) & spun_up
    bad = st.pump_on & (driver_fault | lost_feedback | (current_a > PUMP_OVERCURRENT_A))
    newly = bad & ~st.pump_fault
    st.fault_t = np.where(newly, t, st.fault_t)
    st.pump_fault |= bad
    retried = st.pump_fault & ~st.pump_on & (t - st.fault_t >= PUMP_RETRY_S)
    st.pump_fault &= ~retried
    healthy = ~st.pump_fault
    lead_bad = st.pump_fault[rows, st.lead]
    # any(axis=1) of an [N,P] array is an [N] array (numpy's stubs also allow a scalar)
    stopped = ~cast(np.ndarray, st.pump_on.any(axis=1)) & healthy.any(axis=1)  # none runs, one could: start it
    # alternation: hand over to the next healthy pump once the period has passed
    due = (t - st.last_alternate >= cfg.alternate_s) & ~lead_bad & (healthy.sum(axis=1) > 1)
    change = lead_bad | due | stopped
    failed_over = np.zeros(n, bool)
    alternated = np.zeros(n, bool)
    if change.any():
        for r in np.nonzero(change)[0]:
            # the next healthy pump after the lead; the lead itself last (a restart)
            for k in range(1, cfg.pumps + 1):
                cand = (st.lead[r] + k) % cfg.pumps
                if not healthy[r, cand] or (due[r] and cand == st.lead[r]):
                    continue
                st.lead[r] = cand
                st.pump_on[r, :] = False
                st.pump_on[r, cand] = True
                st.pump_started[r, cand] = t
                st.last_alternate[r] = t
                failed_over[r] = bool(lead_bad[r]) and not stopped[r]
                alternated[r] = bool(due[r]) and not lead_bad[r]
                break
    st.pump_on &= healthy
    was_natural = st.natural.copy()
    st.natural = ~cast(np.ndarray, st.pump_on.any(axis=1))
    return PumpTransitions(newly, retried, failed_over, alternated, st.natural & ~was_natural)
