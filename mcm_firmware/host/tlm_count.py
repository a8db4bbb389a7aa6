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
from typing import Any

import numpy as np

from ..kernel import stream
from ..transport.mqtt import parse_broker_url
from ..transport.mqtt_fast import FastSubscriber
from ..transport.security import security_of


class TelemetryCount:
    """Frames counted per node (the topic level after ``mcm/v1/<fleet>/``), frames of other
    topics, and frames whose CRC or length is wrong. Fed a message at a time (:meth:`add`), or a
    run of PUBLISH packets at a time by the compiled walk (:meth:`walk`,
    :mod:`mcm_firmware.kernel.stream`): both count alike."""

    def __init__(self, fleet: str) -> None:
        self.fleet = fleet
        self.started = time.monotonic()
        self.per_second: Counter[int] = Counter()
        self.prefix = f"mcm/v1/{fleet}/".encode()
        self.counts = np.zeros(1024, np.int64)  # by node id
        self.extra = np.zeros(3, np.int64)  # [frames of other topics, damaged frames, the walk's node to grow to]
        self._prefix = np.frombuffer(self.prefix, np.uint8)
        self._table = stream.crc_table()
        self._walk = stream.compiled()

    @property
    def compiled(self) -> bool:
        return self._walk is not None

    @property
    def damaged(self) -> int:
        return int(self.extra[1])

    def add(self, topic: bytes, payload: memoryview) -> None:
        node = -1
        if topic.startswith(self.prefix):
            level = topic[len(self.prefix) :].split(b"/", 1)[0]
            if level.isdigit() and len(level) <= 8 and int(level) <= stream.MAX_NODE:
                node = int(level)
        if node < 0:
            self.extra[0] += 1
        else:
            self._grow(node)
            self.counts[node] += 1
        if len(payload) < stream.HEADER + stream.CRC or zlib.crc32(payload[: -stream.CRC]) != int.from_bytes(
            payload[-stream.CRC :], "little"
        ):
            self.extra[1] += 1

    def walk(self, buf: bytearray, start: int) -> tuple[int, int]:
        """The run of PUBLISH packets of ``buf`` from ``start`` counted by the compiled walk (a
        :class:`~mcm_firmware.transport.mqtt_fast.FastSubscriber` ``bulk``)."""
        assert self._walk is not None
        data = np.frombuffer(buf, np.uint8)
        total = 0
        while True:
            start, got, status = self._walk(data, start, self._prefix, self.counts, self.extra, self._table)
            total += got
            if status != stream.GROW:
                return start, total
            self._grow(int(self.extra[2]))  # then the walk goes on from that packet

    def _grow(self, node: int) -> None:
        if node >= len(self.counts):
            bigger = np.zeros(max(node + 1, 2 * len(self.counts)), np.int64)
            bigger[: len(self.counts)] = self.counts
            self.counts = bigger

    @property
    def per_node(self) -> Counter[int]:
        out: Counter[int] = Counter({int(n): int(self.counts[n]) for n in np.nonzero(self.counts)[0]})
        if self.extra[0]:
            out[-1] = int(self.extra[0])
        return out

    @property
    def received(self) -> int:
        return int(self.counts.sum() + self.extra[0])

    def as_json(self, seconds: float) -> dict[str, Any]:
        return {
            "fleet": self.fleet,
            "seconds": round(seconds, 3),
            "received": self.received,
            "damaged": self.damaged,
            "nodes": int(np.count_nonzero(self.counts)),
            "per_second": [self.per_second.get(s, 0) for s in range(int(seconds) + 1)],
            "per_node": {str(k): v for k, v in sorted(self.per_node.items())},
            "walk": "compiled" if self.compiled else "python",
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
        bulk=counter.walk if counter.compiled else None,
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
