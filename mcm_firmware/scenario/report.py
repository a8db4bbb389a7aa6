"""Scenario reports: ``summary.json``, PNG plots of the key traces, and an ``index.html``.

Plots: a fleet overview (hottest die, module power, faults marked), then, around each fault (the
first ``MAX_FAULT_PLOTS`` of them), the affected node's die and HBM temperatures, clocks, power
and cap, valves, pump speeds and RAS counters.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .runner import RunResult

MAX_FAULT_PLOTS = 12
WINDOW_BEFORE_S = 30.0
WINDOW_AFTER_S = 90.0


def _figures(r: RunResult) -> dict[str, Any]:
    out: dict[str, Any] = {"nodes": {}}
    for n in sorted(r.profiles):
        t, temp = r.trace.signal(n, "die_temp")
        _, power = r.trace.signal(n, "power")
        _, ce = r.trace.signal(n, "ce")
        _, ue = r.trace.signal(n, "ue")
        nt = r.trace.node(n)
        out["nodes"][str(n)] = {
            "profile": r.profiles[n].name,
            "telemetry_frames": len(t),
            "max_die_temp_c": None if not len(temp) or np.isnan(temp).all() else round(float(np.nanmax(temp)), 2),
            "mean_power_w": None if not len(power) else round(float(power.mean()), 1),
            "ce": int(ce[-1]) if len(ce) else 0,
            "ue": int(ue[-1]) if len(ue) else 0,
            "events": len(nt.events),
            "boots": sum(1 for s in nt.states if s[1] == "BIRTH"),
        }
    return out


def summary(r: RunResult) -> dict[str, Any]:
    return {
        "scenario": r.scenario.name,
        "file": r.path,
        "description": r.scenario.description,
        "seed": r.seed,
        "digest": f"sha256:{r.digest}",
        "frames": r.frames,
        "rejected_frames": r.trace.rejected,
        "simulated_s": r.sim_s,
        "wall_s": round(r.wall_s, 3),
        "speedup": None if math.isinf(r.speedup) else round(r.speedup, 1),
        "passed": r.passed,
        "expectations": [
            {"name": o.name, "passed": o.passed, "detail": o.detail, "nodes": o.nodes} for o in r.outcomes
        ],
        "actions": [{"t": round(t, 3), "node": n, "what": what} for t, n, what in r.log],
        "figures": _figures(r),
    }


def _gaps(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Break the line where telemetry stopped (a controller down, a lossy link): a NaN sample in
    every gap longer than five typical periods."""
    if len(t) < 3:
        return t, v
    dt = np.diff(t)
    gap = np.flatnonzero(dt > 5 * np.median(dt))
    if not len(gap):
        return t, v
    return (np.insert(t, gap + 1, t[gap] + dt[gap] / 2), np.insert(np.asarray(v, float), gap + 1, np.nan))


def _plot_overview(r: RunResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for n in sorted(r.profiles):
        t, temp = r.trace.signal(n, "die_temp")
        _, power = r.trace.signal(n, "power")
        ax[0].plot(*_gaps(t, temp), lw=0.6)
        ax[1].plot(*_gaps(t, power), lw=0.6)
    for when, _, _what in r.log[:200]:
        for a in ax:
            a.axvline(when, color="red", lw=0.4, alpha=0.4)
    ax[0].set_ylabel("hottest die °C")
    ax[1].set_ylabel("module power W")
    ax[1].set_xlabel("s")
    fig.suptitle(f"{r.scenario.name}: {len(r.profiles)} nodes (faults and commands in red)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _plot_fault(r: RunResult, node: int, t0: float, what: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prof = r.profiles[node]
    lo, hi = t0 - WINDOW_BEFORE_S, t0 + WINDOW_AFTER_S

    def sig(name: str) -> tuple[np.ndarray, np.ndarray]:
        t, v = r.trace.signal(node, name)
        keep = (t >= lo) & (t <= hi)
        return _gaps(t[keep], v[keep])

    fig, ax = plt.subplots(5, 1, figsize=(9, 11), sharex=True)
    fig.suptitle(f"node {node} ({prof.name}): {what} at t={t0:.1f} s")
    t, v = sig("die_temp")
    ax[0].plot(t, v, label="hottest die")
    t, v = sig("hbm_temp")
    ax[0].plot(t, v, label="hottest HBM")
    ax[0].axhline(prof.thermal.slowdown_c, color="grey", ls="--", lw=0.8)
    ax[0].set_ylabel("°C")
    ax[0].legend(fontsize=8)
    t, v = sig("clock")
    ax[1].plot(t, v, color="tab:purple")
    ax[1].set_ylabel("mean clock MHz")
    t, v = sig("power")
    ax[2].plot(t, v, label="power")
    t, v = sig("cap")
    ax[2].plot(t, v, "k--", label="cap")
    ax[2].set_ylabel("W")
    ax[2].legend(fontsize=8)
    for k in range(prof.cooling.valves):
        t, v = sig(f"valve:{k}")
        ax[3].plot(t, v, label=f"valve {k}")
    ax3b = ax[3].twinx()
    for pump in prof.cooling.pumps:
        t, v = sig(f"pump_rpm:{pump.name}")
        ax3b.plot(t, v, ls="--", label=f"pump {pump.name}")
    ax[3].set_ylabel("valve %")
    ax3b.set_ylabel("rpm")
    ax[3].legend(fontsize=8, loc="upper left")
    ax3b.legend(fontsize=8, loc="upper right")
    t, v = sig("ce")
    ax[4].step(t, v, where="post", label="CE")
    t, v = sig("ue")
    ax[4].step(t, v, where="post", label="UE")
    ax[4].set_ylabel("HBM errors")
    ax[4].legend(fontsize=8)
    ax[4].set_xlabel("s")
    for a in ax:
        a.axvline(t0, color="red", lw=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def write_report(r: RunResult, directory: str | Path) -> Path:
    """Write the report into ``directory`` (made if missing): ``summary.json`` (expectations,
    actions, per-node figures, the plots' names), ``overview.png``, one ``fault-NN-nodeN.png``
    around each fault or command (at most ``MAX_FAULT_PLOTS``) and ``index.html``. Returns the
    path of index.html."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    images = ["overview.png"]
    _plot_overview(r, out / "overview.png")
    faults = [(t, n, what) for t, n, what in r.log if not what.startswith("clear")]
    for i, (t, n, what) in enumerate(faults[:MAX_FAULT_PLOTS]):
        name = f"fault-{i:02d}-node{n}.png"
        _plot_fault(r, n, t, what, out / name)
        images.append(name)
    data = summary(r)
    data["plots"] = images
    (out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    rows = "\n".join(
        f"<tr class='{'pass' if e['passed'] else 'fail'}'><td>{'PASS' if e['passed'] else 'FAIL'}</td>"
        f"<td>{html.escape(e['name'])}</td><td>{html.escape(e['detail'])}</td></tr>"
        for e in data["expectations"]
    )
    pics = "\n".join(
        f"<figure><img src='{html.escape(name)}' alt='{html.escape(name)}'>"
        f"<figcaption>{html.escape(name)}</figcaption></figure>"
        for name in images
    )
    more = (
        f"<p>{len(faults) - MAX_FAULT_PLOTS} further faults are listed in summary.json.</p>"
        if len(faults) > MAX_FAULT_PLOTS
        else ""
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(r.scenario.name)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} td{{padding:2px 8px;vertical-align:top}}
tr.pass td:first-child{{color:green;font-weight:bold}} tr.fail td:first-child{{color:#b00;font-weight:bold}}
img{{max-width:100%}} figure{{margin:1em 0}} code{{background:#eee}}</style></head>
<body><h1>{html.escape(r.scenario.name)}: {"passed" if r.passed else "FAILED"}</h1>
<p>{html.escape(r.scenario.description)}</p>
<p>seed {r.seed}, {r.sim_s:g} simulated seconds in {r.wall_s:.1f} s of wall time, {r.frames} frames,
digest <code>sha256:{r.digest}</code></p>
<h2>Expectations</h2><table>{rows}</table>
<h2>Traces</h2>{more}{pics}
<p><a href="summary.json">summary.json</a></p></body></html>
"""
    index = out / "index.html"
    index.write_text(page)
    return index
