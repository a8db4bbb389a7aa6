"""Count a fleet's telemetry as it arrives at a broker: an independent subscriber.

``python -m mcm_firmware.host.tlm_count --broker mqtt://HOST:PORT --fleet F --duration S`` subscribes
to ``mcm/v1/F/+/tlm`` (QoS 0, parsed in bulk: :class:`~mcm_firmware.transport.mqtt_fast.FastSubscriber`)
and prints one JSON object: frames received in all and per node, per whole second, the telemetry
frames whose CRC or length is wrong, and the span of the count. ``mcm-emu bench`` runs it in a
process of its own, so that what it counts is what the broker delivered, not what the emulator
believes it sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..transport.mqtt import parse_broker_url
from ..transport.mqtt_fast import FastSubscriber
from ..transport.security import security_of

_HEADER, _CRC = 23, 4


@dataclass
class TelemetryCount:
    fleet: str
    started: float = field(default_factory=time.monotonic)
    per_topic: dict[bytes, int] = field(default_factory=dict)
    per_second: Counter[int] = field(default_factory=Counter)
    damaged: int = 0

    def add(self, topic: bytes, payload: memoryview) -> None:
        per_topic = self.per_topic
        per_topic[topic] = per_topic.get(topic, 0) + 1
        if len(payload) < _HEADER + _CRC or zlib.crc32(payload[:-_CRC]) != int.from_bytes(payload[-_CRC:], "little"):
            self.damaged += 1

    @property
    def per_node(self) -> Counter[int]:
        out: Counter[int] = Counter()
        for topic, n in self.per_topic.items():
            parts = topic.split(b"/")
            out[int(parts[3]) if len(parts) == 5 and parts[3].isdigit() else -1] += n
        return out

    @property
    def received(self) -> int:
        return sum(self.per_topic.values())

    def as_json(self, seconds: float) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "seconds": round(seconds, 3),
            "received": self.received,
            "damaged": self.damaged,
            "nodes": len(self.per_topic),
            "per_second": [self.per_second.get(s, 0) for s in range(int(seconds) + 1)],
            "per_node": {str(k): v for k, v in sorted(self.per_node.items())},
        }


async def count(
    url: str, fleet: str, duration: float, *, channel: str = "tlm", ready: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Count ``duration`` seconds of the fleet's telemetry; ``ready`` is called once subscribed."""
    host, port = parse_broker_url(url)
    counter = TelemetryCount(fleet)
    sub = FastSubscriber(
        security=security_of(url),
        host=host,
        port=port,
        client_id=f"mcm-count-h{uuid.uuid4().hex[:8]}",
        topic_filter=f"mcm/v1/{fleet}/+/{channel}",
        on_publish=counter.add,
    )
    await sub.start()
    counter.started = time.monotonic()
    if ready is not None:
        ready()
    try:
        end = counter.started + duration
        second, seen = 0, 0
        while (left := end - time.monotonic()) > 0 and not sub.closed.is_set():
            await asyncio.sleep(min(left, counter.started + second + 1 - time.monotonic()))
            counter.per_second[second] = sub.packets - seen
            second, seen = second + 1, sub.packets
            if second % 5 == 0:
                sub.ping()
    finally:
        sub.close()
    return counter.as_json(time.monotonic() - counter.started)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mcm_firmware.host.tlm_count", description=__doc__)
    p.add_argument("--broker", required=True)
    p.add_argument("--fleet", default="default")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--channel", default="tlm", help="count another channel's frames instead (evt, rsp, state)")
    args = p.parse_args(argv)
    out = asyncio.run(
        count(
            args.broker,
            args.fleet,
            args.duration,
            channel=args.channel,
            ready=lambda: print("subscribed", file=sys.stderr, flush=True),
        )
    )
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
