"""``mcm-emu nodes`` and node selections for ``ctl`` (``0-7``, ``1,3``, ``all``), against a real
Mosquitto and a real run."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from ..conftest import run_cli
from .test_cli import _stale_birth


def test_nodes_lists_the_fleet_and_ctl_takes_selections(mosquitto, cli_process):
    url = mosquitto.url
    run = cli_process("run", "--broker", url, "--nodes", "4", "--fleet", "sel", "--connection", "node")
    run.wait_line("up: 4 nodes")
    base = ("--broker", url, "--fleet", "sel")

    r = run_cli("nodes", *base, "--json", "--ping")
    assert r.returncode == 0, r.stderr
    listing = json.loads(r.stdout)
    assert [n["node"] for n in listing["nodes"]] == [0, 1, 2, 3]
    assert all(n["online"] and n["profile"] == "colossus-mcm" and n["ping_ms"] > 0 for n in listing["nodes"])
    assert all(0 <= n["up_s"] < 60 for n in listing["nodes"])

    r = run_cli("ctl", *base, "0-2", "set-power-cap", "900")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "set-power-cap: 3 of 3 nodes ok"
    assert [line.split(":")[0] for line in r.stdout.splitlines()[:3]] == ["node 0", "node 1", "node 2"]
    r = run_cli("ctl", *base, "--json", "all", "status")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["nodes"] == 4 and out["failed"] == 0
    assert [x["power_cap_w"] for x in out["results"]] == [900.0, 900.0, 900.0, 1300.0]

    # a node that is not there: its own line, the others answered, exit 1
    r = run_cli("ctl", *base, "--json", "--timeout", "0.5", "--retries", "0", "3,9", "ping")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["failed"] == 1
    assert {x["node"]: x["ok"] for x in out["results"]} == {3: True, 9: False}
    assert out["results"][1] == {
        "node": 9,
        "ok": False,
        "status": "NOT_IN_FLEET",
        "message": "not in fleet 'sel' (nodes 0-3 seen)",
    }
    _stale_birth(mosquitto, 9, "sel")  # a BIRTH the broker kept of a node that is not there: asked, no reply
    r = run_cli("ctl", *base, "--json", "--timeout", "0.5", "--retries", "0", "3,9", "ping")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and [x["status"] for x in out["results"] if not x["ok"]] == ["NO_REPLY"]
    clear = ("mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", "mcm/v1/sel/9/state", "-r", "-n")
    subprocess.run(clear, check=True, timeout=10)  # the stale BIRTH gone again

    # a node gone: offline, with the reason of its DEATH
    assert run_cli("ctl", *base, "2", "inject", "crash").returncode == 0
    deadline = time.monotonic() + 20
    while True:
        r = run_cli("nodes", *base)
        if "DEATH: CONNECTION_LOST" in r.stdout:
            break
        assert time.monotonic() < deadline, r.stdout
        time.sleep(0.5)
    line = next(x for x in r.stdout.splitlines() if x.split()[0] == "2")
    # a Last Will's time is when the node connected, not when it was lost: not shown as "since"
    assert line.split()[6] == "-" and "Last Will" in line, line
    assert "offline" in line and r.stdout.splitlines()[-1] == "4 nodes in fleet 'sel': 3 online, 1 offline"
    run.signal(signal.SIGTERM)
    assert run.wait() == 0


def test_bad_selections_are_usage_errors():
    for sel, says in (("5-2", "'5-2' is not a range"), ("x", "give a node id"), ("1,,2", "give a node id")):
        r = run_cli("ctl", sel, "ping")
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (sel, r.stderr)
    r = run_cli("ctl", "--serial", "/dev/null", "all", "ping")
    assert r.returncode == 2 and "on a serial line name the nodes" in r.stderr
    r = run_cli("nodes", "--broker", "mqtt://127.0.0.1:1")
    assert r.returncode == 1 and "Traceback" not in r.stderr
