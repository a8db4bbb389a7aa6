"""Fidelity against public figures (issue 14), in deterministic virtual time on a shard: idle power
and clocks, the coolant's heat balance and flow, the power cap as a ceiling on the 1 s scale."""

from __future__ import annotations

import numpy as np
import pytest

from mcm_firmware.plant.workload import Workload
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.shard import Shard

from ..conftest import ROOT

SHIPPED = sorted(p.stem for p in (ROOT / "hw_profiles").glob("*.toml"))

# Idle module power (W) and idle clock (MHz) each profile documents, with where the figure comes
# from (the profile's `sources` and docs/firmware.md say the same).
IDLE = {
    # public nvidia-smi captures of idle H100 SXM5 and issue 14's range; 345 MHz idle graphics clock
    "h100-sxm-class": ((75.0, 101.0), (345, 345)),
    # public rocm-smi captures of idle MI300X: 131-191 W socket power, SCLK 131-141 MHz
    "mi300x-class": ((131.0, 191.0), (131, 141)),
    # design target: the H100 range as a share of the limit (10.7-14.4 %) of a 1300 W module
    "colossus-mcm": ((139.0, 188.0), (350, 350)),
    "colossus-mcm-batched": ((139.0, 188.0), (350, 350)),
}


def run(sh: Shard, seconds: float) -> np.ndarray:
    """Step ``seconds`` of virtual time; the module power of every tick ``[ticks, N]``."""
    out = []
    for _ in range(round(seconds * sh.tick_hz)):
        sh.tick()
        out.append(sh.plant.p_total.copy())
    return np.array(out)


def test_every_shipped_profile_documents_its_idle_power():
    assert sorted(IDLE) == SHIPPED


@pytest.mark.parametrize("profile", SHIPPED)
def test_idle_power_and_clock_lie_within_the_public_range(profile):
    """Sixteen modules (each with its own process spread) idle for a minute: the 1 s mean power of
    every one, as NVML's power reading is, and its clock lie within the documented range."""
    (lo_w, hi_w), (lo_mhz, hi_mhz) = IDLE[profile]
    sh = Shard(load_profile(profile), 16, seed=7)
    sh.workload.set(slice(None), Workload.IDLE)
    power = run(sh, 60.0)
    mean_1s = power[-round(sh.tick_hz) :].mean(axis=0)
    assert lo_w <= mean_1s.min() and mean_1s.max() <= hi_w, (
        f"idle power {mean_1s.min():.1f}..{mean_1s.max():.1f} W outside {lo_w:g}..{hi_w:g} W"
    )
    assert lo_mhz <= sh.dvfs.mhz.min() and sh.dvfs.mhz.max() <= hi_mhz


# --- coolant heat balance -----------------------------------------------------------------------

# OCP OAI liquid-cooling guideline: 1.25-2.0 L/min per kW of cold-plate load, 1.5 typical (a coolant
# rise of ~10 °C), as cited in docs/firmware.md
FLOW_PER_KW = (1.25, 2.0)
HEAT_BALANCE = 0.02


@pytest.mark.parametrize("profile", SHIPPED)
def test_at_steady_load_the_coolant_carries_the_heat_and_flows_within_the_guidance(profile):
    """Four modules at full steady load for 150 s; over the last 30 s, the heat the coolant carries
    (flow x c_p x outlet rise) accounts for the module's power within 2 %: while coolant flows
    there is no other path. The loop runs inside the 1.25-2.0 L/min per kW guidance."""
    prof = load_profile(profile)
    sh = Shard(prof, 4, seed=3)
    sh.workload.set(slice(None), Workload.STEADY, 1.15)
    run(sh, 120.0)
    power, carried, flow = [], [], []
    cp = prof.cooling.coolant_heat_capacity_j_per_l_k
    for _ in range(round(30.0 * sh.tick_hz)):
        sh.tick()
        pl = sh.plant
        power.append(pl.p_total.copy())
        carried.append(pl.flow_total / 60.0 * cp * (pl.t_outlet - pl.t_inlet))
        flow.append(pl.flow_total.copy())
    p, q = np.mean(power, axis=0), np.mean(flow, axis=0)
    error = np.abs(p - np.mean(carried, axis=0)) / p
    assert error.max() < HEAT_BALANCE, f"heat balance off by {100 * error.max():.1f} %"
    per_kw = q / (p / 1000.0)
    lo, hi = FLOW_PER_KW
    assert (lo <= per_kw).all() and (per_kw <= hi).all(), f"{per_kw.round(2)} L/min per kW"
    assert p.min() > 0.9 * prof.power.default_cap_w  # at full load, not a light one


def test_without_flow_the_outlet_reads_the_inlet_and_heat_leaves_by_natural_convection():
    sh = Shard(load_profile("colossus-mcm"), 1, seed=3)
    sh.workload.set(slice(None), Workload.IDLE)
    run(sh, 20.0)
    sh.inputs.pump_failed[0, :] = True
    run(sh, 10.0)
    assert sh.plant.flow_total[0] < 1e-3
    assert sh.plant.t_outlet[0] == sh.plant.t_inlet[0]


# --- the power cap as a ceiling on the 1 s scale ---------------------------------------------------

# NVML's power reading is a 1 s average, and real boards hold it within a few watts of the limit
# (public nvidia-smi capture of eight H100 SXM5 at full load: 697-699 W on a 700 W limit): a 1 s
# mean may exceed the cap by at most 1 %.
CAP_TOLERANCE = 0.01
FULL = 1.15  # demand scale of a full load: more than any cap allows


def cap_cases(profile: str) -> list[tuple[str, float]]:
    """Load steps and cap steps, up and down, at caps across the profile's range."""
    pw = load_profile(profile).power
    cases = []
    for cap in (pw.min_cap_w, (pw.min_cap_w + pw.max_cap_w) / 2, pw.default_cap_w):
        cases += [("idle to load", cap), ("load, lull, load", cap), ("load to idle", cap)]
        if cap < pw.default_cap_w:
            cases.append(("cap down", cap))
        if cap > pw.min_cap_w:
            cases.append(("cap up", cap))
    return cases


def cap_case(profile: str, kind: str, cap: float) -> dict:
    """Four fully loaded (or idle) modules through one step; the 1 s means of module power from
    the step on (for a cap change, the windows that start at or after it), against the cap."""
    prof = load_profile(profile)
    sh = Shard(prof, 4, seed=5)
    n = round(sh.tick_hz)
    power: list[np.ndarray] = []

    def go(seconds: float) -> None:
        for _ in range(round(seconds * sh.tick_hz)):
            sh.tick()
            power.append(sh.plant.p_total.copy())

    load = slice(None)
    if kind == "cap down":
        sh.workload.set(load, Workload.STEADY, FULL)
        go(40.0)
        sh.dvfs.cap_w[:] = cap
        start = len(power)
    elif kind == "cap up":
        sh.dvfs.cap_w[:] = prof.power.min_cap_w
        sh.workload.set(load, Workload.STEADY, FULL)
        go(40.0)
        sh.dvfs.cap_w[:] = cap
        start = len(power)
    else:
        sh.dvfs.cap_w[:] = cap
        first = Workload.IDLE if kind == "idle to load" else Workload.STEADY
        sh.workload.set(load, first, FULL)
        go(30.0)
        start = len(power) - n + 1  # every window that holds a sample after the step
        if kind == "idle to load":
            sh.workload.set(load, Workload.STEADY, FULL)
        elif kind == "load to idle":
            sh.workload.set(load, Workload.IDLE)
        else:
            sh.workload.set(load, Workload.IDLE)
            go(3.0)
            sh.workload.set(load, Workload.STEADY, FULL)
    go(30.0)
    p = np.array(power)[start:]
    c = np.concatenate([np.zeros((1, p.shape[1])), np.cumsum(p, axis=0)])
    means = (c[n:] - c[:-n]) / n  # [windows, modules]
    over_tol = means > cap * (1 + CAP_TOLERANCE)
    return {
        "max_over": float(means.max() / cap - 1.0),
        "tick_over": float(p.max() / cap - 1.0),
        "s_over": float((means > cap).sum(axis=0).max() / sh.tick_hz),
        "s_over_tol": float(over_tol.sum(axis=0).max() / sh.tick_hz),
    }


@pytest.mark.parametrize("profile", SHIPPED)
def test_every_1s_mean_holds_the_cap_after_load_and_cap_steps(profile):
    """No 1 s mean of module power exceeds the cap by more than the tolerance, after load steps and
    cap steps up and down, at caps across the range, the minimum cap included: a fully loaded
    h100-sxm-class module capped at 200 W ran 9 % over it for 1.7 s while its memory ran at full
    bandwidth at the lowest clock (memory traffic now follows the work the dice get done)."""
    table = {case: cap_case(profile, *case) for case in cap_cases(profile)}
    bad = {case: r for case, r in table.items() if r["s_over_tol"] > 0}
    assert not bad, "\n".join(
        f"{kind} {cap:g} W: 1 s mean up to {100 * r['max_over']:+.2f} %, {r['s_over_tol']:.2f} s over +1 %"
        for (kind, cap), r in bad.items()
    )


@pytest.mark.parametrize("profile", SHIPPED)
def test_a_binding_cap_sets_clocks_on_the_15_mhz_grid_and_no_tick_runs_far_over(profile):
    """At full load under a cap halfway down the range, once settled: the clocks lie on the 15 MHz
    grid below f_max, between the P-states, and no single tick exceeds the cap by more than 3 %
    (150 MHz P-state steps dithered ticks ~13 % over it)."""
    from mcm_firmware.control.dvfs import CLOCK_STEP_MHZ

    prof = load_profile(profile)
    sh = Shard(prof, 4, seed=5)
    sh.workload.set(slice(None), Workload.STEADY, FULL)
    cap = (prof.power.min_cap_w + prof.power.max_cap_w) / 2
    sh.dvfs.cap_w[:] = cap
    run(sh, 20.0)
    clocks, power = [], []
    for _ in range(round(20.0 * sh.tick_hz)):
        sh.tick()
        clocks.append(sh.dvfs.mhz.copy())
        power.append(sh.plant.p_total.copy())
    mhz = np.array(clocks)
    steps = (prof.max_mhz - mhz) / CLOCK_STEP_MHZ
    assert np.allclose(steps, np.round(steps)) and (mhz < prof.max_mhz).all()
    assert set(np.unique(mhz)) - {s.mhz for s in prof.die.pstates}, "clocks between the P-states"
    assert max(np.array(power).max() / cap - 1.0, 0.0) <= 0.03
