"""The Grafana dashboard (deploy/grafana/mcm-fleet.json) asks only for what a run exports: every
metric and label its queries name is found in a live scrape of ``mcm-emu run --metrics-port``."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ..conftest import free_port

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "mcm-fleet.json"
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "topk", "bottomk", "rate", "irate", "increase", "vector", "by",
    "without", "or", "and", "unless", "on", "ignoring", "label_values", "histogram_quantile",
}  # fmt: skip


def queries(dash: dict) -> list[str]:
    out = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    out += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return out


def names_in(expr: str) -> tuple[set[str], dict[str, set[str]]]:
    """Metric names of a PromQL expression, and the label keys each selector uses."""
    labels: dict[str, set[str]] = {}
    for metric, body in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        labels.setdefault(metric, set()).update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"(?<![A-Za-z0-9_:])\d+(\.\d+)?([eE][+-]?\d+)?", "", bare)  # numbers: 1000, 1e6
    if bare.startswith("label_values("):
        bare = bare.split(",")[0]
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare)) - PROMQL_WORDS
    return words, labels


def test_the_dashboard_queries_what_a_run_exports(mosquitto, cli_process):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert p["type"] == "row" or p["targets"], p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]

    port = free_port()
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "gf", "--metrics-port", str(port))
    run.wait_line("up: 2 nodes")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            exported.setdefault(s.name, set()).update(s.labels)
    asked = set()
    for expr in queries(dash):
        metrics, labels = names_in(expr)
        assert metrics, expr
        for m in metrics:
            assert m in exported, f"{m} (in {expr!r}) is not exported; exported: {sorted(exported)}"
            asked.add(m)
        for m, keys in labels.items():
            assert keys <= exported[m], f"{expr!r}: {m} has no label {sorted(keys - exported[m])}"
    # the dashboard covers every module metric and the run's measurement
    assert {m for m in exported if m.startswith("MCM_FI_")} <= asked
    assert {"mcm_run_telemetry_frames_total", "mcm_run_tick_late_seconds", "mcm_run_frames_refused_total"} <= asked


def test_the_name_finder_finds_names_and_labels():
    metrics, labels = names_in('sum by (outcome) (rate(mcm_run_x_total{fleet=~"$f",kind="a"}[1m])) / 1e6 or vector(0)')
    assert metrics == {"mcm_run_x_total"} and labels == {"mcm_run_x_total": {"fleet", "kind"}}
