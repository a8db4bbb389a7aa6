"""A shard: the modules of one profile, stepped together on one schedule.

The shard owns the arrays of the plant, the sensors and the controllers, one row per module. A
tick (``tick_hz``) samples the workload, runs each controller whose period has come (DVFS,
thermal, valve/pump) and the fast hardware comparators, applies the actuators and integrates the
plant. Controller transitions become :class:`ShardEvent` records that the runtime publishes.
No asyncio in here: the scheduler in :mod:`.fleet` calls :meth:`Shard.tick` on deadlines.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ..control import coolant as cc
from ..control import dvfs
from ..control import ras as rasmod
from ..plant import model
from ..plant.sensors import SensorBank, SensorFault
from ..plant.workload import Workload, WorkloadModel, utilisation
from ..profile import Profile
from ..protocol import CoolingMode, EventCode, NodeState, PumpFlags, Severity, SnapshotFlags, ValveFlags
from ..protocol.codec import snapshot_dtype

DIE_SENSOR_NOISE_C = 0.15
DIE_SENSOR_QUANTUM_C = 0.0625
FLOW_SENSOR_NOISE = 0.01
RPM_SENSOR_NOISE = 5.0


@dataclass(frozen=True, slots=True)
class ShardEvent:
    row: int
    severity: Severity
    code: EventCode
    subject: int = 0xFFFF
    value: float = 0.0
    text: str = ""


def _divider(tick_hz: float, hz: float) -> int:
    return max(1, int(round(tick_hz / hz)))


class Shard:
    """``n`` modules of one profile."""

    def __init__(self, profile: Profile, n: int, *, seed: int, start_t: float = 0.0) -> None:
        self.profile = profile
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.tick_hz = profile.rates.tick_hz
        self.dt = 1.0 / self.tick_hz
        self.k = 0
        self.t = start_t
        r = profile.rates
        self.div_dvfs = _divider(self.tick_hz, r.dvfs_hz)
        self.div_thermal = _divider(self.tick_hz, r.thermal_hz)
        self.div_valve = _divider(self.tick_hz, r.valve_hz)

        self.params = model.PlantParams.from_profile(profile, n, self.rng)
        self.plant = model.PlantState.initial(self.params, profile)
        self.inputs = model.PlantInputs.idle(self.params, profile)
        self.workload = WorkloadModel(n, profile.die.count, self.rng)
        self.max_mhz = float(profile.max_mhz)
        self.util = np.zeros((n, profile.die.count))

        p = self.params
        t_in = profile.cooling.inlet_c
        self.s_die = SensorBank((n, p.dies), noise_sd=DIE_SENSOR_NOISE_C, quantum=DIE_SENSOR_QUANTUM_C, initial=t_in)
        self.s_hbm = SensorBank((n, p.hbm), noise_sd=DIE_SENSOR_NOISE_C, quantum=DIE_SENSOR_QUANTUM_C, initial=t_in)
        self.s_flow = SensorBank((n, p.valves), noise_sd=FLOW_SENSOR_NOISE, quantum=0.01, initial=0.0)
        self.s_rpm = SensorBank((n, p.pumps), noise_sd=RPM_SENSOR_NOISE, quantum=1.0, initial=0.0)
        for bank in (self.s_die, self.s_hbm, self.s_flow, self.s_rpm):
            bank.read_at[:] = -np.inf  # nothing read yet: every zone starts in failsafe
        self.pump_driver_fault = np.zeros((n, p.pumps), bool)
        self.pump_current = np.zeros((n, p.pumps))

        self.dvfs_cfg = dvfs.DvfsConfig.from_profile(profile)
        self.dvfs = dvfs.DvfsState(self.dvfs_cfg, n, p.dies, profile.power.default_cap_w)
        self.cool_cfg = cc.CoolantConfig.from_profile(profile)
        self.cool = cc.CoolantState(self.cool_cfg, n, start_t)
        self.ras_cfg = rasmod.RasConfig.from_profile(profile)
        self.ras = [rasmod.RasController(self.ras_cfg, random.Random(seed * 65_537 + row)) for row in range(n)]
        self.ras_ce = np.zeros((n, p.hbm), np.int64)
        self.ras_ue = np.zeros((n, p.hbm), np.int64)
        self.ras_flags = np.zeros(n, np.uint16)  # SnapshotFlags bits of RAS
        self.ras_action = np.zeros(n, np.uint8)
        self.ce_storm_rate = np.zeros((n, p.hbm))  # injected single-bit upsets per second
        self.boot_t = np.full(n, start_t)
        self.active = np.ones(n, bool)  # rows whose controller is running; others hold their outputs
        self.events: list[ShardEvent] = []
        self._reported_reasons = np.zeros((n, p.dies), np.uint32)
        self._dtype = snapshot_dtype(p.dies, p.hbm, p.pumps, p.valves)

    # --- the tick ---------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every module by one tick period."""
        dt, p = self.dt, self.params
        k = self.k
        self.k += 1
        self.t += dt
        t = self.t
        st = self.dvfs

        # the pump drivers' fault pins are electrical: seen in the same tick
        self.pump_driver_fault = self.inputs.pump_failed & self.cool.pump_on
        demand = self.workload.demand(t, dt)
        self.util = np.where(st.shutdown[:, None], 0.0, utilisation(demand, st.mhz, self.max_mhz))

        down = ~self.active
        held = self._hold(down) if down.any() else None
        if k % self.div_valve == 0:
            self._cooling_fast(t, dt * self.div_valve)
        if k % self.div_thermal == 0:
            self._cooling_thermal(t, dt * self.div_thermal)
            self._ras_step(t, dt * self.div_thermal)
        if k % self.div_dvfs == 0:
            st.forced_min = self.cool.natural.copy()
            dvfs.dvfs_step(self.dvfs_cfg, st, self.util, self.s_die.value, dt * self.div_dvfs)
        if held is not None:
            self._restore(held, down)

        was_shut, was_ocp = st.shutdown.copy(), st.hw_ocp.copy()
        dvfs.update_power_average(self.dvfs_cfg, st, self.plant.p_total, dt)
        dvfs.hw_protect(self.dvfs_cfg, st, t, self.plant.t_die, self.plant.vrm_current, self.s_die.value)
        dvfs.apply_hw_limits(self.dvfs_cfg, st)
        self._protection_events(was_shut, was_ocp)

        u = self.inputs
        u.mhz, u.mv = st.mhz, st.mv
        u.powered = ~st.shutdown
        idle = self.profile.die.idle_activity
        u.activity = idle + (1.0 - idle) * self.util
        u.hbm_util = 0.8 * self.util[:, p.hbm_region] if p.hbm else u.hbm_util
        u.valve_cmd = self.cool.valve_cmd
        u.pump_on = self.cool.pump_on
        model.step(p, self.plant, u, dt, self.profile.cooling.inlet_c)

        rng = self.rng
        for name, bank, true in (("die", self.s_die, self.plant.t_die), ("hbm", self.s_hbm, self.plant.t_hbm),
                                 ("flow", self.s_flow, self.plant.flow_valve), ("rpm", self.s_rpm, self.plant.pump_rpm)):
            was_failed = bank.failed
            bank.sample(true, t, dt, rng)
            if bank.failed is not was_failed and (bank.failed != was_failed).any():
                for row, col in zip(*np.nonzero(bank.failed & ~was_failed), strict=True):
                    self.events.append(ShardEvent(int(row), Severity.ERROR, EventCode.SENSOR_FAULT, int(col),
                                                  text=f"{name} sensor {col} failed"))
        # the pump driver's current follows its speed; a pump with a shorted winding or a blocked
        # impeller (pump_overcurrent) draws several times more
        self.pump_current = 1.5 * (self.plant.pump_rpm / p.pump_rpm_nom) ** 2 * np.where(u.pump_overcurrent, 3.0, 1.0)

    def _firmware_arrays(self) -> list[tuple[object, str]]:
        """The firmware's outputs and memory: what a controller that is down does not change."""
        st, cool = self.dvfs, self.cool
        return [(st, "pstate"), (st, "reasons"), (st, "f_cap"), (st, "f_therm"), (st, "trim"), (st, "dither"),
                (st, "forced_min"), (cool, "valve_cmd"), (cool, "pump_on"), (cool, "lead"),
                (cool, "flow_setpoint"), (cool, "failsafe"), (cool, "pump_fault"), (cool, "natural"),
                (cool, "pump_started"), (cool, "last_alternate"), (cool.die_pid, "integral"),
                (cool.die_pid, "last"), (cool.hbm_pid, "integral"), (cool.hbm_pid, "last"),
                (cool.valve_pid, "integral"), (cool.valve_pid, "last")]

    def _hold(self, down: np.ndarray) -> list[np.ndarray]:
        return [np.array(getattr(obj, name)[down], copy=True) for obj, name in self._firmware_arrays()]

    def _restore(self, held: list[np.ndarray], down: np.ndarray) -> None:
        for (obj, name), saved in zip(self._firmware_arrays(), held, strict=True):
            arr = np.array(getattr(obj, name), copy=True)
            arr[down] = saved
            setattr(obj, name, arr)

    def reset_row(self, row: int) -> None:
        """The controller of ``row`` boots again: its firmware state starts afresh (zones in
        failsafe, default power cap, no locked clocks, no latched pump faults, volatile RAS
        counters cleared and pending remaps applied). The hardware keeps its state."""
        cfg, st = self.dvfs_cfg, self.dvfs
        st.pstate[row] = len(cfg.mhz) - 1
        st.f_cap[row] = cfg.f_max
        st.f_therm[row] = cfg.f_max
        st.trim[row] = 1.0
        st.dither[row] = 0.0
        st.lock_mhz[row] = 0.0
        st.cap_w[row] = self.profile.power.default_cap_w
        cool, ccfg = self.cool, self.cool_cfg
        cool.failsafe[row] = True
        cool.manual[row] = np.nan
        cool.pump_fault[row] = False
        cool.lead[row] = 0
        cool.pump_on[row] = False
        cool.pump_on[row, 0] = True
        cool.pump_started[row] = self.t
        cool.last_alternate[row] = self.t
        cool.natural[row] = False
        cool.flow_setpoint[row] = ccfg.q_max
        cool.die_pid.reset(np.arange(self.n) == row, ccfg.q_max)
        cool.hbm_pid.reset(np.arange(self.n) == row, ccfg.q_max)
        cool.valve_pid.integral[row] = 100.0
        cool.valve_pid.last[row] = 100.0
        self.ras_events(row, self.ras[row].reboot())
        self._reported_reasons[row] = 0
        self.boot_t[row] = self.t

    def _cooling_thermal(self, t: float, ts: float) -> None:
        before = cc.thermal_step(
            self.cool_cfg, self.cool, t,
            self.s_die.value, self.s_die.age(t), self.s_die.failed,
            self.s_hbm.value, self.s_flow.age(t), self.s_flow.failed, ts,
        )
        after = self.cool.failsafe
        for row, zone in zip(*np.nonzero(after != before), strict=True):
            entered = bool(after[row, zone])
            self.events.append(ShardEvent(
                int(row),
                Severity.WARNING if entered else Severity.NOTICE,
                EventCode.FAILSAFE_ENTER if entered else EventCode.FAILSAFE_EXIT,
                int(zone),
                text=f"zone {zone} {'enters' if entered else 'leaves'} failsafe",
            ))
        changed = self.dvfs.reasons != self._reported_reasons
        for row, die in zip(*np.nonzero(changed), strict=True):
            mask = int(self.dvfs.reasons[row, die])
            self.events.append(ShardEvent(
                int(row), Severity.INFO, EventCode.CLOCK_REASONS, int(die), float(mask),
                ",".join(dvfs.reason_names(mask)) or "none",
            ))
        self._reported_reasons = self.dvfs.reasons.copy()

    def _cooling_fast(self, t: float, ts: float) -> None:
        cool = self.cool
        was_natural = cool.natural.copy()
        tr = cc.pump_step(
            self.cool_cfg, cool, t, self.s_rpm.value, self.s_rpm.age(t), self.s_rpm.failed,
            self.pump_driver_fault, self.pump_current,
        )
        names = [pp.name for pp in self.profile.cooling.pumps]
        for row, pump in zip(*np.nonzero(tr.faulted), strict=True):
            self.events.append(ShardEvent(int(row), Severity.ERROR, EventCode.PUMP_FAULT, int(pump),
                                          text=f"pump {names[pump]} faulted"))
        for row in np.nonzero(tr.failed_over)[0]:
            lead = int(cool.lead[row])
            self.events.append(ShardEvent(int(row), Severity.WARNING, EventCode.PUMP_FAILOVER, lead,
                                          text=f"pump {names[lead]} takes over as lead"))
        for row in np.nonzero(tr.alternated)[0]:
            lead = int(cool.lead[row])
            self.events.append(ShardEvent(int(row), Severity.INFO, EventCode.PUMP_ALTERNATE, lead,
                                          text=f"pump {names[lead]} is lead (periodic alternation)"))
        for row in np.nonzero(tr.natural)[0]:
            self.events.append(ShardEvent(int(row), Severity.CRITICAL, EventCode.NATURAL_CONVECTION,
                                          text="no pump running: natural convection, lowest P-state"))
        for row in np.nonzero(was_natural & ~cool.natural)[0]:
            self.events.append(ShardEvent(int(row), Severity.NOTICE, EventCode.COOLING_RESTORED,
                                          text="pump running again"))
        cc.valve_step(self.cool_cfg, cool, self.s_flow.value, ts)

    _RAS_EVENTS = {
        rasmod.RasEventKind.UE: (Severity.ERROR, EventCode.UE),
        rasmod.RasEventKind.REMAP_PENDING: (Severity.WARNING, EventCode.REMAP_PENDING),
        rasmod.RasEventKind.REMAP_FAILED: (Severity.CRITICAL, EventCode.REMAP_FAILED),
        rasmod.RasEventKind.CE_STORM: (Severity.WARNING, EventCode.CE_STORM),
        rasmod.RasEventKind.CE_STORM_END: (Severity.NOTICE, EventCode.CE_STORM_END),
        rasmod.RasEventKind.REMAPPED: (Severity.NOTICE, EventCode.ROW_REMAPPED),
    }

    def ras_events(self, row: int, events: list[rasmod.RasEvent]) -> None:
        """Queue RAS events of a row and refresh its RAS telemetry."""
        for ev in events:
            sev, code = self._RAS_EVENTS[ev.kind]
            self.events.append(ShardEvent(row, sev, code, ev.stack if ev.stack >= 0 else 0xFFFF,
                                          float(ev.addr), ev.text))
        self.ras_sync(row)

    def ras_sync(self, row: int) -> None:
        ctl = self.ras[row]
        self.ras_ce[row] = ctl.ce.sum(axis=1)
        self.ras_ue[row] = ctl.ue.sum(axis=1)
        self.ras_flags[row] = (
            (SnapshotFlags.REMAP_PENDING if ctl.remap_pending else 0)
            | (SnapshotFlags.REMAP_FAILED if ctl.remap_failed else 0)
            | (SnapshotFlags.CE_STORM if ctl.storm else 0)
        )
        self.ras_action[row] = int(ctl.recovery_action)

    def _ras_step(self, t: float, ts: float) -> None:
        """Background upsets (Poisson, rate doubling with HBM temperature), then the RAS work of
        every module that has any: demand reads of latent errors, failed devices, patrol scrub."""
        cfg = self.ras_cfg
        if not self.params.hbm:
            return
        factor = cfg.error_rate_factor(self.plant.t_hbm) * ts
        live = ~self.dvfs.shutdown[:, None]
        storms = self.ce_storm_rate.any()
        for rate, nbits in ((cfg.sbe_rate_per_s, 1), (cfg.dbe_rate_per_s, 2)):
            if rate <= 0 and not (storms and nbits == 1):
                continue
            lam = rate * factor + (self.ce_storm_rate * ts if nbits == 1 else 0.0)
            hits = self.rng.poisson(lam) * live
            for row, stack in zip(*np.nonzero(hits), strict=True):
                for _ in range(int(hits[row, stack])):
                    self.ras[row].inject_random(int(stack), nbits)
        util = self.inputs.hbm_util
        for row, ctl in enumerate(self.ras):
            if not self.active[row]:
                continue  # nobody reads the errors while the controller is down
            if ctl.latent or ctl.store.failed_devices or len(ctl.store) or ctl.storm:
                self.ras_events(row, ctl.step(t, ts, util[row]))

    def _protection_events(self, was_shut: np.ndarray, was_ocp: np.ndarray) -> None:
        st = self.dvfs
        hottest = self.plant.t_die.max(axis=1)
        for row in np.nonzero(st.shutdown & ~was_shut)[0]:
            why = "natural convection cannot hold them" if st.forced_min[row] else "over the shutdown temperature"
            self.events.append(ShardEvent(int(row), Severity.CRITICAL, EventCode.THERMAL_SHUTDOWN,
                                          value=float(hottest[row]), text=f"dice powered off: {why}"))
        for row in np.nonzero(~st.shutdown & was_shut)[0]:
            self.events.append(ShardEvent(int(row), Severity.NOTICE, EventCode.THERMAL_RECOVERY,
                                          value=float(hottest[row]), text="dice powered on again"))
        for row in np.nonzero(st.hw_ocp & ~was_ocp)[0]:
            self.events.append(ShardEvent(int(row), Severity.ERROR, EventCode.VRM_OVERCURRENT,
                                          value=float(self.plant.vrm_current[row])))
        for row in np.nonzero(~st.hw_ocp & was_ocp)[0]:
            self.events.append(ShardEvent(int(row), Severity.NOTICE, EventCode.VRM_RECOVERED,
                                          value=float(self.plant.vrm_current[row])))

    def take_events(self) -> list[ShardEvent]:
        events, self.events = self.events, []
        return events

    # --- views ------------------------------------------------------------------------------

    def node_state(self, row: int) -> NodeState:
        return NodeState.SHUTDOWN if self.dvfs.shutdown[row] else NodeState.RUNNING

    def cooling_mode(self, rows: np.ndarray | slice) -> np.ndarray:
        mode = np.where(self.cool.failsafe[rows].any(axis=1), CoolingMode.FAILSAFE, CoolingMode.NORMAL)
        return np.where(self.cool.natural[rows], CoolingMode.NATURAL_CONVECTION, mode)

    def records(self, rows: np.ndarray) -> np.ndarray:
        """Telemetry records (the wire layout) of the given rows, filled in one vectorised pass;
        ``rx_rejected`` is left for the node runtime to fill."""
        p, st, pl, cool = self.params, self.dvfs, self.plant, self.cool
        rec = np.zeros(len(rows), self._dtype)
        rec["uptime_ns"] = np.maximum(self.t - self.boot_t[rows], 0.0) * 1e9
        rec["state"] = np.where(st.shutdown[rows], NodeState.SHUTDOWN, NodeState.RUNNING)
        rec["mode"] = self.cooling_mode(rows)
        flags = np.where(cool.failsafe[rows].any(axis=1), SnapshotFlags.FAILSAFE, 0)
        flags |= np.where(st.lock_mhz[rows] > 0, SnapshotFlags.CLOCKS_LOCKED, 0)
        rec["flags"] = flags | self.ras_flags[rows]
        rec["vrm_current_a"] = pl.vrm_current[rows]
        rec["recovery_action"] = self.ras_action[rows]
        rec["power_w"] = pl.p_total[rows]
        rec["power_cap_w"] = st.cap_w[rows]
        rec["inlet_c"] = pl.t_inlet[rows]
        rec["outlet_c"] = pl.t_outlet[rows]
        rec["flow_lpm"] = pl.flow_total[rows]
        rec["n_dies"], rec["n_hbm"], rec["n_pumps"], rec["n_valves"] = p.dies, p.hbm, p.pumps, p.valves
        d = rec["dies"]
        d["temp_c"] = self.s_die.value[rows]
        d["power_w"] = pl.p_die[rows]
        d["clock_mhz"] = st.mhz[rows]
        d["voltage_mv"] = st.mv[rows]
        d["reasons"] = st.reasons[rows]
        d["pstate"] = st.pstate[rows]
        d["util_pct"] = np.round(self.util[rows] * 100.0)
        if p.hbm:
            rec["hbm"]["temp_c"] = self.s_hbm.value[rows]
            rec["hbm"]["ce"] = np.minimum(self.ras_ce[rows], 0xFFFFFFFF)
            rec["hbm"]["ue"] = np.minimum(self.ras_ue[rows], 0xFFFFFFFF)
        pumps = rec["pumps"]
        pumps["rpm"] = np.clip(np.nan_to_num(self.s_rpm.value[rows]), 0, 65535)
        lead = np.zeros((len(rows), p.pumps), bool)
        lead[np.arange(len(rows)), cool.lead[rows]] = True
        pumps["flags"] = (
            np.where(cool.pump_on[rows], PumpFlags.RUNNING, 0)
            | np.where(lead, PumpFlags.LEAD, 0)
            | np.where(cool.pump_fault[rows], PumpFlags.FAULT, 0)
        )
        valves = rec["valves"]
        valves["position_pct"] = pl.valve_pos[rows]
        valves["flags"] = np.where(np.isnan(cool.manual[rows]), 0, ValveFlags.MANUAL)
        return rec

    # --- operator actions (called by the command handler) ------------------------------------

    def set_workload(self, row: int, kind: Workload, scale: float = 1.0) -> None:
        self.workload.kind[row] = int(kind)
        self.workload.scale[row] = scale

    def set_sensor_fault(self, bank: str, row: int, col: int, fault: SensorFault, param: float = 0.0) -> None:
        getattr(self, f"s_{bank}").set_fault(row, col, fault, param)
