"""Command round trips measured from outside: an independent requester.

``python -m mcm_firmware.host.pinger --broker mqtt://HOST:PORT --fleet F --nodes N --rate R
--duration S`` sends PING commands (QoS 1, as every host does) at ``R`` per second to random nodes
``0..N-1`` and prints one JSON object: sent, lost (no answer within ``--timeout``), round-trip
quantiles in ms, and its own CPU share. ``mcm-emu bench`` runs it in a process of its own on the
raw MQTT path (:class:`~mcm_firmware.transport.mqtt_fast.FastSubscriber`, packets byte-equal to
paho's), so that the round trips it reports are the emulator's and the broker's, not the cost of a
library client sharing the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
import uuid
from typing import Any

from ..protocol import Command, FrameFlags, MsgType, Op, encode
from ..protocol.codec import FrameError, envelope
from ..transport import mqtt_wire as wire
from ..transport.mqtt import parse_broker_url
from ..transport.mqtt_fast import FastSubscriber
from ..transport.security import security_of


class Pings:
    """Requests in flight by request id, and the round trips of those answered."""

    def __init__(self) -> None:
        self.sent_at: dict[int, float] = {}
        self.rtts: list[float] = []
        self.stray = 0

    def on_response(self, topic: bytes, payload: memoryview) -> None:
        now = time.perf_counter()
        try:
            env = envelope(payload)
        except FrameError:
            self.stray += 1
            return
        if env.msg_type != MsgType.RESPONSE or len(env.payload) < 4:
            self.stray += 1
            return
        t0 = self.sent_at.pop(int.from_bytes(env.payload[:4], "little"), None)
        if t0 is None:
            self.stray += 1  # late (counted lost already), or not ours
        else:
            self.rtts.append(now - t0)


def quantiles_ms(rtts: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(rtts, n=100) if len(rtts) >= 2 else [rtts[0] if rtts else 0.0] * 99
    return {
        "p50_ms": round(qs[49] * 1e3, 3),
        "p99_ms": round(qs[98] * 1e3, 3),
        "max_ms": round(max(rtts, default=0.0) * 1e3, 3),
    }


async def ping(
    url: str, fleet: str, nodes: int, rate: float, duration: float, *, timeout: float = 2.0, seed: int = 1
) -> dict[str, Any]:
    host, port = parse_broker_url(url)
    pings = Pings()
    sub = FastSubscriber(
        security=security_of(url),
        host=host,
        port=port,
        client_id=f"mcm-pinger-h{uuid.uuid4().hex[:8]}",
        topic_filter=f"mcm/v1/{fleet}/+/rsp",
        on_publish=pings.on_response,
        batch_s=0.0,  # every answer timed as it arrives
    )
    await sub.start()
    rng = random.Random(seed)
    cpu0, t_start = time.process_time(), time.monotonic()
    period, next_at, end = 1.0 / rate, t_start, t_start + duration
    sent, lost, rid, seq = 0, 0, 0, 0
    deadlines: list[tuple[float, int]] = []
    try:
        while next_at < end and not sub.closed.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            node = rng.randrange(nodes)
            rid = rid % 0xFFFFFFFF + 1
            seq += 1
            frame = encode(
                Command(
                    node_id=node,
                    seq=seq,
                    timestamp_ns=time.time_ns(),
                    flags=int(FrameFlags.HOST),
                    request_id=rid,
                    op=Op.PING,
                )
            )
            pings.sent_at[rid] = time.perf_counter()
            sub.send(wire.publish_qos1(f"mcm/v1/{fleet}/{node}/cmd", rid % 0xFFFF + 1, frame))
            deadlines.append((time.monotonic() + timeout, rid))
            sent += 1
            next_at += period
            while deadlines and deadlines[0][0] < time.monotonic():
                _, old = deadlines.pop(0)
                if pings.sent_at.pop(old, None) is not None:
                    lost += 1
            if sent % 1000 == 0:
                sub.ping()
        wait_until = time.monotonic() + timeout
        while pings.sent_at and time.monotonic() < wait_until and not sub.closed.is_set():  # noqa: ASYNC110 - answers of a raw protocol, no event to wait on
            await asyncio.sleep(0.01)
        lost += len(pings.sent_at)
    finally:
        sub.close()
    cpu = time.process_time() - cpu0
    seconds = time.monotonic() - t_start
    return {
        "sent": sent,
        "lost": lost,
        **quantiles_ms(pings.rtts),
        "pinger_cpu_pct": round(cpu / seconds * 100, 1),
        "stray": pings.stray,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcm_firmware.host.pinger", description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--fleet", default="default")
    p.add_argument("--nodes", type=int, required=True, help="ping nodes 0..N-1")
    p.add_argument("--rate", type=float, required=True, help="pings per second")
    p.add_argument("--duration", type=float, required=True, help="seconds of pinging")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds before a ping counts as lost (default 2)")
    args = p.parse_args(argv)
    if args.nodes < 1 or args.rate <= 0 or args.duration <= 0:
        p.error("--nodes, --rate and --duration must be positive")
    out = asyncio.run(ping(args.broker, args.fleet, args.nodes, args.rate, args.duration, timeout=args.timeout))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
