"""Faults at fleet scale leave nothing behind: 1,000 nodes on the connection a run of that size
gets by default (a carrier), every node crashed, rebooted and crashed again, then the broker lost
and back; the run holds as many file descriptors and asyncio tasks after as before (counted from
/proc and from its ``mcm_run_tasks`` metric) and prints no traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcm_firmware.host.discovery import read_state
from mcm_firmware.protocol import Birth
from mcm_firmware.transport import transport_factory

from ..conftest import free_port, run_cli

N = 1000
FLEET = "lk"


def run_figures(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "mcm_run_tasks":
            out["tasks"] = family.samples[0].value
        elif family.name == "mcm_run_nodes":
            out.update({s.labels["state"]: s.value for s in family.samples})
    return out


def wait_for(what: str, ok, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.5)
    raise AssertionError(f"not {what} within {timeout:g} s")


@pytest.mark.slow
def test_crashes_reboots_and_a_lost_broker_at_a_thousand_nodes_leak_no_task_or_descriptor(mosquitto, cli_process):
    metrics = free_port()
    t_start = time.monotonic()
    run = cli_process(
        "run", "--broker", mosquitto.url, "--nodes", str(N), "--fleet", FLEET, "--metrics-port", str(metrics)
    )
    run.wait_line(f"up: {N} nodes connected", timeout=120)
    assert any("carrier" in line for line in run.lines), run.lines  # what a run of this size gets
    time.sleep(2.0)

    def fds() -> int:
        return len(os.listdir(f"/proc/{run.proc.pid}/fd"))

    def steady() -> tuple[int, float]:
        """Descriptors and tasks, read twice a second apart until they agree (a scrape's own
        connection, a command being answered come and go)."""
        last = (fds(), run_figures(metrics)["tasks"])
        for _ in range(10):
            time.sleep(1.0)
            now = (fds(), run_figures(metrics)["tasks"])
            if now == last:
                break
            last = now
        return last

    def booted(count: int) -> bool:
        state = asyncio.run(read_state(transport_factory(mosquitto.url), FLEET))
        births = [state.nodes.get(i) for i in range(N)]
        return all(isinstance(b, Birth) and b.boot_count == count for b in births)

    fds0, tasks0 = steady()
    assert tasks0 >= 2 * N, tasks0  # a link and a transmit task a node
    for boot, kind in ((2, "crash 1"), (3, "reboot"), (4, "crash 1")):
        r = run_cli(
            "ctl", "--broker", mosquitto.url, "--fleet", FLEET, f"0-{N - 1}", "inject", *kind.split(), timeout=120
        )
        assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-2000:])
        wait_for(f"every node at boot {boot}", lambda b=boot: booted(b), 60)
    fds1, tasks1 = steady()

    mosquitto.stop()  # the broker lost: every connection reset at once
    time.sleep(3.0)
    mosquitto.start()
    wait_for("every node linked again", lambda: run_figures(metrics).get("link_up") == N, 60)
    fds2, tasks2 = steady()
    print(
        f"{N} nodes: descriptors {fds0} -> {fds1} after crashes and reboots -> {fds2} after a broker restart; "
        f"tasks {tasks0:.0f} -> {tasks1:.0f} -> {tasks2:.0f}; {time.monotonic() - t_start:.0f} s in all"
    )
    assert fds1 <= fds0 + 2 and fds2 <= fds0 + 2, (fds0, fds1, fds2)  # a descriptor or two of the moment
    assert tasks1 <= tasks0 + 2 and tasks2 <= tasks0 + 2, (tasks0, tasks1, tasks2)
    run.signal(signal.SIGTERM)
    assert run.wait(30) == 0
    assert run.proc.stderr is not None
    err = run.proc.stderr.read()
    assert "Traceback" not in err and not any("Traceback" in line for line in run.lines), err[-3000:]
