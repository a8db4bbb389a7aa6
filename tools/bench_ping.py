#!/usr/bin/env python3
"""Round-trip time of ``ctl ping`` over a real broker, nodes and host in separate processes.

    python tools/bench_ping.py [--broker mqtt://HOST:PORT] [--nodes N] [--count M] [--rate HZ]

Without --broker, a private Mosquitto is started on a free loopback port (the ``mosquitto``
binary must be installed). The nodes run in an ``mcm-emu run`` subprocess; this process sends
``--count`` PINGs to node 0 at ``--rate`` per second (one outstanding at a time) and prints the
round-trip percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from mcm_firmware.host.client import HostClient
from mcm_firmware.transport import transport_factory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mosquitto() -> tuple[subprocess.Popen, str, str]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        sys.exit("bench_ping: no mosquitto binary; install it or pass --broker")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-mosq-")
    conf = os.path.join(tmp, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n")
    proc = subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.02)
    return proc, f"mqtt://127.0.0.1:{port}", tmp


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


async def bench(url: str, count: int, rate: float) -> list[float]:
    async with HostClient(transport_factory(url)("bench-ping"), fleet="bench", timeout=5.0) as host:
        for _ in range(50):
            try:
                await host.ping(0, timeout=0.5)
                break
            except Exception:  # noqa: BLE001 - nodes still starting
                await asyncio.sleep(0.2)
        rtts = []
        period = 1.0 / rate
        nxt = time.monotonic()
        for _ in range(count):
            rtts.append(await host.ping(0))
            nxt += period
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
        return rtts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--broker", default=None)
    ap.add_argument("--nodes", type=int, default=8)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=200.0)
    args = ap.parse_args()
    mosq = tmp = None
    url = args.broker
    if url is None:
        mosq, url, tmp = start_mosquitto()
    nodes = subprocess.Popen(
        [sys.executable, "-m", "mcm_firmware", "run", "--broker", url, "--nodes", str(args.nodes), "--fleet", "bench"],
        stdout=subprocess.DEVNULL,
    )
    try:
        rtts = asyncio.run(bench(url, args.count, args.rate))
    finally:
        nodes.terminate()
        nodes.wait(10)
        if mosq:
            mosq.terminate()
            mosq.wait(5)
            shutil.rmtree(tmp, ignore_errors=True)
    ms = [r * 1e3 for r in rtts]
    print(
        f"ping over {url} ({'private mosquitto' if mosq else 'given broker'}), {args.nodes} nodes "
        f"publishing telemetry, {len(ms)} pings at {args.rate:g}/s:"
    )
    print(
        f"  p50 {pct(ms, 50):.3f} ms  p90 {pct(ms, 90):.3f} ms  p99 {pct(ms, 99):.3f} ms  "
        f"max {max(ms):.3f} ms  mean {statistics.fmean(ms):.3f} ms"
    )


if __name__ == "__main__":
    main()
