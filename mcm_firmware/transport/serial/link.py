"""One open serial port carrying MCTP (DSP0253 framing), shared by endpoints and paced to its
line rate.

Frames of the ``tlm`` channel are bulk: when the line is busy only the newest telemetry frame of
each node waits (older ones are dropped and counted as decimated); every other frame (commands,
responses, events, state) waits its turn and is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Protocol, cast

from ...protocol import mctp
from ...protocol.mctp import EID_BROADCAST, VendorMessage
from ...tasks import cancel_and_wait
from ..base import TransportError
from ..pcap import SerialCapture
from .port import PortSpec, open_port, parse_port_url


class Endpoint(Protocol):
    """What a link needs of an endpoint attached to it (:class:`~.endpoint.Endpoint`)."""

    eid: int

    def _on_message(self, src: int, vm: VendorMessage, tag_owner: bool = True, tag: int = 0) -> None: ...
    def _link_down(self, why: str) -> None: ...


BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
URGENT_LIMIT = 4096
"""Messages waiting for the line beyond this many: the oldest are dropped (counted)."""
HIGH_WATER = 16 * 1024
"""Bytes buffered under the port before the link stops writing and waits for the OS to drain."""
UTIL_WINDOW = 1.0
TAG_EXPIRY_S = 6.0
"""A request's tag is the requester's until its response arrives or this long after it was sent
(as the Linux kernel's MCTP stack does: longer than any upper layer's response timeout)."""


class LinkStats:
    """Counters of one link, and its utilisation (share of the line's capacity used lately)."""

    def __init__(self) -> None:
        self.tx_bytes = 0
        self.rx_bytes = 0
        self.tx_messages = 0
        self.rx_messages = 0
        self.decimated = 0  # telemetry frames replaced by a newer one before they were sent
        self.overflow = 0  # urgent messages dropped because the line was down for too long
        self.rejected = 0  # messages that reassembled but did not parse as ours
        self.not_for_us = 0  # messages for an EID no endpoint here has
        self.tag_waits = 0  # requests that waited for a tag: all 8 to their destination were owned
        self.tags_reused = 0  # owned tags taken back after TAG_EXPIRY_S without their response
        self._busy: deque[tuple[float, float]] = deque()  # (start, end) of line occupation

    def occupy(self, start: float, end: float) -> None:
        busy = self._busy
        busy.append((start, end))
        while busy[0][1] < start - UTIL_WINDOW:  # older than any window asked about
            busy.popleft()

    def utilisation(self, now: float, window: float = UTIL_WINDOW) -> float:
        """Fraction of the last ``window`` seconds the line was transmitting (0..1)."""
        lo = now - window
        busy = self._busy
        while busy and busy[0][1] <= lo:
            busy.popleft()
        total = sum(min(e, now) - max(s, lo) for s, e in busy if s < now)
        return max(0.0, min(1.0, total / window))


class SerialLink(asyncio.Protocol):
    """One open serial port shared by endpoints, each with its own EID."""

    def __init__(self, spec: PortSpec | str, *, tag_expiry: float = TAG_EXPIRY_S) -> None:
        self.tag_expiry = tag_expiry
        self.spec = parse_port_url(spec) if isinstance(spec, str) else spec
        self.path: str | None = None  # the pty's path, for the far end to open
        self.stats = LinkStats()
        self.decoder = mctp.FrameDecoder()
        self.reassembler = mctp.Reassembler()
        self._transport: asyncio.Transport | None = None
        self._endpoints: dict[int, Endpoint] = {}
        self._urgent: deque[tuple[float, bytes]] = deque()  # (when queued, framed message)
        self._bulk: dict[int, tuple[float, bytes]] = {}  # node id -> its newest telemetry message
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._writer: asyncio.Task[None] | None = None
        self._line_free = 0.0
        self._sending = False  # a message taken from the queues and not yet written
        self._down: str | None = None
        self._closed = asyncio.Event()
        self._tags: dict[int, int] = {}
        # (our EID, their EID, tag) -> until when the tag is ours: a request awaiting its response
        self._owned: dict[tuple[int, int, int], float] = {}
        # (our EID, their EID) -> requests waiting for one of the eight tags to come free, in order
        self._waiting: dict[tuple[int, int], deque[tuple[VendorMessage, bool]]] = {}
        self._tag_timers: dict[tuple[int, int], asyncio.TimerHandle] = {}
        self._capture: SerialCapture | None = None
        self._tx_tap: mctp.FrameDecoder | None = None

    def capture(self, cap: SerialCapture) -> None:
        """Keep every frame that crosses the line, both ways, in ``cap`` (a pcap, one frame a
        record); received bytes the decoder drops are kept as they came, as one record a run."""
        self._capture = cap
        self.decoder.tap = lambda raw, ok: cap.frame(raw)
        self._tx_tap = mctp.FrameDecoder(tap=lambda raw, ok: cap.frame(raw))

    # --- opening and closing ---------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._down is None

    async def open(self) -> SerialLink:
        _, self.path = await open_port(self.spec, self)
        self._writer = asyncio.create_task(self._write_loop(), name=f"serial-tx-{self.path or self.spec.url}")
        return self

    async def close(self) -> None:
        if self._writer is not None:
            await cancel_and_wait([self._writer])
            self._writer = None
        tr, self._transport = self._transport, None
        if tr is not None:
            tr.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), 2.0)
        self._fail("link closed")
        self.decoder.flush_tap()

    async def __aenter__(self) -> SerialLink:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # open_port makes every port a full asyncio.Transport (read and write)
        self._transport = cast(asyncio.Transport, transport)
        if hasattr(transport, "set_write_buffer_limits"):
            transport.set_write_buffer_limits(high=HIGH_WATER)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()
        self._fail(f"serial port {self.path or self.spec.url} lost: {exc}" if exc else "link closed")

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    def data_received(self, data: bytes) -> None:
        self.stats.rx_bytes += len(data)
        for packet in self.decoder.feed(data):
            got = self.reassembler.feed(packet)
            if got is None:
                continue
            head, message = got
            # a response (TO=0): the tag of the request it answers is free again
            if not head.tag_owner:
                if self._owned.pop((head.dest, head.src, head.tag), None) is not None:
                    self._release_tags((head.dest, head.src))
                elif self._owned.pop((head.dest, EID_BROADCAST, head.tag), None) is not None:
                    self._release_tags((head.dest, EID_BROADCAST))
            try:
                vm = mctp.parse_vendor(message)
            except mctp.LinkError:
                self.stats.rejected += 1
                continue
            self.stats.rx_messages += 1
            if head.dest == EID_BROADCAST:
                for ep in list(self._endpoints.values()):
                    ep._on_message(head.src, vm, head.tag_owner, head.tag)
            else:
                target = self._endpoints.get(head.dest)
                if target is None:
                    self.stats.not_for_us += 1
                else:
                    target._on_message(head.src, vm, head.tag_owner, head.tag)

    def _fail(self, why: str) -> None:
        if self._down is None:
            self._down = why
            for timer in self._tag_timers.values():
                timer.cancel()
            self._tag_timers.clear()
            self._waiting.clear()
            for ep in list(self._endpoints.values()):
                ep._link_down(why)

    # --- endpoints ---------------------------------------------------------------------------

    def attach(self, ep: Endpoint) -> None:
        if self._down is not None:
            raise TransportError(self._down)
        if self._transport is None:
            raise TransportError(f"serial port {self.spec.url} is not open")
        other = self._endpoints.get(ep.eid)
        if other is not None and other is not ep:
            raise TransportError(f"EID {ep.eid} is already in use on {self.path or self.spec.url}")
        self._endpoints[ep.eid] = ep

    def detach(self, ep: Endpoint) -> None:
        if self._endpoints.get(ep.eid) is ep:
            del self._endpoints[ep.eid]

    # --- sending -----------------------------------------------------------------------------

    def send(
        self,
        vm: VendorMessage,
        *,
        src: int,
        dest: int,
        bulk: bool = False,
        request: bool = False,
        reply_tag: int | None = None,
    ) -> None:
        """Queue one message; it leaves as soon as the line allows, telemetry after the rest.

        Tags as DSP0236 has them: a response (``reply_tag``, the tag of the request it answers)
        goes with TO=0 and that tag; anything else with TO=1 and a tag of the sender's. A
        ``request`` keeps its tag owned until its response arrives or :data:`TAG_EXPIRY_S`
        passes, and no other message to the same destination gets an owned tag meanwhile. With
        all eight tags to a destination owned, a request waits (in order, counted in
        ``tag_waits``) until a response frees one or one expires (``tags_reused``): an owned tag
        is never taken back early, so no response can be matched to the wrong request."""
        if self._down is not None:
            raise TransportError(self._down)
        if reply_tag is not None:
            self._queue(vm, src, dest, reply_tag & 7, False, bulk)
            return
        now = asyncio.get_running_loop().time()
        key = (src, dest)
        if request:
            tag = None if key in self._waiting else self._free_tag(src, dest, now)
            if tag is None:
                self._waiting.setdefault(key, deque()).append((vm, bulk))
                self.stats.tag_waits += 1
                self._arm_tag_timer(key)
                return
            self._owned[(src, dest, tag)] = now + self.tag_expiry
        else:
            # not a request: no answer will come back on its tag, so any tag not owned serves (the
            # rotating one when all eight are owned: TO=1 never matches a response)
            tag = self._free_tag(src, dest, now)
            if tag is None:
                tag = self._tags.get(src, 0)
                self._tags[src] = (tag + 1) & 7
        self._queue(vm, src, dest, tag, True, bulk)

    def _queue(self, vm: VendorMessage, src: int, dest: int, tag: int, owner: bool, bulk: bool) -> None:
        packets = mctp.fragment(vm.to_bytes(), dest=dest, src=src, tag=tag, tag_owner=owner, mtu=self.spec.mtu)
        item = (asyncio.get_running_loop().time(), b"".join(mctp.encode_frame(p) for p in packets))
        if bulk:
            if vm.node in self._bulk:
                self.stats.decimated += 1
            self._bulk[vm.node] = item
        else:
            if len(self._urgent) >= URGENT_LIMIT:
                self._urgent.popleft()
                self.stats.overflow += 1
            self._urgent.append(item)
        self._wake.set()

    def _free_tag(self, src: int, dest: int, now: float) -> int | None:
        """The next tag of ``src`` to ``dest`` that is not owned (one whose owner waited past the
        expiry is taken back, and counted), or None while all eight are."""
        start = self._tags.get(src, 0)
        for k in range(8):
            tag = (start + k) & 7
            until = self._owned.get((src, dest, tag))
            if until is not None and until > now:
                continue
            if until is not None:
                del self._owned[(src, dest, tag)]
                self.stats.tags_reused += 1
            self._tags[src] = (tag + 1) & 7
            return tag
        return None

    def _arm_tag_timer(self, key: tuple[int, int]) -> None:
        """Wake the requests waiting on ``key`` when its first owned tag expires."""
        old = self._tag_timers.pop(key, None)
        if old is not None:
            old.cancel()
        src, dest = key
        untils = [u for (s, d, _), u in self._owned.items() if s == src and d == dest]
        if untils:
            self._tag_timers[key] = asyncio.get_running_loop().call_at(min(untils), self._release_tags, key)

    def _release_tags(self, key: tuple[int, int]) -> None:
        """Send the requests waiting on ``key`` that a freed or expired tag now lets go."""
        waiting = self._waiting.get(key)
        if not waiting or self._down is not None:
            return
        now = asyncio.get_running_loop().time()
        src, dest = key
        while waiting:
            tag = self._free_tag(src, dest, now)
            if tag is None:
                break
            vm, bulk = waiting.popleft()
            self._owned[(src, dest, tag)] = now + self.tag_expiry
            self._queue(vm, src, dest, tag, True, bulk)
        if waiting:
            self._arm_tag_timer(key)
        else:
            del self._waiting[key]
            timer = self._tag_timers.pop(key, None)
            if timer is not None:
                timer.cancel()

    def summary(self) -> str:
        """Counters in one line: what went out and came in, and what was dropped and why."""
        s = self.stats
        drops = {k: v for k, v in {**self.decoder.drops, **self.reassembler.losses}.items() if v}
        return (
            f"tx {s.tx_messages} messages ({s.tx_bytes} bytes), rx {s.rx_messages} messages "
            f"({s.rx_bytes} bytes), telemetry decimated {s.decimated}, dropped "
            + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none")
            + (f", not ours {s.rejected}" if s.rejected else "")
            + (f", requests that waited for a tag {s.tag_waits}" if s.tag_waits else "")
            + (f", tags taken back after {self.tag_expiry:g} s unanswered {s.tags_reused}" if s.tags_reused else "")
        )

    def utilisation(self) -> float:
        if not self.spec.paced:
            return 0.0
        return self.stats.utilisation(asyncio.get_running_loop().time())

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        baud = self.spec.baud
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._urgent or self._bulk:
                await self._drained.wait()
                if self._urgent:
                    queued, wire = self._urgent.popleft()
                else:
                    node = next(iter(self._bulk))
                    queued, wire = self._bulk.pop(node)
                self._sending = True
                if baud:
                    # The frame is on the line from `start` to `end` and reaches the far end at
                    # `end`, as from a UART: the bytes are handed over when the last one would
                    # arrive. It starts when it was queued or when the line came free, whichever
                    # is later, however late this task wakes up: frames queued back to back
                    # leave back to back.
                    start = max(queued, self._line_free)
                    end = start + len(wire) * BITS_PER_BYTE / baud
                    self._line_free = end
                    self.stats.occupy(start, end)
                    if end > loop.time():
                        await asyncio.sleep(end - loop.time())
                tr = self._transport
                if tr is None or self._down is not None:
                    return
                tr.write(wire)
                if self._tx_tap is not None:
                    self._tx_tap.feed(wire)
                self._sending = False
                self.stats.tx_bytes += len(wire)
                self.stats.tx_messages += 1

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued has gone to the port (and, paced, out of the line)."""
        deadline = time.monotonic() + timeout
        # polled: the writer task drains two queues and then the port
        busy = lambda: (self._urgent or self._bulk or self._sending or self._waiting) and self._down is None  # noqa: E731
        while busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
