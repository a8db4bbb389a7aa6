"""What the broker itself accepts: publish telemetry-sized frames as fast as it takes them.

``python -m mcm_firmware.host.flood --broker mqtt://HOST:PORT --fleet F --nodes N --duration S``
(or ``mqtts://`` with its TLS parameters, :mod:`mcm_firmware.transport.security`) connects once
and writes valid telemetry frames (a real ``colossus-mcm`` record, ``--nodes`` topics in turn)
as QoS 0 PUBLISH packets, a block of ``--block`` at a time, for as long as the socket takes them,
without building anything per message: the highest rate one connection can offer, so that what an
independent subscriber (:mod:`.tlm_count`) receives meanwhile is the broker's own ceiling on this
machine. ``mcm-emu bench`` compares the emulator's publish rate per
core with it. Prints one JSON object: packets written, bytes, seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import numpy as np

from ..protocol import MsgType
from ..protocol.codec import frame_block, snapshot_dtype
from ..transport import mqtt_wire as wire
from ..transport.base import TransportError
from ..transport.mqtt import parse_broker_url
from ..transport.security import security_of

HIGH_WATER = 1 << 20  # bytes the socket may hold before the writer waits


def telemetry_block(nodes: int) -> np.ndarray:
    """``nodes`` telemetry frames of the colossus-mcm layout (4 dice, 8 stacks, 2 pumps, 4 valves),
    one a row, valid (CRC and all) and of fixed content."""
    rec = np.zeros(nodes, snapshot_dtype(4, 8, 2, 4))
    rec["n_dies"], rec["n_hbm"], rec["n_pumps"], rec["n_valves"] = 4, 8, 2, 4
    rec["power_w"] = 1100.0
    rec["dies"]["temp_c"] = 70.0
    ids = np.arange(nodes, dtype=np.uint32)
    return frame_block(MsgType.TELEMETRY, ids, np.zeros(nodes, np.uint32), time.time_ns(), rec)


async def flood(url: str, fleet: str, nodes: int, duration: float, block: int = 1000) -> dict[str, float]:
    host, port = parse_broker_url(url)
    try:
        ctx = security_of(url).ssl_context()
    except ValueError as e:
        raise TransportError(str(e)) from None
    try:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None)
    except OSError as e:
        raise TransportError(f"cannot connect to broker {host}:{port}: {e.strerror or e}") from None
    writer.transport.set_write_buffer_limits(high=HIGH_WATER)
    writer.write(wire.connect(f"mcm-flood-h{uuid.uuid4().hex[:8]}", keepalive=60))
    connack = await asyncio.wait_for(reader.readexactly(4), 10)
    if connack[0] != wire.CONNACK or connack[3] != 0:
        raise TransportError(f"broker refused the flood connection: {connack.hex()}")
    frames = telemetry_block(nodes)
    topics = wire.TopicSet([f"mcm/v1/{fleet}/{n}/tlm" for n in range(nodes)], frames.shape[1])
    blobs = []
    for start in range(0, nodes, block):
        rows = np.arange(start, min(nodes, start + block))
        blobs.append((len(rows), topics.encode(rows, frames[rows])))
    packets = size = 0
    t0 = time.monotonic()
    end = t0 + duration
    i = 0
    while time.monotonic() < end:
        n, blob = blobs[i % len(blobs)]
        writer.write(blob)
        packets += n
        size += len(blob)
        i += 1
        await writer.drain()
    seconds = time.monotonic() - t0
    writer.write(wire.DISCONNECT_PACKET)
    writer.close()
    await writer.wait_closed()
    return {"packets": packets, "bytes": size, "seconds": round(seconds, 3)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcm_firmware.host.flood", description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--fleet", default="flood")
    p.add_argument("--nodes", type=int, default=10_000)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--block", type=int, default=1000, help="packets per write (default 1000)")
    args = p.parse_args(argv)
    if not 1 <= args.nodes <= 1_000_000 or not 1 <= args.block <= 100_000 or args.duration <= 0:
        p.error("--nodes 1..1000000, --block 1..100000 and a positive --duration")
    print(json.dumps(asyncio.run(flood(args.broker, args.fleet, args.nodes, args.duration, args.block))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
