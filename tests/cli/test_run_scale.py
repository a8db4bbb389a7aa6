"""run across processes and machines: slices of the ids, worker processes, and a second fleet with
the same ids refused."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys

import pytest

from mcm_firmware.cli.common import BadInput
from mcm_firmware.cli.run import shard_ids
from mcm_firmware.host.discovery import read_state
from mcm_firmware.protocol import Birth, Death, DeathReason
from mcm_firmware.transport import transport_factory

from ..conftest import cli_env, run_cli


def _args(nodes=10, first=0, shard=None):
    return argparse.Namespace(nodes=nodes, first_id=first, shard=shard)


def test_shards_are_contiguous_disjoint_slices(monkeypatch):
    monkeypatch.delenv("MCM_EMU_SHARD", raising=False)
    slices = [shard_ids(_args(10, 100, f"{k}/3")) for k in range(3)]
    assert slices == [list(range(100, 103)), list(range(103, 106)), list(range(106, 110))]
    assert shard_ids(_args(10, 0)) == list(range(10))
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "2")
    assert shard_ids(_args(10, 100, "index/3")) == slices[2]
    monkeypatch.delenv("JOB_COMPLETION_INDEX")
    monkeypatch.setenv("HOSTNAME", "mcm-emu-1")  # a StatefulSet pod's ordinal
    assert shard_ids(_args(10, 100, "index/3")) == slices[1]
    monkeypatch.setenv("MCM_EMU_SHARD", "0/2")
    assert shard_ids(_args(10, 0)) == list(range(5))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("3", "expected K/N"),
        ("3/3", "within 0..2"),
        ("x/2", "within 0..1"),
        ("0/20", "leave some empty"),
    ],
)
def test_bad_shards_are_refused_naming_the_problem(spec, message, monkeypatch):
    monkeypatch.delenv("MCM_EMU_SHARD", raising=False)
    with pytest.raises(BadInput, match=message):
        shard_ids(_args(10, 0, spec))


def test_index_shard_without_an_index_is_refused(monkeypatch):
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    monkeypatch.setenv("HOSTNAME", "laptop")
    with pytest.raises(BadInput, match="no JOB_COMPLETION_INDEX"):
        shard_ids(_args(10, 0, "index/2"))


@pytest.mark.slow
def test_two_worker_processes_run_one_fleet_without_a_client_id_collision(mosquitto, cli_process):
    run = cli_process(
        "run",
        "--broker",
        mosquitto.url,
        "--nodes",
        "240",
        "--processes",
        "2",
        "--fleet",
        "pp",
        "--summary-interval",
        "1",
    )
    run.wait_line("[0/2] up: 120 nodes")
    run.wait_line("[1/2] up: 120 nodes")
    run.wait_line("[1/2] t=", timeout=10)
    state = asyncio.run(read_state(transport_factory(mosquitto.url), "pp"))
    births = {n for n, m in state.nodes.items() if isinstance(m, Birth)}
    assert births == set(range(240)) and all(state.online(n) for n in births)
    assert sorted(state.links) == [0, 120]  # one carrier per process, its state on its first node
    run.signal(signal.SIGTERM)
    assert run.wait(30) == 0
    out = "\n".join(run.lines)
    assert out.count("stopped 120 nodes (DEATH published)") == 2
    assert "mcm-emu: this run did not keep its rates" not in out
    state = asyncio.run(read_state(transport_factory(mosquitto.url), "pp"))
    assert all(isinstance(m, Death) and m.reason is DeathReason.SHUTDOWN for m in state.nodes.values())
    # no connection was taken over by another with its client id: one connect and no loss each
    assert out.count(": 1 connects, 0 losses") == 2


def test_a_second_fleet_with_the_same_ids_is_refused(mosquitto, cli_process):
    first = cli_process("run", "--broker", mosquitto.url, "--nodes", "8", "--fleet", "dup")
    first.wait_line("up: 8 nodes")
    second = run_cli(
        "run", "--broker", mosquitto.url, "--nodes", "4", "--first-id", "6", "--fleet", "dup", "--duration", "2"
    )
    assert second.returncode == 1
    assert "node(s) 6, 7 of fleet 'dup' already run" in second.stderr and "--first-id" in second.stderr
    beside = run_cli(
        "run", "--broker", mosquitto.url, "--nodes", "4", "--first-id", "8", "--fleet", "dup", "--duration", "1"
    )
    assert beside.returncode == 0, beside.stderr  # the ids after them are free
    first.signal(signal.SIGTERM)
    assert first.wait(20) == 0
    again = run_cli(
        "run", "--broker", mosquitto.url, "--nodes", "4", "--first-id", "6", "--fleet", "dup", "--duration", "1"
    )
    assert again.returncode == 0, again.stderr  # stopped: the retained DEATHs do not block a new run


def test_two_worker_processes_lose_no_telemetry_frame(mosquitto, tmp_path):
    """Every frame the two workers handed to their links reaches an independent subscriber that
    listens from before the run starts until after it ends: received equals sent, to the frame."""
    counter = subprocess.Popen(
        [sys.executable, "-m", "mcm_firmware.host.tlm_count", "--broker", mosquitto.url, "--fleet", "nl"]
        + ["--duration", "25"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert counter.stderr is not None and "subscribed" in counter.stderr.readline()
    stats = tmp_path / "stats.jsonl"
    r = run_cli(
        *("run", "--broker", mosquitto.url, "--nodes", "400", "--processes", "2", "--fleet", "nl"),
        *("--duration", "8", "--stats-file", str(stats)),
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out, _ = counter.communicate(timeout=60)
    counted = json.loads(out.strip().splitlines()[-1])
    sent = 0
    for worker in (0, 1):
        lines = (tmp_path / f"stats.{worker}.jsonl").read_text().splitlines()
        whole = [json.loads(line) for line in lines if '"what": "run"' in line]
        assert whole, lines[-3:]
        sent += whole[-1]["telemetry"]["sent"]
    assert counted["damaged"] == 0 and counted["nodes"] == 400
    assert sent > 400 * 10 * 5 and counted["received"] == sent  # 10 Hz for the best part of 8 s each
