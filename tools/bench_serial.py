#!/usr/bin/env python3
"""Serial link figures: frames/s one way and command round trip (ctl ping through a node) over a
pty, unthrottled and paced to a baud rate.

    python tools/bench_serial.py [--baud 0 921600 115200] [--seconds 3]

Frames/s: a node endpoint sends 150-byte telemetry-sized EVENT frames (reliable, never decimated)
as fast as the link takes them; a host endpoint on the pty's far end counts what arrives. Round
trip: an emulated node on the link, a host client on the far end, ``ping`` p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from mcm_firmware.target import emulated_target, host_client
from mcm_firmware.transport import Address, Channel, Subscription
from mcm_firmware.transport.serial import FIRST_NODE_EID, SerialLink, SerialTransport

PAYLOAD = bytes(127)  # 150 bytes on the line per frame


async def frames_per_s(baud: int, seconds: float) -> tuple[float, float]:
    link = await SerialLink(f"pty?baud={baud}&mtu=251").open()
    node = SerialTransport(link, role="node", eid=FIRST_NODE_EID, node=1)
    host = SerialTransport.host(f"{link.path}")
    await node.connect()
    await host.connect()
    await host.subscribe(Subscription("default", None, Channel.EVT))
    got = 0

    async def count() -> None:
        nonlocal got
        while True:
            await host.receive()
            got += 1

    counter = asyncio.create_task(count())
    t0 = time.perf_counter()
    end = t0 + seconds
    addr = Address("default", 1, Channel.EVT)
    while time.perf_counter() < end:
        while len(link._urgent) < 64:  # keep the line busy without unbounded queueing
            await node.publish(addr, PAYLOAD)
        await asyncio.sleep(0)
    sent_by = time.perf_counter()
    received = got
    counter.cancel()
    await asyncio.gather(counter, return_exceptions=True)
    util = link.utilisation()
    await node.close()
    await host.close()
    await link.close()
    return received / (sent_by - t0), util


async def round_trip(baud: int, n: int) -> list[float]:
    async with emulated_target("serial", node=3, port=f"pty?baud={baud}") as target, host_client(target) as client:
        await client.ping(3)
        return [await client.ping(3) for _ in range(n)]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baud", type=int, nargs="+", default=[0, 921600, 115200])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--pings", type=int, default=300)
    args = ap.parse_args()
    for baud in args.baud:
        fps, util = await frames_per_s(baud, args.seconds)
        rtts = sorted(await round_trip(baud, args.pings))
        p50 = statistics.median(rtts) * 1e3
        p99 = rtts[int(0.99 * (len(rtts) - 1))] * 1e3
        ideal = f" (line limit {baud / 10 / 150:.0f})" if baud else ""
        print(
            f"{'unthrottled' if not baud else f'{baud} baud':>12}: {fps:8.0f} frames/s of 150 B{ideal}, "
            f"utilisation {util * 100:.0f} %; ping p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
