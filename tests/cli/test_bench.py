"""mcm-emu bench: a run measured from outside (its own Mosquitto, an independent counter)."""

from __future__ import annotations

import json

import pytest

from ..conftest import run_cli


@pytest.mark.slow
def test_bench_measures_a_small_fleet_from_outside(tmp_path):
    out = tmp_path / "bench.json"
    r = run_cli(
        "bench", "--nodes", "20", "--seconds", "5", "--warmup", "1", "--ping-rate", "10", "--out", str(out), timeout=180
    )
    assert r.returncode == 0, r.stderr
    assert "| nodes | ticks/s |" in r.stdout and "| 20 |" in r.stdout
    (res,) = json.loads(out.read_text())["results"]
    t = res["telemetry"]
    assert t["received"] > 0 and t["damaged"] == 0 and t["silent_nodes"] == 0
    assert res["ping"]["sent"] >= 40 and res["ping"]["lost"] == 0
    assert res["ticks_per_s"] > 0 and res["tick_late_ms"]["n"] > 0
    assert res["run_stderr_tracebacks"] == 0 and res["rss_mb"] > 0


def test_bench_refuses_bad_node_counts():
    r = run_cli("bench", "--nodes", "ten")
    assert r.returncode == 2 and "--nodes 'ten'" in r.stderr
