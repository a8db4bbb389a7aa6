"""A shard: the modules of one profile, stepped together on one schedule.

The shard owns the arrays of the plant, the sensors and the controllers, one row per module. A
tick (``tick_hz``) samples the workload, runs each controller whose period has come (DVFS,
thermal, valve/pump) and the fast hardware comparators, applies the actuators and integrates the
plant. Controller transitions become :class:`ShardEvent` records that the runtime publishes.
No asyncio in here: the scheduler in :mod:`.fleet` calls :meth:`Shard.tick` on deadlines.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..control import coolant as cc
from ..control import dvfs, pcie
from ..control import ras as rasmod
from ..kernel import calls as kcalls
from ..kernel import load as load_kernels
from ..kernel.loops import MAX_ROW
from ..plant import model
from ..plant.memory import HbmStore
from ..plant.sensors import SensorBank, SensorFault
from ..plant.workload import Workload, WorkloadModel, utilisation
from ..profile import Profile
from ..protocol import (
    ClockReason,
    CoolingMode,
    EventCode,
    MsgType,
    NodeState,
    PumpFlags,
    Severity,
    SnapshotFlags,
    ValveFlags,
    reason_names,
)
from ..protocol.codec import samples_dtype, snapshot_dtype
from ..protocol.fields import SAMPLES_LAYOUT

REASON_HOLD_S = 5.0  # a clock-reason change is reported once it has held this long
OCP_REPORT_HOLD_S = 10.0  # VRM recovery is reported once the over-current has stayed away this long
DIE_SENSOR_NOISE_C = 0.15
DIE_SENSOR_QUANTUM_C = 0.0625
FLOW_SENSOR_NOISE = 0.01
RPM_SENSOR_NOISE = 5.0


# enum values as plain integers for the array code (enum lookups are slow inside numpy expressions)
_RUNNING, _SHUTDOWN = int(NodeState.RUNNING), int(NodeState.SHUTDOWN)
_FAILSAFE_MODE, _NATURAL_MODE = int(CoolingMode.FAILSAFE), int(CoolingMode.NATURAL_CONVECTION)
_F_FAILSAFE, _F_LOCKED = int(SnapshotFlags.FAILSAFE), int(SnapshotFlags.CLOCKS_LOCKED)
_P_RUNNING, _P_LEAD, _P_FAULT = int(PumpFlags.RUNNING), int(PumpFlags.LEAD), int(PumpFlags.FAULT)
_R_CAP = np.uint32(ClockReason.SW_POWER_CAP)
_R_THERM = np.uint32(ClockReason.SW_THERMAL_SLOWDOWN | ClockReason.HW_THERMAL_SLOWDOWN)
_R_HW = np.uint32(ClockReason.HW_SLOWDOWN | ClockReason.HW_POWER_BRAKE_SLOWDOWN)
_V_MANUAL = int(ValveFlags.MANUAL)
_V_EXTERNAL = int(ValveFlags.EXTERNAL)


@dataclass(frozen=True, slots=True)
class ShardEvent:
    row: int
    severity: Severity
    code: EventCode
    subject: int = 0xFFFF
    value: float = 0.0
    text: str = ""


def _divider(tick_hz: float, hz: float) -> int:
    return max(1, round(tick_hz / hz))


class Shard:
    """``n`` modules of one profile."""

    def __init__(self, profile: Profile, n: int, *, seed: int, start_t: float = 0.0) -> None:
        self.profile = profile
        self.n = n
        self.rng = np.random.default_rng(seed)
        self.tick_hz = profile.rates.tick_hz
        self.periods_late = 0  # tick periods integrated in a later tick (real time fell behind)
        self.name = profile.name  # the fleet's name for it (the profile's, or profile/k)
        self.dt = 1.0 / self.tick_hz
        self.k = 0
        self.t0 = start_t
        self.t = start_t
        r = profile.rates
        self.div_dvfs = _divider(self.tick_hz, r.dvfs_hz)
        self.div_thermal = _divider(self.tick_hz, r.thermal_hz)
        self.div_valve = _divider(self.tick_hz, r.valve_hz)
        self.samples_per_frame = r.samples_per_frame
        self.div_sample = _divider(self.tick_hz, r.sample_hz)

        self.params = model.PlantParams.from_profile(profile, n, self.rng)
        # the compiled tick (numba), equal to the numpy reference; None: the reference runs
        dims = (self.params.dies, self.params.hbm, self.params.valves, self.params.pumps)
        self.kernels = load_kernels() if max(dims) <= MAX_ROW else None
        self.plant = model.PlantState.initial(self.params, profile)
        self.inputs = model.PlantInputs.idle(self.params, profile)
        self.workload = WorkloadModel(n, profile.die.count, self.rng)
        self.max_mhz = float(profile.max_mhz)
        self.util = np.zeros((n, profile.die.count))

        p = self.params
        pl = self.plant  # sensors start from the module's state at power-on
        self.s_die = SensorBank(
            (n, p.dies), noise_sd=DIE_SENSOR_NOISE_C, quantum=DIE_SENSOR_QUANTUM_C, initial=pl.t_die
        )
        self.s_hbm = SensorBank((n, p.hbm), noise_sd=DIE_SENSOR_NOISE_C, quantum=DIE_SENSOR_QUANTUM_C, initial=pl.t_hbm)
        self.s_flow = SensorBank((n, p.valves), noise_sd=FLOW_SENSOR_NOISE, quantum=0.01, initial=pl.flow_valve)
        self.s_rpm = SensorBank((n, p.pumps), noise_sd=RPM_SENSOR_NOISE, quantum=1.0, initial=pl.pump_rpm)
        for bank in (self.s_die, self.s_hbm, self.s_flow, self.s_rpm):
            bank.read_at[:] = -np.inf  # nothing read yet: every zone starts in failsafe
        self._noise_size = sum(b.value.size for b in (self.s_die, self.s_hbm, self.s_flow, self.s_rpm))
        self.pump_driver_fault = np.zeros((n, p.pumps), bool)
        self.pump_current = np.zeros((n, p.pumps))

        self.dvfs_cfg = dvfs.DvfsConfig.from_profile(profile)
        self.dvfs = dvfs.DvfsState(self.dvfs_cfg, n, p.dies, profile.power.default_cap_w)
        self.cool_cfg = cc.CoolantConfig.from_profile(profile)
        self.cool = cc.CoolantState(self.cool_cfg, n, start_t)
        self.ras_cfg = rasmod.RasConfig.from_profile(profile)
        self.hbm: list[HbmStore] = []  # each module's memory (plant), read by its RAS firmware
        self.ras: list[rasmod.RasController] = []
        for row in range(n):
            rng = random.Random(seed * 65_537 + row)
            self.hbm.append(HbmStore(self.ras_cfg.geometry, self.ras_cfg.mode, rng))
            self.ras.append(rasmod.RasController(self.ras_cfg, rng, self.hbm[row]))
        for row, ctl in enumerate(self.ras):
            ctl.on_work = functools.partial(self.ras_touch, row)
            ctl.booted_at = start_t  # scrub passes count from boot
        self.ras_ce = np.zeros((n, p.hbm), np.int64)
        self.ras_ue = np.zeros((n, p.hbm), np.int64)
        self.ras_flags = np.zeros(n, np.uint16)  # SnapshotFlags bits of RAS
        self.ras_action = np.zeros(n, np.uint8)
        self.ras_remapped = np.zeros((n, 2), np.int64)  # rows remapped for CEs, for UEs (pending included)
        self.ras_histogram = np.zeros((n, 5), np.int64)  # banks per remap-availability bucket (NVML's)
        g = self.ras_cfg.geometry
        self.ras_histogram[:, 0] = g.stacks * g.channels * g.banks
        self.ras_last_xid = np.zeros(n, np.int64)
        self.ras_aggregate = np.zeros((n, 2), np.int64)  # CE, UE over the module's life (NVML's aggregate)
        self.pcie = pcie.PcieCounters(n)  # the host link's replays and AER errors since boot
        self.ce_storm_rate = np.zeros((n, p.hbm))  # injected single-bit upsets per second
        self._storm_any = False
        self._ras_busy: set[int] = set()  # rows whose RAS firmware has work (errors, a store to scrub)
        self.boot_t = np.full(n, start_t)
        # energy and violation times since each controller booted (monotonic, in telemetry)
        self.energy_j = np.zeros(n)
        self.violation_s = np.zeros((n, 4))  # power cap, die thermal, HBM thermal, hardware slowdown
        # energy since each row's last telemetry record: telemetry reports average power
        self._energy = np.zeros(n)
        self._die_energy = np.zeros((n, p.dies))
        self._energy_since = np.full(n, start_t)
        self.active = np.ones(n, bool)  # rows whose controller is running; others hold their outputs
        self.linked = np.zeros(n, bool)  # rows whose node's link is up (BIRTH published)
        self.rx_rejected = np.zeros(n, np.uint32)  # frames each node could not decode (its counter)
        self.link_faulty = np.zeros(n, bool)  # rows whose node has link faults in force
        self.seq = np.zeros(n, np.uint32)  # the sequence number of each node's next frame
        self.reporting = np.zeros(n, bool)  # rows owing telemetry: running, and linked once this life
        self.events: list[ShardEvent] = []
        self._reported_reasons = np.zeros((n, p.dies), np.uint32)
        self._ocp_reported = np.zeros(n, bool)
        self._ocp_clear_since = np.zeros(n)
        self._seen_reasons = np.zeros((n, p.dies), np.uint32)
        self._reasons_since = np.zeros((n, p.dies))
        self._dtype = snapshot_dtype(p.dies, p.hbm, p.pumps, p.valves)
        # where the compiled records fill writes each field (None: the numpy pass below runs)
        self._fill_at = kcalls.snapshot_offsets(self._dtype) if self.kernels is not None else None
        # the high-rate samples a SAMPLES frame carries: a ring of the last samples_per_frame,
        # taken every div_sample ticks (power averaged over the sample's interval)
        spf = self.samples_per_frame
        self._samples_dtype = samples_dtype(spf, p.dies, p.hbm, p.pumps, p.valves) if spf > 1 else None
        # (a sample not taken yet, since the controller booted, reads NaN)
        self._smp_power = np.full((spf, n), np.nan, np.float32)
        self._smp_die_t = np.full((spf, n, p.dies), np.nan, np.float32)
        self._smp_die_p = np.full((spf, n, p.dies), np.nan, np.float32)
        self._smp_k = 0
        self._smp_energy = np.zeros(n)
        self._smp_die_energy = np.zeros((n, p.dies))
        self._smp_since = start_t
        self._pump_index = np.arange(p.pumps)[None, :]

    # --- the tick ---------------------------------------------------------------------------

    def tick(self, periods: int = 1) -> None:
        """Advance every module by ``periods`` tick periods at once (more than one when the
        scheduler woke late in real time: the plant integrates over the time that really passed,
        stable for any step, and each controller whose period came round runs once, over the time
        since it last ran)."""
        if periods < 1:
            raise ValueError(f"periods must be at least 1, got {periods}")
        dt, p = self.dt * periods, self.params
        k0 = self.k
        self.k += periods
        self.periods_late += periods - 1
        self.t = self.t0 + self.k * self.dt  # no drift over a long run
        t = self.t
        st = self.dvfs

        # the pump drivers' fault pins are electrical: seen in the same tick
        self.pump_driver_fault = self.inputs.pump_failed & self.cool.pump_on
        kern = self.kernels
        got = (
            None if kern is None else kcalls.tick_demand(kern, self.workload, t, dt, st.mhz, st.shutdown, self.max_mhz)
        )
        if got is not None:  # the same as below, in one compiled pass
            demand, self.util = got
        else:
            demand = self.workload.demand(t, dt)
            self.util = utilisation(demand, st.mhz, self.max_mhz) * ~st.shutdown[:, None]

        down = ~self.active
        held = self._hold(down) if down.any() else None
        n = self._periods_due(k0, self.div_valve)
        if n:
            self._cooling_fast(t, self.dt * self.div_valve * n)
        n = self._periods_due(k0, self.div_thermal)
        if n:
            self._cooling_thermal(t, self.dt * self.div_thermal * n)
            self._ras_step(t, self.dt * self.div_thermal * n)
            if self.pcie.active:
                self.pcie.step(self.rng, self.dt * self.div_thermal * n, self.active)
        n = self._periods_due(k0, self.div_dvfs)
        if n:
            st.forced_min = self.cool.natural.copy()
            step = dvfs.dvfs_step if self.kernels is None else functools.partial(kcalls.dvfs_step, self.kernels)
            step(self.dvfs_cfg, st, self.util, self.s_die.value, self.dt * self.div_dvfs * n, self.s_hbm.value)
        if held is not None:
            self._restore(held, down)

        was_shut, was_ocp = st.shutdown.copy(), st.hw_ocp.copy()
        if kern is not None:
            kcalls.update_power_average(kern, self.dvfs_cfg, st, self.plant.p_total, dt)
            kcalls.hw_protect(kern, self.dvfs_cfg, st, t, self.plant.t_die, self.plant.vrm_current, self.s_die.value)
            kcalls.apply_hw_limits(kern, self.dvfs_cfg, st)
        else:
            dvfs.update_power_average(self.dvfs_cfg, st, self.plant.p_total, dt)
            dvfs.hw_protect(self.dvfs_cfg, st, t, self.plant.t_die, self.plant.vrm_current, self.s_die.value)
            dvfs.apply_hw_limits(self.dvfs_cfg, st)
        self._protection_events(was_shut, was_ocp)
        u = self.inputs
        u.mhz, u.mv = st.mhz, st.mv
        u.powered = ~st.shutdown
        idle = self.profile.die.idle_activity
        if kern is not None:  # the same as below, in one compiled pass
            self.util, u.activity = np.empty(demand.shape), np.empty(demand.shape)
            u.hbm_util = np.empty((self.n, p.hbm))
            kern.tick_inputs(
                demand, st.mhz, st.shutdown, self.max_mhz, idle, p.hbm_region, self.util, u.activity, u.hbm_util
            )
        else:
            self._plant_inputs(demand, idle)
        u.valve_cmd = self.cool.valve_cmd
        u.pump_on = self.cool.pump_on
        if kern is not None:
            kcalls.plant_step(kern, p, self.plant, u, dt, self.profile.cooling.inlet_c)
            kcalls.learn_trim(kern, self.dvfs_cfg, st, self.plant.p_total, self.util, self.s_die.value, dt)
        else:
            model.step(p, self.plant, u, dt, self.profile.cooling.inlet_c)
            dvfs.learn_trim(self.dvfs_cfg, st, self.plant.p_total, self.util, self.s_die.value, dt)
        if kern is not None:  # the same as below, in one compiled pass
            kern.tick_counters(
                self.plant.p_total, self.plant.p_die, self.active, st.reasons, st.hbm_slow, dt,
                int(_R_CAP), int(_R_THERM), int(_R_HW), self._samples_dtype is not None,
                self._energy, self._die_energy, self.energy_j, self.violation_s, self._smp_energy,
                self._smp_die_energy,
            )  # fmt: skip
        else:
            self._energy += self.plant.p_total * dt
            self._die_energy += self.plant.p_die * dt
            self.energy_j += self.plant.p_total * (dt * self.active)
            held = np.bitwise_or.reduce(st.reasons, axis=1)
            viol = self.violation_s
            viol[:, 0] += (held & _R_CAP != 0) * dt
            viol[:, 1] += (held & _R_THERM != 0) * dt
            viol[:, 2] += st.hbm_slow * dt
            viol[:, 3] += (held & _R_HW != 0) * dt
            if self._samples_dtype is not None:
                self._smp_energy += self.plant.p_total * dt
                self._smp_die_energy += self.plant.p_die * dt

        rng = self.rng
        noise = rng.standard_normal(self._noise_size)  # one draw for every sensor of the shard
        start = 0
        for name, bank, true in (
            ("die", self.s_die, self.plant.t_die),
            ("hbm", self.s_hbm, self.plant.t_hbm),
            ("flow", self.s_flow, self.plant.flow_valve),
            ("rpm", self.s_rpm, self.plant.pump_rpm),
        ):
            was_failed = bank.failed
            size = bank.value.size
            bank_noise = noise[start : start + size].reshape(bank.value.shape)
            start += size
            if kern is None or not kcalls.sensor_sample(kern, bank, true, t, bank_noise, dt, rng):
                bank.sample(true, t, dt, rng, bank_noise)
            if bank.faulty and (bank.failed != was_failed).any():
                for row, col in zip(*np.nonzero(bank.failed & ~was_failed), strict=True):
                    self.events.append(
                        ShardEvent(
                            int(row),
                            Severity.ERROR,
                            EventCode.SENSOR_FAULT,
                            int(col),
                            text=f"{name} sensor {col} failed",
                        )
                    )

        if self._samples_dtype is not None:
            n = self._periods_due(k0, self.div_sample)
            if n:
                self._take_samples(n)

    def _plant_inputs(self, demand: np.ndarray, idle: float) -> None:
        """The plant's inputs from the clocks chosen now (the numpy reference of the compiled
        ``tick_inputs``): the firmware saw the demand at the clocks it had; the dice run it at
        these."""
        st, u, p = self.dvfs, self.inputs, self.params
        self.util = utilisation(demand, st.mhz, self.max_mhz) * ~st.shutdown[:, None]
        u.activity = idle + (1.0 - idle) * self.util
        # memory traffic follows the work the dice get done, busy fraction x clock: a die slowed to a
        # sixth of its clock issues a sixth of the requests (it drove the memory at full bandwidth
        # at any clock, so a hot module at its lowest clock drew ~40 W over a minimum cap)
        # (np.take keeps the rows C-ordered, as ``[:, index]`` does not: numpy sums a row of an
        # F-ordered array in another order, and the compiled kernel sums as for C-ordered rows)
        u.hbm_util = 0.8 * np.take(self.util * (st.mhz / self.max_mhz), p.hbm_region, axis=1) if p.hbm else u.hbm_util

    def _take_samples(self, n: int) -> None:
        """Samples came due ``n`` times since the last (more than once after a late tick: each
        gets the same readings, the power averaged over the whole span)."""
        span = self.t - self._smp_since
        p = self._smp_energy / span if span > 0 else self.plant.p_total
        dp = self._smp_die_energy / span if span > 0 else self.plant.p_die
        spf = self.samples_per_frame
        for i in range(min(n, spf)):
            slot = (self._smp_k + n - 1 - i) % spf
            self._smp_power[slot] = p
            self._smp_die_t[slot] = self.s_die.value
            self._smp_die_p[slot] = dp
        self._smp_k += n
        self._smp_energy[:] = 0.0
        self._smp_die_energy[:] = 0.0
        self._smp_since = self.t

    def _firmware_arrays(self) -> list[tuple[object, str]]:
        """The firmware's outputs and memory: what a controller that is down does not change."""
        st, cool = self.dvfs, self.cool
        return [
            (st, "pstate"),
            (st, "reasons"),
            (st, "f_cap"),
            (st, "f_therm"),
            (st, "trim"),
            (st, "dither"),
            (st, "forced_min"),
            (cool, "valve_cmd"),
            (cool, "pump_on"),
            (cool, "lead"),
            (cool, "flow_setpoint"),
            (cool, "failsafe"),
            (cool, "pump_fault"),
            (cool, "natural"),
            (cool, "pump_started"),
            (cool, "last_alternate"),
            (cool.die_pid, "integral"),
            (cool.die_pid, "last"),
            (cool.hbm_pid, "integral"),
            (cool.hbm_pid, "last"),
            (cool.valve_pid, "integral"),
            (cool.valve_pid, "last"),
        ]

    def _periods_due(self, k0: int, div: int) -> int:
        """How many periods of a controller that runs every ``div`` ticks came round in the ticks
        ``k0 .. self.k - 1`` (it runs on the ticks that are multiples of ``div``)."""
        return (self.k - 1) // div - (k0 - 1) // div

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
        self.rx_rejected[row] = 0
        self.energy_j[row] = 0.0
        self.violation_s[row] = 0.0
        cfg, st = self.dvfs_cfg, self.dvfs
        st.f_therm_hbm[row] = cfg.f_max
        st.hbm_slow[row] = False
        st.pstate[row] = len(cfg.mhz) - 1
        st.f_cap[row] = cfg.f_max
        st.f_therm[row] = cfg.f_max
        st.trim[row] = 1.0
        st.dither[row] = 0.0
        st.lock_mhz[row] = 0.0
        st.limit_in_band[row] = np.nan  # the host's limit goes with the boot; the BMC's stays
        dvfs.enforce_limits(cfg, st, row)
        self.pcie.reboot(row)
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
        self.ras_events(row, self.ras[row].reboot(self.t))
        self._reported_reasons[row] = 0
        self.booted(row)

    def booted(self, row: int) -> None:
        """The controller of ``row`` starts now: its uptime counts from here, and it has taken no
        samples yet (those of a previous life went with it)."""
        self.boot_t[row] = self.t
        self.ras[row].booted_at = self.t  # the patrol scrubber's passes count from here
        self._smp_power[:, row] = np.nan
        self._smp_die_t[:, row] = np.nan
        self._smp_die_p[:, row] = np.nan

    def _cooling_thermal(self, t: float, ts: float) -> None:
        if self.kernels is not None:  # the same as below, in one compiled pass
            before, self._seen_reasons, self._reasons_since, due, reported, changes = kcalls.cooling_thermal(
                self.kernels, self.cool_cfg, self.cool, t, self.s_die, self.s_hbm, self.s_flow, self.dvfs.reasons,
                self._seen_reasons, self._reasons_since, self._reported_reasons, REASON_HOLD_S, ts,
            )  # fmt: skip
            if changes:
                self._failsafe_events(before)
                self._reason_events(due)
            self._reported_reasons = reported
            return
        before = cc.thermal_step(
            self.cool_cfg,
            self.cool,
            t,
            self.s_die.value,
            self.s_die.age(t),
            self.s_die.failed,
            self.s_hbm.value,
            self.s_flow.age(t),
            self.s_flow.failed,
            ts,
        )
        self._failsafe_events(before)
        # A reason change is reported once the new mask has held for REASON_HOLD_S: a die that
        # flips between two states every training step does not flood the link.
        now = self.dvfs.reasons
        fresh = now != self._seen_reasons
        self._seen_reasons = now.copy()
        self._reasons_since = np.where(fresh, t, self._reasons_since)
        due = (now != self._reported_reasons) & (t - self._reasons_since >= REASON_HOLD_S)
        self._reason_events(due)
        self._reported_reasons = np.where(due, now, self._reported_reasons)

    def _failsafe_events(self, before: np.ndarray) -> None:
        after = self.cool.failsafe
        for row, zone in zip(*np.nonzero(after != before), strict=True):
            entered = bool(after[row, zone])
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.WARNING if entered else Severity.NOTICE,
                    EventCode.FAILSAFE_ENTER if entered else EventCode.FAILSAFE_EXIT,
                    int(zone),
                    text=f"zone {zone} {'enters' if entered else 'leaves'} failsafe",
                )
            )

    def _reason_events(self, due: np.ndarray) -> None:
        now = self.dvfs.reasons
        for row, die in zip(*np.nonzero(due), strict=True):
            mask = int(now[row, die])
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.INFO,
                    EventCode.CLOCK_REASONS,
                    int(die),
                    float(mask),
                    ",".join(reason_names(mask)) or "none",
                )
            )

    def _cooling_fast(self, t: float, ts: float) -> None:
        cool = self.cool
        was_natural = cool.natural
        got = None
        if self.kernels is not None:  # the same as below (and valve_step), in one compiled pass
            got = kcalls.cooling_fast(
                self.kernels, self.cool_cfg, cool, t, self.params.pump_rpm_nom, self.plant.pump_rpm,
                self.inputs.pump_overcurrent, self.s_rpm, self.pump_driver_fault, self.s_flow.value, ts,
            )  # fmt: skip
        if got is not None:
            self.pump_current, tr, changes = got
            if changes:
                self._pump_events(tr, was_natural)
            return
        was_natural = cool.natural.copy()
        # the pump drivers' current follows their speed; a pump with a shorted winding or a
        # blocked impeller (pump_overcurrent) draws several times more
        speed = self.plant.pump_rpm / self.params.pump_rpm_nom
        self.pump_current = 1.5 * speed * speed * np.where(self.inputs.pump_overcurrent, 3.0, 1.0)
        tr = cc.pump_step(
            self.cool_cfg,
            cool,
            t,
            self.s_rpm.value,
            self.s_rpm.age(t),
            self.s_rpm.failed,
            self.pump_driver_fault,
            self.pump_current,
            ts,
        )
        self._pump_events(tr, was_natural)
        cc.valve_step(self.cool_cfg, cool, self.s_flow.value, ts)

    def _pump_events(self, tr: cc.PumpTransitions, was_natural: np.ndarray) -> None:
        cool = self.cool
        names = [pp.name for pp in self.profile.cooling.pumps]
        for row, pump in zip(*np.nonzero(tr.faulted), strict=True):
            self.events.append(
                ShardEvent(
                    int(row), Severity.ERROR, EventCode.PUMP_FAULT, int(pump), text=f"pump {names[pump]} faulted"
                )
            )
        for row in np.nonzero(tr.failed_over)[0]:
            lead = int(cool.lead[row])
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.WARNING,
                    EventCode.PUMP_FAILOVER,
                    lead,
                    text=f"pump {names[lead]} takes over as lead",
                )
            )
        for row, pump in zip(*np.nonzero(tr.retried), strict=True):
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.NOTICE,
                    EventCode.PUMP_RETRY,
                    int(pump),
                    text=f"pump {names[pump]} may be tried again",
                )
            )
        for row in np.nonzero(tr.alternated)[0]:
            lead = int(cool.lead[row])
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.INFO,
                    EventCode.PUMP_ALTERNATE,
                    lead,
                    text=f"pump {names[lead]} is lead (periodic alternation)",
                )
            )
        for row in np.nonzero(tr.natural)[0]:
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.CRITICAL,
                    EventCode.NATURAL_CONVECTION,
                    text="no pump running: natural convection, lowest P-state",
                )
            )
        for row in np.nonzero(was_natural & ~cool.natural)[0]:
            self.events.append(
                ShardEvent(int(row), Severity.NOTICE, EventCode.COOLING_RESTORED, text="pump running again")
            )

    _RAS_EVENTS: ClassVar[dict[rasmod.RasEventKind, tuple[Severity, EventCode]]] = {
        rasmod.RasEventKind.UE: (Severity.ERROR, EventCode.UE),
        rasmod.RasEventKind.REMAP_PENDING: (Severity.WARNING, EventCode.REMAP_PENDING),
        rasmod.RasEventKind.REMAP_FAILED: (Severity.CRITICAL, EventCode.REMAP_FAILED),
        rasmod.RasEventKind.CE_STORM: (Severity.WARNING, EventCode.CE_STORM),
        rasmod.RasEventKind.CE_STORM_END: (Severity.NOTICE, EventCode.CE_STORM_END),
        rasmod.RasEventKind.REMAPPED: (Severity.NOTICE, EventCode.ROW_REMAPPED),
    }
    _XID_SEVERITY: ClassVar[dict[int, Severity]] = {
        rasmod.XID_DBE: Severity.ERROR,
        rasmod.XID_ROW_REMAP: Severity.NOTICE,  # the catalog's bucket: IGNORE (informational)
        rasmod.XID_ROW_REMAP_FAILURE: Severity.CRITICAL,
        rasmod.XID_CONTAINED: Severity.ERROR,
        rasmod.XID_UNCONTAINED: Severity.CRITICAL,
    }

    def ras_events(self, row: int, events: list[rasmod.RasEvent]) -> None:
        """Queue RAS events of a row and refresh its RAS telemetry if anything changed. An XID is
        one EVENT code, XID, with the XID number as its value (as fleet tooling keys on XIDs)."""
        for ev in events:
            subject = ev.stack if ev.stack >= 0 else 0xFFFF
            if ev.kind is rasmod.RasEventKind.XID:
                sev = self._XID_SEVERITY.get(ev.xid, Severity.ERROR)
                self.events.append(ShardEvent(row, sev, EventCode.XID, subject, float(ev.xid), ev.text))
                continue
            sev, code = self._RAS_EVENTS[ev.kind]
            self.events.append(ShardEvent(row, sev, code, subject, float(ev.addr), ev.text))
        if self.ras[row].dirty:
            self.ras_sync(row)

    def ras_sync(self, row: int) -> None:
        ctl = self.ras[row]
        ctl.dirty = False
        self.ras_ce[row] = ctl.ce.sum(axis=1)
        self.ras_ue[row] = ctl.ue.sum(axis=1)
        self.ras_flags[row] = (
            (SnapshotFlags.REMAP_PENDING if ctl.remap_pending else 0)
            | (SnapshotFlags.REMAP_FAILED if ctl.remap_failed else 0)
            | (SnapshotFlags.CE_STORM if ctl.storm else 0)
        )
        self.ras_action[row] = int(ctl.recovery_action)
        self.ras_remapped[row] = ctl.remapped_rows_by_cause()
        self.ras_histogram[row] = ctl.histogram()
        self.ras_last_xid[row] = ctl.last_xid
        self.ras_aggregate[row] = (ctl.ce_aggregate, ctl.ue_aggregate)

    def _ras_step(self, t: float, ts: float) -> None:
        """Background upsets (Poisson, rate doubling with HBM temperature) and injected CE storms,
        then the RAS work of every module that has any: demand reads of latent errors, failed
        devices, patrol scrub. Modules without errors cost nothing here."""
        cfg = self.ras_cfg
        if not self.params.hbm:
            return
        live = ~self.dvfs.shutdown[:, None]
        base = cfg.sbe_rate_per_s + cfg.dbe_rate_per_s
        if base > 0:
            lam = base * cfg.error_rate_factor(self.plant.t_hbm) * ts * live
            for row, stack in self._draw(lam):
                nbits = 2 if self.rng.random() * base < cfg.dbe_rate_per_s else 1
                self.ras[row].inject_random(stack, nbits)
        if self._storm_any:
            for row, stack in self._draw(self.ce_storm_rate * ts * live):
                self.ras[row].inject_random(stack, 1)
        util = self.inputs.hbm_util
        for row in sorted(self._ras_busy):
            ctl = self.ras[row]
            if not self.active[row] or not ctl.needs_step(t):
                continue  # nobody reads the errors while the controller is down; or nothing due
            self.ras_events(row, ctl.step(t, ts, util[row]))
            if not (ctl.errors_at_large or len(ctl.store)):
                self._ras_busy.discard(row)

    def _draw(self, lam: np.ndarray) -> list[tuple[int, int]]:
        """Poisson events with per-(row, stack) rates: one draw for the total, then spread."""
        total = float(lam.sum())
        hits = int(self.rng.poisson(total)) if total > 0 else 0
        if not hits:
            return []
        cells = self.rng.choice(lam.size, size=hits, p=(lam / total).ravel())
        return [divmod(int(c), self.params.hbm) for c in cells]

    def ras_touch(self, row: int) -> None:
        """A fault or command gave the RAS firmware of ``row`` work to do."""
        self._ras_busy.add(row)

    def set_ce_storm(self, row: int, stack: int, rate: float) -> None:
        self.ce_storm_rate[row, stack] = rate
        self._storm_any = bool(self.ce_storm_rate.any())

    def _protection_events(self, was_shut: np.ndarray, was_ocp: np.ndarray) -> None:
        st = self.dvfs
        if self._ocp_reported.any():
            settled = self._ocp_reported & ~st.hw_ocp & (self.t - self._ocp_clear_since >= OCP_REPORT_HOLD_S)
            for row in np.nonzero(settled)[0]:
                self._ocp_reported[row] = False
                self.events.append(
                    ShardEvent(
                        int(row), Severity.NOTICE, EventCode.VRM_RECOVERED, value=float(self.plant.vrm_current[row])
                    )
                )
        if np.array_equal(st.shutdown, was_shut) and np.array_equal(st.hw_ocp, was_ocp):
            return
        hottest = self.plant.t_die.max(axis=1)
        for row in np.nonzero(st.shutdown & ~was_shut)[0]:
            why = "natural convection cannot hold them" if st.forced_min[row] else "over the shutdown temperature"
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.CRITICAL,
                    EventCode.THERMAL_SHUTDOWN,
                    value=float(hottest[row]),
                    text=f"dice powered off: {why}",
                )
            )
        for row in np.nonzero(~st.shutdown & was_shut)[0]:
            self.events.append(
                ShardEvent(
                    int(row),
                    Severity.NOTICE,
                    EventCode.THERMAL_RECOVERY,
                    value=float(hottest[row]),
                    text="dice powered on again",
                )
            )
        # A VRM that keeps tripping is one incident: reported when it first trips, and as
        # recovered once it has stayed clear for OCP_REPORT_HOLD_S.
        for row in np.nonzero(st.hw_ocp & ~was_ocp)[0]:
            if not self._ocp_reported[row]:
                self._ocp_reported[row] = True
                self.events.append(
                    ShardEvent(
                        int(row), Severity.ERROR, EventCode.VRM_OVERCURRENT, value=float(self.plant.vrm_current[row])
                    )
                )
        for row in np.nonzero(~st.hw_ocp & was_ocp)[0]:
            self._ocp_clear_since[row] = self.t

    def take_events(self) -> list[ShardEvent]:
        events, self.events = self.events, []
        return events

    # --- views ------------------------------------------------------------------------------

    def node_state(self, row: int) -> NodeState:
        return NodeState.SHUTDOWN if self.dvfs.shutdown[row] else NodeState.RUNNING

    def cooling_mode(self, rows: np.ndarray | slice) -> np.ndarray:
        mode = self.cool.failsafe[rows].any(axis=1) * _FAILSAFE_MODE
        return np.where(self.cool.natural[rows], _NATURAL_MODE, mode)

    def records(self, rows: np.ndarray, *, telemetry: bool = True) -> np.ndarray:
        """Telemetry records (the wire layout) of the given rows, filled in one vectorised pass;
        ``rx_rejected`` is what the node runtime counted. Power (module and die) is the average
        since the row's previous telemetry record, as management controllers report it;
        temperatures, clocks and everything else are the latest readings. A record that is not
        telemetry (``telemetry=False``, e.g. a STATUS snapshot) leaves that interval running."""
        p, st, pl, cool = self.params, self.dvfs, self.plant, self.cool
        rec = np.empty(len(rows), self._dtype)
        if self._fill_at is not None and self.kernels is not None:  # the same as below, in one compiled pass
            self.kernels.telemetry_fill(*self.fill_args(rec, rows, telemetry))
            return rec
        rec["uptime_ns"] = np.maximum(self.t - self.boot_t[rows], 0.0) * 1e9
        shut = st.shutdown[rows]
        rec["state"] = np.where(shut, _SHUTDOWN, _RUNNING)
        failsafe = cool.failsafe[rows].any(axis=1)
        rec["mode"] = np.where(cool.natural[rows], _NATURAL_MODE, failsafe * _FAILSAFE_MODE)
        rec["flags"] = failsafe * _F_FAILSAFE | (st.lock_mhz[rows] > 0) * _F_LOCKED | self.ras_flags[rows]
        span = self.t - self._energy_since[rows]
        fresh = span > 0
        avg = np.where(fresh, self._energy[rows] / np.where(fresh, span, 1.0), pl.p_total[rows])
        die_avg = np.where(fresh[:, None], self._die_energy[rows] / np.where(fresh, span, 1.0)[:, None], pl.p_die[rows])
        if telemetry:
            self._energy[rows] = 0.0
            self._die_energy[rows] = 0.0
            self._energy_since[rows] = self.t
        rec["power_w"] = avg
        rec["power_cap_w"] = st.cap_w[rows]
        rec["inlet_c"] = pl.t_inlet[rows]
        rec["outlet_c"] = pl.t_outlet[rows]
        rec["flow_lpm"] = pl.flow_total[rows]
        rec["vrm_current_a"] = pl.vrm_current[rows]
        rec["rx_rejected"] = self.rx_rejected[rows]
        rec["recovery_action"] = self.ras_action[rows]
        rec["energy_mj"] = np.round(self.energy_j[rows] * 1e3).astype(np.uint64)
        ms = (self.violation_s[rows] * 1e3).astype(np.int64) & 0xFFFFFFFF  # wraps at 2^32 ms
        rec["viol_power_ms"], rec["viol_thermal_ms"] = ms[:, 0], ms[:, 1]
        rec["viol_hbm_thermal_ms"], rec["viol_hw_slowdown_ms"] = ms[:, 2], ms[:, 3]
        rec["power_limit_source"] = st.cap_source[rows]
        remapped = np.minimum(self.ras_remapped[rows], 0xFFFFFFFF)
        rec["remapped_correctable"], rec["remapped_uncorrectable"] = remapped[:, 0], remapped[:, 1]
        rec["ecc_ce_aggregate"], rec["ecc_ue_aggregate"] = self.ras_aggregate[rows, 0], self.ras_aggregate[rows, 1]
        link = self.pcie.counts[rows] & 0xFFFFFFFF  # wrap at 2^32
        rec["pcie_replays"] = link[:, pcie.REPLAYS]
        rec["pcie_aer_correctable"] = link[:, pcie.AER_CORRECTABLE]
        rec["pcie_aer_uncorrectable"] = link[:, pcie.AER_UNCORRECTABLE]
        rec["n_dies"], rec["n_hbm"], rec["n_pumps"], rec["n_valves"] = p.dies, p.hbm, p.pumps, p.valves
        d = rec["dies"]
        d["temp_c"] = self.s_die.value[rows]
        d["power_w"] = die_avg
        d["clock_mhz"] = st.mhz[rows]
        d["voltage_mv"] = st.mv[rows]
        d["reasons"] = st.reasons[rows]
        d["pstate"] = st.pstate[rows]
        d["util_pct"] = np.round(self.util[rows] * 100.0)
        if p.hbm:
            h = rec["hbm"]
            h["temp_c"] = self.s_hbm.value[rows]
            h["ce"] = np.minimum(self.ras_ce[rows], 0xFFFFFFFF)
            h["ue"] = np.minimum(self.ras_ue[rows], 0xFFFFFFFF)
        pumps = rec["pumps"]
        rpm = self.s_rpm.value[rows]
        pumps["rpm"] = np.minimum(np.maximum(np.where(np.isnan(rpm), 0.0, rpm), 0.0), 65535.0)
        lead = self._pump_index == cool.lead[rows, None]
        pumps["flags"] = cool.pump_on[rows] * _P_RUNNING | lead * _P_LEAD | cool.pump_fault[rows] * _P_FAULT
        valves = rec["valves"]
        valves["position_pct"] = pl.valve_pos[rows]
        valves["flags"] = ~np.isnan(cool.manual[rows]) * _V_MANUAL | ~np.isnan(cool.external[rows]) * _V_EXTERNAL
        return rec

    def fill_args(self, rec: np.ndarray, rows: np.ndarray, telemetry: bool) -> tuple[Any, ...]:
        """The arguments of :func:`mcm_firmware.kernel.loops.telemetry_fill` that fill ``rec``
        (records of this shard's layout) as :meth:`records` does."""
        p, st, pl, cool = self.params, self.dvfs, self.plant, self.cool
        return (
            rec.view(np.uint8).reshape(len(rows), self._dtype.itemsize), self._fill_at, rows, self.t, telemetry,
            p.dies, p.hbm, p.pumps, p.valves, _F_FAILSAFE, _F_LOCKED, _FAILSAFE_MODE, _NATURAL_MODE, _RUNNING,
            _SHUTDOWN, _P_RUNNING, _P_LEAD, _P_FAULT, _V_MANUAL, _V_EXTERNAL,
            self.boot_t, st.shutdown, cool.failsafe, cool.natural, st.lock_mhz, self.ras_flags, self._energy_since,
            self._energy, pl.p_total, self._die_energy, pl.p_die, st.cap_w, pl.t_inlet, pl.t_outlet, pl.flow_total,
            pl.vrm_current, self.rx_rejected, self.ras_action, self.energy_j, self.violation_s, st.cap_source,
            self.ras_remapped, self.ras_aggregate, self.pcie.counts, self.s_die.value, st.mhz, st.mv, st.reasons,
            st.pstate, self.util, self.s_hbm.value, self.ras_ce, self.ras_ue, self.s_rpm.value, cool.lead,
            cool.pump_on, cool.pump_fault, pl.valve_pos, cool.manual, cool.external,
        )  # fmt: skip

    def telemetry_records(self, rows: np.ndarray) -> tuple[MsgType, np.ndarray]:
        """The telemetry the given rows owe now, and its message type: TELEMETRY records, or
        SAMPLES records (the last ``samples_per_frame`` samples, oldest first, and the snapshot)
        when the profile batches samples."""
        snap = self.records(rows)
        if self._samples_dtype is None:
            return MsgType.TELEMETRY, snap
        p, spf = self.params, self.samples_per_frame
        rec = np.empty(len(rows), self._samples_dtype)
        rec["layout"] = SAMPLES_LAYOUT
        rec["period_us"] = round(1e6 * self.dt * self.div_sample)
        rec["n_samples"] = spf
        order = (self._smp_k + np.arange(spf)) % spf  # oldest first
        smp = rec["samples"]
        smp["power_w"] = self._smp_power[order][:, rows].T
        smp["n_dies"] = p.dies
        d = smp["dies"]
        d["temp_c"] = self._smp_die_t[order][:, rows].transpose(1, 0, 2)
        d["power_w"] = self._smp_die_p[order][:, rows].transpose(1, 0, 2)
        rec["snapshot"] = snap
        return MsgType.SAMPLES, rec

    # --- operator actions (called by the command handler) ------------------------------------

    def set_workload(self, row: int, kind: Workload, scale: float = 1.0) -> None:
        self.workload.set(row, kind, scale)

    def set_sensor_fault(self, bank: str, row: int, col: int, fault: SensorFault, param: float = 0.0) -> None:
        getattr(self, f"s_{bank}").set_fault(row, col, fault, param)
