"""The ``index.html`` of a scenario report, from its ``summary.json`` data: one self-contained page
(inline style, no script, nothing fetched) with the verdict, the run's digest, a row per
expectation with its verdict and figures, a row per fault and command with its times and a link to
its plot, the per-node figures, and the plots."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;color:#222}
h1 .verdict{padding:0 .4em;border-radius:4px;color:#fff}
.pass .verdict,span.pass{background:#2e7d32}.fail .verdict,span.fail{background:#c62828}
span.pass,span.fail{color:#fff;font-weight:bold;padding:0 .4em;border-radius:3px}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{padding:3px 8px;vertical-align:top;text-align:left}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}td.num{text-align:right;font-variant-numeric:tabular-nums}
code{background:#eee;padding:0 .2em;word-break:break-all}img{max-width:100%;border:1px solid #ddd}
figure{margin:1em 0 2em}figcaption{font-size:90%;color:#555}
"""


def _t(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def _verdict(ok: bool) -> str:
    return f"<span class='{'pass' if ok else 'fail'}'>{'PASS' if ok else 'FAIL'}</span>"


def index_page(d: dict[str, Any], max_plots: int) -> str:
    name = escape(d["scenario"])
    ok = bool(d["passed"])
    exps = d["expectations"]
    failed = sum(1 for e in exps if not e["passed"])
    exp_rows = "\n".join(
        f"<tr class='expectation {'pass' if e['passed'] else 'fail'}'><td>{_verdict(e['passed'])}</td>"
        f"<td>{escape(e['name'])}</td><td>{escape(e['detail'])}</td>"
        f"<td>{escape(', '.join(str(n) for n in e['nodes']))}</td></tr>"
        for e in exps
    )
    fault_rows = []
    for f in d["faults"]:
        plot = f"<a href='{escape(f['plot'])}'>{escape(f['plot'])}</a>" if f.get("plot") else "(not plotted)"
        reaction = f"{_t(f['reaction_t'])} s: {escape(f['reaction'])}" if f["reaction_t"] is not None else ""
        fault_rows.append(
            f"<tr class='fault'><td><a href='#{escape(f['label'])}'>{escape(f['label'])}</a></td>"
            f"<td class='num'>{f['node']}</td><td>{escape(f['what'])}</td><td class='num'>{_t(f['t'])}</td>"
            f"<td class='num'>{_t(f['cleared_t'])}</td><td>{reaction}</td>"
            f"<td class='num'>{_t(f['window'][0])}–{_t(f['window'][1])}</td><td>{plot}</td></tr>"
        )
    node_rows = "\n".join(
        f"<tr><td class='num'>{escape(n)}</td><td>{escape(v['profile'])}</td><td class='num'>{v['telemetry_frames']}</td>"
        f"<td class='num'>{_t(v['max_die_temp_c'])}</td><td class='num'>{_t(v['mean_power_w'])}</td>"
        f"<td class='num'>{v['ce']}</td><td class='num'>{v['ue']}</td><td class='num'>{v['events']}</td>"
        f"<td class='num'>{v['boots']}</td></tr>"
        for n, v in d["figures"]["nodes"].items()
    )
    by_plot = {f["plot"]: f for f in d["faults"] if f.get("plot")}
    figures = []
    for img in d["plots"]:
        f = by_plot.get(img)
        anchor = f["label"] if f else img.removesuffix(".png")
        caption = (
            f"{escape(f['label'])}: node {f['node']}, {escape(f['what'])} at {_t(f['t'])} s"
            f" (window {_t(f['window'][0])}–{_t(f['window'][1])} s)"
            if f
            else "every node's hottest die and power; faults shaded from injection to clear, and on the timeline"
        )
        figures.append(
            f"<figure id='{escape(anchor)}'><a href='{escape(img)}'><img src='{escape(img)}' alt='{escape(img)}'></a>"
            f"<figcaption>{caption} — <a href='{escape(img)}'>{escape(img)}</a></figcaption></figure>"
        )
    more = (
        f"<p>{len(d['faults']) - max_plots} further faults and commands have no plot of their own.</p>"
        if len(d["faults"]) > max_plots
        else ""
    )
    speed = f" ({d['speedup']:g}× real time)" if d.get("speedup") else ""
    faults_table = (
        "<table id='faults'><tr><th></th><th>node</th><th>fault or command</th><th>at s</th><th>cleared s</th>"
        f"<th>last reaction in the trace</th><th>plot window s</th><th>plot</th></tr>{''.join(fault_rows)}</table>"
        if fault_rows
        else "<p>none</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{name}: {"PASS" if ok else "FAIL"}</title>
<style>{STYLE}</style></head>
<body class="{"pass" if ok else "fail"}">
<h1>{name} <span class="verdict">{"PASS" if ok else "FAIL"}</span></h1>
<p>{escape(d["description"])}</p>
<table id="run">
<tr><th>expectations</th><td>{len(exps) - failed} of {len(exps)} passed</td></tr>
<tr><th>seed</th><td>{d["seed"]}</td></tr>
<tr><th>digest</th><td><code>{escape(d["digest"])}</code></td></tr>
<tr><th>frames</th><td>{d["frames"]} ({d["rejected_frames"]} rejected)</td></tr>
<tr><th>time</th><td>{d["simulated_s"]:g} s simulated in {d["wall_s"]:g} s of wall time{speed}</td></tr>
<tr><th>file</th><td><code>{escape(str(d["file"]))}</code></td></tr>
</table>
<h2>Expectations</h2>
<table id="expectations"><tr><th></th><th>expectation</th><th>figures</th><th>nodes</th></tr>
{exp_rows}</table>
<h2>Faults and commands</h2>
{faults_table}
<h2>Nodes</h2>
<table id="nodes"><tr><th>node</th><th>profile</th><th>telemetry</th><th>hottest die °C</th><th>mean power W</th>
<th>CE</th><th>UE</th><th>events</th><th>boots</th></tr>
{node_rows}</table>
<h2>Plots</h2>
<p>{" · ".join(f"<a href='{escape(p)}'>{escape(p)}</a>" for p in d["plots"])} · <a href="summary.json">summary.json</a></p>
{more}{"".join(figures)}
</body></html>
"""
