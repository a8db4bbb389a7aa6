"""Reconnecting after the broker is lost: exponential backoff with full jitter, so that a fleet that
lost its broker at once does not come back in lockstep."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import subprocess
import time
from collections import Counter

import pytest

from mcm_firmware.backoff import Backoff


def test_delays_are_drawn_from_zero_to_a_ceiling_that_doubles_up_to_the_maximum():
    b = Backoff(initial=2.0, maximum=10.0, rng=random.Random(1))
    ceilings = []
    for _ in range(6):
        ceilings.append(b.ceiling())
        assert 0 <= b.next() <= ceilings[-1]
    assert ceilings == [2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    b.reset()
    assert b.ceiling() == 2.0 and Backoff(initial=1, maximum=5).ceiling() == 1
    with pytest.raises(ValueError):
        Backoff(initial=0)


def test_first_delays_of_a_fleet_spread_over_the_whole_first_window():
    rng = random.Random(7)
    first = [Backoff(rng=rng).next() for _ in range(20_000)]
    windows = Counter(int(d / 0.1) for d in first)
    assert max(windows.values()) / len(first) <= 0.05  # no 100 ms window holds more than 5 %
    assert min(first) < 0.05 and max(first) > Backoff().ceiling() - 0.05  # from at once to the ceiling


def _client_id(packet: bytes) -> str:
    """The client id of an MQTT 3.1.1 CONNECT's variable part (after the fixed header)."""
    name_len = int.from_bytes(packet[0:2], "big")
    at = 2 + name_len + 1 + 1 + 2  # protocol name, level, flags, keep-alive
    cid_len = int.from_bytes(packet[at : at + 2], "big")
    return packet[at + 2 : at + 2 + cid_len].decode()


def _received_ago(sock: socket.socket) -> float:
    """Seconds since the kernel received the connection's last data (``tcpi_last_data_recv`` of
    Linux's ``struct tcp_info``, in ms): when the CONNECT arrived, whenever this process got to
    read it (a listener held back by a loaded machine would otherwise stamp a backlog at once)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("=I", info, 52)[0] / 1000.0  # after 8 bytes of u8 and 9 u32 fields


async def _first_connects(port: int, seconds: float, t0: float) -> dict[str, float]:
    """Listen where the broker was and note when each client id's CONNECT first arrived (each
    attempt is then closed unanswered, as a broker that is still down would)."""
    first: dict[str, float] = {}

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(1)
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length)
            if head[0] >> 4 == 1:
                ago = _received_ago(writer.get_extra_info("socket"))
                first.setdefault(_client_id(body), time.monotonic() - ago - t0)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", port, reuse_address=True, backlog=4096)
    async with server:
        await asyncio.sleep(seconds)
    return first


@pytest.mark.slow
def test_a_thousand_nodes_that_lost_their_broker_retry_spread_out(mosquitto, cli_process):
    n = 1000
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", str(n), "--fleet", "storm", "--connection", "node")
    run.wait_line(f"up: {n} nodes connected", timeout=120)
    assert mosquitto.proc is not None
    mosquitto.proc.kill()  # every connection reset at once
    t0 = time.monotonic()
    mosquitto.proc.wait()
    first = asyncio.run(_first_connects(mosquitto.port, Backoff().ceiling() + 2.0, t0))
    t_stop = time.monotonic()
    run.proc.terminate()  # with the broker still gone
    assert run.proc.stderr is not None
    try:
        code = run.proc.wait(30)
    except subprocess.TimeoutExpired:  # a stop that hangs: what the run said, for the record
        run.proc.kill()
        run.proc.wait(10)
        pytest.fail(
            f"the run did not stop within 30 s of SIGTERM; its output: {run.lines[-20:]} {run.proc.stderr.read()[-3000:]}"
        )
    stop_s = time.monotonic() - t_stop
    err = run.proc.stderr.read()
    assert code == 0 and "Traceback" not in err, err[-2000:]  # a lost broker is no crash
    assert stop_s < 5.0
    ids = {f"mcm-storm-{i}" for i in range(n)}
    assert set(first) <= ids and len(first) >= 0.98 * n, f"{len(first)} of {n} nodes retried"
    windows = Counter(int(t / 0.1) for t in first.values())
    busiest = max(windows.values())
    per_second = Counter(int(t) for t in first.values())
    print(
        f"reconnect storm: {len(first)} of {n} nodes retried within {Backoff().ceiling() + 2.0:g} s, "
        f"busiest 100 ms window {busiest} ({busiest / len(first):.1%}), per second {sorted(per_second.items())}"
    )
    # the measured histogram, for the record when it fails
    assert busiest <= 0.05 * len(first), sorted(windows.items())
    assert max(first.values()) <= Backoff().ceiling() + 1.0


def test_monitor_follows_the_fleet_across_a_broker_restart(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "mr")
    run.wait_line("up: 2 nodes")
    mon = cli_process("monitor", "--broker", mosquitto.url, "--fleet", "mr", "--json")
    quitter = cli_process("monitor", "--broker", mosquitto.url, "--fleet", "mr", "--exit-on-loss")
    mon.wait_line('"type": "TELEMETRY"')
    quitter.wait_line("TELEMETRY")
    mosquitto.stop()
    assert quitter.proc.wait(20) == 1  # asked to exit on loss: it does, with a failure
    time.sleep(1.0)
    before = len(mon.lines)
    mosquitto.start()  # the same port: nodes and monitor come back by themselves
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any('"type": "BIRTH"' in line for line in mon.lines[before:]):
        time.sleep(0.1)
    assert mon.proc.poll() is None, "monitor exited on a lost broker"
    assert any('"type": "BIRTH"' in line for line in mon.lines[before:]), mon.lines[-5:]
    assert quitter.proc.stderr is not None and "mcm-emu" in quitter.proc.stderr.read()


def test_a_stop_on_the_embedded_broker_reaches_live_subscribers_and_does_not_wait_for_them(cli_process):
    import signal

    from ..conftest import free_port

    port = free_port()
    run = cli_process("run", "--nodes", "8", "--embedded-port", str(port), "--fleet", "es")
    run.wait_line("up: 8 nodes")
    mon = cli_process("monitor", "--broker", f"mqtt://127.0.0.1:{port}", "--fleet", "es")
    mon.wait_line("TELEMETRY")
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(10) == 0
    stop_s = time.monotonic() - t0
    deaths = [line for line in mon.lines if " DEATH " in line and "SHUTDOWN" in line]
    print(f"stop on the embedded broker: {len({line.split()[1] for line in deaths})} of 8 DEATHs, {stop_s:.2f} s")
    assert len({line.split()[1] for line in deaths}) == 8, deaths  # every node's DEATH, live
    assert stop_s < 2.0 and mon.proc.poll() is None, stop_s  # the monitor still connected did not hold the run


@pytest.mark.parametrize("connection", ["node", "carrier"])
def test_a_stop_on_mosquitto_reaches_live_subscribers_within_two_seconds(mosquitto, cli_process, connection):
    """As on the embedded broker: every node's DEATH (SHUTDOWN) reaches a subscriber that is live
    before ``run`` exits, and ``run`` exits within 2 s of SIGTERM with that subscriber connected."""
    import signal

    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "8", "--fleet", "ms", "--connection", connection)
    run.wait_line("up: 8 nodes")
    mon = cli_process("monitor", "--broker", mosquitto.url, "--fleet", "ms")
    mon.wait_line("TELEMETRY")
    t0 = time.monotonic()
    run.proc.send_signal(signal.SIGTERM)
    assert run.proc.wait(10) == 0
    stop_s = time.monotonic() - t0
    time.sleep(0.5)  # what the monitor printed before the run exited is read by now
    deaths = [line for line in mon.lines if " DEATH " in line and "SHUTDOWN" in line]
    print(f"stop on Mosquitto ({connection}): {len({line.split()[1] for line in deaths})} of 8 DEATHs, {stop_s:.2f} s")
    assert len({line.split()[1] for line in deaths}) == 8, deaths
    assert stop_s < 2.0 and mon.proc.poll() is None, stop_s


class StallingProxy:
    """A TCP proxy in front of the broker that, when stalled, stops forwarding either way without
    closing anything: a half-open link, as a dead switch port or a NAT that forgot the flow."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.stalled = False
        self.server: asyncio.base_events.Server | None = None

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                if not self.stalled:
                    w.write(data)
                    await w.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            br, bw = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(self._pipe(r, bw), self._pipe(br, w), return_exceptions=True)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]


@pytest.mark.slow
def test_a_half_open_link_is_noticed_and_healed_without_a_spurious_death(mosquitto, cli_process):
    from mcm_firmware.protocol import Birth, Death, DeathReason, decode
    from mcm_firmware.transport import Channel, Subscription
    from mcm_firmware.transport.mqtt import MqttTransport

    keepalive = MqttTransport().keepalive

    async def main() -> tuple[list[tuple[float, object]], float]:
        proxy = StallingProxy(mosquitto.port)
        port = await proxy.start()
        run = cli_process("run", "--broker", f"mqtt://127.0.0.1:{port}", "--nodes", "1", "--fleet", "ho")
        watcher = MqttTransport(port=mosquitto.port, client_id="ho-watcher")
        await watcher.connect()
        await watcher.subscribe(Subscription("ho", 0, Channel.STATE))
        seen: list[tuple[float, object]] = []

        async def watch() -> None:
            while True:
                d = await watcher.receive()
                seen.append((time.monotonic(), decode(d.payload)))

        task = asyncio.create_task(watch())
        while not any(isinstance(m, Birth) for _, m in seen):  # noqa: ASYNC110 - polls what the watcher collects
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        t0 = time.monotonic()
        proxy.stalled = True
        await asyncio.sleep(1.5 * keepalive + 5)
        proxy.stalled = False  # healed: new connections get through
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(isinstance(m, Birth) and t > t0 for t, m in seen):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watcher.close()
        assert proxy.server is not None
        proxy.server.close()
        run.close()
        return [(t - t0, m) for t, m in seen if t > t0], t0

    after, _ = asyncio.run(main())
    deaths = [(t, m) for t, m in after if isinstance(m, Death)]
    births = [(t, m) for t, m in after if isinstance(m, Birth)]
    assert len(deaths) == 1, after  # one DEATH for the lost connection, none spurious after the heal
    t_death, death = deaths[0]
    assert death.reason is DeathReason.CONNECTION_LOST and t_death <= 1.5 * keepalive + 1.0
    assert births and births[0][0] > t_death and births[0][1].bdseq > death.bdseq  # a new BIRTH replaces it


@pytest.mark.slow
def test_monitor_notices_a_half_open_link_and_follows_the_fleet_once_it_heals(mosquitto, cli_process):
    """``monitor`` behind a link that stops forwarding (nothing closes): with ``--exit-on-loss`` it
    exits 1 within its keep-alive (its probe's: ``transport/mqtt_probe.py``); without, it connects
    again by itself and prints the fleet's telemetry once the link heals."""
    from mcm_firmware.transport.mqtt import MqttTransport
    from mcm_firmware.transport.mqtt_probe import PERIOD_S

    keepalive = MqttTransport().keepalive

    async def main() -> tuple[float, int, int]:
        proxy = StallingProxy(mosquitto.port)
        port = await proxy.start()
        url = f"mqtt://127.0.0.1:{port}"
        cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "mh")
        quitter = cli_process("monitor", "--broker", url, "--fleet", "mh", "--exit-on-loss")
        follower = cli_process("monitor", "--broker", url, "--fleet", "mh")
        for mon in (quitter, follower):
            await asyncio.to_thread(mon.wait_line, "TELEMETRY", 30)
        proxy.stalled = True
        t0 = time.monotonic()
        while quitter.proc.poll() is None and time.monotonic() - t0 < 1.5 * keepalive + 10:  # noqa: ASYNC110 - a subprocess
            await asyncio.sleep(0.1)
        noticed = time.monotonic() - t0
        code = quitter.proc.poll()
        proxy.stalled = False
        before = len(follower.lines)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("TELEMETRY" in line for line in follower.lines[before:]):  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        fresh = sum("TELEMETRY" in line for line in follower.lines[before:])
        assert proxy.server is not None
        proxy.server.close()
        return noticed, -1 if code is None else code, fresh

    noticed, code, fresh = asyncio.run(main())
    print(
        f"monitor on a half-open link: exited {noticed:.1f} s after the stall; telemetry again after the heal: {fresh}"
    )
    # the probe's bound (a keep-alive after the broker's last packet, seen within two of its
    # periods), and a second and a half for the monitor to exit on a busy machine
    assert code == 1 and noticed <= keepalive + 2 * PERIOD_S + 1.5, (code, noticed)
    assert fresh > 0  # the follower connected again by itself


@pytest.mark.slow
def test_crash_and_reboot_loops_leak_no_descriptor(mosquitto, cli_process):
    """Every node crashed and rebooted twice: the run holds as many file descriptors after as
    before (each connection closed, none left behind) and prints no traceback."""
    import os

    from mcm_firmware.host.discovery import read_state
    from mcm_firmware.protocol import Birth
    from mcm_firmware.transport import transport_factory

    from ..conftest import run_cli

    n = 20
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", str(n), "--fleet", "fd", "--connection", "node")
    run.wait_line(f"up: {n} nodes")
    time.sleep(1.0)

    def fds() -> int:
        return len(os.listdir(f"/proc/{run.proc.pid}/fd"))

    before = fds()
    for boots, kind in enumerate(("crash 1", "reboot", "crash 1"), start=2):  # every node at once
        r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "fd", f"0-{n - 1}", "inject", *kind.split())
        assert r.returncode == 0, r.stderr
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = asyncio.run(read_state(transport_factory(mosquitto.url), "fd"))
            if all(isinstance(state.nodes.get(i), Birth) and state.nodes[i].boot_count == boots for i in range(n)):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"not every node came back from boot {boots}")
    time.sleep(2.0)
    after = fds()
    assert after <= before + 2, (before, after)  # a descriptor or two of the moment may differ
    run.proc.terminate()
    assert run.proc.wait(30) == 0
    assert run.proc.stderr is not None and "Traceback" not in run.proc.stderr.read()


@pytest.mark.slow
def test_commands_sent_around_a_broker_restart_are_all_executed_once(mosquitto, cli_process):
    """Nodes use clean sessions, so a command the broker took while a node was not yet subscribed
    again is not queued for it; the equivalent of a persistent session is the host's: it waits for
    a node that is reconnecting to be born again and sends then, with the same request id, and the
    node runs a request id once (docs/reliability.md). Commands sent right after the broker's
    return through ``HostClient`` with a deadline of the backoff cap + 4 s are all answered and in
    force; every node is back (its retained state a BIRTH of a new connection) within the backoff
    cap + the connect timeout of the broker's return; a command delivered twice runs once."""
    import json
    import threading

    from mcm_firmware.host.client import HostClient
    from mcm_firmware.host.commands import COMMANDS
    from mcm_firmware.host.discovery import read_state
    from mcm_firmware.protocol import Birth, Command, FrameFlags, Response, decode, encode
    from mcm_firmware.transport import Address, Channel, Subscription, transport_factory
    from mcm_firmware.transport.mqtt import MqttTransport

    from ..conftest import run_cli

    n = 64
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", str(n), "--fleet", "rs", "--connection", "node")
    run.wait_line(f"up: {n} nodes")
    mosquitto.stop()
    time.sleep(5.0)
    mosquitto.start()  # right after the restart: the nodes are still waiting out their backoff
    t_back = time.monotonic()
    # a node's last attempt before the return failed at once (refused); its next comes within the
    # cap, and an attempt takes at most the transport's connect timeout (5 s)
    bound = Backoff().maximum + MqttTransport(port=mosquitto.port).connect_timeout
    births: dict[int, float] = {}  # node -> when its live BIRTH after the restart arrived
    done = threading.Event()

    async def collect() -> None:
        watcher = MqttTransport(port=mosquitto.port, client_id="rs-births")
        await watcher.connect()
        await watcher.subscribe(Subscription("rs", None, Channel.STATE))
        try:
            while not done.is_set() and len(births) < n:
                try:
                    d = await asyncio.wait_for(watcher.receive(), 0.5)
                except TimeoutError:
                    continue
                if isinstance(decode(d.payload), Birth):
                    births.setdefault(d.address.node, time.monotonic())
        finally:
            await watcher.close()

    collector = threading.Thread(target=asyncio.run, args=(collect(),))
    collector.start()
    spec = COMMANDS["set-power-cap"]
    targets = range(0, n, 8)

    async def commands() -> tuple[list[Response], dict[int, float], HostClient]:
        host = HostClient(
            MqttTransport(port=mosquitto.port, client_id="rs-host"), fleet="rs", timeout=Backoff().maximum + 4.0
        )
        async with host:
            answers = await asyncio.gather(*(host.request(node, spec.op, spec.parse(["900"])) for node in targets))
            caps = {node: (await host.status(node)).snapshot.power_cap_w for node in targets}
        return answers, caps, host

    try:
        answers, caps, host = asyncio.run(commands())
        while len(births) < n and time.monotonic() < t_back + bound + 2.0:
            time.sleep(0.2)
    finally:
        done.set()
        collector.join(10)
    assert len(answers) == 8 and caps == dict.fromkeys(targets, 900.0), (answers, caps)  # 8 of 8 executed
    # every node back: its retained state a BIRTH of a connection made after the restart (the
    # broker kept nothing), whether or not the collector, connecting after the broker, saw it live
    state = asyncio.run(read_state(transport_factory(mosquitto.url), "rs"))
    born = sorted(node for node, st in state.nodes.items() if isinstance(st, Birth) and st.bdseq >= 2)
    back = sorted(t - t_back for t in births.values())
    print(
        f"broker back: {len(born)} of {n} nodes born again, {len(back)} BIRTHs seen live, the last "
        f"{back[-1] if back else 0:.1f} s after it; 8 commands answered, sent again on a BIRTH {host.resent_on_birth}"
    )
    assert born == list(range(n)), sorted(set(range(n)) - set(born))
    assert not back or back[-1] <= bound + 1.0, back[-5:]

    # a command delivered twice runs once: A sets 800 W, B 900 W, then A again (as a retry would,
    # or a broker delivering it twice): answered from the node's cache, the cap stays 900 W
    spec = COMMANDS["set-power-cap"]

    async def twice() -> list[int]:
        tr = MqttTransport(port=mosquitto.port, client_id="rs-twice")
        await tr.connect()
        await tr.subscribe(Subscription("rs", 0, Channel.RSP))
        got: list[int] = []
        try:
            for seq, (rid, watts, retry) in enumerate(((77, 800, False), (78, 900, False), (77, 800, True))):
                flags = int(FrameFlags.HOST) | (int(FrameFlags.RETRY) if retry else 0)
                frame = Command(
                    node_id=0,
                    seq=seq,
                    timestamp_ns=time.time_ns(),
                    flags=flags,
                    request_id=rid,
                    op=spec.op,
                    args=spec.parse([str(watts)]),
                )
                await tr.publish(Address("rs", 0, Channel.CMD), encode(frame), reliable=True)
                while True:
                    msg = decode((await asyncio.wait_for(tr.receive(), 10)).payload)
                    if isinstance(msg, Response) and msg.request_id == rid:
                        got.append(rid)
                        break
        finally:
            await tr.close()
        return got

    def duplicates() -> tuple[float, int]:
        r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "rs", "--json", "0", "status", timeout=30)
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        return st["power_cap_w"], st["runtime"]["rx_duplicates"]

    _, dup0 = duplicates()
    assert asyncio.run(twice()) == [77, 78, 77]  # every delivery answered
    cap, dup1 = duplicates()
    assert cap == 900.0 and dup1 - dup0 == 1, (cap, dup0, dup1)  # the repeat was not run again
