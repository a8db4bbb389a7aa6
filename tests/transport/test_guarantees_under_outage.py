"""The firmware keeps its guarantees while the fleet's infrastructure fails: with faults in force
(a failed pump, a failed sensor, hot coolant), the broker killed for 5 s and back, the control
loops run on (the plant's time keeps up with the wall), the pump fails over, the zone without its
sensor goes failsafe, the hot module slows down or shuts down before any die passes its shutdown
threshold, and every node reports it all once the link is back (nothing dropped). A subscriber
that follows the fleet throughout sees sequence numbers run without a gap except across the
outage."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import threading
import time

import pytest

from mcm_firmware.backoff import Backoff
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import Death, FrameError, decode
from mcm_firmware.transport import Channel, Subscription, TransportError
from mcm_firmware.transport.mqtt_raw import RawMqttTransport

from ..conftest import run_cli


class SeqRecorder:
    """Follows the fleet from a thread of its own, connecting again at once whenever the broker is
    back: when each frame a node published (not retained) arrived, from which node, with which
    sequence number, and when each subscription took effect."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frames: list[tuple[float, int, int]] = []  # (arrival, node, seq)
        self.subscribed: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._follow()), name="seq-recorder")

    async def _follow(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            tr = RawMqttTransport(port=self.port, client_id=f"g-seq-{attempt}")
            try:
                await tr.connect()
                await tr.subscribe(Subscription("g"))
                self.subscribed.append(time.monotonic())
                while not self._stop.is_set():
                    try:
                        d = await asyncio.wait_for(tr.receive(), 0.2)
                    except TimeoutError:
                        continue
                    if d.retained or d.address.channel is Channel.CMD:  # a host's frames count on
                        continue
                    try:
                        msg = decode(d.payload)
                    except FrameError:
                        continue
                    if isinstance(msg, Death):  # a will: the broker's, numbered when its connection was made
                        continue
                    self.frames.append((time.monotonic(), msg.node_id, msg.seq))
            except TransportError:
                await asyncio.sleep(0.1)
            finally:
                await tr.close()

    def __enter__(self) -> SeqRecorder:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.subscribed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.subscribed, "the recorder could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def gaps(self) -> list[tuple[int, int, int, float, float]]:
        """(node, seq before, seq after, arrival before, arrival after) of every run of sequence
        numbers that never arrived."""
        by_node: dict[int, list[tuple[int, float]]] = {}
        for t, node, seq in self.frames:
            by_node.setdefault(node, []).append((seq, t))
        out = []
        for node, seen in by_node.items():
            seen.sort()
            for (s0, t0), (s1, t1) in itertools.pairwise(seen):
                if s1 - s0 > 1:
                    out.append((node, s0, s1, t0, t1))
        return out


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
    with SeqRecorder(mosquitto.port) as rec:
        uptime0 = ctl(url, 3, "status")["uptime_s"]
        t0 = time.monotonic()  # the status was taken before this
        ctl(url, 0, "inject", "pump-fail", "A")
        ctl(url, 1, "inject", "sensor-failed", "die:1")
        ctl(url, 2, "inject", "inlet-step", "45")
        t_down = time.monotonic()
        mosquitto.stop()  # the consequences unfold while the nodes have no broker
        t_stopped = time.monotonic()
        time.sleep(5.0)
        t_restart = time.monotonic()
        mosquitto.start()
        t_up = t1 = time.monotonic()  # the status below is taken after this
        statuses = {n: ctl(url, n, "status") for n in (3, 0, 1, 2)}
        stats = {n: ctl(url, n, "stats") for n in range(4)}
        time.sleep(1.0)  # a second more of every node's frames

    # sequence numbers ran without a gap but across the outage: the last frame before a gap came
    # at most 2 s before the broker went (and before it was gone), the first after it once
    # the broker was back, within the reconnection backoff's cap and 2 s of the broker's (and the
    # recorder's) return
    back = max(t_up, rec.subscribed[-1])
    gaps = rec.gaps()
    print(
        f"sequence gaps: {len(gaps)} in {len(rec.frames)} frames, "
        + ", ".join(f"node {n}: {s0}..{s1} ({a - t_down:+.1f} s .. {b - t_down:+.1f} s)" for n, s0, s1, a, b in gaps)
    )
    assert {n for _, n, _ in rec.frames} == {0, 1, 2, 3}
    for node, s0, s1, before, after in gaps:
        assert t_down - 2.0 <= before <= t_stopped and t_restart <= after <= back + Backoff().maximum + 2.0, (
            node,
            s0,
            s1,
            before - t_down,
            after - t_down,
        )
    for node in range(4):  # and each node's frames came before and after the outage
        times = [t for t, n, _ in rec.frames if n == node]
        assert min(times) < t_down and max(times) > back, node

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
