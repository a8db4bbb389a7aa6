"""``monitor`` notices a lost broker within its keep-alive: behind a proxy that stops forwarding
(nothing closed, a half-open link) it pings after half a keep-alive of silence and gives the link
up half a keep-alive later; ``--exit-on-loss`` exits 1, without it the monitor connects again by
itself and prints the fleet's telemetry once the link heals. Real Mosquitto, real subprocesses."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from mcm_firmware.transport.mqtt_probe import PERIOD_S

from ..transport.test_reconnect import StallingProxy

KEEPALIVE = 2


@pytest.mark.slow
def test_monitor_notices_a_half_open_link_within_its_keepalive_and_follows_the_fleet_again(mosquitto, cli_process):
    async def main() -> tuple[float, int, int, str, str]:
        proxy = StallingProxy(mosquitto.port)
        port = await proxy.start()
        url = f"mqtt://127.0.0.1:{port}"
        cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "ml")
        common = ("--broker", url, "--fleet", "ml", "--keepalive", str(KEEPALIVE))
        quitter = cli_process("monitor", *common, "--exit-on-loss")
        follower = cli_process("monitor", *common)
        for mon in (quitter, follower):
            await asyncio.to_thread(mon.wait_line, "TELEMETRY", 30)
        await asyncio.sleep(KEEPALIVE)  # a healthy link with frames flowing is not given up on
        assert quitter.proc.poll() is None
        proxy.stalled = True
        t0 = time.monotonic()
        while quitter.proc.poll() is None and time.monotonic() - t0 < 1.5 * KEEPALIVE + 10:  # noqa: ASYNC110 - a subprocess
            await asyncio.sleep(0.02)
        noticed = time.monotonic() - t0
        code = quitter.proc.poll()
        await asyncio.sleep(1.0)  # the follower has lost its link too, and tries again behind the stall
        proxy.stalled = False
        before = len(follower.lines)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("TELEMETRY" in line for line in follower.lines[before:]):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        fresh = sum("TELEMETRY" in line for line in follower.lines[before:])
        follower.signal(signal.SIGINT)
        await asyncio.to_thread(follower.wait)
        assert proxy.server is not None and quitter.proc.stderr and follower.proc.stderr
        proxy.server.close()
        return noticed, -1 if code is None else code, fresh, quitter.proc.stderr.read(), follower.proc.stderr.read()

    noticed, code, fresh, quit_err, follow_err = asyncio.run(main())
    print(f"monitor --keepalive {KEEPALIVE} on a half-open link: exited {noticed:.2f} s after the stall")
    assert code == 1, (code, quit_err)
    assert noticed <= KEEPALIVE + 1.0, noticed  # 1.5 keep-alives and the watchdog's second before
    assert f"no answer from the broker within {KEEPALIVE} s" in quit_err and len(quit_err.strip().splitlines()) == 1
    assert f"monitor: link lost (no answer from the broker within {KEEPALIVE} s" in follow_err, follow_err
    assert "monitor: reconnected" in follow_err and fresh > 0, (fresh, follow_err)
    assert PERIOD_S < KEEPALIVE / 4  # the probe looks often enough for the bound above
