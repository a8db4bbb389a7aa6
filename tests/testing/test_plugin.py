"""The pytest plugin: one contract suite run against emulation (in the main run) and, here, as a
separate pytest process against a node on a serial pty and a node behind Mosquitto."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from mcm_firmware.target import parse_target

from ..conftest import ROOT, cli_env


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/contract", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=cli_env(),
        timeout=120,
    )


def _counts(out: str) -> dict[str, int]:
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|error)", out)}


def test_contract_suite_against_a_node_on_a_serial_pty(cli_process):
    run = cli_process("run", "--nodes", "1", "--first-id", "5", "--serial", "pty")
    path = re.search(r"at (\S+)", run.wait_line("serial: node 5 at")).group(1)
    run.wait_line("running ")
    r = _pytest(f"--mcm-target=serial://{path}?node=5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _counts(r.stdout) == {"passed": 5}, r.stdout  # the hil test ran too


def test_contract_suite_against_a_node_behind_mosquitto(cli_process, mosquitto):
    run = cli_process("run", "--nodes", "2", "--broker", mosquitto.url, "--fleet", "bench")
    run.wait_line("running 2 nodes")
    r = _pytest(f"--mcm-target={mosquitto.url}/1?fleet=bench")
    assert r.returncode == 0, r.stdout + r.stderr
    assert _counts(r.stdout) == {"passed": 5}, r.stdout


def test_contract_suite_fails_against_a_target_that_is_not_there(tmp_path):
    r = _pytest("--mcm-target=serial://pty?node=3", "-x")  # a fresh pty nobody serves
    assert r.returncode == 1 and _counts(r.stdout).get("failed") == 1, r.stdout


def test_bad_target_is_a_usage_error():
    r = _pytest("--mcm-target=ftp://x")
    assert r.returncode == 4 and "expected emulated, mqtt://HOST:PORT/NODE or serial://PORT" in r.stderr


@pytest.mark.parametrize(
    "url, node, transport",
    [
        ("mqtt://127.0.0.1:1883/4", 4, "mqtt://127.0.0.1:1883"),
        ("serial:///dev/ttyUSB0?node=9&baud=921600", 9, "serial:///dev/ttyUSB0?baud=921600"),
        ("serial://socket://127.0.0.1:7000?node=2", 2, "serial://socket://127.0.0.1:7000"),
    ],
)
def test_target_urls(url, node, transport):
    t = parse_target(url)
    assert (t.node, t.transport_url, t.emulated) == (node, transport, False)


@pytest.mark.parametrize(
    "url, why",
    [
        ("mqtt://127.0.0.1:1883", "node id as the path"),
        ("serial:///dev/x?node=abc", "node='abc' is not a node id"),
        ("serial://ttyS0?node=1", "not a device path"),
    ],
)
def test_bad_target_urls(url, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_target(url)
