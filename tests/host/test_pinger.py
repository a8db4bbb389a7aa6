"""The bench's independent requester: PING commands over the raw MQTT path, answers matched by
request id, round trips and losses counted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from mcm_firmware.host.pinger import Pings, ping, quantiles_ms
from mcm_firmware.protocol import Op, Response, Status, encode


def _response(rid: int) -> bytes:
    return encode(Response(node_id=1, seq=1, timestamp_ns=0, flags=0, request_id=rid, op=Op.PING, status=Status.OK))


def test_answers_are_matched_by_request_id_and_strays_counted():
    pings = Pings()
    pings.sent_at[7] = 0.0
    pings.on_response(b"t", memoryview(_response(7)))
    pings.on_response(b"t", memoryview(_response(7)))  # a second answer: not ours any more
    pings.on_response(b"t", memoryview(b"garbage"))
    assert len(pings.rtts) == 1 and pings.stray == 2 and not pings.sent_at
    assert quantiles_ms([0.001, 0.002, 0.003])["max_ms"] == 3.0


def test_pings_reach_a_running_fleet_and_those_to_absent_nodes_are_lost(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "4", "--fleet", "pg")
    run.wait_line("up: 4 nodes")
    out = asyncio.run(ping(mosquitto.url, "pg", 4, 50.0, 2.0))
    assert 99 <= out["sent"] <= 101 and out["lost"] == 0 and out["stray"] == 0
    assert 0 < out["p50_ms"] <= out["p99_ms"] <= out["max_ms"] < 2000
    # nodes 4..7 do not exist: about half of the pings go unanswered, and are counted so
    r = subprocess.run(
        [sys.executable, "-m", "mcm_firmware.host.pinger", "--broker", mosquitto.url, "--fleet", "pg"]
        + ["--nodes", "8", "--rate", "50", "--duration", "1", "--timeout", "0.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    half = json.loads(r.stdout)
    assert r.returncode == 0 and 49 <= half["sent"] <= 51 and 10 < half["lost"] < 40


def test_bad_arguments_are_refused():
    r = subprocess.run(
        [sys.executable, "-m", "mcm_firmware.host.pinger", "--broker", "mqtt://127.0.0.1:1", "--nodes", "0"]
        + ["--rate", "1", "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "must be positive" in r.stderr
