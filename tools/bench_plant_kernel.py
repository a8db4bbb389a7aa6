#!/usr/bin/env python3
"""What a compiled plant step would save: the numpy ``plant.model.step`` against the same
arithmetic as one loop nest compiled by numba, checked equal, by shard size.

    pip install numba   # not a dependency of mcm-emu
    python tools/bench_plant_kernel.py [--sizes 64,1000,10000] [--profile NAME]

It prints, per size, the largest difference between the two over every state array after a
step (0 or a few ulps), the time of a step each way, and what importing numba costs the process
(time, resident memory): the figures behind the "compiled tick" paragraph of docs/performance.md.
"""

from __future__ import annotations

import argparse
import copy
import math
import resource
import time
from typing import Any

import numpy as np

from mcm_firmware.plant import model
from mcm_firmware.profile import load_profile


def step_loops(
    c_eff: Any, leak_w: Any, uncore_w: float, v0: float, leak_ref_c: float, leak_doubling_c: float,
    c_die: float, r_die_plate: float, hbm_power_w: float, c_hbm: float, r_hbm_plate: float,
    hbm_region: Any, c_plate: float, g_plate_nom: float, g_natural: float, valve_of_die: Any,
    dies_per_valve: Any, pump_flow_lpm: Any, pump_rpm_nom: Any, q_branch_nom: float,
    rangeability: float, valve_slew: float, cp_coolant: float,
    mhz: Any, mv: Any, powered: Any, activity: Any, hbm_util: Any, valve_cmd: Any, pump_on: Any,
    pump_failed: Any, valve_stuck: Any, inlet_offset_c: Any, vrm_factor: Any,
    pump_rpm: Any, valve_pos: Any, t_die: Any, t_plate: Any, t_hbm: Any,
    o_t_die: Any, o_t_plate: Any, o_t_hbm: Any, o_t_inlet: Any, o_p_die: Any, o_p_hbm: Any,
    o_p_total: Any, o_vrm: Any, o_flow_valve: Any, o_flow_total: Any, o_t_outlet: Any,
    dt: float, inlet_c: float,
) -> None:  # fmt: skip
    """``model.step_reference`` written as loops over modules, dice, stacks, valves and pumps."""
    n, dies = t_die.shape
    hbm = t_hbm.shape[1]
    valves = valve_pos.shape[1]
    pumps = pump_rpm.shape[1]
    pump_gain = -math.expm1(-dt / model.PUMP_TAU_S)
    slew = valve_slew * dt
    decay_die = math.exp(-dt / (c_die * r_die_plate))
    decay_hbm = math.exp(-dt / (c_hbm * r_hbm_plate))
    g_dp = 1.0 / r_die_plate
    g_hp = 1.0 / r_hbm_plate
    g_pc = [0.0] * dies
    hbm_sum = [0.0] * dies
    hbm_count = [0.0] * dies
    for j in range(hbm):
        hbm_count[hbm_region[j]] += 1.0
    for i in range(n):
        best = 0.0
        total_q = 0.0
        for k in range(pumps):
            target = pump_rpm_nom[k] if (pump_on[i, k] and not pump_failed[i, k]) else 0.0
            rpm = pump_rpm[i, k] + (target - pump_rpm[i, k]) * pump_gain
            pump_rpm[i, k] = rpm
            q = pump_flow_lpm[k] * min(max(rpm / pump_rpm_nom[k], 0.0), 1.2)
            if k == 0 or q > best:
                best = q
            total_q += q
        capacity = best + 0.25 * (total_q - best)
        flow_total = 0.0
        for v in range(valves):
            move = min(max(valve_cmd[i, v], 0.0), 100.0) - valve_pos[i, v]
            if not valve_stuck[i, v]:
                valve_pos[i, v] += min(max(move, -slew), slew)
            pos = valve_pos[i, v]
            frac = rangeability ** (pos / 100.0 - 1.0) if pos > model.VALVE_SHUT_PCT else 0.0
            q = capacity / valves * frac
            o_flow_valve[i, v] = q
            flow_total += q
        o_flow_total[i] = flow_total
        t_in = inlet_c + inlet_offset_c[i]
        o_t_inlet[i] = t_in
        on = powered[i]
        p_dies = 0.0
        amps = 0.0
        for d in range(dies):
            p = 0.0
            if on:
                volt = mv[i, d] * 1e-3
                dyn = c_eff[i, d] * volt * volt * (mhz[i, d] * 1e6) * activity[i, d]
                leak = leak_w[i, d] * (volt / v0) * 2.0 ** ((t_die[i, d] - leak_ref_c) / leak_doubling_c)
                p = dyn + leak + uncore_w
            o_p_die[i, d] = p
            p_dies += p
            amps += p / max(mv[i, d] * 1e-3, 0.1)
        p_hbms = 0.0
        for j in range(hbm):
            p = hbm_power_w * (0.25 + 0.75 * hbm_util[i, j]) if on else 0.0
            o_p_hbm[i, j] = p
            p_hbms += p
        o_p_total[i] = p_dies + p_hbms
        o_vrm[i] = amps * vrm_factor[i]
        for d in range(dies):
            v = valve_of_die[d]
            qd = o_flow_valve[i, v] / dies_per_valve[v]
            film = g_plate_nom * (max(qd, 0.0) / q_branch_nom) ** model.FLOW_EXPONENT
            cap = 2.0 * qd * cp_coolant / 60.0
            forced = film * cap / max(film + cap, 1e-12) if qd > 1e-6 else 0.0
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
        heat = 0.0
        for d in range(dies):
            g_total = g_dp + hbm_count[d] * g_hp + g_pc[d]
            eq = (o_t_die[i, d] * g_dp + hbm_sum[d] * g_hp + g_pc[d] * t_in) / g_total
            tp = eq + (t_plate[i, d] - eq) * math.exp(-dt * g_total / c_plate)
            o_t_plate[i, d] = tp
            heat += g_pc[d] * (tp - t_in)
        rate = flow_total * cp_coolant / 60.0
        o_t_outlet[i] = t_in + (heat / max(rate, 1e-6) if rate > 1e-6 else 0.0)


def compiled_step(
    kernel: Any, p: model.PlantParams, s: model.PlantState, u: model.PlantInputs, dt: float, inlet_c: float
) -> None:
    n = p.n
    t_die, t_plate, t_hbm = np.empty_like(s.t_die), np.empty_like(s.t_plate), np.empty_like(s.t_hbm)
    t_inlet, p_total, vrm, flow_total, t_outlet = (np.empty(n) for _ in range(5))
    p_die, p_hbm, flow_valve = np.empty_like(s.t_die), np.empty_like(s.t_hbm), np.empty_like(s.valve_pos)
    kernel(
        p.c_eff, p.leak_w, p.uncore_w, p.v0, p.leak_ref_c, p.leak_doubling_c, p.c_die, p.r_die_plate,
        p.hbm_power_w, p.c_hbm, p.r_hbm_plate, p.hbm_region, p.c_plate, p.g_plate_nom, p.g_natural,
        p.valve_of_die, p.dies_per_valve, p.pump_flow_lpm, p.pump_rpm_nom, p.q_branch_nom,
        p.rangeability, p.valve_slew, p.cp_coolant,
        u.mhz, u.mv, u.powered, u.activity, u.hbm_util, u.valve_cmd, u.pump_on, u.pump_failed,
        u.valve_stuck, u.inlet_offset_c, u.vrm_factor,
        s.pump_rpm, s.valve_pos, s.t_die, s.t_plate, s.t_hbm,
        t_die, t_plate, t_hbm, t_inlet, p_die, p_hbm, p_total, vrm, flow_valve, flow_total, t_outlet,
        dt, inlet_c,
    )  # fmt: skip
    s.t_die, s.t_plate, s.t_hbm, s.t_inlet = t_die, t_plate, t_hbm, t_inlet
    s.p_die, s.p_hbm, s.p_total, s.vrm_current = p_die, p_hbm, p_total, vrm
    s.flow_valve, s.flow_total, s.t_outlet = flow_valve, flow_total, t_outlet


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="colossus-mcm")
    ap.add_argument("--sizes", default="64,1000,10000")
    args = ap.parse_args()
    rss0, t0 = rss_mb(), time.perf_counter()
    import numba

    kernel = numba.njit(cache=False)(step_loops)
    t_import = time.perf_counter() - t0
    prof = load_profile(args.profile)
    print(f"numba {numba.__version__}: import {t_import:.2f} s, peak RSS {rss0:.0f} -> {rss_mb():.0f} MB")
    for n in (int(x) for x in args.sizes.split(",")):
        rng = np.random.default_rng(1)
        p = model.PlantParams.from_profile(prof, n, rng)
        s = model.PlantState.initial(p, prof)
        u = model.PlantInputs.idle(p, prof)
        u.activity = rng.uniform(0, 1, u.activity.shape)
        u.mhz = np.full_like(u.mhz, float(prof.die.pstates[0].mhz))
        u.mv = np.full_like(u.mv, float(prof.die.pstates[0].mv))
        t0 = time.perf_counter()
        compiled_step(kernel, p, copy.deepcopy(s), u, 0.05, prof.cooling.inlet_c)
        t_compile = time.perf_counter() - t0
        for _ in range(20):
            model.step(p, s, u, 0.05, prof.cooling.inlet_c)
        a, b = copy.deepcopy(s), copy.deepcopy(s)
        model.step(p, a, u, 1.0, prof.cooling.inlet_c)
        compiled_step(kernel, p, b, u, 1.0, prof.cooling.inlet_c)
        diff = max(float(np.max(np.abs(getattr(a, f) - getattr(b, f)), initial=0.0)) for f in a.__dataclass_fields__)
        reps = max(20, 200_000 // n)
        times = {}
        inlet = prof.cooling.inlet_c
        for name in ("numpy", "compiled"):
            t0 = time.perf_counter()
            for _ in range(reps):
                if name == "numpy":
                    model.step(p, s, u, 0.05, inlet)
                else:
                    compiled_step(kernel, p, s, u, 0.05, inlet)
            times[name] = (time.perf_counter() - t0) / reps
        print(
            f"  {n:>6,} modules: numpy {times['numpy'] * 1e6:8.1f} us, compiled {times['compiled'] * 1e6:8.1f} us "
            f"({times['numpy'] / times['compiled']:.1f}x; first call {t_compile:.2f} s), largest difference {diff:.3g}"
        )


if __name__ == "__main__":
    main()
