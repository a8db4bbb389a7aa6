"""Scenario reports: ``summary.json``, PNG plots of the key traces, and an ``index.html``.

Every fault of the run is an *episode* on its node (:func:`episodes`): injected at ``t``, cleared
at ``cleared_t`` (the scenario's clear, when it has one), and followed by the node's reactions
seen in the trace (its events, its deaths and births) up to its next fault or command; the last
of them is ``reaction_t`` (the recovery, when the fault ends in one). The overview shades each
fault from injection to clear (or to the end of the run) and draws it on a timeline; the plot of
each fault (the first ``MAX_FAULT_PLOTS``) covers its episode with margins, so a recovery long
after the clear is in view. Panels with no data in a window are left out and named under the
figure. matplotlib is imported here only (an import-linter contract); the page is written by
:mod:`.report_html`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..faults import SPECS, FaultError, fault_kind
from ..protocol import EventCode
from .report_html import index_page
from .runner import RunResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_FAULT_PLOTS = 12
WINDOW_BEFORE_S = 30.0  # at least this much before the injection
WINDOW_AFTER_S = 90.0  # at least this much after it
MARGIN_FRACTION = 0.1  # and a tenth of the episode (at least MARGIN_S) past its end
MARGIN_S = 15.0
MAX_SHADED = 12  # more faults than this are drawn on the overview's timeline only
FAULT_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#999999")


@dataclass
class Episode:
    """One fault or command of the run and what the trace shows of it on its node."""

    index: int
    node: int
    kind: str  # "fault" or "command"
    what: str  # the fault as injected ("pump-fail A") or the command
    t: float
    cleared_t: float | None  # when the scenario cleared it
    end_t: float  # where its span ends: the clear, the end of the run, or a one-shot's reaction
    reaction_t: float | None  # the node's last event, death or birth in the episode
    reaction: str  # what that was
    window: tuple[float, float]  # the time range of its plot
    plot: str | None = None

    @property
    def label(self) -> str:
        return f"F{self.index + 1}"

    def describe(self) -> str:
        if self.kind == "command":
            return f"{self.label} node {self.node}: {self.what} at {self.t:g} s"
        end = f"cleared {self.cleared_t:g} s" if self.cleared_t is not None else f"to {self.end_t:g} s"
        return f"{self.label} node {self.node}: {self.what}, {self.t:g} s, {end}"


def _reactions(r: RunResult, node: int, lo: float, hi: float) -> list[tuple[float, str]]:
    """The node's events, deaths and births in [lo, hi) (the clean stop at the end left out)."""
    nt = r.trace.nodes.get(node)
    if nt is None:
        return []
    out = []
    for e in nt.events:
        if lo <= e.t < hi:
            try:
                code = EventCode(e.code).name
            except ValueError:
                code = str(e.code)
            out.append((e.t, f"{code}: {e.text}" if e.text else code))
    for t, what, reason in nt.states:
        if lo <= t < hi and not (what == "DEATH" and reason == 0 and t >= r.sim_s - 1e-6):
            out.append((t, "controller back (BIRTH)" if what == "BIRTH" else f"controller down (DEATH {reason})"))
    return sorted(out, key=lambda x: x[0])


def episodes(r: RunResult) -> list[Episode]:
    """Every fault and command of the run's log, in order, with its clear, its last reaction in
    the trace and the window of its plot."""
    end_run = r.sim_s
    actions = [(t, n, what) for t, n, what in r.log if not what.startswith("clear ")]
    clears = [(t, n, what[len("clear ") :].split(", ")) for t, n, what in r.log if what.startswith("clear ")]
    used: set[int] = set()
    out: list[Episode] = []
    for i, (t0, node, what) in enumerate(actions):
        kind = "fault" if what.startswith("inject ") else "command"
        text = what[len("inject ") :] if kind == "fault" else what
        cleared = None
        if kind == "fault":
            for j, (tc, nc, items) in enumerate(clears):
                if j not in used and nc == node and tc >= t0 and text in items:
                    used.add(j)
                    cleared = tc
                    break
        settled = max(t0, cleared or t0)
        nxt = min((t for t, n, _ in actions if n == node and t > settled), default=math.inf)
        seen = _reactions(r, node, t0, min(nxt, end_run + 1e-9))
        reaction_t, reaction = seen[-1] if seen else (None, "")
        try:
            clearable = kind == "fault" and SPECS[fault_kind(text.split()[0])].clearable
        except (FaultError, IndexError):
            clearable = False
        if cleared is not None:
            end_t = cleared
        elif clearable or (kind == "fault" and reaction_t is None):
            end_t = end_run  # in force to the end (or a crash that never came back)
        else:
            end_t = reaction_t if reaction_t is not None else t0
        last = max(t0, cleared or t0, reaction_t or t0)
        margin = max(MARGIN_S, MARGIN_FRACTION * (last - t0))
        lo = max(0.0, min(t0 - WINDOW_BEFORE_S, t0 - margin))
        hi = min(end_run, max(last + margin, t0 + WINDOW_AFTER_S))
        out.append(Episode(i, node, kind, text, t0, cleared, end_t, reaction_t, reaction, (lo, hi)))
    return out


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
        "faults": [_episode_json(e) for e in episodes(r)],
        "figures": _figures(r),
    }


def _episode_json(e: Episode) -> dict[str, Any]:
    d = asdict(e)
    d["label"] = e.label
    d["window"] = [round(e.window[0], 3), round(e.window[1], 3)]
    for k in ("t", "cleared_t", "end_t", "reaction_t"):
        if d[k] is not None:
            d[k] = round(d[k], 3)
    return d


# --- plots ----------------------------------------------------------------------------------------


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


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    return Figure(figsize=(width, height), layout="constrained")


def _legend_outside(ax: Axes, **kw: Any) -> None:
    """The legend right of the axes, never over the data."""
    from matplotlib.patches import Rectangle

    if ax.get_legend_handles_labels()[0]:
        leg = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, borderaxespad=0, **kw)
        for h in leg.legend_handles:  # a faint span still gets a swatch that can be told apart
            if isinstance(h, Rectangle) and h.get_alpha() is not None:
                h.set_alpha(0.4)


def _colour(e: Episode) -> str:
    return FAULT_COLOURS[e.index % len(FAULT_COLOURS)]


def overview_figure(r: RunResult, eps: list[Episode] | None = None) -> Figure:
    """Hottest die, module power and (when they move) HBM errors of every node, each fault shaded
    from injection to clear (up to ``MAX_SHADED`` of them), and every fault and command on a
    timeline with the last reaction the trace shows of it."""
    eps = episodes(r) if eps is None else eps
    nodes = sorted(r.profiles)
    hit = sorted({e.node for e in eps})
    series = {sig: {n: r.trace.signal(n, sig) for n in nodes} for sig in ("die_temp", "power", "ce", "ue")}
    errors = {n: (series["ce"][n][0], series["ce"][n][1] + series["ue"][n][1]) for n in nodes}
    panels = [("hottest die °C", series["die_temp"]), ("module power W", series["power"])]
    if any(len(v) and v.max() > v.min() for _, v in errors.values()):
        panels.append(("HBM errors (CE + UE)", errors))
    per_fault = len(eps) <= 2 * MAX_SHADED  # a timeline row per fault, else per node
    rows: list[str] = [f"{e.label} node {e.node}" for e in eps] if per_fault else [f"node {n}" for n in hit]
    rows = rows or ["(none)"]
    fig = _figure(11, 2.6 * len(panels) + 2 + 0.2 * len(rows))
    ax = fig.subplots(len(panels) + 1, 1, sharex=True, height_ratios=[3] * len(panels) + [0.6 + 0.25 * len(rows)])
    data, timeline = list(ax[:-1]), ax[-1]
    named = nodes if len(nodes) <= 10 else hit[:10]
    several_profiles = len({p.name for p in r.profiles.values()}) > 1
    for k, (a, (ylabel, by_node)) in enumerate(zip(data, panels, strict=True)):
        a.set_gid(f"panel-{ylabel}")
        a.set_ylabel(ylabel)
        others = 0
        for n in nodes:
            if n in named:
                style: dict[str, Any] = {"lw": 1.0 if n in hit else 0.7, "color": f"C{named.index(n) % 10}"}
                label = f"node {n}" + (f" ({r.profiles[n].name})" if several_profiles else "")
            else:
                style = {"lw": 0.4, "color": "0.6", "alpha": 0.6}
                label = f"{len(nodes) - len(named)} other nodes" if not others else "_"
                others += 1
            t, v = by_node[n]
            if ylabel.startswith("HBM"):
                a.step(t, v, where="post", label=label if k == 0 else "_", **style)
            else:
                a.plot(*_gaps(t, v), label=label if k == 0 else "_", **style)
    shade = [e for e in eps if e.kind == "fault"] if len(eps) <= MAX_SHADED else []
    alpha = 0.12 if len(shade) <= 2 else 0.08  # overlapping spans stay see-through
    for e in eps:
        c = _colour(e)
        if e in shade:
            for k, a in enumerate(data):
                span = a.axvspan(e.t, max(e.end_t, e.t + 0.002 * r.sim_s), color=c, alpha=alpha, lw=0)
                span.set_gid(f"span-{e.label}")
                if k == 0:
                    span.set_label(f"{e.label} in force")
                a.axvline(e.t, color=c, lw=0.8)
        elif e.kind == "command" and len(eps) <= MAX_SHADED:
            for k, a in enumerate(data):
                a.axvline(e.t, color=c, lw=1.0, ls="--", label=f"{e.label} {e.what}" if k == 0 else "_")
        y = e.index if per_fault else hit.index(e.node)
        if per_fault:
            when = f"{e.t:g}–{e.cleared_t:g} s" if e.cleared_t is not None else f"from {e.t:g} s"
            timeline.annotate(
                e.what + (f", {when}" if e.kind == "fault" else f" at {e.t:g} s"),
                (e.t, y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                clip_on=True,
            )
        if e.kind == "fault":
            bar = timeline.barh(y, max(e.end_t - e.t, 0.003 * r.sim_s), left=e.t, height=0.7, color=c, alpha=0.35)
            bar.patches[0].set_gid(f"bar-{e.label}")
        else:
            (mark,) = timeline.plot([e.t], [y], "D", color=c, ms=6)
            mark.set_gid(f"bar-{e.label}")
        if per_fault and e.reaction_t is not None and e.reaction_t > e.t:
            start = min(max(e.end_t, e.t), e.reaction_t)  # the dotted part runs past the span only
            (rec,) = timeline.plot(
                [start, e.reaction_t], [y, y], color=c, lw=0.8, ls=":", marker="|", ms=10, markevery=[1]
            )
            rec.set_gid(f"reaction-{e.label}")
    if per_fault and any(e.reaction_t is not None for e in eps):
        timeline.plot([], [], color="0.3", lw=0.8, ls=":", marker="|", ms=9, label="last reaction in the trace")
        _legend_outside(timeline)
    timeline.set_yticks(range(len(rows)), rows, fontsize=8)
    timeline.set_ylim(-0.7, len(rows) - 0.3)
    timeline.invert_yaxis()
    timeline.set_xlim(0, r.sim_s)
    timeline.set_title(f"faults and commands ({len(eps)})" if eps else "no faults or commands", fontsize=9, loc="left")
    timeline.set_xlabel("s")
    _legend_outside(data[0])
    fig.suptitle(f"{r.scenario.name}: {len(nodes)} nodes, {r.sim_s:g} s")
    return fig


@dataclass
class _Line:
    signal: str
    label: str
    style: dict[str, Any]
    step: bool = False


def _panels(r: RunResult, node: int) -> list[tuple[str, str, list[_Line]]]:
    prof = r.profiles[node]
    return [
        (
            "temperatures",
            "°C",
            [
                _Line("die_temp", "hottest die", {}),
                _Line("hbm_temp", "hottest HBM", {}),
                _Line("inlet", "coolant inlet", {"lw": 0.8}),
            ],
        ),
        ("clock", "mean clock MHz", [_Line("clock", "mean clock", {"color": "tab:purple"})]),
        ("power", "W", [_Line("power", "module power", {}), _Line("cap", "cap", {"color": "k", "ls": "--"})]),
        ("valves", "valve %", [_Line(f"valve:{k}", f"valve {k}", {}) for k in range(prof.cooling.valves)]),
        ("pumps", "pump rpm", [_Line(f"pump_rpm:{p.name}", f"pump {p.name}", {}) for p in prof.cooling.pumps]),
        (
            "HBM errors",
            "HBM errors",
            [_Line("ce", "CE (corrected)", {}, True), _Line("ue", "UE (uncorrectable)", {"color": "tab:red"}, True)],
        ),
    ]


def _has_data(name: str, series: list[tuple[np.ndarray, np.ndarray]]) -> tuple[bool, str]:
    """Whether a panel shows something, and what to say under the figure when it does not."""
    finite = [v[np.isfinite(v)] for _, v in series]
    if not any(len(v) for v in finite):
        return False, f"{name}: no data"
    if name == "HBM errors" and all(len(v) == 0 or v.min() == v.max() for v in finite):
        ce, ue = (int(v[-1]) if len(v) else 0 for v in finite)
        return False, f"HBM errors: no change (CE {ce}, UE {ue})"
    return True, ""


def fault_figure(r: RunResult, e: Episode, eps: list[Episode] | None = None) -> Figure:
    """The node's traces over the episode's window: the fault shaded, its clear and its last
    reaction marked; panels without data left out and named under the figure."""
    node = e.node
    prof = r.profiles[node]
    lo, hi = e.window

    def sig(name: str) -> tuple[np.ndarray, np.ndarray]:
        t, v = r.trace.signal(node, name)
        keep = (t >= lo) & (t <= hi)
        return _gaps(t[keep], v[keep])

    shown: list[tuple[str, str, list[_Line], list[tuple[np.ndarray, np.ndarray]]]] = []
    missing: list[str] = []
    for name, ylabel, lines in _panels(r, node):
        series = [sig(ln.signal) for ln in lines]
        ok, why = _has_data(name, series)
        if ok:
            shown.append((name, ylabel, lines, series))
        else:
            missing.append(why)
    fig = _figure(10, 1.9 * len(shown) + 1.4)
    axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
    end = f", cleared at {e.cleared_t:g} s" if e.cleared_t is not None else ""
    fig.suptitle(f"node {node} ({prof.name}): {e.label} {e.what} at {e.t:g} s{end}")
    for ax, (name, ylabel, lines, series) in zip(axes, shown, strict=True):
        ax.set_gid(f"panel-{name}")
        for ln, (t, v) in zip(lines, series, strict=True):
            if not len(t) or not np.isfinite(v).any():
                continue
            if ln.step:
                ax.step(t, v, where="post", label=ln.label, **ln.style)
            else:
                ax.plot(t, v, label=ln.label, **{"lw": 1.0, **ln.style})
        if name == "temperatures":
            ax.axhline(
                prof.thermal.slowdown_c, color="grey", ls="--", lw=0.8, label=f"slowdown {prof.thermal.slowdown_c:g} °C"
            )
        ax.set_ylabel(ylabel)
    for k, ax in enumerate(axes):
        first = k == 0
        span_end = min(e.end_t, hi) if e.kind == "fault" else e.t
        if span_end > e.t:
            span = ax.axvspan(e.t, span_end, color=_colour(e), alpha=0.12, lw=0)
            span.set_gid(f"span-{e.label}")
            if first:
                span.set_label(f"{e.what} in force" + ("" if e.cleared_t is not None else " (not cleared)"))
        ax.axvline(
            e.t,
            color="red",
            lw=1.0,
            label=f"{'injected' if e.kind == 'fault' else 'command'} {e.t:g} s" if first else "_",
        )
        if e.cleared_t is not None:
            ax.axvline(
                e.cleared_t, color="green", lw=1.0, ls="--", label=f"cleared {e.cleared_t:g} s" if first else "_"
            )
        if e.reaction_t is not None and e.reaction_t > e.t:
            ax.axvline(
                e.reaction_t,
                color="tab:purple",
                lw=1.0,
                ls=":",
                label=f"last reaction {e.reaction_t:g} s" if first else "_",
            )
        for o in eps or []:
            if o.node == node and o is not e and lo <= o.t <= hi:
                ax.axvline(
                    o.t, color="0.5", lw=0.8, ls="-.", label=f"{o.label} {o.what} at {o.t:g} s" if first else "_"
                )
        _legend_outside(ax)
        ax.set_xlim(lo, hi)
    axes[-1].set_xlabel("s")
    notes = []
    if e.reaction:
        notes.append(f"last reaction: {e.reaction[:110]}")
    if missing:
        notes.append("not shown: " + "; ".join(missing))
    if notes:
        fig.supxlabel("\n".join(notes), fontsize=8, x=0.02, ha="left")
    return fig


def _save(fig: Figure, path: Path, dpi: int) -> None:
    fig.savefig(path, dpi=dpi)


def write_report(r: RunResult, directory: str | Path) -> Path:
    """Write the report into ``directory`` (made if missing): ``summary.json`` (expectations,
    actions, faults with their windows, per-node figures, the plots' names), ``overview.png``, one
    ``fault-NN-nodeN.png`` for each fault or command (at most ``MAX_FAULT_PLOTS``) and
    ``index.html``. Returns the path of index.html."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    eps = episodes(r)
    images = ["overview.png"]
    _save(overview_figure(r, eps), out / "overview.png", 80)
    for e in eps[:MAX_FAULT_PLOTS]:
        e.plot = f"fault-{e.index:02d}-node{e.node}.png"
        _save(fault_figure(r, e, eps), out / e.plot, 72)
        images.append(e.plot)
    data = summary(r)
    data["faults"] = [_episode_json(e) for e in eps]
    data["plots"] = images
    (out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    index = out / "index.html"
    index.write_text(index_page(data, MAX_FAULT_PLOTS), encoding="utf-8")
    return index
