"""Stale or live: a persistent broker restores the BIRTHs of nodes that are gone; a consumer that
judges by frames that are not retained does not take them for alive."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest

from mcm_firmware.host.discovery import Liveness, read_state
from mcm_firmware.protocol import Birth
from mcm_firmware.transport import Subscription, transport_factory

from ..conftest import free_port, mosquitto_binary, wait_port


def test_liveness_counts_only_frames_that_are_not_retained():
    live = Liveness(window=0.3)
    live.saw(1, retained=True, now=0.0)  # a BIRTH the broker kept: no proof
    live.saw(2, retained=False, now=0.0)
    assert live.alive_nodes(0.1) == [2] and not live.alive(1, 0.1)
    assert not live.alive(2, 0.5)  # silent for longer than the window


def _broker(tmp_path, port: int) -> subprocess.Popen[bytes]:
    conf = tmp_path / "persistent.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path}/\nautosave_interval 1\nset_tcp_nodelay true\nuser root\n"
    )
    proc = subprocess.Popen([mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


@pytest.mark.slow
def test_a_restored_birth_of_a_gone_fleet_is_not_taken_for_life(tmp_path, cli_process):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    broker = _broker(tmp_path, port)
    try:
        run = cli_process("run", "--broker", url, "--nodes", "3", "--fleet", "lv", "--connection", "node")
        run.wait_line("up: 3 nodes")
        time.sleep(2.5)  # the broker saved its state with the BIRTHs
        broker.send_signal(signal.SIGKILL)  # a crash: no will is published
        broker.wait()
        run.proc.send_signal(signal.SIGKILL)  # and the fleet is gone for good
        run.proc.wait()
        broker = _broker(tmp_path, port)  # restored from its store
        state = asyncio.run(read_state(transport_factory(url), "lv"))
        restored = sorted(n for n, m in state.nodes.items() if isinstance(m, Birth))
        assert restored == [0, 1, 2]  # what a naive consumer would call online

        async def watch(seconds: float) -> Liveness:
            live = Liveness(window=3 * 0.1)  # colossus-mcm: telemetry at 10 Hz
            tr = transport_factory(url)("lv-watch")
            await tr.connect()
            await tr.subscribe(Subscription("lv", None, None))
            end = time.monotonic() + seconds
            try:
                while (left := end - time.monotonic()) > 0:
                    try:
                        d = await asyncio.wait_for(tr.receive(), left)
                    except TimeoutError:
                        break
                    live.saw(d.address.node, retained=d.retained, now=time.monotonic())
            finally:
                await tr.close()
            return live

        gone = asyncio.run(watch(1.5))
        assert gone.alive_nodes(time.monotonic()) == []  # restored BIRTHs are not life
        run2 = cli_process("run", "--broker", url, "--nodes", "3", "--fleet", "lv", "--connection", "node")
        run2.wait_line("up: 3 nodes")
        back = asyncio.run(watch(1.0))
        assert back.alive_nodes(time.monotonic()) == [0, 1, 2]
    finally:
        broker.terminate()
        broker.wait(10)
