#!/usr/bin/env python3
"""The fidelity tables of docs/firmware.md, measured in virtual time on shards of each profile.

    python tools/fidelity_tables.py [--profiles NAME ...] [idle] [heat] [cap]

idle: 16 modules idle for 60 s, the 1 s mean power of each (min..max) and the idle clock.
heat: 4 modules at steady full load for 150 s: over the last 30 s, the coolant's heat balance
      (power against flow x c_p x outlet rise) and flow per kW.
cap:  load steps and cap steps, up and down, at caps across the range, 4 modules each: the 1 s
      means of module power from the step on, against the cap (the longest a module spent over).
The tests in tests/control/test_fidelity.py hold the same figures to their limits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mcm_firmware.plant.workload import Workload
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.shard import Shard

PROFILES = ["colossus-mcm", "h100-sxm-class", "mi300x-class"]
PUBLIC_IDLE = {
    "colossus-mcm": "139-188 W (H100 range scaled to 1300 W)",
    "h100-sxm-class": "75-101 W (nvidia-smi captures 68-75 W without a context)",
    "mi300x-class": "131-191 W, SCLK 131-141 MHz (rocm-smi captures)",
}


def run(sh: Shard, seconds: float) -> np.ndarray:
    out = []
    for _ in range(round(seconds * sh.tick_hz)):
        sh.tick()
        out.append(sh.plant.p_total.copy())
    return np.array(out)


def idle(profiles: list[str]) -> None:
    print("| profile | public idle | emulated idle, 1 s mean (16 modules) | idle clock |")
    print("|---------|-------------|--------------------------------------|------------|")
    for name in profiles:
        sh = Shard(load_profile(name), 16, seed=7)
        sh.workload.set(slice(None), Workload.IDLE)
        power = run(sh, 60.0)
        m = power[-round(sh.tick_hz) :].mean(axis=0)
        print(
            f"| `{name}` | {PUBLIC_IDLE.get(name, '')} | {m.min():.1f}..{m.max():.1f} W (mean {m.mean():.1f}) "
            f"| {sh.dvfs.mhz.min():.0f} MHz |"
        )


def heat(profiles: list[str]) -> None:
    print("| profile | power | flow | flow per kW | outlet (inlet 30 °C) | heat balance error | hottest die |")
    print("|---------|-------|------|-------------|----------------------|--------------------|-------------|")
    for name in profiles:
        prof = load_profile(name)
        sh = Shard(prof, 4, seed=3)
        sh.workload.set(slice(None), Workload.STEADY, 1.15)
        run(sh, 120.0)
        rows: dict[str, list] = {"p": [], "carried": [], "q": [], "out": [], "die": []}
        cp = prof.cooling.coolant_heat_capacity_j_per_l_k
        for _ in range(round(30.0 * sh.tick_hz)):
            sh.tick()
            pl = sh.plant
            rows["p"].append(pl.p_total.copy())
            rows["carried"].append(pl.flow_total / 60.0 * cp * (pl.t_outlet - pl.t_inlet))
            rows["q"].append(pl.flow_total.copy())
            rows["out"].append(pl.t_outlet.copy())
            rows["die"].append(pl.t_die.max(axis=1))
        m = {k: np.mean(v, axis=0) for k, v in rows.items()}
        err = np.abs(m["p"] - m["carried"]) / m["p"] * 100
        per_kw = m["q"] / m["p"] * 1000
        print(
            f"| `{name}` | {m['p'].mean():.0f} W | {m['q'].mean():.2f} L/min | {per_kw.min():.2f}..{per_kw.max():.2f} "
            f"| {m['out'].mean():.1f} °C | ≤ {err.max():.2f} % | {m['die'].mean():.1f} °C |"
        )


def cap(profiles: list[str]) -> None:
    # the very procedure tests/control/test_fidelity.py holds to its limits
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.control.test_fidelity import cap_case, cap_cases

    print("| profile | step | cap | max 1 s mean over the cap | time over the cap | time over cap + 1 % | max tick |")
    print("|---------|------|-----|---------------------------|-------------------|---------------------|----------|")
    for name in profiles:
        for kind, limit in cap_cases(name):
            r = cap_case(name, kind, limit)
            print(
                f"| `{name}` | {kind} | {limit:.0f} W | {100 * r['max_over']:+.2f} % ({r['max_over'] * limit:+.1f} W) "
                f"| {r['s_over']:.2f} s | {r['s_over_tol']:.2f} s | {100 * r['tick_over']:+.1f} % |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tables", nargs="*", default=["idle"], choices=["idle", "heat", "cap"])
    ap.add_argument("--profiles", nargs="+", default=PROFILES)
    args = ap.parse_args()
    for table in args.tables:
        {"idle": idle, "heat": heat, "cap": cap}[table](args.profiles)
        print()


if __name__ == "__main__":
    main()
