"""The firmware keeps its guarantees while the fleet's infrastructure fails: with faults in force
(a failed pump, a failed sensor, hot coolant), the broker killed for 5 s and back, the control
loops run on (the plant's time keeps up with the wall), the pump fails over, the zone without its
sensor goes failsafe, the hot module slows down or shuts down before any die passes its shutdown
threshold, and every node reports it all once the link is back (nothing dropped)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from mcm_firmware.profile import load_profile

from ..conftest import run_cli


def ctl(url: str, node: int, *argv: str) -> dict:
    r = run_cli(
        "ctl", "--broker", url, "--fleet", "g", "--json", "--timeout", "20", "--retries", "10", str(node), *argv
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_firmware_guarantees_hold_through_a_broker_outage(mosquitto, cli_process):
    url = mosquitto.url
    thermal = load_profile("colossus-mcm").thermal
    run = cli_process("run", "--broker", url, "--nodes", "4", "--fleet", "g", "--connection", "node")
    run.wait_line("up: 4 nodes")
    uptime0 = ctl(url, 3, "status")["uptime_s"]
    t0 = time.monotonic()  # the status was taken before this
    ctl(url, 0, "inject", "pump-fail", "A")
    ctl(url, 1, "inject", "sensor-failed", "die:1")
    ctl(url, 2, "inject", "inlet-step", "45")
    mosquitto.stop()  # the consequences unfold while the nodes have no broker
    time.sleep(5.0)
    mosquitto.start()
    t1 = time.monotonic()  # the status below is taken after this
    statuses = {n: ctl(url, n, "status") for n in (3, 0, 1, 2)}
    stats = {n: ctl(url, n, "stats") for n in range(4)}

    # control never stopped: the plant's time kept up with the wall through the outage
    assert statuses[3]["uptime_s"] - uptime0 >= t1 - t0 - 0.5, (statuses[3]["uptime_s"], uptime0, t1 - t0)
    # the failed pump: the other one leads, the module keeps its flow and stays in normal cooling
    pumps = {p["name"]: p for p in statuses[0]["pumps"]}
    assert pumps["A"]["fault"] and not pumps["A"]["lead"] and pumps["B"]["lead"] and pumps["B"]["running"]
    assert statuses[0]["flow_lpm"] > 0 and statuses[0]["state"] == "RUNNING"
    # the failed sensor: its zone in failsafe
    assert statuses[1]["failsafe"] and statuses[1]["mode"] == "FAILSAFE", statuses[1]["mode"]
    # hot coolant: slowed down or shut down, and no die reading past the shutdown threshold
    hot = statuses[2]
    reasons = {r for d in hot["dies"] for r in d["reason_names"]}
    assert hot["state"] == "SHUTDOWN" or reasons & {"SW_THERMAL_SLOWDOWN", "HW_THERMAL_SLOWDOWN"}, (
        hot["state"],
        reasons,
    )
    assert all(d["temp_c"] is None or d["temp_c"] < thermal.shutdown_c + 2.0 for d in hot["dies"])
    # what happened meanwhile is reported, not lost: no response or event was dropped
    assert all(s["rsp_dropped"] == 0 and s["evt_dropped"] == 0 for s in stats.values()), stats
    assert all(s["counters"]["reconnects"] >= 1 for s in statuses.values())
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert run.proc.stderr is not None and "Traceback" not in run.proc.stderr.read()
    assert not any("Traceback" in line for line in run.lines)
