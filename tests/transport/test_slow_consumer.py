"""A slow consumer: a node whose connection to the broker stops draining (a proxy in front of the
broker stops reading what the node sends, so the node's socket fills) while commands flood in at
ten times the node's command rate. Memory stays bounded, the control loops run on, every frame lost
is counted in a counter of its own kind (commands refused, responses dropped, telemetry dropped or
decimated), in ``ctl status`` and in the metrics alike, telemetry is shed before any response is,
no response is sent twice, and the node carries on over the same connection once the link drains.
The other nodes of the run, a fault in force on each, keep the firmware's guarantees meanwhile
(``firmware_guarantees``)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcm_firmware.protocol import Command, FrameFlags, Op, Response, decode, encode
from mcm_firmware.runtime.node import COMMAND_BURST, COMMAND_RATE, OUTBOX_LIMIT
from mcm_firmware.transport import Address, Channel, Subscription
from mcm_firmware.transport.mqtt_raw import RawMqttTransport

from ..conftest import free_port, run_cli
from . import firmware_guarantees

FLEET = "sc"
STALL_S = 6.0  # below the keep-alive (10 s): a slow link, not a dead one
FLOOD_RATE = 10 * COMMAND_RATE
FLOOD_ID = 1_000_000  # request ids of the flood start here


class HoldingProxy:
    """A TCP proxy in front of the broker that, when holding, stops reading what the clients send
    (broker to client still flows): the client's socket fills, as behind a consumer that cannot keep
    up. Small socket buffers on its side, so that the back-pressure reaches the client quickly."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0
        self._serving: set[asyncio.Task[object]] = set()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter, *, upstream: bool) -> None:
        try:
            while True:
                if upstream:
                    await self.flowing.wait()
                data = await r.read(4096)
                if not data:
                    break
                w.write(data)
                await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        try:
            br, bw = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            w.close()
            return
        try:
            await asyncio.gather(self._pipe(r, bw, upstream=True), self._pipe(br, w, upstream=False))
        finally:
            w.close()
            bw.close()

    async def start(self) -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited by what it accepts
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._serve, sock=sock, limit=4096)
        return sock.getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in self._serving:
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def scrape(port: int) -> dict[str, float]:
    """The run's drop counters from its metrics: telemetry lost (dropped or decimated), and each
    kind of frame refused or dropped."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("fleet") != FLEET:
                continue
            if family.name == "mcm_run_telemetry_frames" and s.name.endswith("_total"):
                out["tlm_" + s.labels["outcome"]] = s.value
            elif family.name == "mcm_run_frames_refused" and s.name.endswith("_total"):
                out[s.labels["kind"]] = s.value
    return out


def ctl(url: str, node: int, *argv: str) -> dict:
    r = run_cli("ctl", "--broker", url, "--fleet", FLEET, "--json", "--timeout", "10", str(node), *argv)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def flood_frame(i: int) -> bytes:
    return encode(
        Command(
            node_id=0,
            seq=i,
            timestamp_ns=time.time_ns(),
            flags=int(FrameFlags.HOST),
            request_id=FLOOD_ID + i,
            op=Op.PING,
        )
    )


@pytest.mark.slow
@pytest.mark.parametrize("connection", ["node", "carrier"])
async def test_a_slow_consumer_under_a_command_flood_sheds_telemetry_first_and_counts_every_drop(
    mosquitto, cli_process, connection
):
    # the broker's own limit (1,000 messages waiting a client, beyond which it drops) raised: what
    # the test counts is the node's, not what the broker would drop for a busy observer
    mosquitto.stop()
    with mosquitto.conf.open("a") as conf:
        conf.write("max_queued_messages 100000\n")
    mosquitto.start()
    proxy = HoldingProxy(mosquitto.port)
    port = await proxy.start()
    metrics_port = free_port()
    run = cli_process(
        *("run", "--broker", f"mqtt://127.0.0.1:{port}", "--nodes", "4", "--fleet", FLEET),
        *("--connection", connection, "--metrics-port", str(metrics_port)),
    )
    observer = RawMqttTransport(port=mosquitto.port, client_id="sc-observer")
    flooder = RawMqttTransport(port=mosquitto.port, client_id="sc-flooder")
    answered: list[int] = []  # request ids of the responses node 0 published, in order
    telemetry: list[float] = []  # when node 0's telemetry arrived

    async def observe() -> None:
        while True:
            d = await observer.receive()
            if d.address.channel is Channel.TLM:
                telemetry.append(time.monotonic())
            elif d.address.channel is Channel.RSP:
                msg = decode(d.payload)
                assert isinstance(msg, Response)
                answered.append(msg.request_id)

    watcher: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(run.wait_line, "up: 4 nodes")
        await observer.connect()
        await observer.subscribe(Subscription(FLEET, 0, Channel.RSP))
        await observer.subscribe(Subscription(FLEET, 0, Channel.TLM))
        await flooder.connect()
        watcher = asyncio.create_task(observe(), name="sc-observer")
        await asyncio.sleep(2.0)  # past start-up
        url = mosquitto.url
        await firmware_guarantees.inject(lambda node, *argv: ctl(url, node, *argv))  # nodes 1 to 3
        before = await asyncio.to_thread(ctl, url, 0, "status")
        t0 = time.monotonic()  # after the status was read
        counts0 = await asyncio.to_thread(scrape, metrics_port)
        rss0 = rss_mb(run.proc.pid)

        connections = proxy.connections
        proxy.flowing.clear()  # the node's connection stops draining ...
        sent, samples, rss_peak = 0, [], rss0
        cmd = Address(FLEET, 0, Channel.CMD)
        t_stall = time.monotonic()
        while (elapsed := time.monotonic() - t_stall) < STALL_S:  # ... while commands flood in
            for _ in range(min(int(FLOOD_RATE * elapsed) - sent, 200)):  # a late turn catches up by 0.1 s at most
                await flooder.publish(cmd, flood_frame(sent))
                sent += 1
            samples.append(await asyncio.to_thread(scrape, metrics_port))
            rss_peak = max(rss_peak, rss_mb(run.proc.pid))
            await asyncio.sleep(0.05)
        proxy.flowing.set()  # drains again
        t_heal = time.monotonic()

        deadline = time.monotonic() + 30  # until every flood command is answered or counted dropped
        while time.monotonic() < deadline:
            counts = await asyncio.to_thread(scrape, metrics_port)
            settled = (
                len({r for r in answered if FLOOD_ID <= r < FLOOD_ID + sent})
                + counts["responses_dropped"]
                - counts0["responses_dropped"]
            )
            if settled >= sent:
                break
            await asyncio.sleep(0.5)
        t1 = time.monotonic()  # the status below is taken after this
        after = await asyncio.to_thread(ctl, url, 0, "status")
        ping = await asyncio.to_thread(ctl, url, 0, "ping")
        firmware = await firmware_guarantees.check(lambda node, *argv: ctl(url, node, *argv))
        counts = await asyncio.to_thread(scrape, metrics_port)
        await asyncio.sleep(1.0)
        rss1 = rss_mb(run.proc.pid)
        run.signal(signal.SIGTERM)
        code = await asyncio.to_thread(run.wait)
    finally:
        if watcher is not None:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        await observer.close()
        await flooder.close()
        await proxy.stop()

    rt0, rt = before["runtime"], after["runtime"]
    flood = {r for r in answered if FLOOD_ID <= r < FLOOD_ID + sent}
    rsp_dropped = rt["dropped"]["responses"] - rt0["dropped"]["responses"]
    refused = rt["refused"]["commands"] - rt0["refused"]["commands"]
    tlm_lost = (rt["telemetry"]["dropped"] + rt["telemetry"]["decimated"]) - (
        rt0["telemetry"]["dropped"] + rt0["telemetry"]["decimated"]
    )
    print(
        f"slow consumer ({connection}): {sent} commands in {STALL_S:g} s, {len(flood)} answered, "
        f"{rsp_dropped} responses dropped, {refused} refused, telemetry lost {tlm_lost}, "
        f"RSS {rss0:.1f} -> peak {rss_peak:.1f} -> {rss1:.1f} MB, "
        f"tick late max {rt['tick_late_ms']['max']:.1f} ms; {firmware}"
    )
    # every command was answered or its response counted dropped: none silent, none answered twice
    assert len(flood) + rsp_dropped == sent, (len(flood), rsp_dropped, sent)
    assert len(answered) == len(set(answered)), "a response was sent twice"
    # the flood overflowed the outbox: responses were dropped, and counted
    assert rsp_dropped >= sent - OUTBOX_LIMIT - FLOOD_RATE * 1.0, (rsp_dropped, sent)
    # the command rate held: the burst and the rate ran, the rest refused (answered or dropped)
    assert sent - refused <= COMMAND_BURST + COMMAND_RATE * (STALL_S + 2.0), (sent, refused)
    # telemetry was lost (a period at least of the stall's), and never after a response was dropped
    assert tlm_lost >= STALL_S * 10 / 2, tlm_lost
    for s in samples:
        lost = s["tlm_dropped"] + s["tlm_decimated"] - counts0["tlm_dropped"] - counts0["tlm_decimated"]
        assert s["responses_dropped"] == counts0["responses_dropped"] or lost > 0, (s, counts0)
    assert any(s["responses_dropped"] > counts0["responses_dropped"] for s in samples), samples[-1]
    # status and metrics say the same (the metrics read last)
    assert counts["responses_dropped"] - counts0["responses_dropped"] >= rsp_dropped
    assert counts["commands_refused"] - counts0["commands_refused"] >= refused
    # bounded memory, and the control loops ran on
    assert rss_peak - rss0 < 20 and rss1 - rss0 < 20, (rss0, rss_peak, rss1)
    assert after["uptime_s"] - before["uptime_s"] >= t1 - t0 - 0.5, (before["uptime_s"], after["uptime_s"], t1 - t0)
    assert rt["tick_late_ms"]["max"] < 1000, rt["tick_late_ms"]
    # and it carried on over the same connection: answers, fresh telemetry, nothing left queued
    assert ping["ok"] and rt["tx_queued"] == 0
    assert any(t > t_heal + 1.0 for t in telemetry), "no telemetry after the link drained"
    assert after["counters"]["reconnects"] == before["counters"]["reconnects"]
    assert proxy.connections == connections, "a connection was made again"
    assert code == 0
    assert run.proc.stderr is not None and "Traceback" not in run.proc.stderr.read()


class TelemetryHoldingProxy(HoldingProxy):
    """A :class:`HoldingProxy` that holds a carrier's telemetry connection only (its client id ends
    in ``-tlm``): commands, answers and events flow on the control connection all along."""

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        first = await r.read(4096)  # the CONNECT, whole: a client sends nothing before its CONNACK
        held = first[:1] == b"\x10" and b"-tlm" in first
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._serving.add(task)
        br, bw = await asyncio.open_connection("127.0.0.1", self.broker_port)
        bw.write(first)

        async def up() -> None:
            try:
                while True:
                    if held:
                        await self.flowing.wait()
                    data = await r.read(4096)
                    if not data:
                        break
                    bw.write(data)
                    await bw.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass

        async def down() -> None:
            try:
                while data := await br.read(4096):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass

        try:
            await asyncio.gather(up(), down())
        finally:
            w.close()
            bw.close()


@pytest.mark.slow
async def test_a_carrier_whose_telemetry_connection_alone_is_slow_drops_stale_telemetry_and_counts_it(
    mosquitto, cli_process
):
    """Only the telemetry connection stops draining (the control connection is fine, so telemetry
    does not yield to answers): slots are refused, counted dropped, once what waits for the socket
    is older than a telemetry period (0.5 s at least), instead of queueing up to 4 MB that arrives
    seconds late. A frame still arrives late by what was written before the stall was seen; at most
    a second's worth does."""
    from mcm_firmware.protocol.codec import FrameError, envelope
    from mcm_firmware.transport.mqtt_fast import FastSubscriber

    nodes, rate = 50, 10  # 500 frames/s, about 1 MB over the stall: below the 4 MB backlog bound
    proxy = TelemetryHoldingProxy(mosquitto.port)
    port = await proxy.start()
    metrics_port = free_port()
    run = cli_process(
        *("run", "--broker", f"mqtt://127.0.0.1:{port}", "--nodes", str(nodes), "--fleet", FLEET),
        *("--connection", "carrier", "--metrics-port", str(metrics_port)),
    )
    offsets: list[tuple[float, int]] = []  # (arrival, arrival - timestamp in ns) of every frame

    def on_frame(topic: bytes, payload: memoryview) -> None:
        try:
            ts = envelope(payload).timestamp_ns
        except FrameError:
            return
        offsets.append((time.monotonic(), time.time_ns() - ts))

    sub = FastSubscriber(
        host="127.0.0.1",
        port=mosquitto.port,
        client_id="sc-tlm-observer",
        topic_filter=f"mcm/v1/{FLEET}/+/tlm",
        on_publish=on_frame,
        batch_s=0.0,
    )
    try:
        await asyncio.to_thread(run.wait_line, f"up: {nodes} nodes")
        await sub.start()
        await asyncio.sleep(3.0)
        counts0 = await asyncio.to_thread(scrape, metrics_port)
        connections = proxy.connections
        t_stall = time.monotonic()
        proxy.flowing.clear()
        await asyncio.sleep(STALL_S)
        answer = await asyncio.to_thread(ctl, mosquitto.url, 3, "ping")  # the control connection flows
        counts1 = await asyncio.to_thread(scrape, metrics_port)
        proxy.flowing.set()
        t_heal = time.monotonic()
        await asyncio.sleep(3.0)
        counts2 = await asyncio.to_thread(scrape, metrics_port)
        run.signal(signal.SIGTERM)
        code = await asyncio.to_thread(run.wait)
    finally:
        sub.close()
        await proxy.stop()

    base = sorted(off for t, off in offsets if t < t_stall)
    baseline = base[len(base) // 2]  # the clocks' offset and the usual transit, in ns
    late = [(t, (off - baseline) / 1e9) for t, off in offsets if t >= t_stall]
    stale = [lag for _, lag in late if lag > 1.0]
    dropped = counts1["tlm_dropped"] - counts0["tlm_dropped"]
    after = [lag for t, lag in late if t > t_heal + 1.0]
    print(
        f"telemetry connection held {STALL_S:g} s ({nodes} nodes at {rate} Hz): {dropped:.0f} frames counted "
        f"dropped, {len(stale)} arrived over 1 s late (latest {max((lag for _, lag in late), default=0):.1f} s), "
        f"{len(after)} fresh after the heal"
    )
    assert code == 0 and answer["ok"]
    assert proxy.connections == connections  # no reconnect: the same telemetry connection carried on
    # shed, and counted: all but the first second of the stall's frames (before: none, all queued)
    assert dropped >= (STALL_S - 1.5) * nodes * rate, (dropped, counts0, counts1)
    # what arrived late is what was written before the stall was seen: a second's worth at most
    # (before: every frame of the stall, 3,000, up to 6 s late)
    assert len(stale) <= nodes * rate * 1.0, (len(stale), max(lag for lag in stale))
    # and after the heal telemetry is fresh again, and nothing more is dropped
    assert after and max(after) < 1.0, max(after, default=None)
    assert counts2["tlm_dropped"] - counts1["tlm_dropped"] <= nodes * rate * 1.0, (counts1, counts2)
