"""Hardware in the loop: rig profiles, the rig driver and its line protocol, and a rig-backed node
beside an emulated one with the rig simulator as a separate process on the far end of a pty:
unplugging the rig puts its node in failsafe within the sensor timeout, plugging it back clears it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mcm_firmware.clock import RealClock
from mcm_firmware.profile import ProfileError, load_profile
from mcm_firmware.profile.rig import load_rig_profile
from mcm_firmware.protocol import Event, EventCode
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.runtime.rig import RigDriver
from mcm_firmware.transport import Channel
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport

from ..conftest import ROOT, cli_env, run_cli
from ..helpers import Recorder

SIM = str(ROOT / "tools" / "rig_sim.py")


def _fleet(bus: LoopbackBus) -> Fleet:
    return Fleet.uniform(
        nodes=2,
        profile=load_profile("colossus-mcm"),
        fleet="t",
        transport_factory=lambda cid: LoopbackTransport(bus, client_id=cid),
        clock=RealClock(),
        seed=3,
    )


def _events(rec: Recorder, node: int, code: EventCode, since: float = 0.0) -> list[tuple[float, Event]]:
    return [
        (t, m) for t, m in rec.timed if m.node_id == node and isinstance(m, Event) and m.code == code and t >= since
    ]


class TimedRecorder(Recorder):
    """Keeps each decoded event with the monotonic time it arrived."""

    def __init__(self, bus: LoopbackBus) -> None:
        super().__init__(bus)
        self.timed: list[tuple[float, Event]] = []

    async def _run(self) -> None:
        from mcm_firmware.protocol import decode

        assert self._tr is not None
        while True:
            d = await self._tr.receive()
            if d.address.channel is Channel.EVT:
                self.timed.append((time.monotonic(), decode(d.payload)))


async def _until(pred, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic()


def _sim(path: str, rig: str = "bench-tc-valve") -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, SIM, path, "--rig", rig],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_rig_backed_node_beside_an_emulated_node_unplug_and_plug_back():
    bus = LoopbackBus()
    rec = await TimedRecorder(bus).start()
    fleet = _fleet(bus)
    await fleet.start()
    rig = RigDriver(fleet.nodes[1], load_rig_profile("bench-tc-valve"), "pty")
    sims: list[subprocess.Popen] = []
    shard, row = fleet.shard_of(1)
    timeout = load_profile("colossus-mcm").cooling.sensor_timeout_s
    try:
        await rig.start()
        assert rig.path and rig.path.startswith("/dev/pts/")
        sims.append(_sim(rig.path))
        # plugged: the node's die-0 sensor and valve-0 flow come from the bench, zone 0 leaves failsafe
        await _until(lambda: not shard.cool.failsafe[row, 0] and rig.answers > 20, 10, "zone 0 out of failsafe")
        bench_temp = float(shard.s_die.value[row, 0])
        assert 30 < bench_temp < 80 and abs(bench_temp - float(shard.plant.t_die[row, 0])) > 0.2
        assert float(shard.s_flow.value[row, 0]) <= 0.5  # the bench's flow meter, not the plant's
        assert 0 in rig.positions  # the valve command went out and the rig reported its position
        # unplugged: kill the rig; the node enters failsafe within the sensor timeout
        t_kill = time.monotonic()
        sims[0].kill()
        sims[0].wait()
        t_fs = await _until(lambda: _events(rec, 1, EventCode.FAILSAFE_ENTER, t_kill), 5, "failsafe")
        await _until(lambda: _events(rec, 1, EventCode.RIG_LOST, t_kill), 3, "RIG_LOST")
        thermal_period = 1.0 / load_profile("colossus-mcm").rates.thermal_hz
        # the last answer came at most one poll (0.1 s) before the kill
        assert t_fs - t_kill <= timeout + thermal_period + 0.3, t_fs - t_kill
        assert [m.subject for _, m in _events(rec, 1, EventCode.FAILSAFE_ENTER, t_kill)] == [0]
        # plugged back: a new rig process on the same pty; failsafe clears
        t_plug = time.monotonic()
        sims.append(_sim(rig.path))
        await _until(lambda: _events(rec, 1, EventCode.FAILSAFE_EXIT, t_plug), 5, "failsafe exit")
        await _until(lambda: _events(rec, 1, EventCode.RIG_RESTORED, t_plug), 3, "RIG_RESTORED")
        # the emulated node beside it never noticed
        assert not _events(rec, 0, EventCode.FAILSAFE_ENTER, t_kill - 1)
        assert not shard.cool.failsafe[fleet.nodes[0].row].any()
    finally:
        for s in sims:
            s.kill()
            s.wait()
            s.stdout.close()
            s.stderr.close()
        await rig.stop()
        await fleet.stop()
        await rec.stop()
    assert not shard.s_die.external.any()


async def test_plant_in_the_loop_controller_drives_the_valves_until_it_goes_silent():
    bus = LoopbackBus()
    rec = await TimedRecorder(bus).start()
    fleet = _fleet(bus)
    await fleet.start()
    rig = RigDriver(fleet.nodes[0], load_rig_profile("bench-controller"), "pty")
    shard, row = fleet.shard_of(0)
    cool = shard.cool
    sim = None
    try:
        await rig.start()
        assert not shard.s_die.external.any()  # the node's own sensors feed the rig
        sim = _sim(rig.path, "bench-controller")
        await _until(lambda: rig.answers > 20, 10, "controller answers")
        await asyncio.sleep(0.3)  # a valve period applies the latest command
        for v in (0, 1):
            expected = min(100.0, max(0.0, 20 + 8 * (float(shard.s_die.value[row, v]) - 55)))
            assert float(cool.external[row, v]) == pytest.approx(expected, abs=8.0)
            # the valve takes the rig's command at its next period (a new command may come meanwhile)
            await _until(
                lambda v=v: float(cool.valve_cmd[row, v]) == float(cool.external[row, v]), 3, f"valve {v} follows"
            )
        assert np.isnan(cool.external[row, 2:]).all()  # the rig commands only its channels
        t_kill = time.monotonic()
        sim.kill()
        sim.wait()
        t_lost = await _until(lambda: _events(rec, 0, EventCode.RIG_LOST, t_kill), 3, "RIG_LOST")
        assert t_lost - t_kill <= rig.rig.timeout_s + 0.3
        assert np.isnan(cool.external[row]).all()  # the node's own controller has the valves back
        assert not _events(rec, 1, EventCode.RIG_LOST)
    finally:
        if sim is not None:
            sim.kill()
            sim.wait()
            sim.stdout.close()
            sim.stderr.close()
        await rig.stop()
        await fleet.stop()
        await rec.stop()


async def test_driver_counts_lines_it_cannot_use_and_applies_the_rest():
    bus = LoopbackBus()
    fleet = _fleet(bus)
    await fleet.start()
    rig = RigDriver(fleet.nodes[0], load_rig_profile("bench-tc-valve"), "pty")
    shard, row = fleet.shard_of(0)
    fd = None
    try:
        await rig.start()
        fd = os.open(rig.path, os.O_RDWR | os.O_NOCTTY)
        os.write(fd, b"hello\nV\nV x 1\nV 9 100\nV 0 nan\nQ 0 1\nV 0 512\nA 0 250\nE 1 broken\n")
        await _until(lambda: rig.answers >= 3, 3, "answers")
        assert rig.rejected == 6 and rig.errors == 1
        assert rig.positions[0] == 25.0
        await asyncio.sleep(0.1)  # the next tick samples the external reading
        assert float(shard.s_die.value[row, 0]) == pytest.approx(51.2)
        assert b"R 0" in os.read(fd, 4096)  # the driver polls
    finally:
        if fd is not None:
            os.close(fd)
        await rig.stop()
        await fleet.stop()


def test_rig_profiles_are_validated_naming_the_key(tmp_path):
    good = (ROOT / "hw_profiles" / "rigs" / "bench-tc-valve.toml").read_text()
    cases = {
        "extra": ("colour = 'red'\n" + good, "key 'colour': unknown key"),
        "target": (good.replace('target = "die:0"', 'target = "cpu:0"'), "target must be one of"),
        "dup": (good.replace("channel = 1", "channel = 0"), "channel numbers repeat"),
        "timeout": (good.replace("timeout_s = 0.5", "timeout_s = 0.1"), "at least two polls"),
        "scale": (good.replace("scale = 0.1\n", "scale = 0\n", 1), "non-zero"),
        "baud": (good.replace("baud = 115200", "baud = 5"), "key 'baud'"),
    }
    for name, (text, needle) in cases.items():
        path = tmp_path / f"{name}.toml"
        path.write_text(text)
        with pytest.raises(ProfileError) as info:
            load_rig_profile(path)
        assert str(path) in str(info.value) and needle in str(info.value), (name, str(info.value))
    with pytest.raises(ProfileError, match="no such rig profile"):
        load_rig_profile("nope")
    rig = load_rig_profile("bench-tc-valve")
    with pytest.raises(ValueError, match=r"channel 0 targets die:0, but the module has 0$"):
        rig.check_against(0, 8, 4)
    with pytest.raises(ValueError, match="channel 1 targets flow:0, but the module has 0"):
        rig.check_against(4, 8, 0)


@pytest.mark.parametrize(
    "rig, needle",
    [
        ("bad", "expected NODE=RIG[@PORT]"),
        ("7=bench-tc-valve", "node 7 is not in this fleet"),
        ("0=nosuch", "no such rig profile"),
        ("0=bench-tc-valve@bogus", "not a device path"),
    ],
)
def test_bad_rig_options_exit_2_naming_them(rig, needle):
    from ..conftest import free_port

    r = run_cli("run", "--nodes", "2", "--embedded-port", str(free_port()), "--duration", "5", "--rig", rig)
    assert r.returncode == 2 and needle in r.stderr, r.stderr


def test_cli_mixed_fleet_prints_the_rig_port(cli_process, mosquitto):
    run = cli_process("run", "--nodes", "2", "--broker", mosquitto.url, "--rig", "1=bench-tc-valve")
    line = run.wait_line("rig: node 1 (bench-tc-valve) at /dev/pts/")
    path = line.rsplit(" ", 1)[1]
    sim = _sim(path)
    try:
        status = None
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = run_cli("ctl", "--broker", mosquitto.url, "--json", "1", "status")
            assert r.returncode == 0, r.stderr
            import json

            status = json.loads(r.stdout)
            if not status["failsafe"]:
                break
            time.sleep(0.3)
        assert status is not None and not status["failsafe"] and status["mode"] == "NORMAL", status
    finally:
        sim.kill()
        sim.wait()
        sim.stdout.close()
        sim.stderr.close()
