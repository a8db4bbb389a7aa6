#!/usr/bin/env python3
"""Plots of the firmware's reactions for docs/firmware.md, in virtual time.

    python tools/plot_firmware.py [--out docs/img] [--profiles NAME ...]

For each profile: a load step (idle to full load), a pump failure (the lead pump stops under
load) and a power-cap change (the cap halfway down its range, then back).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mcm_firmware.plant.workload import Workload
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import ClockReason
from mcm_firmware.runtime.shard import Shard

PROFILES = ["colossus-mcm", "h100-sxm-class", "mi300x-class"]
FULL = 1.15  # demand scale of a full load


def record(sh: Shard, seconds: float, trace: dict, actions: dict[float, callable]) -> None:
    done = set()
    for _ in range(round(seconds * sh.tick_hz)):
        t_rel = sh.t - trace["t0"]
        for at, act in actions.items():
            if at not in done and t_rel >= at:
                act(sh)
                done.add(at)
        sh.tick()
        sh.take_events()
        trace["t"].append(sh.t - trace["t0"])
        trace["die"].append(sh.plant.t_die[0].max())
        trace["sensor"].append(np.nanmax(sh.s_die.value[0]))
        trace["hbm"].append(sh.plant.t_hbm[0].max() if sh.params.hbm else np.nan)
        trace["outlet"].append(sh.plant.t_outlet[0])
        trace["mhz"].append(sh.dvfs.mhz[0].mean())
        trace["reasons"].append(int(np.bitwise_or.reduce(sh.dvfs.reasons[0])))
        trace["power"].append(sh.plant.p_total[0])
        trace["cap"].append(sh.dvfs.cap_w[0])
        trace["avg_long"].append(sh.dvfs.avg_long[0])
        trace["valves"].append(sh.plant.valve_pos[0].copy())
        trace["flow"].append(sh.plant.flow_total[0])
        trace["rpm"].append(sh.plant.pump_rpm[0].copy())


def run(profile: str, scenario: str) -> tuple[dict, Shard]:
    prof = load_profile(profile)
    sh = Shard(prof, 1, seed=1)
    trace: dict = {
        k: []
        for k in (
            "t",
            "die",
            "sensor",
            "hbm",
            "outlet",
            "mhz",
            "reasons",
            "power",
            "cap",
            "avg_long",
            "valves",
            "flow",
            "rpm",
        )
    }
    if scenario == "load-step":
        sh.workload.set(0, Workload.IDLE)
        for _ in range(int(30 * sh.tick_hz)):
            sh.tick()
        trace["t0"] = sh.t

        def load(s: Shard) -> None:
            s.workload.set(0, Workload.STEADY, FULL)

        record(sh, 60, trace, {10.0: load})
    elif scenario == "pump-failure":
        sh.workload.scale[0] = 1.0
        for _ in range(int(60 * sh.tick_hz)):
            sh.tick()
        trace["t0"] = sh.t
        record(sh, 60, trace, {10.0: lambda s: s.inputs.pump_failed.__setitem__((0, 0), True)})
    elif scenario == "power-cap":
        sh.workload.scale[0] = FULL
        for _ in range(int(60 * sh.tick_hz)):
            sh.tick()
        trace["t0"] = sh.t
        mid = (prof.power.min_cap_w + prof.power.max_cap_w) / 2
        record(
            sh,
            60,
            trace,
            {
                10.0: lambda s: s.dvfs.cap_w.__setitem__(0, mid),
                35.0: lambda s: s.dvfs.cap_w.__setitem__(0, prof.power.default_cap_w),
            },
        )
    else:
        raise ValueError(scenario)
    return trace, sh


def plot(profile: str, scenario: str, out: Path) -> Path:
    trace, sh = run(profile, scenario)
    prof = sh.profile
    t = np.array(trace["t"])
    fig, ax = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    fig.suptitle(f"{profile}: {scenario.replace('-', ' ')}")
    a = ax[0]
    a.plot(t, trace["die"], label="hottest die (true)")
    a.plot(t, trace["sensor"], label="hottest die (sensor)", lw=0.8, alpha=0.7)
    a.plot(t, trace["hbm"], label="hottest HBM stack")
    a.plot(t, trace["outlet"], label="coolant outlet")
    for y, name, style in ((prof.thermal.target_c, "target", ":"), (prof.thermal.slowdown_c, "slowdown", "--")):
        a.axhline(y, color="grey", ls=style, lw=0.8)
        a.text(t[-1], y, f" {name}", va="center", fontsize=8)
    a.set_ylabel("°C")
    a.legend(loc="lower right", fontsize=8)
    a = ax[1]
    a.plot(t, trace["mhz"], color="tab:purple", label="mean die clock")
    a.set_ylabel("MHz")
    reasons = np.array(trace["reasons"])
    for k, r in enumerate(
        (ClockReason.SW_POWER_CAP, ClockReason.SW_THERMAL_SLOWDOWN, ClockReason.HW_SLOWDOWN, ClockReason.GPU_IDLE)
    ):
        on = (reasons & r) != 0
        if on.any():
            y = np.where(on, prof.min_mhz * 0.9 - k * 60, np.nan)
            a.plot(t, y, lw=4, label=r.name)
    a.legend(loc="lower right", fontsize=8)
    a = ax[2]
    power = np.array(trace["power"])
    n = round(sh.tick_hz)
    mean_1s = np.convolve(power, np.ones(n) / n)[: len(power)]  # trailing 1 s mean, as NVML reads
    mean_1s[: n - 1] = np.nan
    a.plot(t, power, label="module power", lw=0.8)
    a.plot(t, mean_1s, label="1 s mean")
    a.plot(t, trace["avg_long"], label="long-window average", lw=0.8)
    a.plot(t, trace["cap"], "k--", label="power cap")
    a.set_ylabel("W")
    a.legend(loc="lower right", fontsize=8)
    a = ax[3]
    valves = np.array(trace["valves"])
    for v in range(valves.shape[1]):
        a.plot(t, valves[:, v], label=f"valve {v}")
    a.set_ylabel("valve %")
    b = a.twinx()
    rpm = np.array(trace["rpm"])
    for p, spec in enumerate(prof.cooling.pumps):
        b.plot(t, rpm[:, p], ls="--", label=f"pump {spec.name} rpm")
    b.set_ylabel("rpm")
    lines = a.get_legend_handles_labels()
    lines2 = b.get_legend_handles_labels()
    a.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=8)
    a.set_xlabel("s")
    fig.tight_layout()
    path = out / f"{profile}-{scenario}.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "img")
    ap.add_argument("--profiles", nargs="+", default=PROFILES)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for profile in args.profiles:
        for scenario in ("load-step", "pump-failure", "power-cap"):
            print(plot(profile, scenario, args.out))


if __name__ == "__main__":
    main()
