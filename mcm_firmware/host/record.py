"""Recordings of a fleet's traffic: every frame with its topic and time, for replay.

The container is gzip-compressed JSON lines (``.jsonl.gz``). The first line is a header::

    {"format": "mcm-emu-record", "version": 1, "fleet": "default", "clock": "real" | "virtual",
     "started_ns": 1767225600000000000, "source": "mcm-emu run", ...}

and every further line one frame, in arrival order (``retain``: published retained, as every
BIRTH and DEATH on a ``state`` topic is)::

    {"t_ns": 1767225600100000000, "topic": "mcm/v1/default/3/tlm", "retain": false,
     "frame": "<base64 of the frame bytes>"}

``t_ns`` is the recorder's clock (virtual time for scenarios). ``mcm-emu replay FILE --broker URL
[--speed X]`` publishes the frames again with their original spacing divided by X.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..clock import Clock
from ..tasks import cancel_and_wait
from ..transport import Address, Channel, Subscription, Transport, TransportError
from ..transport.topics import parse_topic, topic

FORMAT = "mcm-emu-record"
VERSION = 1


class RecordError(ValueError):
    """A recording that cannot be read; the message names the file and the line."""


@dataclass(frozen=True)
class Recorded:
    t_ns: int
    address: Address
    frame: bytes
    retain: bool = False


class RecordWriter:
    def __init__(self, path: str | Path, *, fleet: str, clock: str, started_ns: int, **meta: Any) -> None:
        self.path = Path(path)
        self._f: IO[str] = gzip.open(self.path, "wt", encoding="utf-8", compresslevel=6)  # noqa: SIM115 - open until close()
        header = {
            "format": FORMAT,
            "version": VERSION,
            "fleet": fleet,
            "clock": clock,
            "started_ns": started_ns,
            **meta,
        }
        self._f.write(json.dumps(header) + "\n")
        self.frames = 0

    def write(self, t_ns: int, address: Address, frame: bytes, *, retain: bool = False) -> None:
        """Keep one frame. ``retain`` is how it is to be published again: a subscriber sees the
        flag only on frames retained before it subscribed, so state frames (BIRTH, DEATH), which
        nodes always publish retained, are marked so whatever the delivery said."""
        retain = retain or address.channel is Channel.STATE
        self._f.write(
            json.dumps(
                {"t_ns": t_ns, "topic": topic(address), "retain": retain, "frame": base64.b64encode(frame).decode()}
            )
            + "\n"
        )
        self.frames += 1

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_record(path: str | Path) -> tuple[dict[str, Any], Iterator[Recorded]]:
    """The header and an iterator over the frames; RecordError names what is wrong."""
    path = Path(path)
    try:
        f = gzip.open(path, "rt", encoding="utf-8")  # noqa: SIM115 - read lazily by the iterator, which closes it
        first = f.readline()
    except (OSError, EOFError) as e:
        raise RecordError(f"{path}: not a readable recording ({e})") from None
    try:
        header = json.loads(first)
    except json.JSONDecodeError:
        f.close()
        raise RecordError(f"{path}:1: the header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        f.close()
        raise RecordError(f"{path}:1: not an {FORMAT} file")
    if header.get("version") != VERSION:
        f.close()
        raise RecordError(f"{path}:1: version {header.get('version')!r}, this reader knows {VERSION}")

    def frames() -> Iterator[Recorded]:
        no = 1
        with f:
            try:
                for no, line in enumerate(f, 2):
                    try:
                        obj = json.loads(line)
                        addr = parse_topic(obj["topic"])
                        if addr is None:
                            raise ValueError(f"topic {obj['topic']!r} is outside the contract")
                        rec = Recorded(
                            int(obj["t_ns"]),
                            addr,
                            base64.b64decode(obj["frame"], validate=True),
                            bool(obj.get("retain", False)),
                        )
                    except (ValueError, KeyError, TypeError) as e:
                        raise RecordError(f"{path}:{no}: bad frame line ({e})") from None
                    yield rec
            except (OSError, EOFError, UnicodeDecodeError) as e:  # raised by the gzip stream itself
                raise RecordError(f"{path}:{no + 1}: the file is cut short or damaged ({e})") from None

    return header, frames()


async def replay(path: str | Path, transport: Transport, *, speed: float = 1.0, fleet: str | None = None) -> int:
    """Publish a recording on a connected transport, keeping its spacing (divided by ``speed``).
    ``fleet`` republishes it under another fleet name. Returns the number of frames sent."""
    _header, frames = read_record(path)
    start_rec: int | None = None
    start = time.monotonic()
    sent = 0
    for rec in frames:
        if start_rec is None:
            start_rec = rec.t_ns
        due = start + (rec.t_ns - start_rec) / 1e9 / speed
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        addr = rec.address if fleet is None else Address(fleet, rec.address.node, rec.address.channel)
        await transport.publish(addr, rec.frame, retain=rec.retain)
        sent += 1
    return sent


class FleetRecorder:
    """Subscribes to a fleet's topics and writes every frame to a recording, until stopped."""

    def __init__(self, transport: Transport, writer: RecordWriter, clock: Clock) -> None:
        self.transport = transport
        self.writer = writer
        self.clock = clock
        self._task: asyncio.Task[None] | None = None

    async def start(self, fleet: str) -> FleetRecorder:
        """Connect and subscribe; TransportError (the writer closed) when that fails."""
        try:
            await self.transport.connect()
            await self.transport.subscribe(Subscription(fleet))
        except TransportError:
            self.writer.close()
            raise
        self._task = asyncio.create_task(self._run(), name="fleet-recorder")
        return self

    async def _run(self) -> None:
        try:
            while True:
                d = await self.transport.receive()
                self.writer.write(self.clock.now_ns(), d.address, d.payload, retain=d.retained)
        except TransportError:
            pass

    async def stop(self, *, linger: float = 0.2) -> None:
        """Keep listening ``linger`` seconds (the last DEATH frames), then close the recording."""
        await asyncio.sleep(linger)
        if self._task is not None:
            await cancel_and_wait([self._task])
        await self.transport.close()
        self.writer.close()
