"""A message larger than any frame's packet (``security.MAX_PACKET``) is never received whole, on a
Mosquitto without ``max_packet_size``: the node's client (paho under aiomqtt) and a carrier's
control connection (raw packets) read its head, acknowledge it, drop the rest as it arrives and hand
the node a :class:`Delivery` with its size, which the node counts rejected; the connection goes on.
"""

from __future__ import annotations

import asyncio
import json
import tracemalloc
from pathlib import Path

import pytest

from mcm_firmware.transport import Address, Channel, Subscription
from mcm_firmware.transport.mqtt import MqttTransport
from mcm_firmware.transport.mqtt_raw import RawMqttTransport
from mcm_firmware.transport.security import MAX_PACKET

from ..conftest import run_cli

BIG = 10 << 20  # 10 MB


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak resident set (VmHWM) starts again from here


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field}")


async def _pub(port: int, topic: str, source: Path, qos: int) -> None:
    """mosquitto_pub in a process of its own, so that only receiving allocates in this one."""
    proc = await asyncio.create_subprocess_exec(
        *("mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", str(qos), "-f", str(source))
    )
    assert await proc.wait() == 0


@pytest.mark.parametrize("kind", ["paho", "raw"])
async def test_an_oversize_message_is_skipped_unread_counted_and_the_connection_goes_on(mosquitto, tmp_path, kind):
    make = MqttTransport if kind == "paho" else RawMqttTransport
    node = make(port=mosquitto.port, client_id=f"mcm-o-{kind}-0")
    await node.connect()
    files = {}
    for name, size in (("big", BIG), ("edge", MAX_PACKET - 100), ("mid", BIG // 8), ("small", 5)):
        files[name] = tmp_path / name
        files[name].write_bytes(b"x" * size)
    cmd = Address("o", 0, Channel.CMD)
    topic = "mcm/v1/o/0/cmd"
    try:
        await node.subscribe(Subscription("o", 0, Channel.CMD))
        got = []

        async def take(n: int) -> None:
            for _ in range(n):
                got.append(await asyncio.wait_for(node.receive(), 10))

        tracemalloc.start()  # what this process allocates while receiving (the senders are others)
        try:
            taking = asyncio.ensure_future(take(4))
            for name, qos in (("big", 1), ("edge", 1), ("big", 0), ("small", 1)):
                await _pub(mosquitto.port, topic, files[name], qos)
            await taking
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert [(d.address, bool(d.oversize), len(d.payload)) for d in got] == [
            (cmd, True, 0),
            (cmd, False, MAX_PACKET - 100),  # within the bound: whole
            (cmd, True, 0),
            (cmd, False, 5),
        ]
        assert got[0].oversize == 1 + 4 + 2 + len(topic) + 2 + BIG  # the whole packet: header, topic, packet id
        assert got[2].oversize == 1 + 4 + 2 + len(topic) + BIG  # QoS 0: no packet id
        assert node.oversize == 2
        assert node.skipped_bytes >= 2 * BIG - 2 * MAX_PACKET
        assert peak < 2 << 20, f"{peak / 2**20:.1f} MB allocated while receiving"
        # the connection goes on: QoS 1 acknowledged (else the broker would stop at its in-flight limit)
        got.clear()
        taking = asyncio.ensure_future(take(31))
        for _ in range(30):
            await _pub(mosquitto.port, topic, files["mid"], 1)  # 1.25 MB each
        await _pub(mosquitto.port, topic, files["small"], 1)
        await taking
        assert all(d.oversize for d in got[:30]) and got[30].payload == b"xxxxx"
        print(f"{kind}: 2 x 10 MB skipped, peak allocation {peak / 1024:.0f} KB while receiving them")
    finally:
        await node.close()


def _status(url: str, node: int) -> dict:
    r = run_cli("ctl", "--broker", url, "--fleet", "o", "--json", str(node), "status")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("connection", ["node", "carrier"])
async def test_ten_megabytes_on_a_command_topic_never_reach_the_node_whole(mosquitto, cli_process, connection):
    """A run on an open Mosquitto: 10 MB payloads to node 1's command topic. The run's peak
    resident memory (``VmHWM``, reset before) grows by far less than one payload; each is counted in
    the node's ``rx_rejected``; the node answers pings afterwards."""
    url = mosquitto.url
    run = cli_process("run", "--broker", url, "--nodes", "2", "--fleet", "o", "--connection", connection)
    run.wait_line("up: 2 nodes")
    await asyncio.sleep(1.0)
    before = await asyncio.to_thread(_status, url, 1)
    pid = run.proc.pid
    _reset_peak(pid)
    base = _kb(pid, "VmRSS")
    spam = MqttTransport(port=mosquitto.port, client_id="mcm-o-spammer")
    await spam.connect()
    try:
        for reliable in (True, False, True):
            await spam.publish(Address("o", 1, Channel.CMD), bytes(BIG), reliable=reliable)
    finally:
        await spam.close()
    for _ in range(50):
        await asyncio.sleep(0.2)
        after = await asyncio.to_thread(_status, url, 1)
        if after["counters"]["rx_rejected"] >= before["counters"]["rx_rejected"] + 3:
            break
    peak = _kb(pid, "VmHWM")
    assert after["counters"]["rx_rejected"] - before["counters"]["rx_rejected"] == 3, (before, after)
    assert (peak - base) < 4 * 1024, f"peak resident memory grew by {(peak - base) / 1024:.1f} MB"
    ping = run_cli("ctl", "--broker", url, "--fleet", "o", "--json", "1", "ping")
    assert ping.returncode == 0 and json.loads(ping.stdout)["ok"], ping.stderr
    other = await asyncio.to_thread(_status, url, 0)
    assert other["counters"]["rx_rejected"] == 0
    print(f"{connection}: 3 x 10 MB rejected, peak RSS {base / 1024:.1f} -> {peak / 1024:.1f} MB")
    run.close()
