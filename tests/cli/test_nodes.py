"""``mcm-emu nodes`` and node selections for ``ctl`` (``0-7``, ``1,3``, ``all``), against a real
Mosquitto and a real run."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from ..conftest import free_port, run_cli
from ..host.test_liveness import _broker as _persistent_broker
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


@pytest.mark.slow
def test_a_gone_fleet_restored_by_a_persistent_broker_is_stale_not_online(tmp_path, cli_process):
    """A persistent Mosquitto crashed under a fleet that is then gone for good restores its
    BIRTHs: ``nodes`` shows them stale (not heard live), ``nodes --ping`` exits 1, ``ctl all``
    reports them STALE at once instead of NO_REPLY after a timeout; a live fleet shows online."""
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = _persistent_broker(tmp_path, port)
    try:
        run = cli_process("run", "--broker", url, "--nodes", "3", "--fleet", "gz", "--connection", "node")
        run.wait_line("up: 3 nodes")
        time.sleep(2.5)  # the broker saved its state with the BIRTHs
        broker.send_signal(signal.SIGKILL)  # a crash: no will is published
        broker.wait()
        run.proc.send_signal(signal.SIGKILL)  # and the fleet is gone for good
        run.proc.wait()
        broker = _persistent_broker(tmp_path, port)  # restored from its store
        base = ("--broker", url, "--fleet", "gz")

        r = run_cli("nodes", *base, "--json")
        assert r.returncode == 0, r.stderr
        rows = json.loads(r.stdout)["nodes"]
        assert [(n["node"], n["online"], n["live"], n.get("stale")) for n in rows] == [
            (i, False, False, True) for i in range(3)
        ], rows
        r = run_cli("nodes", *base)
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == "3 nodes in fleet 'gz': 0 online, 3 stale, 0 offline"
        assert all(line.split()[1] == "stale" for line in r.stdout.splitlines()[1:4]), r.stdout
        r = run_cli("nodes", *base, "--ping", "--timeout", "0.5")
        assert r.returncode == 1 and "no reply" in r.stdout, (r.returncode, r.stdout)
        r = run_cli("nodes", *base, "--listen", "0")  # the retained state alone: what it used to say
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == "3 nodes in fleet 'gz': 3 online, 0 offline"

        t0 = time.monotonic()
        r = run_cli("ctl", *base, "--timeout", "20", "--json", "all", "ping")
        took = time.monotonic() - t0
        out = json.loads(r.stdout)
        assert r.returncode == 1 and [x["status"] for x in out["results"]] == ["STALE"] * 3, out
        assert took < 10, took  # at once (a listen of 3 s at most), not after the 20 s timeout

        run2 = cli_process("run", "--broker", url, "--nodes", "3", "--fleet", "gz", "--connection", "node")
        run2.wait_line("up: 3 nodes")
        r = run_cli("nodes", *base, "--json", "--ping")
        assert r.returncode == 0, (r.stdout, r.stderr)
        rows = json.loads(r.stdout)["nodes"]
        assert all(n["online"] and n["live"] and n["ping_ms"] > 0 for n in rows) and len(rows) == 3, rows
        r = run_cli("ctl", *base, "all", "ping")
        assert r.returncode == 0 and r.stdout.splitlines()[-1] == "ping: 3 of 3 nodes ok", r.stdout
    finally:
        broker.terminate()
        broker.wait(10)


def test_nodes_with_frame_keys_ignores_a_forged_birth(mosquitto, cli_process, tmp_path):
    keys = str(tmp_path / "fleet.keys")
    assert run_cli("frame-keys", "new", keys).returncode == 0
    run = cli_process(
        "run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "fk", "--frame-keys", keys, "--connection", "node"
    )
    run.wait_line("up: 2 nodes")
    _stale_birth(mosquitto, 5, "fk")  # a forged BIRTH: unsealed, in a sealed fleet
    base = ("nodes", "--broker", mosquitto.url, "--fleet", "fk", "--json")
    r = run_cli(*base)  # without the keys the forged BIRTH is listed (and nothing of it is heard)
    assert [n["node"] for n in json.loads(r.stdout)["nodes"]] == [0, 1, 5], r.stdout
    r = run_cli(*base, "--frame-keys", keys, "--ping")
    assert r.returncode == 0, (r.stdout, r.stderr)
    rows = json.loads(r.stdout)["nodes"]
    assert [(n["node"], n["online"], n["live"]) for n in rows] == [(0, True, True), (1, True, True)], rows
