"""The CLI as a real subprocess: run with the embedded broker, ctl, monitor, exit codes, bad input."""

from __future__ import annotations

import json
import re
import signal
import socket
import time

import pytest

from ..conftest import free_port, run_cli
from ..helpers import read_terminal


def test_run_with_embedded_broker_ctl_monitor_and_sigterm(cli_process):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    run = cli_process("run", "--nodes", "3", "--embedded-port", str(port), "--summary-interval", "0.5")
    line = run.wait_line("embedded MQTT broker at")
    assert url in line
    run.wait_line("node=2 state=RUNNING")
    ping = run_cli("ctl", "--broker", url, "--json", "2", "ping")
    assert ping.returncode == 0, ping.stderr
    assert json.loads(ping.stdout)["ok"] is True
    status = run_cli("ctl", "--broker", url, "0", "status")
    assert status.returncode == 0 and "pump A" in status.stdout and "die 3" in status.stdout
    mon = run_cli("monitor", "--broker", url, "--json", "--count", "6")
    assert mon.returncode == 0, mon.stderr
    frames = [json.loads(x) for x in mon.stdout.splitlines()]
    assert len(frames) == 6
    assert sum(f["type"] == "BIRTH" and f["retained"] for f in frames) >= 3  # the retained states first
    text = run_cli("monitor", "--broker", url, "--count", "3", "--node", "1")
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and all(x.split()[1] == "1" for x in lines)  # time (UTC), node, type ...
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}", x.split()[0]) for x in lines)
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    run.wait_line("stopped 3 nodes")


def test_run_duration_ends_by_itself(cli_process):
    run = cli_process(
        "run", "--nodes", "1", "--embedded-port", str(free_port()), "--duration", "1.5", "--workload", "mixed"
    )
    assert run.wait(30) == 0
    run.wait_line("stopped 1 nodes")


def test_port_in_use_is_said_in_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = run_cli("run", "--embedded-port", str(port), "--duration", "1")
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"port {port}" in lines[0] and "--embedded-port" in lines[0] and "--broker" in lines[0]


def test_unreachable_broker_is_an_error_line_and_a_hint():
    url = f"mqtt://127.0.0.1:{free_port()}"
    for args in (
        ("ctl", "--broker", url, "1", "ping"),
        ("monitor", "--broker", url, "--count", "1"),
        ("run", "--broker", url, "--duration", "1"),
    ):
        out = run_cli(*args)
        assert out.returncode == 1, (args, out.stderr)
        assert "Traceback" not in out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 2 and lines[0].startswith("mcm-emu: error: cannot connect to broker"), out.stderr
        assert lines[1].startswith(f"  (is a broker running at {url}?"), out.stderr


def _stale_birth(mosquitto, node: int, fleet: str = "default") -> None:
    """A retained BIRTH of a node that is not there (what a broker keeps of a node killed before
    its will went out)."""
    import dataclasses
    import subprocess

    from mcm_firmware.protocol import encode
    from mcm_firmware.testing.golden import GOLDEN

    frame = encode(dataclasses.replace(GOLDEN["birth"], node_id=node))
    topic = f"mcm/v1/{fleet}/{node}/state"
    pub = ("mosquitto_pub", "-h", "127.0.0.1", "-p", str(mosquitto.port), "-t", topic, "-r", "-s")
    subprocess.run(pub, input=frame, check=True, timeout=10)


def test_ctl_timeout_exits_1(mosquitto):
    _stale_birth(mosquitto, 9)
    out = run_cli("ctl", "--broker", mosquitto.url, "--timeout", "0.5", "--json", "9", "ping")
    assert out.returncode == 1
    assert "mcm-emu: error: no reply from node 9 to ping within 0.5 s: node 9: online by its BIRTH" in out.stderr
    assert json.loads(out.stdout)["status"] == "NO_REPLY"


@pytest.mark.parametrize(
    "args, needle",
    [
        (("run", "--nodes", "0"), "--nodes must be within"),
        (("run", "--nodes", "many"), "--nodes must be a whole number"),
        (("run", "--speed", "-1"), "--speed must be within"),
        (("run", "--workload", "mining"), "invalid choice"),
        (("run", "--broker", "http://x"), "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (the scheme 'http'"),
        (("run", "--broker", "nonsense"), "broker URL 'nonsense': expected mqtt://HOST[:PORT]"),
        (("ctl", "99999999999", "ping"), "NODE must be within 0..4294967295"),
        (("run", "--fleet", "a/b"), "fleet name"),
        (("run", "--profile", "nope", "--embedded-port", "1"), "no such profile"),
        (("ctl", "1", "dance"), "invalid choice"),
        (("ctl", "3"), "the following arguments are required: COMMAND\n"),  # ARGS are optional
        (("ctl", "1", "ping", "extra"), "ping takes no arguments"),
        (("ctl", "-5", "ping"), "NODE"),
        (("monitor", "--count", "0"), "--count must be within"),
        (("profiles",), "required"),
        (("bogus",), "invalid choice"),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(args, needle):
    out = run_cli(*args)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()  # one line and a hint, not a usage block
    assert lines[0].startswith("mcm-emu: error: ") and len(lines) <= 2, out.stderr


def test_help_and_version():
    out = run_cli("--help")
    assert out.returncode == 0 and "run" in out.stdout and "ctl" in out.stdout
    out = run_cli("--version")
    assert out.returncode == 0 and out.stdout.startswith("mcm-emu ")


def test_ctl_takes_its_options_after_the_command_too(mosquitto, cli_process):
    import json

    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "1", "--fleet", "oa")
    run.wait_line("up: 1 nodes")
    r = run_cli("ctl", "--broker", mosquitto.url, "0", "status", "--json", "--fleet", "oa")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[0])["node"] == 0
    r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "oa", "0", "inject", "inlet-step", "-5", "--timeout", "5")
    assert r.returncode == 0, r.stderr  # "-5" stays the fault's value, not an option
    r = run_cli("ctl", "--broker", mosquitto.url, "0", "get-faults", "--fleet", "oa", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["faults"][0] | {"target": ""} == {
        "kind": "INLET_STEP",
        "target": "",
        "value": -5.0,
        "value2": None,
    }


def test_verbose_is_taken_before_or_after_the_command():
    for args in (("-v", "run", "--nodes", "0"), ("run", "-v", "--nodes", "0")):
        out = run_cli(*args)
        assert out.returncode == 2 and "--nodes must be within 1..100000" in out.stderr  # -v itself accepted
        assert "unrecognized arguments" not in out.stderr


def _timed(*args: str) -> tuple[float, object]:
    t0 = time.monotonic()
    out = run_cli(*args)
    return time.monotonic() - t0, out


def test_ctl_says_at_once_why_a_node_will_not_answer(mosquitto, cli_process):
    """Wrong node, wrong fleet, crashed node: read from the broker's retained state before
    anything is sent, said in one line well within --timeout 20 (half of it, with a process start: on a
    loaded machine a start alone can take seconds; a diagnosis that waited for the timeout takes 20)."""
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "3", "--fleet", "ws")
    run.wait_line("up: 3 nodes")
    other = cli_process("run", "--broker", mosquitto.url, "--nodes", "1", "--fleet", "other")
    other.wait_line("up: 1 nodes")
    base = ("ctl", "--broker", mosquitto.url, "--timeout", "20")

    took, r = _timed(*base, "--fleet", "ws", "99", "ping")
    assert r.returncode == 1 and r.stderr.splitlines() == [
        "mcm-emu: error: node 99: not in fleet 'ws' (nodes 0-2 seen)"
    ]
    assert took < 10, took
    took, r = _timed(*base, "--fleet", "nope", "1", "ping", "--json")
    assert r.returncode == 1 and took < 10, (took, r.stderr)
    assert r.stderr.splitlines() == ["mcm-emu: error: no node of fleet 'nope' on this broker (fleets seen: other, ws)"]
    assert json.loads(r.stdout) == {
        "node": 1,
        "ok": False,
        "error": "no node of fleet 'nope' on this broker (fleets seen: other, ws)",
        "exit_code": 1,
        "status": "NO_FLEET",
    }
    r = run_cli("monitor", "--broker", mosquitto.url, "--fleet", "ws", "--node", "99", "--duration", "1")
    assert r.returncode == 0 and "monitor: node 99: not in fleet 'ws' (nodes 0-2 seen)" in r.stderr
    r = run_cli("monitor", "--broker", mosquitto.url, "--fleet", "ws", "--node", "1", "--count", "1")
    assert r.returncode == 0 and "monitor:" not in r.stderr  # a node that is up: no warning

    assert run_cli(*base, "--fleet", "ws", "0", "inject", "crash").returncode == 0  # gone, no reboot
    deadline = time.monotonic() + 10
    while True:  # until the broker has published its will
        took, r = _timed(*base, "--fleet", "ws", "0", "ping", "--json")
        if "DEATH" in r.stderr or time.monotonic() > deadline:
            break
    assert r.returncode == 1 and took < 10, (took, r.stderr)
    (line,) = r.stderr.splitlines()
    assert line.startswith(
        "mcm-emu: error: node 0: offline (DEATH: CONNECTION_LOST, its Last Will published by the broker, "
        "registered when it connected at "
    ), line
    assert line.endswith("; boot 1, bdseq 1)"), line
    assert json.loads(r.stdout)["status"] == "OFFLINE"

    # a selection: the same diagnosis per node, the nodes that are up answered
    took, r = _timed(*base, "--fleet", "ws", "0-2,7", "ping")
    assert r.returncode == 1 and took < 10, (took, r.stderr)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("node 0: offline (DEATH: CONNECTION_LOST, its Last Will published by the broker")
    assert lines[1].startswith("node 1: ok (ping)") and lines[2].startswith("node 2: ok (ping)")
    assert lines[3:] == ["node 7: not in fleet 'ws' (nodes 0-2 seen)", "ping: 2 of 4 nodes ok"]
    r = run_cli(*base, "--fleet", "ws", "0,9", "ping", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["failed"] == 2
    assert [x["status"] for x in out["results"]] == ["OFFLINE", "NOT_IN_FLEET"]
    r = run_cli(*base, "--fleet", "nope", "all", "ping")
    assert r.returncode == 1 and "no node of fleet 'nope' on this broker (fleets seen: other, ws)" in r.stderr


def test_run_summary_lines_show_pumps_cap_faults_and_a_crashed_node_as_down(cli_process):
    port = free_port()
    run = cli_process("run", "--nodes", "2", "--embedded-port", str(port), "--summary-interval", "0.5")
    run.wait_line("node=1 state=RUNNING")
    url = f"mqtt://127.0.0.1:{port}"
    assert run_cli("ctl", "--broker", url, "0", "inject", "pump-fail", "A").returncode == 0
    assert run_cli("ctl", "--broker", url, "0", "set-power-cap", "900").returncode == 0
    assert run_cli("ctl", "--broker", url, "1", "inject", "crash").returncode == 0  # no reboot: gone for good
    line0 = run.wait_line("/900W clock=", timeout=20)  # the cap, then the failed-over pumps
    assert "node=0 " in line0 and line0.endswith("pumps=A!,B* faults=pump-fail:A"), line0
    line1 = run.wait_line("node=1 state=DOWN", timeout=20)
    assert "link=down" in line1
    run.signal(signal.SIGTERM)
    assert run.wait() == 0


def test_the_live_table_on_a_terminal_has_pumps_cap_and_faults_columns():
    import os
    import pty
    import subprocess
    import sys

    from ..conftest import ROOT, cli_env

    primary, secondary = pty.openpty()
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcm_firmware", "run", "--nodes", "2", "--embedded-port", str(port), "--duration", "4"],
        stdout=secondary,
        stderr=subprocess.PIPE,
        env={**cli_env(), "COLUMNS": "160"},
        cwd=ROOT,
    )
    os.close(secondary)
    time.sleep(2.0)
    assert run_cli("ctl", "--broker", f"mqtt://127.0.0.1:{port}", "0", "inject", "pump-fail", "A").returncode == 0
    assert run_cli("ctl", "--broker", f"mqtt://127.0.0.1:{port}", "1", "inject", "crash").returncode == 0
    out = read_terminal(primary)
    assert proc.wait(timeout=60) == 0
    screen = out.decode(errors="replace")
    for column in ("cap W", "pumps", "faults", "Tmax °C"):
        assert column in screen, column
    assert "pump-fail A" in screen and "A!" in screen and "* lead, - stopped, ! faulty" in screen
    assert re.search(r"│ +1 │ +(\x1b\[[0-9;]*m)?DOWN\b", screen), screen[-3000:]  # the crashed node, gone for good
    # the ticks' lateness in the title from the first refresh on, before the meter's first window
    # (5 s: this run is shorter, the caption never shows one)
    first = screen.index("fleet default: 2 nodes")
    assert "tick late" in screen[first : screen.index("\n", first)]
    assert re.search(r"fleet default: 2 nodes, \d s; tick late p99/max \d+\.\d/\d+\.\d ms", screen)


def test_json_errors_are_json_objects_on_stdout_too():
    r = run_cli("ctl", "--broker", "mqtt://127.0.0.1:1", "--json", "3", "ping")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["ok"] is False and out["node"] == 3 and "cannot connect" in out["error"]
    assert out["exit_code"] == 1 and "cannot connect" in r.stderr
    r = run_cli("ctl", "--json", "5-2", "ping")  # refused by the argument parser itself
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["exit_code"] == 2 and "5-2" in out["error"]
    r = run_cli("ctl", "--json", "3", "set-power-cap", "abc")
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["exit_code"] == 2 and "must be a number" in out["error"]


def test_json_errors_of_options_after_the_positionals_are_json_too():
    r = run_cli("ctl", "3", "status", "--json", "--timeout", "0")
    assert r.returncode == 2, r.stderr
    out = json.loads(r.stdout)
    assert out == {"node": 3, "ok": False, "error": out["error"], "exit_code": 2}
    assert "--timeout must be within 0.01..3600, got 0" in out["error"]
    assert r.stderr.splitlines()[0] == f"mcm-emu: error: {out['error']}"


def test_verbose_and_quiet_are_taken_after_ctls_positionals(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "1", "--fleet", "vq")
    run.wait_line("up: 1 nodes")
    base = ("ctl", "--broker", mosquitto.url, "--fleet", "vq", "0", "ping")
    for late in (("-v",), ("-q",), ("-vv", "--json")):
        r = run_cli(*base, *late)
        assert r.returncode == 0, (late, r.stderr)
    r = run_cli(*base, "-v", "-q")  # both taken as the global options: they contradict
    assert r.returncode == 2 and "-q and -v contradict each other" in r.stderr


def test_a_refusal_by_the_node_is_an_error_line(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "1", "--fleet", "rf")
    run.wait_line("up: 1 nodes")
    r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "rf", "0", "set-power-cap", "5")
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["mcm-emu: error: node 0 answered BAD_ARGUMENT: power cap 5 W outside 500..1400 W"]
    r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "rf", "0", "set-power-cap", "5", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 2 and out["ok"] is False and out["status"] == "BAD_ARGUMENT" and out["exit_code"] == 2
