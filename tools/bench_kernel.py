#!/usr/bin/env python3
"""The compiled tick kernels (mcm_firmware/kernel) against their numpy references, by shard size:
the time of a call each way and the largest difference of their results (0: equal to the bit), on
the state of a shard that has ticked a while; and what loading numba and the kernels costs a process.

    python tools/bench_kernel.py [--sizes 64,1024,10000] [--profile NAME]

Run it twice: the first run compiles the kernels into the cache (``__pycache__`` beside
``mcm_firmware/kernel/loops.py``), later runs load them from there.
"""

from __future__ import annotations

import argparse
import copy
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import mcm_firmware.runtime.fleet as fleet_mod
from mcm_firmware import kernel
from mcm_firmware.clock import RealClock
from mcm_firmware.control import dvfs
from mcm_firmware.kernel import calls
from mcm_firmware.plant import model
from mcm_firmware.plant.workload import Workload
from mcm_firmware.profile import load_profile


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def largest_difference(a: Any, b: Any) -> float:
    worst = 0.0
    for name in vars(a) if not hasattr(a, "__dataclass_fields__") else a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray) and x.dtype.kind in "fiub":
            x, y = x.astype(float), y.astype(float)
            with np.errstate(invalid="ignore"):
                same = (x == y) | (np.isnan(x) & np.isnan(y))
                worst = max(worst, float(np.max(np.where(same, 0.0, np.abs(x - y)), initial=0.0)))
    return worst


def timed(fn: Callable[[Any], None], state: Any, reps: int) -> float:
    """Seconds a call, each on a fresh copy of ``state`` (made beforehand, not timed)."""
    states = [copy.deepcopy(state) for _ in range(reps)]
    t0 = time.perf_counter()
    for x in states:
        fn(x)
    return (time.perf_counter() - t0) / reps


Case = tuple[Any, Callable[[Any], None], Callable[[Any], None]]


def kernel_cases(k: kernel.Kernels, sh: Any, inlet: float) -> dict[str, Case]:
    """Per kernel: the state it changes, the reference, the compiled call (on a copy of the state)."""
    p, s, u, cfg, st, t, dt = sh.params, sh.plant, sh.inputs, sh.dvfs_cfg, sh.dvfs, sh.t, sh.dt
    die, hbm = sh.s_die.value, sh.s_hbm.value

    def every_tick_ref(x: Any) -> None:
        dvfs.update_power_average(cfg, x, s.p_total, dt)
        dvfs.hw_protect(cfg, x, t, s.t_die, s.vrm_current, die)
        dvfs.apply_hw_limits(cfg, x)
        dvfs.learn_trim(cfg, x, s.p_total, sh.util, die, dt)

    def every_tick_compiled(x: Any) -> None:
        calls.update_power_average(k, cfg, x, s.p_total, dt)
        calls.hw_protect(k, cfg, x, t, s.t_die, s.vrm_current, die)
        calls.apply_hw_limits(k, cfg, x)
        calls.learn_trim(k, cfg, x, s.p_total, sh.util, die, dt)

    return {
        "plant step": (
            s,
            lambda x: model.step(p, x, u, dt, inlet),
            lambda x: calls.plant_step(k, p, x, u, dt, inlet),
        ),
        "dvfs_step": (
            st,
            lambda x: dvfs.dvfs_step(cfg, x, sh.util, die, dt, hbm),
            lambda x: calls.dvfs_step(k, cfg, x, sh.util, die, dt, hbm),
        ),
        "every-tick DVFS": (st, every_tick_ref, every_tick_compiled),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="colossus-mcm")
    ap.add_argument("--sizes", default="64,1024,10000")
    args = ap.parse_args()
    rss0, t0 = rss_mb(), time.perf_counter()
    k = kernel.load()
    if k is None:
        raise SystemExit(f"compiled kernels not in use: {kernel.active()}")
    import numba

    print(
        f"numba {numba.__version__}: import and compile/load {time.perf_counter() - t0:.2f} s, "
        f"peak RSS {rss0:.0f} -> {rss_mb():.0f} MB"
    )
    prof = load_profile(args.profile)
    for n in (int(x) for x in args.sizes.split(",")):
        fleet_mod.MAX_SHARD = max(n, fleet_mod.MAX_SHARD)
        fl = fleet_mod.Fleet(
            members=[(i, prof) for i in range(n)], fleet="b", transport_factory=lambda cid: None, clock=RealClock()
        )
        (sh,) = fl.shards.values()
        for row in range(n):
            sh.set_workload(row, list(Workload)[row % 4])
        for _ in range(40):
            sh.tick()
        cases = kernel_cases(k, sh, prof.cooling.inlet_c)
        reps = max(10, 20_000 // n)
        for name, (state, ref, comp) in cases.items():
            a, b = copy.deepcopy(state), copy.deepcopy(state)
            ref(a)
            comp(b)
            diff = largest_difference(a, b)
            t_ref = timed(ref, state, reps)
            t_comp = timed(comp, state, reps)
            print(
                f"  {n:>6,} modules, {name:<16}: numpy {t_ref * 1e6:8.1f} us, compiled {t_comp * 1e6:8.1f} us "
                f"({t_ref / t_comp:4.1f}x), largest difference {diff:.3g}"
            )


if __name__ == "__main__":
    main()
