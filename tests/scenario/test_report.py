"""Scenario reports, checked on the figures' artists and the page's rows (never on pixels): every
fault is a span on the overview, each fault's window holds its recovery, no panel is empty, no
legend lies over data, and index.html has a row per expectation with its verdict."""

from __future__ import annotations

import dataclasses
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mcm_firmware.protocol import EventCode
from mcm_firmware.scenario import RunResult, list_scenarios, load_scenario, run_scenario
from mcm_firmware.scenario.expect import Outcome
from mcm_firmware.scenario.report import (
    MAX_SHADED,
    episodes,
    fault_figure,
    overview_figure,
    write_report,
)

LIBRARY = list_scenarios()
RUNS: dict[str, RunResult] = {}


def run(name: str) -> RunResult:
    if name not in RUNS:
        RUNS[name] = run_scenario(load_scenario(LIBRARY[name]), path=str(LIBRARY[name]))
    return RUNS[name]


def drawn(fig: Figure) -> Figure:
    FigureCanvasAgg(fig).draw()
    return fig


def data_axes(fig: Figure) -> list[Axes]:
    return [a for a in fig.axes if a.get_gid() and a.get_gid().startswith("panel-")]


def finite_points(ax: Axes) -> int:
    return sum(
        int(np.isfinite(np.asarray(ln.get_ydata(), float)).sum())
        for ln in ax.lines
        if ln.get_label()[:1] != "_" and len(ln.get_xdata()) > 2
    )


def span_extent(ax: Axes, gid: str) -> tuple[float, float]:
    (patch,) = [p for p in ax.patches if p.get_gid() == gid]
    x0 = patch.get_x()  # axvspan and barh both give a Rectangle in data x
    return x0, x0 + patch.get_width()


# --- episodes: clears and recoveries from the trace -----------------------------------------------


def test_a_fault_is_paired_with_its_clear_and_its_recovery_seen_in_the_trace():
    r = run("ce-storm")
    (e,) = episodes(r)
    end = [ev.t for ev in r.trace.nodes[0].events if ev.code == EventCode.CE_STORM_END]
    assert e.what == "ce-storm 3 5" and (e.t, e.cleared_t) == (20.0, 80.0)
    assert e.reaction_t == end[-1] and "CE_STORM_END" in e.reaction  # the end comes 50 s after the clear
    lo, hi = e.window
    assert lo <= e.t - 15 and hi >= e.reaction_t + 10  # margins on both sides
    assert e.reaction_t > e.t + 90  # the fixed 120 s window of old would have cut it off


def test_commands_and_one_shot_faults_are_episodes_too():
    r = run("hbm-bit-flips")
    eps = episodes(r)
    assert [(e.kind, e.node) for e in eps] == [("fault", 0), ("fault", 1), ("fault", 2), ("command", 2)]
    reset = eps[-1]
    assert reset.what == "reset" and reset.reaction_t == 90.0 and reset.window[1] >= 90.0 + 15
    # the stuck cell's episode on node 2 ends where the reset begins its own
    assert eps[2].reaction_t is not None and eps[2].reaction_t < reset.t


# --- the overview ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pump-failure", "ce-storm", "hbm-bit-flips"])
def test_every_fault_is_a_labelled_span_on_the_overview(name):
    r = run(name)
    eps = episodes(r)
    fig = drawn(overview_figure(r, eps))
    data, timeline = data_axes(fig), fig.axes[-1]
    temp = data[0]
    hbm = "panel-HBM errors (CE + UE)" in [a.get_gid() for a in data]
    assert hbm == (name != "pump-failure")  # a panel of HBM errors only where they move
    faults = [e for e in eps if e.kind == "fault"]
    assert faults and len(eps) <= MAX_SHADED
    for e in faults:
        for ax in data:
            assert span_extent(ax, f"span-{e.label}") == pytest.approx((e.t, e.end_t))
        assert span_extent(timeline, f"bar-{e.label}") == pytest.approx((e.t, e.end_t))
        assert f"{e.label} in force" in [t.get_text() for t in temp.get_legend().get_texts()]
        if e.reaction_t is not None and e.reaction_t > e.t:  # the last reaction is on the timeline
            (rec,) = [ln for ln in timeline.lines if ln.get_gid() == f"reaction-{e.label}"]
            assert rec.get_xdata()[-1] == e.reaction_t
    ticks = [t.get_text() for t in timeline.get_yticklabels()]
    assert ticks == [f"{e.label} node {e.node}" for e in eps]
    # every node is in the legend, and the legend is right of the axes, not over the lines
    labels = [t.get_text() for t in temp.get_legend().get_texts()]
    assert all(any(lab.startswith(f"node {n}") for lab in labels) for n in r.profiles)
    for ax in [*data, timeline]:
        leg = ax.get_legend()
        assert leg is None or leg.get_window_extent().x0 >= ax.get_window_extent().x1
    assert temp.get_legend() is not None
    for ax in data:
        assert any(np.isfinite(np.asarray(ln.get_ydata(), float)).any() for ln in ax.lines)


def test_pump_failure_spans_its_clear():
    r = run("pump-failure")
    (e,) = episodes(r)
    assert (e.node, e.t, e.cleared_t, e.end_t) == (3, 30.0, 90.0, 90.0)


# --- per-fault plots ------------------------------------------------------------------------------


def test_the_fault_window_holds_the_recovery_and_its_data():
    r = run("ce-storm")
    eps = episodes(r)
    fig = drawn(fault_figure(r, eps[0], eps))
    for ax in data_axes(fig):
        lo, hi = ax.get_xlim()
        assert lo <= 20.0 and hi >= eps[0].reaction_t + 10
        assert span_extent(ax, "span-F1") == pytest.approx((20.0, 80.0))
    (hbm,) = [a for a in data_axes(fig) if a.get_gid() == "panel-HBM errors"]
    ce = next(ln for ln in hbm.lines if ln.get_label().startswith("CE"))
    x = np.asarray(ce.get_xdata(), float)
    assert x.max() >= eps[0].reaction_t  # the line goes on past the recovery
    reaction = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("last reaction")]
    assert reaction and reaction[0].get_xdata()[0] == eps[0].reaction_t


@pytest.mark.parametrize("name", ["pump-failure", "ce-storm", "hbm-bit-flips"])
def test_no_panel_is_without_data_and_no_legend_over_it(name):
    r = run(name)
    eps = episodes(r)
    for e in eps:
        fig = drawn(fault_figure(r, e, eps))
        axes = data_axes(fig)
        assert axes and len(axes) == len(fig.axes)
        for ax in axes:
            assert finite_points(ax) > 0, (name, e.label, ax.get_gid())
            leg = ax.get_legend()
            assert leg is not None and leg.get_window_extent().x0 >= ax.get_window_extent().x1, ax.get_gid()
        hbm = [a for a in axes if a.get_gid() == "panel-HBM errors"]
        for ax in hbm:  # an HBM panel only when its counters move
            ys = [np.asarray(ln.get_ydata(), float) for ln in ax.lines if ln.get_label()[:2] in ("CE", "UE")]
            assert any(np.nanmax(y) > np.nanmin(y) for y in ys if len(y))


def test_a_pump_fault_has_no_empty_hbm_panel_and_says_so():
    r = run("pump-failure")
    (e,) = episodes(r)
    fig = fault_figure(r, e)
    gids = [a.get_gid() for a in fig.axes]
    assert "panel-HBM errors" not in gids and "panel-pumps" in gids and "panel-valves" in gids
    assert "not shown: HBM errors: no change (CE 0, UE 0)" in fig.get_supxlabel()


# --- the page -------------------------------------------------------------------------------------


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.tags: set[str] = set()
        self._cls: str | None = None
        self._row: list[str] | None = None
        self._cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        for key in ("href", "src"):
            if a.get(key):
                self.links.append(a[key] or "")
        if tag == "tr" and a.get("class"):
            self._cls = (a["class"] or "").split()[0]
            self._row = []
        elif tag == "td" and self._row is not None:
            self._row.append("")
            self._cell = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr" and self._row is not None and self._cls:
            self.rows.setdefault(self._cls, []).append([c.strip() for c in self._row])
            self._row = None
        elif tag == "td":
            self._cell = False

    def handle_data(self, data: str) -> None:
        if self._cell and self._row is not None:
            self._row[-1] += data


def page(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_the_page_has_a_row_per_expectation_and_per_fault_and_is_self_contained(tmp_path):
    r = run("ce-storm")
    index = write_report(r, tmp_path)
    p = page(index)
    assert [(row[0], row[1]) for row in p.rows["expectation"]] == [
        ("PASS" if o.passed else "FAIL", o.name) for o in r.outcomes
    ]
    assert [row[2] for row in p.rows["expectation"]] == [o.detail for o in r.outcomes]
    summary = json.loads((tmp_path / "summary.json").read_text())
    faults = p.rows["fault"]
    assert len(faults) == len(summary["faults"]) == 1
    assert faults[0][:5] == ["F1", "0", "ce-storm 3 5", "20", "80"] and "CE_STORM_END" in faults[0][5]
    assert summary["faults"][0]["plot"] == "fault-00-node0.png" and "fault-00-node0.png" in p.links
    for link in p.links:  # nothing fetched from elsewhere; every file it names is there
        assert "://" not in link and not link.startswith("//")
        if not link.startswith("#"):
            assert (tmp_path / link).is_file(), link
    assert not {"script", "link", "iframe"} & p.tags
    text = index.read_text(encoding="utf-8")
    assert f"sha256:{r.digest}" in text and "<style>" in text


def test_a_failed_expectation_is_a_fail_row_and_the_page_says_fail(tmp_path):
    r = run("ce-storm")
    failed = dataclasses.replace(r, outcomes=[*r.outcomes, Outcome("made up", False, "99 > 1", [0])])
    p = page(write_report(failed, tmp_path))
    assert p.rows["expectation"][-1][:3] == ["FAIL", "made up", "99 > 1"]
    assert sum(1 for row in p.rows["expectation"] if row[0] == "FAIL") == 1
    assert '<h1>ce-storm <span class="verdict">FAIL</span></h1>' in (tmp_path / "index.html").read_text()
