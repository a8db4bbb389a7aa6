"""The compiled kernels called as their numpy references are: same arguments, same effect on the
state objects (arrays the reference replaces are replaced, those it updates in place are updated
in place), so the shard switches between them with one test.

A reference that sums along rows sums in an order that depends on the memory layout of its
arrays (numpy sums a C-ordered row pairwise, an F-ordered array column by column); the kernels
sum as numpy does for C-ordered rows, so given any array that is not C-contiguous the reference
runs instead (the shard's arrays are all C-ordered)."""

from __future__ import annotations

import math
import sys

import numpy as np

from ..control import coolant, dvfs
from ..control.pid import PidConfig
from ..plant import model
from ..plant import workload as wl
from ..plant.sensors import SensorBank, SensorFault
from . import Kernels
from .loops import SNAPSHOT_ARRAYS, SNAPSHOT_FIELDS

_KEEP = int(np.uint32(~dvfs._HW_BITS))
_R_HW, _R_HWTHERM, _R_BRAKE = int(dvfs._HW), int(dvfs._HWTHERM), int(dvfs._BRAKE)


def _c_ordered(*arrays: np.ndarray) -> bool:
    return all(a.flags.c_contiguous for a in arrays)


def plant_step(
    k: Kernels, p: model.PlantParams, s: model.PlantState, u: model.PlantInputs, dt: float, inlet_c: float
) -> None:
    """:func:`mcm_firmware.plant.model.step`."""
    if not _c_ordered(
        p.c_eff, p.leak_w, u.mhz, u.mv, u.activity, u.hbm_util, u.valve_cmd, s.t_die, s.t_plate, s.t_hbm, s.valve_pos
    ):
        model.step(p, s, u, dt, inlet_c)
        return
    n = p.n
    t_die, t_plate, t_hbm = np.empty(s.t_die.shape), np.empty(s.t_plate.shape), np.empty(s.t_hbm.shape)
    p_die, p_hbm, flow_valve = np.empty(s.t_die.shape), np.empty(s.t_hbm.shape), np.empty(s.valve_pos.shape)
    t_inlet, p_total, vrm, flow_total, t_outlet = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    k.plant_step(
        p.c_eff, p.leak_w, p.uncore_w, p.v0, p.leak_ref_c, p.leak_doubling_c, p.c_die, p.r_die_plate,
        p.hbm_power_w, p.c_hbm, p.r_hbm_plate, p.hbm_region, p.hbm_per_region, p.c_plate, p.g_plate_nom,
        p.g_natural, p.valve_of_die, p.dies_per_valve, p.one_die_per_valve, p.pump_flow_lpm, p.pump_rpm_nom,
        p.q_branch_nom, p.rangeability, p.valve_slew, p.cp_coolant,
        model.PUMP_TAU_S, model.VALVE_SHUT_PCT, model.FLOW_EXPONENT,
        u.mhz, u.mv, u.powered, u.activity, u.hbm_util, u.valve_cmd, u.pump_on, u.pump_failed,
        u.valve_stuck, u.inlet_offset_c, u.vrm_factor,
        s.pump_rpm, s.valve_pos, s.t_die, s.t_plate, s.t_hbm,
        t_die, t_plate, t_hbm, t_inlet, p_die, p_hbm, p_total, vrm, flow_valve, flow_total, t_outlet,
        float(dt), float(inlet_c),
    )  # fmt: skip
    s.t_die, s.t_plate, s.t_hbm, s.t_inlet = t_die, t_plate, t_hbm, t_inlet
    s.p_die, s.p_hbm, s.p_total, s.vrm_current = p_die, p_hbm, p_total, vrm
    s.flow_valve, s.flow_total, s.t_outlet = flow_valve, flow_total, t_outlet


def sensor_sample(
    k: Kernels, bank: SensorBank, true: np.ndarray, t: float, noise: np.ndarray, dt: float, rng: np.random.Generator
) -> bool:
    """:meth:`SensorBank.sample` (with the caller's noise); ``False``, and nothing done, for a bank
    with an external sensor: the caller runs the reference."""
    if bank._any_external:
        return False
    raw = bank._pending
    bank._pending = np.array(true, float, copy=True)
    out = np.empty(raw.shape)
    if not bank._any_fault:
        k.sensor_sample(raw, noise, float(bank.noise_sd), float(bank.quantum), bank.read_at, float(t), out)
        bank.value = out
        return True
    # the reference's draws, in its order: extra noise if any sensor is noisy, then dropouts
    f = bank.fault
    noisy_any = bool((f == SensorFault.NOISE).any())
    extra = rng.standard_normal(raw.shape) if noisy_any else _NONE
    drop_any = bool((f == SensorFault.DROPOUT).any())
    draw = rng.random(raw.shape) if drop_any else _NONE
    read_at: np.ndarray = np.empty(raw.shape)
    failed: np.ndarray = np.empty(raw.shape, bool)
    k.sensor_sample_faulty(
        raw, noise, float(bank.noise_sd), float(bank.quantum), float(t), float(dt), f, bank.param, bank._drift,
        extra, draw, noisy_any, drop_any, bank.value, bank.read_at, out, read_at, failed,
    )  # fmt: skip
    bank.value, bank.read_at, bank.failed = out, read_at, failed
    return True


_NONE = np.zeros((1, 1))


def update_power_average(k: Kernels, cfg: dvfs.DvfsConfig, st: dvfs.DvfsState, power_w: np.ndarray, dt: float) -> None:
    """:func:`mcm_firmware.control.dvfs.update_power_average`."""
    k.update_power_average(
        st.avg_long,
        st.avg_short,
        power_w,
        float(-np.expm1(-dt / cfg.long_window_s)),
        float(-np.expm1(-dt / cfg.short_window_s)),
    )


def hw_protect(
    k: Kernels,
    cfg: dvfs.DvfsConfig,
    st: dvfs.DvfsState,
    t: float,
    t_die_true: np.ndarray,
    vrm_a: np.ndarray,
    t_die_sensor: np.ndarray,
) -> None:
    """:func:`mcm_firmware.control.dvfs.hw_protect`."""
    hw_therm, ocp_until = np.empty_like(st.hw_therm), np.empty_like(st.ocp_until)
    hw_ocp, shutdown = np.empty_like(st.hw_ocp), np.empty_like(st.shutdown)
    k.hw_protect(
        cfg.hw_slowdown_c, cfg.hysteresis_c, cfg.vrm_limit_a, dvfs.OCP_RELEASE, dvfs.OCP_HOLD_S,
        cfg.shutdown_c, cfg.slowdown_c, float(t),
        t_die_true, vrm_a, t_die_sensor, st.forced_min, st.hw_therm, st.ocp_until, st.hw_ocp, st.shutdown,
        hw_therm, ocp_until, hw_ocp, shutdown,
    )  # fmt: skip
    st.hw_therm, st.ocp_until, st.hw_ocp, st.shutdown = hw_therm, ocp_until, hw_ocp, shutdown


def apply_hw_limits(k: Kernels, cfg: dvfs.DvfsConfig, st: dvfs.DvfsState) -> None:
    """:func:`mcm_firmware.control.dvfs.apply_hw_limits`."""
    mhz, mv = np.empty_like(st.f_cap), np.empty_like(st.f_cap)
    reasons, hw_slow = np.empty(st.pstate.shape, np.uint32), np.empty(st.pstate.shape, bool)
    k.apply_hw_limits(
        cfg.mhz, cfg.mhz_ascending, cfg.mv_ascending, cfg.f_max, cfg.f_min, dvfs.CLOCK_STEP_MHZ,
        _KEEP, _R_HW, _R_HWTHERM, _R_BRAKE,
        st.pstate, st.f_cap, st.hw_therm, st.hw_ocp, st.brake, st.hw_slow, st.shutdown, st.mhz, st.reasons,
        mhz, mv, reasons, hw_slow,
    )  # fmt: skip
    st.mhz, st.mv, st.reasons, st.hw_slow = mhz, mv, reasons, hw_slow


def learn_trim(
    k: Kernels,
    cfg: dvfs.DvfsConfig,
    st: dvfs.DvfsState,
    power_w: np.ndarray,
    util: np.ndarray,
    t_die_sensor: np.ndarray,
    dt: float,
) -> None:
    """:func:`mcm_firmware.control.dvfs.learn_trim`."""
    if st.shutdown.all():
        return
    if not _c_ordered(st.mhz, st.mv, util, t_die_sensor):
        dvfs.learn_trim(cfg, st, power_w, util, t_die_sensor, dt)
        return
    trim = np.empty_like(st.trim)
    lo, hi = dvfs.TRIM_RANGE
    k.learn_trim(
        cfg.f_max, cfg.f_min, float(cfg.mv[0]), dvfs.SATURATED_UTIL, cfg.idle_activity, cfg.slowdown_c,
        cfg.leak_w, cfg.leak_ref_c, cfg.leak_doubling_c, cfg.dyn_coef, cfg.hbm_w, cfg.uncore_w,
        lo, hi, dvfs.TRIM_MAX_STEP, float(-np.expm1(-dt / dvfs.TRIM_TAU_S)),
        st.shutdown, st.mhz, st.mv, power_w, util, t_die_sensor, st.trim, trim,
    )  # fmt: skip
    st.trim = trim


def dvfs_step(
    k: Kernels,
    cfg: dvfs.DvfsConfig,
    st: dvfs.DvfsState,
    util: np.ndarray,
    t_die_sensor: np.ndarray,
    dt: float,
    t_hbm_sensor: np.ndarray | None = None,
) -> None:
    """:func:`mcm_firmware.control.dvfs.dvfs_step`."""
    if not _c_ordered(util, t_die_sensor, st.mhz):
        dvfs.dvfs_step(cfg, st, util, t_die_sensor, dt, t_hbm_sensor)
        return
    tables = _tables(cfg)
    has_hbm = t_hbm_sensor is not None and t_hbm_sensor.shape[1] > 0
    hbm_t = t_hbm_sensor if t_hbm_sensor is not None else np.empty((util.shape[0], 0))
    shape = st.f_therm.shape
    f_therm, f_therm_hbm, dither, f_cap = (
        np.empty(shape),
        np.empty_like(st.f_therm_hbm),
        np.empty(shape),
        np.empty(shape),
    )
    hbm_slow, pstate, reasons = np.empty(shape[0], bool), np.empty(shape, np.int16), np.empty(shape, np.uint32)
    k.dvfs_step(
        *tables, cfg.f_max, cfg.f_min, dvfs.CLOCK_STEP_MHZ, dvfs.SCHEDUTIL_HEADROOM, dvfs.IDLE_UTIL,
        dvfs.SATURATED_UTIL, cfg.short_limit_factor, cfg.idle_activity, cfg.slowdown_c, cfg.hysteresis_c,
        cfg.hbm_max_c, cfg.leak_w, cfg.leak_ref_c, cfg.leak_doubling_c, cfg.hbm_w, cfg.uncore_w,
        dvfs.THERMAL_DOWN, dvfs.THERMAL_UP, _R_IDLE, _R_APP, _R_SWCAP, _R_SWTHERM, float(dt), has_hbm,
        util, t_die_sensor, hbm_t, st.mhz, st.lock_mhz, st.cap_w, st.trim, st.forced_min,
        st.f_therm, st.f_therm_hbm, st.dither, st.avg_long, st.avg_short, st.cap_seen,
        f_therm, f_therm_hbm, dither, f_cap, hbm_slow, pstate, reasons,
    )  # fmt: skip
    st.f_therm, st.f_therm_hbm, st.dither, st.f_cap = f_therm, f_therm_hbm, dither, f_cap
    st.hbm_slow, st.pstate, st.reasons = hbm_slow, pstate, reasons


_R_IDLE, _R_APP = int(dvfs._IDLE), int(dvfs._APP)
_R_SWCAP, _R_SWTHERM = int(dvfs._SWCAP), int(dvfs._SWTHERM)
_TABLES: dict[int, tuple[np.ndarray, ...]] = {}


def _tables(cfg: dvfs.DvfsConfig) -> tuple[np.ndarray, ...]:
    """The P-state tables of a configuration, as numpy computes them for the reference."""
    t = _TABLES.get(id(cfg))
    if t is None or t[0] is not cfg.mhz:
        t = (cfg.mhz, cfg.mhz_ascending, cfg.speedup, 1.0 / cfg.speedup, cfg.dyn_per_state, cfg.v_ratio)
        _TABLES[id(cfg)] = t
    return t


_K_STEADY, _K_TRAINING, _K_INFERENCE = int(wl.Workload.STEADY), int(wl.Workload.TRAINING), int(wl.Workload.INFERENCE)


def tick_demand(
    k: Kernels, w: wl.WorkloadModel, t: float, dt: float, mhz: np.ndarray, shutdown: np.ndarray, max_mhz: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """:meth:`WorkloadModel.demand` and the utilisation the firmware sees
    (``utilisation(demand, mhz, max_mhz) * ~shutdown[:, None]``), with the reference's own draws;
    ``None``, and nothing done, for arrays that are not C-ordered: the caller runs the reference."""
    if not _c_ordered(mhz, w._ou):
        return None
    _, _, inference = w._kinds()
    shape = w._ou.shape
    a = math.exp(-dt / wl.INFER_TAU_S)
    if len(inference):
        noise = w._rng.standard_normal((len(inference), shape[1]))
        coef = wl.INFER_SD * math.sqrt(1 - a * a)
    else:
        noise, coef = _NONE, 0.0
    demand, util = np.empty(shape), np.empty(shape)
    k.tick_demand(
        w._kind, w.phase, w.scale, w._ou, noise, float(t), a, coef, _K_STEADY, _K_TRAINING, _K_INFERENCE,
        wl.STEADY_DEMAND, wl.TRAIN_PERIOD_S, wl.TRAIN_PERIOD_S * wl.TRAIN_COMPUTE_FRACTION, wl.TRAIN_COMM_DEMAND,
        wl.INFER_MEAN, mhz, shutdown, float(max_mhz), demand, util,
    )  # fmt: skip
    return demand, util


def _pid_args(cfg: PidConfig, ts: float) -> tuple[float | bool, ...]:
    return (
        cfg.kp, cfg.ki * ts, cfg.integral_min, cfg.integral_max, cfg.out_min, cfg.out_max, cfg.ff_offset,
        cfg.ff_gain, bool(cfg.ff_offset or cfg.ff_gain), cfg.slew_neg * ts if cfg.slew_neg > 0 else 0.0,
        cfg.slew_pos * ts if cfg.slew_pos > 0 else 0.0, bool(cfg.reverse),
    )  # fmt: skip


def cooling_fast(
    k: Kernels,
    cfg: coolant.CoolantConfig,
    st: coolant.CoolantState,
    t: float,
    plant_rpm_nom: np.ndarray,
    rpm_true: np.ndarray,
    overcurrent: np.ndarray,
    rpm: SensorBank,
    driver_fault: np.ndarray,
    flow: np.ndarray,
    ts: float,
) -> tuple[np.ndarray, coolant.PumpTransitions, int] | None:
    """The valve period of ``Shard._cooling_fast``: the pump drivers' current (returned),
    :func:`coolant.pump_step` (its transitions returned, with how many there are, the modules whose
    cooling came back from natural convection counted too) and :func:`coolant.valve_step`;
    ``None``, and nothing done, for arrays that are not C-ordered: the caller runs the reference."""
    if not _c_ordered(flow, st.valve_pid.integral, st.valve_pid.last, st.flow_setpoint, st.pump_on, st.pump_fault):
        return None
    n, pumps = st.pump_on.shape
    current, fault_t = np.empty((n, pumps)), np.empty((n, pumps))
    newly, retried = np.empty((n, pumps), bool), np.empty((n, pumps), bool)
    natural, failed_over, alternated, entered = (np.empty(n, bool) for _ in range(4))
    shape = st.valve_cmd.shape
    integral, last, cmd = np.empty(shape), np.empty(shape), np.empty(shape)
    events = k.cooling_fast(
        float(t), max(coolant.PUMP_SPINUP_S, 2.0 * ts), coolant.PUMP_MIN_SPEED, cfg.sensor_timeout_s,
        coolant.PUMP_OVERCURRENT_A, coolant.PUMP_RETRY_S, cfg.alternate_s, cfg.pump_rpm_nom, plant_rpm_nom,
        rpm_true, overcurrent, rpm.value, rpm.read_at, rpm.failed, driver_fault,
        st.pump_started, st.pump_on, st.pump_fault, st.fault_t, st.lead, st.last_alternate, st.natural,
        current, fault_t, natural, newly, retried, failed_over, alternated, entered,
        *_pid_args(cfg.valve, ts), cfg.failsafe_pct, flow, st.flow_setpoint, st.valve_pid.integral,
        st.valve_pid.last, st.failsafe, st.external, st.manual, integral, last, cmd,
    )  # fmt: skip
    st.fault_t, st.natural = fault_t, natural
    st.valve_pid.integral, st.valve_pid.last, st.valve_cmd = integral, last, cmd
    return current, coolant.PumpTransitions(newly, retried, failed_over, alternated, entered), int(events)


_MEMBERS: dict[int, tuple[coolant.Zones, np.ndarray]] = {}


def _member_zone(z: coolant.Zones) -> np.ndarray:
    """The zone of each member of ``z`` (what it was built from)."""
    got = _MEMBERS.get(id(z))
    if got is None or got[0] is not z:
        counts = np.diff(np.append(z.starts, len(z.order)))
        member = np.empty(len(z.order), np.int64)
        member[z.order] = np.repeat(z.present, counts)
        got = (z, member)
        _MEMBERS[id(z)] = got
    return got[1]


def cooling_thermal(
    k: Kernels,
    cfg: coolant.CoolantConfig,
    st: coolant.CoolantState,
    t: float,
    die: SensorBank,
    hbm: SensorBank,
    flow: SensorBank,
    reasons: np.ndarray,
    seen: np.ndarray,
    since: np.ndarray,
    reported: np.ndarray,
    hold_s: float,
    ts: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The thermal period of ``Shard._cooling_thermal``: :func:`coolant.thermal_step` (``st``
    updated as the reference does; the failsafe mask before it returned) and the clock reasons
    held ``hold_s`` (``reasons``: now, ``seen``, ``since``, ``reported``: the shard's): returns the
    failsafe mask before, the new seen, since, due and reported arrays, and how many zones entered
    or left failsafe plus how many reasons are due."""
    n, zones = st.failsafe.shape
    shape = (n, zones)
    fs = np.empty(shape, bool)
    die_i, die_l, hbm_i, hbm_l, setpoint = (np.empty(shape) for _ in range(5))
    o_seen, o_since = np.empty_like(seen), np.empty(since.shape)
    o_due, o_reported = np.empty(reasons.shape, bool), np.empty_like(reported)
    changes = k.cooling_thermal(
        float(t), cfg.sensor_timeout_s, cfg.target_c, cfg.hbm_target_c, hold_s,
        _member_zone(cfg.die_zones), _member_zone(cfg.hbm_zones),
        die.value, die.read_at, die.failed, hbm.value, flow.read_at, flow.failed,
        st.failsafe, st.die_pid.integral, st.die_pid.last, st.hbm_pid.integral, st.hbm_pid.last,
        reasons, seen, since, reported,
        fs, die_i, die_l, hbm_i, hbm_l, setpoint, o_seen, o_since, o_due, o_reported,
        *_pid_args(cfg.thermal, ts),
    )  # fmt: skip
    before = st.failsafe
    st.failsafe, st.flow_setpoint = fs, setpoint
    st.die_pid.integral, st.die_pid.last, st.hbm_pid.integral, st.hbm_pid.last = die_i, die_l, hbm_i, hbm_l
    return before, o_seen, o_since, o_due, o_reported, int(changes)


def snapshot_offsets(dtype: np.dtype) -> np.ndarray | None:
    """The byte offsets :func:`~mcm_firmware.kernel.loops.telemetry_fill` writes a telemetry record
    of this packed numpy dtype at, or ``None`` when a field it writes is missing or of another type
    (a changed declaration: the numpy reference then runs), and on a big-endian machine (the kernel
    writes the little-endian wire layout through the machine's own float32)."""
    if sys.byteorder != "little":
        return None

    def field(where: np.dtype, name: str) -> tuple[np.dtype, int] | None:
        fields = where.fields
        if fields is None or name not in fields:
            return None
        ftype, off = fields[name][:2]
        return ftype, off

    offsets = []
    for path, kind in SNAPSHOT_FIELDS:
        outer, _, inner = path.rpartition(".")
        where: np.dtype = dtype
        if outer:
            array = field(dtype, outer)
            if array is None:
                return None
            where = array[0].base
        found = field(where, inner)
        if found is None or found[0].str != kind or found[0].shape:
            return None
        offsets.append(found[1])
    for name in SNAPSHOT_ARRAYS:
        array = field(dtype, name)
        if array is None:
            return None
        offsets += [array[1], array[0].base.itemsize]
    return np.array(offsets, np.int64)
