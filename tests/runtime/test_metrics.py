"""Prometheus metrics: the fast renderer writes byte for byte what prometheus-client writes for the
same collector; the endpoint serves it from a live run."""

from __future__ import annotations

import asyncio
import gc
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mcm_firmware.clock import RealClock
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.runtime.metrics import DIE_METRICS, MODULE_METRICS, FleetCollector, Renderer

from ..conftest import free_port


def _fleet(fleet="m", nodes=30, profiles=("colossus-mcm", "h100-sxm-class")):
    members = [(i, load_profile(profiles[i % len(profiles)])) for i in range(nodes)]
    fl = Fleet(members=members, fleet=fleet, transport_factory=lambda cid: None, clock=RealClock())
    for shard in fl.shards.values():
        for _ in range(5):
            shard.tick()
    return fl


@pytest.mark.parametrize("detail", ["module", "die"])
@pytest.mark.parametrize("fleet", ["m", 'we"ird\\name\nx'])
def test_the_fast_renderer_equals_the_library(detail, fleet):
    fl = _fleet(fleet)
    collector = FleetCollector(fl, detail=detail)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    gc.disable()  # the GC figure must not move between the two renderings
    try:
        renderer = Renderer(collector)
        expected, fast = generate_latest(registry), renderer.render()
        piecewise = asyncio.run(renderer.render_async())
    finally:
        gc.enable()
    assert fast == expected and piecewise == expected
    families = {f.name: f for f in text_string_to_metric_families(fast.decode())}
    per_node = len(MODULE_METRICS) + (len(DIE_METRICS) * 4 if detail == "die" else 0)
    samples = sum(len(families[n].samples) for n, _, _ in MODULE_METRICS + (DIE_METRICS if detail == "die" else ()))
    assert samples <= per_node * 30 and len(families["MCM_FI_DEV_GPU_TEMP"].samples) == 30


def test_series_per_node_are_bounded():
    assert len(MODULE_METRICS) == 31 and len(DIE_METRICS) == 4  # docs/performance.md counts on these


def test_a_run_serves_its_metrics(mosquitto, cli_process):
    port = free_port()
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "3", "--fleet", "pm", "--metrics-port", str(port))
    run.wait_line("up: 3 nodes")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    temps = families["MCM_FI_DEV_GPU_TEMP"].samples
    assert sorted(s.labels["node"] for s in temps) == ["0", "1", "2"] and all(20 < s.value < 110 for s in temps)
    assert {s.labels["outcome"] for s in families["mcm_run_telemetry_frames"].samples} == {
        "due",
        "sent",
        "dropped",
        "decimated",
    }
    assert families["mcm_run_nodes"].samples[0].value == 3
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=10)
