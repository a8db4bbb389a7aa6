"""The tick's hot work as loop nests: what :mod:`mcm_firmware.kernel` compiles with numba.

Each function here does, module by module, the arithmetic of a numpy function of the product, its
*reference*, in the same order of operations, so that the compiled result equals the reference's
to the last bit on the machines the tests run on (``tests/runtime/test_kernel.py``):

* :func:`plant_step` — :func:`mcm_firmware.plant.model.step`;
* :func:`sensor_sample` — :meth:`mcm_firmware.plant.sensors.SensorBank.sample` of a bank with
  no fault and no external sensor (the caller draws the noise), :func:`sensor_sample_faulty` of
  a bank with faults set (with the reference's own draws);
* :func:`update_power_average` — :func:`mcm_firmware.control.dvfs.update_power_average`;
* :func:`hw_protect` — :func:`mcm_firmware.control.dvfs.hw_protect`;
* :func:`apply_hw_limits` — :func:`mcm_firmware.control.dvfs.apply_hw_limits`;
* :func:`learn_trim` — :func:`mcm_firmware.control.dvfs.learn_trim`;
* :func:`dvfs_step` — :func:`mcm_firmware.control.dvfs.dvfs_step`;
* :func:`tick_inputs`, :func:`tick_counters` — the tick's own numpy (``Shard._plant_inputs``,
  the energy and violation counters of ``Shard.tick``);
* :func:`tick_demand` — :meth:`mcm_firmware.plant.workload.WorkloadModel.demand` and the
  utilisation the firmware sees (``workload.utilisation``);
* :func:`cooling_fast` — the valve period of ``Shard._cooling_fast``: the pump drivers' current,
  :func:`mcm_firmware.control.coolant.pump_step` and :func:`~mcm_firmware.control.coolant.valve_step`
  (with :func:`pid_step`, :func:`mcm_firmware.control.pid.pid_step`);
* :func:`cooling_thermal` — the thermal period of ``Shard._cooling_thermal``:
  :func:`mcm_firmware.control.coolant.thermal_step` and the clock reasons due.

and beside the tick, :func:`telemetry_fill` — the telemetry records of ``Shard.records`` (the
fleet's telemetry path), written byte by byte into the record layout.

What makes them equal, and where they could not be (docs/performance.md, "Virtual time"):
sums over a row follow numpy's pairwise summation (:func:`psum`); ``np.minimum``/``np.maximum``
propagate NaN as numpy does (:func:`fmin`, :func:`fmax`); ``np.interp`` is numpy's algorithm
(:func:`interp`); ``np.round`` is ``rint``; exp, exp2, expm1, log and pow are the C library's on
both sides where numpy has no SIMD version of them for float64 (x86 without AVX-512): on a machine
where it has (AVX-512F), the numpy reference's exp and log may differ by an ulp.

Plain Python and numpy only, no numba import: the functions also run (slowly) uncompiled.
"""

from __future__ import annotations

import math

import numpy as np

# --- helpers: numpy's semantics, scalar by scalar -------------------------------------------------

MAX_ROW = 128  # the longest row psum sums as numpy does


def psum(a: np.ndarray, lo: int, n: int) -> float:
    """numpy's pairwise sum of ``a[lo:lo + n]`` (what ``arr.sum(axis=-1)`` does along a row), for
    ``n <= MAX_ROW``: a plain loop below 8 items, 8 interleaved partial sums up to 128. (numpy
    halves longer rows recursively; a recursive function does not load from numba's cache, and no
    module has more than 128 dice, stacks, valves or pumps: longer rows run the reference.)"""
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


def fmin(a: float, b: float) -> float:
    """``np.minimum`` of two scalars (NaN if either is)."""
    if a <= b or a != a:
        return a
    return b


def fmax(a: float, b: float) -> float:
    """``np.maximum`` of two scalars (NaN if either is)."""
    if a >= b or a != a:
        return a
    return b


def interp(x: float, xp: np.ndarray, fp: np.ndarray) -> float:
    """``np.interp(x, xp, fp)`` for ascending ``xp``, numpy's arithmetic."""
    n = xp.shape[0]
    if x != x:
        return x
    if x > xp[n - 1]:
        return fp[n - 1]
    if x < xp[0]:
        return fp[0]
    lo, hi = 0, n  # last j with xp[j] <= x
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if xp[mid] <= x:
            lo = mid
        else:
            hi = mid
    j = lo
    if j == n - 1 or x == xp[j]:
        return fp[j]
    slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j])
    res = slope * (x - xp[j]) + fp[j]
    if res != res:
        res = slope * (x - xp[j + 1]) + fp[j + 1]
        if res != res and fp[j] == fp[j + 1]:
            res = fp[j]
    return res


def grid_floor(f: float, f_max: float, f_min: float, step: float) -> float:
    """:meth:`DvfsConfig.grid_floor` of one clock."""
    k = np.ceil((f_max - f) / step - 1e-9)
    return fmin(fmax(f_max - k * step, f_min), f_max)


# --- plant ----------------------------------------------------------------------------------------


def plant_step(
    c_eff: np.ndarray, leak_w: np.ndarray, uncore_w: float, v0: float, leak_ref_c: float, leak_doubling_c: float,
    c_die: float, r_die_plate: float, hbm_power_w: float, c_hbm: float, r_hbm_plate: float,
    hbm_region: np.ndarray, hbm_per_region: np.ndarray, c_plate: float, g_plate_nom: float, g_natural: float,
    valve_of_die: np.ndarray, dies_per_valve: np.ndarray, one_die_per_valve: bool, pump_flow_lpm: np.ndarray,
    pump_rpm_nom: np.ndarray, q_branch_nom: float, rangeability: float, valve_slew: float, cp_coolant: float,
    pump_tau_s: float, valve_shut_pct: float, flow_exponent: float,
    mhz: np.ndarray, mv: np.ndarray, powered: np.ndarray, activity: np.ndarray, hbm_util: np.ndarray,
    valve_cmd: np.ndarray, pump_on: np.ndarray, pump_failed: np.ndarray, valve_stuck: np.ndarray,
    inlet_offset_c: np.ndarray, vrm_factor: np.ndarray,
    pump_rpm: np.ndarray, valve_pos: np.ndarray, t_die: np.ndarray, t_plate: np.ndarray, t_hbm: np.ndarray,
    o_t_die: np.ndarray, o_t_plate: np.ndarray, o_t_hbm: np.ndarray, o_t_inlet: np.ndarray,
    o_p_die: np.ndarray, o_p_hbm: np.ndarray, o_p_total: np.ndarray, o_vrm: np.ndarray,
    o_flow_valve: np.ndarray, o_flow_total: np.ndarray, o_t_outlet: np.ndarray,
    dt: float, inlet_c: float,
) -> None:  # fmt: skip
    """``plant.model.step``: ``pump_rpm`` and ``valve_pos`` in place (as the reference), every
    other state array into the ``o_`` arrays."""
    n, dies = t_die.shape
    hbm = t_hbm.shape[1]
    valves = valve_pos.shape[1]
    pumps = pump_rpm.shape[1]
    pump_gain = -math.expm1(-dt / pump_tau_s)
    limit = valve_slew * dt
    decay_die = math.exp(-dt / (c_die * r_die_plate))
    decay_hbm = math.exp(-dt / (c_hbm * r_hbm_plate))
    g_dp = 1.0 / r_die_plate
    g_hp = 1.0 / r_hbm_plate
    g_pc = np.empty(dies)
    hbm_sum = np.empty(dies)
    q = np.empty(pumps)
    amps = np.empty(dies)
    heat = np.empty(dies)
    for i in range(n):
        # pumps and valves
        for k in range(pumps):
            target = pump_rpm_nom[k] if (pump_on[i, k] and not pump_failed[i, k]) else 0.0
            rpm = pump_rpm[i, k] + (target - pump_rpm[i, k]) * pump_gain
            pump_rpm[i, k] = rpm
            q[k] = pump_flow_lpm[k] * fmin(fmax(rpm / pump_rpm_nom[k], 0.0), 1.2)
        best = q[0]
        for k in range(1, pumps):
            best = fmax(best, q[k])
        capacity = best + 0.25 * (psum(q, 0, pumps) - best)
        per_valve = capacity / valves
        for v in range(valves):
            move = fmin(fmax(valve_cmd[i, v], 0.0), 100.0) - valve_pos[i, v]
            valve_pos[i, v] += 0.0 if valve_stuck[i, v] else fmin(fmax(move, -limit), limit)
            pos = valve_pos[i, v]
            frac = rangeability ** (pos / 100.0 - 1.0)
            o_flow_valve[i, v] = per_valve * (frac if pos > valve_shut_pct else 0.0)
        flow_total = psum(o_flow_valve[i], 0, valves)
        o_flow_total[i] = flow_total
        t_in = inlet_c + inlet_offset_c[i]
        o_t_inlet[i] = t_in
        # power
        on = powered[i]
        for d in range(dies):
            p = 0.0
            if on:
                volt = mv[i, d] * 1e-3
                dyn = c_eff[i, d] * volt * volt * (mhz[i, d] * 1e6) * activity[i, d]
                leak = leak_w[i, d] * (volt / v0) * np.exp2((t_die[i, d] - leak_ref_c) / leak_doubling_c)
                p = dyn + leak + uncore_w
            o_p_die[i, d] = p
            amps[d] = p / fmax(mv[i, d] * 1e-3, 0.1)
        for j in range(hbm):
            o_p_hbm[i, j] = hbm_power_w * (0.25 + 0.75 * hbm_util[i, j]) if on else 0.0
        o_p_total[i] = psum(o_p_die[i], 0, dies) + psum(o_p_hbm[i], 0, hbm)
        o_vrm[i] = psum(amps, 0, dies) * vrm_factor[i]
        # heat transfer per die region, relaxation die -> hbm -> plate
        for d in range(dies):
            if one_die_per_valve:
                qd = o_flow_valve[i, d]
            else:
                qd = o_flow_valve[i, valve_of_die[d]] / dies_per_valve[valve_of_die[d]]
            film = g_plate_nom * (fmax(qd, 0.0) / q_branch_nom) ** flow_exponent
            cap = 2.0 * qd * cp_coolant / 60.0
            forced = film * cap / fmax(film + cap, 1e-12) if qd > 1e-6 else 0.0
            g_pc[d] = forced + g_natural
            eq = t_plate[i, d] + o_p_die[i, d] * r_die_plate
            o_t_die[i, d] = eq + (t_die[i, d] - eq) * decay_die
            hbm_sum[d] = 0.0
        for j in range(hbm):
            d = hbm_region[j]
            eq = t_plate[i, d] + o_p_hbm[i, j] * r_hbm_plate
            th = eq + (t_hbm[i, j] - eq) * decay_hbm
            o_t_hbm[i, j] = th
            hbm_sum[d] += th
        for d in range(dies):
            g_total = g_dp + hbm_per_region[d] * g_hp + g_pc[d]
            eq = (o_t_die[i, d] * g_dp + hbm_sum[d] * g_hp + g_pc[d] * t_in) / g_total
            tp = eq + (t_plate[i, d] - eq) * math.exp(-dt * g_total / c_plate)
            o_t_plate[i, d] = tp
            heat[d] = g_pc[d] * (tp - t_in)
        rate = flow_total * cp_coolant / 60.0
        o_t_outlet[i] = t_in + (psum(heat, 0, dies) / fmax(rate, 1e-6) if rate > 1e-6 else 0.0)


# --- sensors --------------------------------------------------------------------------------------


def sensor_sample(
    raw: np.ndarray, noise: np.ndarray, noise_sd: float, quantum: float, read_at: np.ndarray, t: float, out: np.ndarray
) -> None:
    """A fault-free bank's reading: ``raw`` (last tick's truth) plus noise, quantised, into
    ``out``; ``read_at`` set to ``t`` in place."""
    n, m = raw.shape
    for i in range(n):
        for j in range(m):
            r = raw[i, j] + noise[i, j] * noise_sd if noise_sd else raw[i, j]
            out[i, j] = np.rint(r / quantum) * quantum if quantum else r
            read_at[i, j] = t


# --- DVFS -----------------------------------------------------------------------------------------


def update_power_average(
    avg_long: np.ndarray, avg_short: np.ndarray, power_w: np.ndarray, gain_long: float, gain_short: float
) -> None:
    """Both averages in place (the gains: ``-expm1(-dt / window)``)."""
    for i in range(power_w.shape[0]):
        avg_long[i] += (power_w[i] - avg_long[i]) * gain_long
    for i in range(power_w.shape[0]):
        avg_short[i] += (power_w[i] - avg_short[i]) * gain_short


def hw_protect(
    hw_slowdown_c: float, hysteresis_c: float, vrm_limit_a: float, ocp_release: float, ocp_hold_s: float,
    shutdown_c: float, slowdown_c: float, t: float,
    t_die_true: np.ndarray, vrm_a: np.ndarray, t_die_sensor: np.ndarray, forced_min: np.ndarray,
    hw_therm: np.ndarray, ocp_until: np.ndarray, hw_ocp: np.ndarray, shutdown: np.ndarray,
    o_hw_therm: np.ndarray, o_ocp_until: np.ndarray, o_hw_ocp: np.ndarray, o_shutdown: np.ndarray,
) -> None:  # fmt: skip
    """The fast comparators: new latches into the ``o_`` arrays."""
    n, dies = t_die_true.shape
    until = t + ocp_hold_s
    for i in range(n):
        hottest = t_die_true[i, 0]
        for d in range(dies):
            x = t_die_true[i, d]
            if hw_therm[i, d]:
                o_hw_therm[i, d] = x > hw_slowdown_c - hysteresis_c
            else:
                o_hw_therm[i, d] = x > hw_slowdown_c
            if d:
                hottest = fmax(hottest, x)
        over = vrm_a[i] > vrm_limit_a
        o_ocp_until[i] = until if over else ocp_until[i]
        if hw_ocp[i]:
            o_hw_ocp[i] = over or (t < o_ocp_until[i]) or (vrm_a[i] > vrm_limit_a * ocp_release)
        else:
            o_hw_ocp[i] = over
        trip = hottest > shutdown_c
        if forced_min[i]:
            sensed = -np.inf
            for d in range(dies):
                s = t_die_sensor[i, d]
                sensed = fmax(sensed, -np.inf if s != s else s)
            trip = trip or fmax(hottest, sensed) > slowdown_c
        if shutdown[i]:
            o_shutdown[i] = not ((hottest < slowdown_c - hysteresis_c) and not forced_min[i])
        else:
            o_shutdown[i] = trip


def apply_hw_limits(
    mhz_table: np.ndarray, mhz_asc: np.ndarray, mv_asc: np.ndarray, f_max: float, f_min: float, step: float,
    keep: int, r_hw: int, r_hwtherm: int, r_brake: int,
    pstate: np.ndarray, f_cap: np.ndarray, hw_therm: np.ndarray, hw_ocp: np.ndarray, brake: np.ndarray,
    hw_slow: np.ndarray, shutdown: np.ndarray, mhz_ran: np.ndarray, reasons: np.ndarray,
    o_mhz: np.ndarray, o_mv: np.ndarray, o_reasons: np.ndarray, o_hw_slow: np.ndarray,
) -> None:  # fmt: skip
    """Clock, voltage and reasons from the P-state and the ceilings, hardware slowdown, shutdown."""
    n, dies = pstate.shape
    for i in range(n):
        on = not shutdown[i]
        for d in range(dies):
            mhz = fmin(mhz_table[pstate[i, d]], f_cap[i, d])
            hw = hw_therm[i, d] or hw_ocp[i] or brake[i]
            r = np.int64(reasons[i, d]) & keep
            if hw:
                base = fmin(mhz, mhz_ran[i, d]) if (not hw_slow[i, d] and mhz_ran[i, d] > 0) else mhz
                mhz = grid_floor(base / 2.0, f_max, f_min, step)
                r |= r_hw
                if hw_therm[i, d]:
                    r |= r_hwtherm
                if brake[i]:
                    r |= r_brake
            o_hw_slow[i, d] = hw
            if on:
                o_mhz[i, d] = mhz * 1.0
                o_mv[i, d] = np.rint(interp(mhz, mhz_asc, mv_asc)) * 1.0
                o_reasons[i, d] = r
            else:
                o_mhz[i, d] = mhz * 0.0
                o_mv[i, d] = np.rint(interp(mhz, mhz_asc, mv_asc)) * 0.0
                o_reasons[i, d] = 0


def learn_trim(
    f_max: float, f_min: float, mv0: float, saturated: float, idle_activity: float, slowdown_c: float,
    leak_w: float, leak_ref_c: float, leak_doubling_c: float, dyn_coef: float, hbm_w: float, uncore_w: float,
    lo: float, hi: float, max_step: float, gain: float,
    shutdown: np.ndarray, mhz: np.ndarray, mv: np.ndarray, power_w: np.ndarray, util: np.ndarray,
    t_die_sensor: np.ndarray, trim: np.ndarray, o_trim: np.ndarray,
) -> None:  # fmt: skip
    """The estimator's trim, learnt from the measured power, into ``o_trim``."""
    n, dies = mhz.shape
    terms = np.empty(dies)
    done = np.empty(dies)
    for i in range(n):
        if shutdown[i]:
            o_trim[i] = trim[i]
            continue
        for d in range(dies):
            f = fmax(mhz[i, d], 1.0)
            v = mv[i, d] / 1000.0
            u = util[i, d]
            demand = 1.0 if u >= saturated else u * fmax(f, f_min) / f_max
            act = idle_activity + (1.0 - idle_activity) * fmin(demand * f_max / f, 1.0)
            s = t_die_sensor[i, d]
            temp = slowdown_c if s != s else s
            leak = leak_w * np.exp2((temp - leak_ref_c) / leak_doubling_c)
            terms[d] = dyn_coef * v * v * f * act + leak * (mv[i, d] / mv0)
            done[d] = fmin(demand, f / f_max)
        est = psum(terms, 0, dies)
        mean_done = psum(done, 0, dies) / dies
        est += hbm_w * (0.25 + 0.75 * fmin(mean_done, 1.0)) + uncore_w * dies
        err = math.log(fmax(power_w[i], 1.0) / fmax(est, 1.0)) - math.log(trim[i])
        err = fmin(fmax(err, -max_step), max_step)
        o_trim[i] = fmin(fmax(trim[i] * math.exp(gain * err), lo), hi)


def grid_ceil(f: float, f_max: float, f_min: float, step: float) -> float:
    """:meth:`DvfsConfig.grid_ceil` of one clock."""
    k = np.floor((f_max - f) / step + 1e-9)
    return fmin(fmax(f_max - k * step, f_min), f_max)


def pstate_at_least(f: float, mhz_asc: np.ndarray) -> int:
    """``dvfs._pstate_at_least``: numpy's ``searchsorted(side="left")`` (NaN sorts last)."""
    s = mhz_asc.shape[0]
    x = f - 1e-9
    i = 0
    if x != x:
        i = s
    else:
        while i < s and mhz_asc[i] < x:
            i += 1
    return max(s - 1 - i, 0)


def pstate_at_most(f: float, mhz_asc: np.ndarray) -> int:
    """``dvfs._pstate_at_most``: numpy's ``searchsorted(side="right") - 1``."""
    s = mhz_asc.shape[0]
    x = f + 1e-9
    i = 0
    if x != x:
        i = s
    else:
        while i < s and mhz_asc[i] <= x:
            i += 1
    return min(s - 1 - (i - 1), s - 1)


def dvfs_step(
    mhz_table: np.ndarray, mhz_asc: np.ndarray, speedup: np.ndarray, inv_speedup: np.ndarray,
    dyn_per_state: np.ndarray, v_ratio: np.ndarray,
    f_max: float, f_min: float, step: float, headroom: float, idle_util: float, saturated: float,
    short_limit_factor: float, idle_activity: float, slowdown_c: float, hysteresis_c: float, hbm_max_c: float,
    leak_w: float, leak_ref_c: float, leak_doubling_c: float, hbm_w: float, uncore_w: float,
    thermal_down: float, thermal_up: float, r_idle: int, r_app: int, r_swcap: int, r_swtherm: int,
    dt: float, has_hbm: bool,
    util: np.ndarray, t_die_sensor: np.ndarray, t_hbm_sensor: np.ndarray,
    mhz: np.ndarray, lock_mhz: np.ndarray, cap_w: np.ndarray, trim: np.ndarray, forced_min: np.ndarray,
    f_therm: np.ndarray, f_therm_hbm: np.ndarray, dither: np.ndarray,
    avg_long: np.ndarray, avg_short: np.ndarray, cap_seen: np.ndarray,
    o_f_therm: np.ndarray, o_f_therm_hbm: np.ndarray, o_dither: np.ndarray, o_f_cap: np.ndarray,
    o_hbm_slow: np.ndarray, o_pstate: np.ndarray, o_reasons: np.ndarray,
) -> None:  # fmt: skip
    """``dvfs.dvfs_step``: the averages and ``cap_seen`` in place (on a new limit), the rest into
    the ``o_`` arrays."""
    n, dies = util.shape
    states = mhz_table.shape[0]
    hbm = t_hbm_sensor.shape[1]
    demand = np.empty(dies)
    col = np.empty(dies)
    leak_d = np.empty(dies)
    est = np.empty(states)
    p = np.empty(dies, np.int64)
    reasons = np.empty(dies, np.int64)
    up_step = thermal_up * f_max * dt
    for i in range(n):
        locked = lock_mhz[i] > 0
        p_lock = pstate_at_most(lock_mhz[i] if locked else f_max, mhz_asc)
        for d in range(dies):
            u = util[i, d]
            u_inv = u * fmax(mhz[i, d], f_min) / f_max
            f_gov = fmin(fmax(headroom * f_max * u_inv, f_min), f_max)
            p_gov = pstate_at_least(f_gov, mhz_asc)
            r = r_idle if u < idle_util else 0
            if locked:
                if p_lock > p_gov:
                    r |= r_app
                p[d] = p_lock
            else:
                p[d] = p_gov
            reasons[d] = r
            demand[d] = 1.0 if u >= saturated else u * fmax(mhz[i, d], f_min) / f_max
            s = t_die_sensor[i, d]
            temp = slowdown_c if s != s else s
            leak_d[d] = leak_w * np.exp2((temp - leak_ref_c) / leak_doubling_c)
        # the power cap, through the estimator
        cap = cap_w[i]
        if cap != cap_seen[i]:
            avg_long[i] = fmin(avg_long[i], cap)
            avg_short[i] = fmin(avg_short[i], cap)
            cap_seen[i] = cap
        payback = fmax(avg_short[i] - cap, 0.0)
        goal = fmax(cap - payback, cap * (2.0 - short_limit_factor)) / trim[i]
        leak = psum(leak_d, 0, dies)
        first = -1
        for s in range(states):
            for d in range(dies):
                col[d] = fmin(demand[d] * speedup[s], 1.0)
            busy = psum(col, 0, dies)
            for d in range(dies):
                col[d] = fmin(demand[d], inv_speedup[s])
            done = psum(col, 0, dies) / dies
            act = idle_activity * dies + (1.0 - idle_activity) * busy
            hbm_s = hbm_w * (0.25 + 0.75 * fmin(done, 1.0)) + uncore_w * dies
            est[s] = dyn_per_state[s] * act + leak * v_ratio[s] + hbm_s
            if first < 0 and est[s] <= goal:
                first = s
        if first < 0:
            f_cap = f_min
        elif first == 0:
            f_cap = f_max
        else:
            above = first - 1
            e_hi, e_lo = est[above], est[first]
            frac = fmin(fmax((goal - e_lo) / fmax(e_hi - e_lo, 1e-9), 0.0), 1.0)
            f_cap = mhz_table[first] + frac * (mhz_table[above] - mhz_table[first])
        # the memory's thermal ceiling for the module
        f_hbm = f_therm_hbm[i]
        if has_hbm:
            hot = -np.inf
            for j in range(hbm):
                x = t_hbm_sensor[i, j]
                hot = fmax(hot, -np.inf if x != x else x)
            over_m = hot - hbm_max_c
            down_m = thermal_down * (over_m + 1.0) * f_max * dt if over_m > 0 else 0.0
            up_m = up_step if hot < hbm_max_c - hysteresis_c else 0.0
            f_hbm = fmin(fmax(f_hbm - down_m + up_m, f_min), f_max)
        o_f_therm_hbm[i] = f_hbm
        hbm_slow = False
        for d in range(dies):
            # software thermal slowdown on the readings (NaN readings do not move it)
            s = t_die_sensor[i, d]
            t = slowdown_c - hysteresis_c if s != s else s
            over = t - slowdown_c
            down = thermal_down * (over + 1.0) * f_max * dt if over > 0 else 0.0
            up = up_step if t < slowdown_c - hysteresis_c else 0.0
            f_th_own = fmin(fmax(f_therm[i, d] - down + up, f_min), f_max)
            o_f_therm[i, d] = f_th_own
            f_th = f_min if forced_min[i] else f_th_own
            if has_hbm:
                f_th = fmin(f_th, f_hbm)
            # the ceilings on the clock grid, dithered
            f_req = mhz_table[p[d]]
            cap_binds = f_cap < f_req - 1e-6
            therm_binds = f_th < f_req - 1e-6
            ceiling = fmin(f_cap, f_th)
            binds = cap_binds or therm_binds
            if binds:
                f_lo = grid_floor(ceiling, f_max, f_min, step)
                f_hi = grid_ceil(ceiling, f_max, f_min, step)
                frac = (ceiling - f_lo) / fmax(f_hi - f_lo, 1e-9) if f_hi > f_lo else 1.0
                dith = dither[i, d] + frac
                take_hi = dith >= 1.0
                if take_hi:
                    dith -= 1.0
                o_dither[i, d] = dith
                f_ceil = f_hi if take_hi else f_lo
                o_f_cap[i, d] = f_ceil
                o_pstate[i, d] = pstate_at_least(fmin(f_req, f_ceil), mhz_asc)
            else:
                o_dither[i, d] = 0.0
                o_f_cap[i, d] = f_max
                o_pstate[i, d] = p[d]
            r = reasons[d]
            if cap_binds:
                r |= r_swcap
            if therm_binds:
                r |= r_swtherm
            o_reasons[i, d] = r
            if f_hbm < f_req - 1e-6:
                hbm_slow = True
        o_hbm_slow[i] = hbm_slow


def sensor_sample_faulty(
    raw: np.ndarray, noise: np.ndarray, noise_sd: float, quantum: float, t: float, dt: float,
    fault: np.ndarray, param: np.ndarray, drift: np.ndarray, extra: np.ndarray, draw: np.ndarray,
    noisy_any: bool, drop_any: bool, value: np.ndarray, read_at: np.ndarray,
    o_value: np.ndarray, o_read_at: np.ndarray, o_failed: np.ndarray,
) -> None:  # fmt: skip
    """A bank with faults set (stuck, drifting, noisy, dropping out, failed): ``drift`` in place,
    the rest into the ``o_`` arrays; ``extra`` and ``draw`` are the normal and uniform draws the
    reference makes when a sensor is noisy or drops out."""
    n, m = raw.shape
    for i in range(n):
        for j in range(m):
            f = fault[i, j]
            r = raw[i, j] + noise[i, j] * noise_sd if noise_sd else raw[i, j]
            if f == 1:  # STUCK
                r = param[i, j]
            drift[i, j] += param[i, j] * dt if f == 2 else 0.0  # DRIFT
            r = r + drift[i, j]
            if noisy_any:
                r = r + (extra[i, j] * param[i, j] if f == 3 else 0.0)  # NOISE
            ok = True
            if drop_any and f == 4 and draw[i, j] < param[i, j]:  # DROPOUT
                ok = False
            failed = f == 5  # FAILED
            o_failed[i, j] = failed
            if failed:
                ok = False
            if quantum:
                r = np.rint(r / quantum) * quantum
            if ok:
                o_value[i, j] = r
                o_read_at[i, j] = t
            else:
                o_value[i, j] = np.nan if failed else value[i, j]
                o_read_at[i, j] = read_at[i, j]


def tick_inputs(
    demand: np.ndarray, mhz: np.ndarray, shutdown: np.ndarray, max_mhz: float, idle: float,
    hbm_region: np.ndarray, o_util: np.ndarray, o_activity: np.ndarray, o_hbm_util: np.ndarray,
) -> None:  # fmt: skip
    """The plant's inputs from the clocks that run: the dice's utilisation at them
    (``workload.utilisation``, zero on a shut-down module), their switching activity and the
    memory's traffic (the tick's own numpy, ``Shard.tick``)."""
    n, dies = demand.shape
    for i in range(n):
        on = 0.0 if shutdown[i] else 1.0
        for d in range(dies):
            u = fmin(fmax(demand[i, d] * max_mhz / fmax(mhz[i, d], 1.0), 0.0), 1.0) * on
            o_util[i, d] = u
            o_activity[i, d] = idle + (1.0 - idle) * u
        for j in range(hbm_region.shape[0]):
            d = hbm_region[j]
            o_hbm_util[i, j] = 0.8 * (o_util[i, d] * (mhz[i, d] / max_mhz))


def tick_counters(
    p_total: np.ndarray, p_die: np.ndarray, active: np.ndarray, reasons: np.ndarray, hbm_slow: np.ndarray,
    dt: float, r_cap: int, r_therm: int, r_hw: int, samples: bool,
    energy: np.ndarray, die_energy: np.ndarray, energy_j: np.ndarray, violation_s: np.ndarray,
    smp_energy: np.ndarray, smp_die_energy: np.ndarray,
) -> None:  # fmt: skip
    """Energy since the last record and since boot, and the violation times, in place."""
    n, dies = p_die.shape
    for i in range(n):
        energy[i] += p_total[i] * dt
        for d in range(dies):
            die_energy[i, d] += p_die[i, d] * dt
        energy_j[i] += p_total[i] * (dt if active[i] else 0.0)
        held = 0
        for d in range(dies):
            held |= int(reasons[i, d])
        violation_s[i, 0] += dt if held & r_cap != 0 else 0.0
        violation_s[i, 1] += dt if held & r_therm != 0 else 0.0
        violation_s[i, 2] += dt if hbm_slow[i] else 0.0
        violation_s[i, 3] += dt if held & r_hw != 0 else 0.0
        if samples:
            smp_energy[i] += p_total[i] * dt
            for d in range(dies):
                smp_die_energy[i, d] += p_die[i, d] * dt


# --- workload -------------------------------------------------------------------------------------


def npmod(a: float, b: float) -> float:
    """numpy's ``a % b`` of two floats (the remainder of ``npy_divmod``: the sign of ``b``)."""
    mod = np.fmod(a, b)
    if mod != 0.0:
        if (b < 0.0) != (mod < 0.0):
            mod += b
    else:
        mod = math.copysign(0.0, b)
    return mod


def tick_demand(
    kind: np.ndarray, phase: np.ndarray, scale: np.ndarray, ou: np.ndarray, noise: np.ndarray,
    t: float, a: float, coef: float, k_steady: int, k_training: int, k_inference: int,
    steady: float, period: float, compute: float, comm: float, infer_mean: float,
    mhz: np.ndarray, shutdown: np.ndarray, max_mhz: float, o_demand: np.ndarray, o_util: np.ndarray,
) -> None:  # fmt: skip
    """``WorkloadModel.demand`` (``ou`` in place; ``noise``: the reference's normal draws of the
    inference rows, in row order) and the utilisation the firmware sees at the clocks it had
    (``workload.utilisation``, zero on a shut-down module), into ``o_demand`` and ``o_util``."""
    n, dies = o_demand.shape
    j = 0
    for i in range(n):
        kd = kind[i]
        if kd == k_training:
            v = 1.0 if npmod(t + phase[i], period) < compute else comm
            for d in range(dies):
                o_demand[i, d] = v
        elif kd == k_inference:
            for d in range(dies):
                x = ou[i, d] * a + noise[j, d] * coef
                ou[i, d] = x
                o_demand[i, d] = fmin(fmax(infer_mean + x, 0.05), 1.0)
            j += 1
        else:
            v = steady * 1.0 if kd == k_steady else 0.0
            for d in range(dies):
                o_demand[i, d] = v
        on = 0.0 if shutdown[i] else 1.0
        for d in range(dies):
            dm = o_demand[i, d] * scale[i]
            o_demand[i, d] = dm
            o_util[i, d] = fmin(fmax(dm * max_mhz / fmax(mhz[i, d], 1.0), 0.0), 1.0) * on


# --- coolant --------------------------------------------------------------------------------------


def pid_step(
    kp: float, ki_ts: float, integral_min: float, integral_max: float, out_min: float, out_max: float,
    ff_offset: float, ff_gain: float, has_ff: bool, slew_neg_ts: float, slew_pos_ts: float, reverse: bool,
    setpoint: np.ndarray, value: np.ndarray, integral: np.ndarray, last: np.ndarray,
    o_integral: np.ndarray, o_out: np.ndarray,
) -> None:  # fmt: skip
    """``control.pid.pid_step`` (``ki_ts``: ``ki * ts``; the slews times ``ts``, 0: none): the new
    integral and output into ``o_integral`` and ``o_out``."""
    n, m = value.shape
    for i in range(n):
        for j in range(m):
            sp = setpoint[i, j]
            error = (value[i, j] - sp) if reverse else (sp - value[i, j])
            p = kp * error
            acc = fmin(fmax(integral[i, j] + ki_ts * error, integral_min), integral_max)
            base = p + (ff_offset + ff_gain * sp) if has_ff else p
            raw = base + acc
            wind = (raw > out_max and error > 0) or (raw < out_min and error < 0)
            keep = integral[i, j] if wind else acc
            o_integral[i, j] = keep
            out = fmin(fmax(base + keep, out_min), out_max)
            if slew_neg_ts > 0:
                out = fmax(out, last[i, j] - slew_neg_ts)
            if slew_pos_ts > 0:
                out = fmin(out, last[i, j] + slew_pos_ts)
            o_out[i, j] = out


def cooling_fast(
    t: float, spinup: float, min_speed: float, timeout: float, overcurrent_a: float, retry_s: float,
    alternate_s: float, rpm_nom: np.ndarray, plant_rpm_nom: np.ndarray,
    rpm_true: np.ndarray, overcurrent: np.ndarray, rpm: np.ndarray, rpm_read_at: np.ndarray,
    rpm_failed: np.ndarray, driver_fault: np.ndarray,
    pump_started: np.ndarray, pump_on: np.ndarray, pump_fault: np.ndarray, fault_t: np.ndarray,
    lead: np.ndarray, last_alternate: np.ndarray, natural: np.ndarray,
    o_current: np.ndarray, o_fault_t: np.ndarray, o_natural: np.ndarray, o_newly: np.ndarray,
    o_retried: np.ndarray, o_failed_over: np.ndarray, o_alternated: np.ndarray, o_entered: np.ndarray,
    kp: float, ki_ts: float, integral_min: float, integral_max: float, out_min: float, out_max: float,
    ff_offset: float, ff_gain: float, has_ff: bool, slew_neg_ts: float, slew_pos_ts: float, reverse: bool,
    failsafe_pct: float, flow: np.ndarray, setpoint: np.ndarray, integral: np.ndarray, last: np.ndarray,
    failsafe: np.ndarray, external: np.ndarray, manual: np.ndarray,
    o_integral: np.ndarray, o_last: np.ndarray, o_cmd: np.ndarray,
) -> int:  # fmt: skip
    """The valve period of ``Shard._cooling_fast``: the pump drivers' current, the pump supervision
    (``coolant.pump_step``: ``pump_fault``, ``lead``, ``pump_on``, ``pump_started`` and
    ``last_alternate`` in place, the transitions into the ``o_`` arrays) and the valve loop
    (``coolant.valve_step``). Returns how many transitions there are (pump events, and modules
    whose cooling came back from natural convection)."""
    n, pumps = pump_on.shape
    events = 0
    healthy = np.empty(pumps, np.bool_)
    for i in range(n):
        for k in range(pumps):
            speed = rpm_true[i, k] / plant_rpm_nom[k]
            o_current[i, k] = 1.5 * speed * speed * (3.0 if overcurrent[i, k] else 1.0)
        any_on = False
        any_healthy = False
        n_healthy = 0
        for k in range(pumps):
            spun_up = (t - pump_started[i, k]) >= spinup
            slow = not (rpm[i, k] >= min_speed * rpm_nom[k])
            lost = (rpm_failed[i, k] or (t - rpm_read_at[i, k]) > timeout or slow) and spun_up
            bad = pump_on[i, k] and (driver_fault[i, k] or lost or o_current[i, k] > overcurrent_a)
            newly = bad and not pump_fault[i, k]
            o_newly[i, k] = newly
            o_fault_t[i, k] = t if newly else fault_t[i, k]
            fault = pump_fault[i, k] or bad
            retried = fault and not pump_on[i, k] and (t - o_fault_t[i, k] >= retry_s)
            o_retried[i, k] = retried
            fault = fault and not retried
            pump_fault[i, k] = fault
            healthy[k] = not fault
            any_on = any_on or pump_on[i, k]
            any_healthy = any_healthy or not fault
            n_healthy += 0 if fault else 1
            events += (1 if newly else 0) + (1 if retried else 0)
        lead_bad = pump_fault[i, lead[i]]
        stopped = (not any_on) and any_healthy
        due = (t - last_alternate[i] >= alternate_s) and not lead_bad and n_healthy > 1
        o_failed_over[i] = False
        o_alternated[i] = False
        if lead_bad or due or stopped:
            for k in range(1, pumps + 1):
                cand = (lead[i] + k) % pumps
                if not healthy[cand] or (due and cand == lead[i]):
                    continue
                lead[i] = cand
                for q in range(pumps):
                    pump_on[i, q] = False
                pump_on[i, cand] = True
                pump_started[i, cand] = t
                last_alternate[i] = t
                o_failed_over[i] = lead_bad and not stopped
                o_alternated[i] = due and not lead_bad
                break
        any_on = False
        for k in range(pumps):
            on = pump_on[i, k] and healthy[k]
            pump_on[i, k] = on
            any_on = any_on or on
        o_natural[i] = not any_on
        o_entered[i] = (not any_on) and not natural[i]
        events += (1 if o_failed_over[i] else 0) + (1 if o_alternated[i] else 0) + (1 if o_entered[i] else 0)
        events += 1 if (natural[i] and any_on) else 0
    measured = np.empty(flow.shape)
    for i in range(n):
        for j in range(flow.shape[1]):
            x = flow[i, j]
            measured[i, j] = 0.0 if x != x else x
    pid_step(
        kp, ki_ts, integral_min, integral_max, out_min, out_max, ff_offset, ff_gain, has_ff, slew_neg_ts,
        slew_pos_ts, reverse, setpoint, measured, integral, last, o_integral, o_last,
    )  # fmt: skip
    for i in range(n):
        for j in range(flow.shape[1]):
            c = o_last[i, j]
            if failsafe[i, j]:
                c = fmax(c, failsafe_pct)
            e = external[i, j]
            if e == e:
                c = e
            m = manual[i, j]
            o_cmd[i, j] = c if m != m else m
    return events


def zone_max(values: np.ndarray, i: int, member_zone: np.ndarray, z: int) -> float:
    """``coolant.Zones.max`` of one row and zone: its members' largest reading, NaN ignored (in
    the members' order, as ``np.maximum.reduceat``), ``-inf`` where it has none."""
    acc = -np.inf
    first = True
    for m in range(member_zone.shape[0]):
        if member_zone[m] != z:
            continue
        x = values[i, m]
        x = -np.inf if x != x else x
        acc = x if first else fmax(acc, x)
        first = False
    return acc


def cooling_thermal(
    t: float, timeout: float, target_c: float, hbm_target_c: float, reason_hold_s: float,
    die_zone: np.ndarray, hbm_zone: np.ndarray,
    die_temp: np.ndarray, die_read_at: np.ndarray, die_failed: np.ndarray, hbm_temp: np.ndarray,
    flow_read_at: np.ndarray, flow_failed: np.ndarray,
    failsafe: np.ndarray, die_integral: np.ndarray, die_last: np.ndarray, hbm_integral: np.ndarray,
    hbm_last: np.ndarray, reasons: np.ndarray, seen: np.ndarray, since: np.ndarray, reported: np.ndarray,
    o_failsafe: np.ndarray, o_die_integral: np.ndarray, o_die_last: np.ndarray, o_hbm_integral: np.ndarray,
    o_hbm_last: np.ndarray, o_setpoint: np.ndarray, o_seen: np.ndarray, o_since: np.ndarray,
    o_due: np.ndarray, o_reported: np.ndarray,
    kp: float, ki_ts: float, integral_min: float, integral_max: float, out_min: float, out_max: float,
    ff_offset: float, ff_gain: float, has_ff: bool, slew_neg_ts: float, slew_pos_ts: float, reverse: bool,
) -> int:  # fmt: skip
    """The thermal period of ``Shard._cooling_thermal``: ``coolant.thermal_step`` (failsafe, the
    zones' hottest readings, the two thermal PIDs, the flow setpoints) and the clock reasons held
    long enough to be reported. Returns how many zones entered or left failsafe plus how many
    reasons are due."""
    n, zones = failsafe.shape
    dies = die_temp.shape[1]
    changes = 0
    hot_die = np.empty((n, zones))
    hot_hbm = np.empty((n, zones))
    for i in range(n):
        for z in range(zones):
            ok = True
            for m in range(dies):
                if die_zone[m] != z:
                    continue
                x = die_temp[i, m]
                ok = ok and (t - die_read_at[i, m]) <= timeout and not die_failed[i, m] and x == x
            fresh_flow = (t - flow_read_at[i, z]) <= timeout and not flow_failed[i, z]
            fs = not (ok and fresh_flow)
            o_failsafe[i, z] = fs
            changes += 1 if fs != failsafe[i, z] else 0
            h = zone_max(die_temp, i, die_zone, z)
            hot_die[i, z] = h if (h == h and h != np.inf and h != -np.inf) else target_c
            h = zone_max(hbm_temp, i, hbm_zone, z)
            hot_hbm[i, z] = h if (h == h and h != np.inf and h != -np.inf) else hbm_target_c
    sp_die = np.full((n, zones), target_c)
    sp_hbm = np.full((n, zones), hbm_target_c)
    pid_step(
        kp, ki_ts, integral_min, integral_max, out_min, out_max, ff_offset, ff_gain, has_ff, slew_neg_ts,
        slew_pos_ts, reverse, sp_die, hot_die, die_integral, die_last, o_die_integral, o_die_last,
    )  # fmt: skip
    pid_step(
        kp, ki_ts, integral_min, integral_max, out_min, out_max, ff_offset, ff_gain, has_ff, slew_neg_ts,
        slew_pos_ts, reverse, sp_hbm, hot_hbm, hbm_integral, hbm_last, o_hbm_integral, o_hbm_last,
    )  # fmt: skip
    for i in range(n):
        for z in range(zones):
            o_setpoint[i, z] = fmax(o_die_last[i, z], o_hbm_last[i, z])
    for i in range(n):
        for d in range(reasons.shape[1]):
            r = reasons[i, d]
            o_seen[i, d] = r
            s = t if r != seen[i, d] else since[i, d]
            o_since[i, d] = s
            due = r != reported[i, d] and (t - s >= reason_hold_s)
            o_due[i, d] = due
            o_reported[i, d] = r if due else reported[i, d]
            changes += 1 if due else 0
    return changes


# --- telemetry records ----------------------------------------------------------------------------

# The fields telemetry_fill writes, with the type it writes them as (little-endian). The caller
# passes their byte offsets in this order (a field of the dies, hbm, pumps and valves arrays: its
# offset in the array's item), after each array's own offset and item size.
SNAPSHOT_FIELDS = (
    ("uptime_ns", "<u8"), ("state", "|u1"), ("mode", "|u1"), ("flags", "<u2"),
    ("power_w", "<f4"), ("power_cap_w", "<f4"), ("inlet_c", "<f4"), ("outlet_c", "<f4"),
    ("flow_lpm", "<f4"), ("vrm_current_a", "<f4"), ("rx_rejected", "<u4"), ("recovery_action", "|u1"),
    ("energy_mj", "<u8"), ("viol_power_ms", "<u4"), ("viol_thermal_ms", "<u4"),
    ("viol_hbm_thermal_ms", "<u4"), ("viol_hw_slowdown_ms", "<u4"), ("power_limit_source", "|u1"),
    ("remapped_correctable", "<u4"), ("remapped_uncorrectable", "<u4"),
    ("ecc_ce_aggregate", "<u8"), ("ecc_ue_aggregate", "<u8"),
    ("pcie_replays", "<u4"), ("pcie_aer_correctable", "<u4"), ("pcie_aer_uncorrectable", "<u4"),
    ("n_dies", "|u1"), ("n_hbm", "|u1"), ("n_pumps", "|u1"), ("n_valves", "|u1"),
    ("dies.temp_c", "<f4"), ("dies.power_w", "<f4"), ("dies.clock_mhz", "<u2"), ("dies.voltage_mv", "<u2"),
    ("dies.reasons", "<u4"), ("dies.pstate", "|u1"), ("dies.util_pct", "|u1"),
    ("hbm.temp_c", "<f4"), ("hbm.ce", "<u4"), ("hbm.ue", "<u4"),
    ("pumps.rpm", "<u2"), ("pumps.flags", "|u1"),
    ("valves.position_pct", "<f4"), ("valves.flags", "|u1"),
)  # fmt: skip
SNAPSHOT_ARRAYS = ("dies", "hbm", "pumps", "valves")  # each: offset and item size, after the fields
_N_FIELDS = 43


def put_int(out: np.ndarray, i: int, off: int, v: int | np.int64, nbytes: int) -> None:
    """The low ``nbytes`` bytes of the integer ``v``, little-endian, at ``out[i, off:]`` (what numpy
    keeps when it casts an integer to a narrower one)."""
    for b in range(nbytes):
        out[i, off + b] = (v >> (8 * b)) & 0xFF


def put_f32(out: np.ndarray, i: int, off: int, v: float, f4: np.ndarray, f4b: np.ndarray) -> None:
    """``v`` rounded to float32 (as numpy casts it), little-endian, at ``out[i, off:]``; ``f4`` is a
    one-item float32 scratch array and ``f4b`` its bytes."""
    f4[0] = v
    for b in range(4):
        out[i, off + b] = f4b[b]


def telemetry_fill(
    out: np.ndarray, o: np.ndarray, rows: np.ndarray, t: float, telemetry: bool,
    n_dies: int, n_hbm: int, n_pumps: int, n_valves: int,
    f_failsafe: int, f_locked: int, failsafe_mode: int, natural_mode: int, running: int, shut_state: int,
    p_running: int, p_lead: int, p_fault: int, v_manual: int, v_external: int,
    boot_t: np.ndarray, shutdown: np.ndarray, failsafe: np.ndarray, natural: np.ndarray, lock_mhz: np.ndarray,
    ras_flags: np.ndarray, energy_since: np.ndarray, energy: np.ndarray, p_total: np.ndarray,
    die_energy: np.ndarray, p_die: np.ndarray, cap_w: np.ndarray, t_inlet: np.ndarray, t_outlet: np.ndarray,
    flow_total: np.ndarray, vrm_current: np.ndarray, rx_rejected: np.ndarray, ras_action: np.ndarray,
    energy_j: np.ndarray, violation_s: np.ndarray, cap_source: np.ndarray, ras_remapped: np.ndarray,
    ras_aggregate: np.ndarray, pcie: np.ndarray, die_t: np.ndarray, mhz: np.ndarray, mv: np.ndarray,
    reasons: np.ndarray, pstate: np.ndarray, util: np.ndarray, hbm_t: np.ndarray, ras_ce: np.ndarray,
    ras_ue: np.ndarray, rpm: np.ndarray, lead: np.ndarray, pump_on: np.ndarray, pump_fault: np.ndarray,
    valve_pos: np.ndarray, manual: np.ndarray, external: np.ndarray,
) -> None:  # fmt: skip
    """The telemetry records of ``rows`` (``Shard.records``), written row ``k`` into ``out[k]`` (a
    ``[len(rows), record size]`` uint8 array) at the byte offsets ``o`` of :data:`SNAPSHOT_FIELDS`
    and :data:`SNAPSHOT_ARRAYS`. ``telemetry`` restarts each row's power average, after all rows
    are written (as the reference does)."""
    f4 = np.empty(1, np.float32)
    f4b = f4.view(np.uint8)
    da, ds = o[_N_FIELDS], o[_N_FIELDS + 1]
    ha, hs = o[_N_FIELDS + 2], o[_N_FIELDS + 3]
    pa, ps = o[_N_FIELDS + 4], o[_N_FIELDS + 5]
    va, vs = o[_N_FIELDS + 6], o[_N_FIELDS + 7]
    mask32 = np.int64(0xFFFFFFFF)
    for k in range(rows.shape[0]):
        r = rows[k]
        put_int(out, k, o[0], np.int64(fmax(t - boot_t[r], 0.0) * 1e9), 8)
        put_int(out, k, o[1], np.int64(shut_state if shutdown[r] else running), 1)
        fs = 0
        for j in range(failsafe.shape[1]):
            if failsafe[r, j]:
                fs = 1
        put_int(out, k, o[2], np.int64(natural_mode if natural[r] else fs * failsafe_mode), 1)
        flags = fs * f_failsafe | (f_locked if lock_mhz[r] > 0 else 0) | np.int64(ras_flags[r])
        put_int(out, k, o[3], np.int64(flags), 2)
        span = t - energy_since[r]
        fresh = span > 0
        put_f32(out, k, o[4], energy[r] / span if fresh else p_total[r], f4, f4b)
        put_f32(out, k, o[5], cap_w[r], f4, f4b)
        put_f32(out, k, o[6], t_inlet[r], f4, f4b)
        put_f32(out, k, o[7], t_outlet[r], f4, f4b)
        put_f32(out, k, o[8], flow_total[r], f4, f4b)
        put_f32(out, k, o[9], vrm_current[r], f4, f4b)
        put_int(out, k, o[10], np.int64(rx_rejected[r]), 4)
        put_int(out, k, o[11], np.int64(ras_action[r]), 1)
        put_int(out, k, o[12], np.int64(np.rint(energy_j[r] * 1e3)), 8)
        for j in range(4):
            put_int(out, k, o[13 + j], np.int64(violation_s[r, j] * 1e3) & mask32, 4)
        put_int(out, k, o[17], np.int64(cap_source[r]), 1)
        for j in range(2):
            put_int(out, k, o[18 + j], min(np.int64(ras_remapped[r, j]), mask32), 4)
            put_int(out, k, o[20 + j], np.int64(ras_aggregate[r, j]), 8)
        for j in range(3):
            put_int(out, k, o[22 + j], np.int64(pcie[r, j]) & mask32, 4)
        put_int(out, k, o[25], np.int64(n_dies), 1)
        put_int(out, k, o[26], np.int64(n_hbm), 1)
        put_int(out, k, o[27], np.int64(n_pumps), 1)
        put_int(out, k, o[28], np.int64(n_valves), 1)
        for d in range(n_dies):
            at = da + d * ds
            put_f32(out, k, at + o[29], die_t[r, d], f4, f4b)
            put_f32(out, k, at + o[30], die_energy[r, d] / span if fresh else p_die[r, d], f4, f4b)
            put_int(out, k, at + o[31], np.int64(mhz[r, d]), 2)
            put_int(out, k, at + o[32], np.int64(mv[r, d]), 2)
            put_int(out, k, at + o[33], np.int64(reasons[r, d]), 4)
            put_int(out, k, at + o[34], np.int64(pstate[r, d]), 1)
            put_int(out, k, at + o[35], np.int64(np.rint(util[r, d] * 100.0)), 1)
        for h in range(n_hbm):
            at = ha + h * hs
            put_f32(out, k, at + o[36], hbm_t[r, h], f4, f4b)
            put_int(out, k, at + o[37], min(np.int64(ras_ce[r, h]), mask32), 4)
            put_int(out, k, at + o[38], min(np.int64(ras_ue[r, h]), mask32), 4)
        for j in range(n_pumps):
            at = pa + j * ps
            x = rpm[r, j]
            x = fmin(fmax(0.0 if np.isnan(x) else x, 0.0), 65535.0)
            put_int(out, k, at + o[39], np.int64(x), 2)
            pf = (p_running if pump_on[r, j] else 0) | (p_lead if j == lead[r] else 0)
            pf |= p_fault if pump_fault[r, j] else 0
            put_int(out, k, at + o[40], np.int64(pf), 1)
        for j in range(n_valves):
            at = va + j * vs
            put_f32(out, k, at + o[41], valve_pos[r, j], f4, f4b)
            vf = (0 if np.isnan(manual[r, j]) else v_manual) | (0 if np.isnan(external[r, j]) else v_external)
            put_int(out, k, at + o[42], np.int64(vf), 1)
    if telemetry:
        for k in range(rows.shape[0]):
            r = rows[k]
            energy[r] = 0.0
            energy_since[r] = t
            for d in range(n_dies):
                die_energy[r, d] = 0.0
