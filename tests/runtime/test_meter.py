"""The run measures itself: tick lateness, telemetry due and what became of it, the event loop's
lag; a fleet that falls behind in real time keeps wall-clock time and says so."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from mcm_firmware.clock import RealClock
from mcm_firmware.host.client import HostClient
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import Op
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.runtime.meter import DECIMATED, DROPPED, DUE, SENT, Quantiles, RunMeter, Samples
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport

from ..conftest import run_cli


def test_samples_keep_a_window_and_exact_quantiles():
    s = Samples(size=8)
    for x in range(20):
        s.record(float(x))
    assert s.count == 20 and s.max_total == 19.0
    assert list(s.since(0)) == [12.0, 13, 14, 15, 16, 17, 18, 19]  # the newest 8 of all 20
    mark = s.count
    s.record(100.0)
    assert list(s.since(mark)) == [100.0] and list(s.recent(3)) == [18.0, 19.0, 100.0]
    q = Quantiles.of(np.arange(101.0))
    assert (q.n, q.p50, q.p99, q.max) == (101, 50.0, 99.0, 100.0)


def test_verdict_names_what_fell_behind():
    m = RunMeter(tick_period_s=0.05)
    counters = np.zeros((4, 1), np.int64)
    m.tlm.append(counters)
    for _ in range(100):
        m.tick("p", 0.001, 1)
    counters[DUE] = 500
    counters[SENT] = 500
    assert m.verdict(m.next_window()) is None
    for _ in range(100):
        m.tick("p", 0.2, 5)
    counters[DUE] += 500
    counters[SENT] += 400
    counters[DROPPED] += 100
    verdict = m.verdict(m.next_window())
    assert verdict is not None
    assert "ticks late by 200 ms at p99" in verdict and "400 tick periods integrated late" in verdict
    assert "telemetry 400/500 sent (80.0%)" in verdict


def test_telemetry_counters_in_virtual_time(on_fleet):
    async def fn(fleet, bus, host):
        await asyncio.sleep(10)
        before = fleet.tlm["colossus-mcm"].copy()
        fleet.nodes[1].crash()  # no longer running: nothing due
        await asyncio.sleep(5)
        stats = (await host.request(0, Op.STATS)).data
        return before, fleet.tlm["colossus-mcm"].copy(), stats

    before, after, stats = on_fleet(fn, settle=1)
    due, sent = before[DUE], before[SENT]
    assert (due >= 100).all() and (np.abs(due - sent) <= 1).all()  # 10 Hz, all sent but the one in flight
    assert after[DUE, 1] - before[DUE, 1] <= 1 and after[DUE, 0] - before[DUE, 0] >= 50
    assert stats.tlm_due == after[DUE, 0] and stats.tlm_sent >= stats.tlm_due - 1
    assert stats.tlm_dropped == after[DROPPED, 0] and stats.tlm_decimated == after[DECIMATED, 0]
    assert stats.ticks >= 300  # virtual time: every tick on time
    assert stats.tick_late_max_us == 0 and stats.periods_late == 0


async def test_a_stalled_loop_keeps_wall_clock_time_and_is_measured():
    bus = LoopbackBus()
    fleet = Fleet.uniform(
        nodes=2,
        profile=load_profile("colossus-mcm"),
        fleet="m",
        clock=RealClock(),
        transport_factory=lambda cid: LoopbackTransport(bus, client_id=cid),
    )
    shard = fleet.shards["colossus-mcm"]
    await fleet.start()
    try:
        await fleet.wait_connected(5)
        await asyncio.sleep(0.3)
        t_plant0, t_wall0 = shard.t, time.monotonic()
        time.sleep(0.5)  # noqa: ASYNC251 - the process stalls: ten tick periods pass without a tick
        await asyncio.sleep(0.3)
        lived = shard.t - t_plant0
        wall = time.monotonic() - t_wall0
        async with HostClient(LoopbackTransport(bus), fleet="m", timeout=2) as host:
            stats = (await host.request(0, Op.STATS)).data
    finally:
        await fleet.stop()
    assert lived == pytest.approx(wall, abs=0.15)  # the modules lived the stall, not skipped it
    assert shard.periods_late >= 8 and stats.periods_late == shard.periods_late
    assert stats.tick_late_max_us >= 400_000 and stats.loop_lag_max_us >= 300_000
    w = fleet.meter.since_start()
    assert w.periods_merged == shard.periods_late and "integrated late" in fleet.meter.verdict(w)


@pytest.mark.slow
def test_run_that_cannot_keep_up_says_so(mosquitto):
    # 2,000 modules at 100x real time need 4,000 ticks of a 2,000-module shard per second: no
    # machine keeps that, so the run must say it fell behind, and the modules still live its time
    out = run_cli(
        "run",
        "--broker",
        mosquitto.url,
        "--nodes",
        "2000",
        "--speed",
        "100",
        "--duration",
        "4",
        "--summary-interval",
        "1",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "mcm-emu: falling behind" in out.stderr and "periods integrated late" in out.stderr
    assert "mcm-emu: this run did not keep its rates" in out.stderr
    run_line = next(line for line in out.stdout.splitlines() if line.startswith("run: "))
    assert "periods late" in run_line


def test_ctl_status_shows_the_runtime_figures(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "1", "--fleet", "rt")
    run.wait_line("running 1 nodes")
    time.sleep(1.5)
    out = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "rt", "--json", "0", "status")
    assert out.returncode == 0, out.stderr
    rt = json.loads(out.stdout)["runtime"]
    t = rt["telemetry"]
    # every due frame accounted for (sent, or counted dropped or decimated on a loaded machine), but
    # the one the node may be sending as it answers
    assert t["due"] >= 5 and t["sent"] >= 1 and t["due"] - 1 <= t["sent"] + t["dropped"] + t["decimated"] <= t["due"], t
    assert rt["tick_late_ms"]["ticks"] >= 20 and rt["tick_late_ms"]["max"] >= rt["tick_late_ms"]["p50"] >= 0
    text = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "rt", "0", "status").stdout
    assert "  runtime: telemetry " in text and "tick late p50/p99/max" in text


def test_the_last_word_tells_a_late_start_up_from_a_run_that_fell_behind():
    meter = RunMeter(tick_period_s=0.05)
    assert meter.closing(None) is None  # nothing late: nothing to say
    meter.tick("s", 0.4, 3)  # a start-up tick 400 ms late, two periods integrated with it
    settled = meter.mark()
    for _ in range(200):
        meter.tick("s", 0.001, 1)
    line = meter.closing(settled)
    assert line is not None and line.startswith("start-up: ") and "2 tick periods integrated late" in line
    assert "the rates were kept after it" in line
    whole = meter.closing(None)  # no end of start-up known: the whole run is judged
    assert whole is not None and whole.startswith("this run did not keep its rates: ")
    meter.tick("s", 0.3, 2)  # late again after start-up
    line = meter.closing(settled)
    assert line is not None and line.startswith("this run did not keep its rates: ") and "3 tick periods" in line
