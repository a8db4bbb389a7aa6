"""What the emulated link faults do is counted in the node, per direction and kind, and shown: on a
real Mosquitto, through the CLI, a subscriber's view of the sequence numbers against ``ctl status``
(text and JSON) and a metrics scrape; the counts outlive ``clear-fault``."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import free_port, run_cli

FLEET = "lfc"
KINDS = ("dropped", "corrupted", "duplicated", "delayed")


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mcm_run_link_fault_frames":
            for s in family.samples:
                if s.name.endswith("_total") and s.labels["fleet"] == FLEET:
                    out[s.labels["direction"], s.labels["kind"]] = s.value
    return out


def ctl(mosquitto, *argv: str, json_out: bool = True):
    r = run_cli(
        "ctl", "--broker", mosquitto.url, "--fleet", FLEET, *(("--json",) if json_out else ()), "--timeout", "3", *argv
    )
    assert r.returncode == 0, (r.stdout, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1]) if json_out else r.stdout


@pytest.mark.slow
def test_link_drop_counts_are_shown_in_status_and_metrics_and_outlive_the_fault(mosquitto, cli_process):
    port = free_port()
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", FLEET, "--metrics-port", str(port))
    run.wait_line("up: 2 nodes")
    assert set(scrape(port).values()) == {0.0} and len(scrape(port)) == 2 * len(KINDS)
    mon = cli_process("monitor", "--broker", mosquitto.url, "--fleet", FLEET, "--node", "1", "--json")
    mon.wait_line('"TELEMETRY"')
    before = ctl(mosquitto, "1", "status")["runtime"]
    assert before["link_faults"] == {way: dict.fromkeys(KINDS, 0) for way in ("out", "in")}

    assert ctl(mosquitto, "1", "inject", "link-drop", "out", "0.5")["ok"]
    time.sleep(5.0)  # 10 Hz telemetry: ~50 frames, half of them dropped
    assert ctl(mosquitto, "1", "clear-fault", "link-drop")["ok"]
    after = ctl(mosquitto, "1", "status")["runtime"]  # answered: the fault is gone
    time.sleep(0.5)
    mon.signal(signal.SIGINT)
    mon.wait()

    counts = after["link_faults"]
    dropped = counts["out"]["dropped"]
    assert counts["out"] == {"dropped": dropped, "corrupted": 0, "duplicated": 0, "delayed": 0}
    assert counts["in"] == dict.fromkeys(KINDS, 0)  # the fault named the outgoing direction only

    # the subscriber misses exactly the frames counted dropped, and what the node itself lost
    frames = [json.loads(line) for line in mon.lines if line.startswith("{")]
    seqs = sorted(m["seq"] for m in frames if not m["retained"] and m["type"] != "COMMAND")  # the node's own
    assert len(seqs) == len(set(seqs)), "a frame arrived twice"
    missing = (seqs[-1] - seqs[0] + 1) - len(seqs)
    lost = sum(after["telemetry"][k] - before["telemetry"][k] for k in ("dropped", "decimated"))
    assert dropped <= missing <= dropped + lost, (dropped, missing, lost)
    print(
        f"link-drop out 0.5: {dropped} frames counted dropped, {missing} missing at the subscriber, {len(seqs)} received"
    )
    assert 10 <= dropped < len(seqs), (dropped, len(seqs))  # about half of 5 s of frames, not all

    # cleared, the counts stay (the status above was taken after the clear): in text and metrics
    text = ctl(mosquitto, "1", "status", json_out=False)
    assert f"link faults: out dropped {dropped}, corrupted 0, duplicated 0, delayed 0; in dropped 0" in text, text
    assert "link faults" not in ctl(mosquitto, "0", "status", json_out=False)  # nothing to tell on node 0
    metrics = scrape(port)
    assert metrics["out", "dropped"] == dropped
    assert sum(metrics.values()) == dropped
