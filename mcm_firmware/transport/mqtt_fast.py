"""A publish-only MQTT connection for telemetry: a whole slot of frames in one write.

A carrier's telemetry leaves here, beside (not through) its control connection: the packets of a
slot are assembled in one vectorised pass (:class:`.mqtt_wire.TopicSet`, byte for byte what
paho-mqtt encodes) and handed to the socket in one ``write``; commands, responses and events keep the
control connection, so they never queue behind a slot of telemetry. QoS 0, no will, a clean
session; keep-alive by PINGREQ when the connection has been quiet, a lost connection retried with
exponential backoff and jitter. A slot that finds the connection down, more than
``max_backlog`` bytes still waiting for the socket, the control connection backed up (answers
and events go first), or telemetry written more than its ``max_age`` ago still waiting (for this
process's buffer or the kernel's, ``TIOCOUTQ``), is refused (the caller counts it dropped):
telemetry is only worth its newest value, and a module would rather drop it than deliver it late.
What was written cannot be recalled, so a frame can still arrive late by what the link takes to
drain what was written before it, but no slot joins telemetry that is already stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import random
import socket
import sys
import termios
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np

from ..backoff import Backoff
from ..tasks import cancel_and_wait
from . import mqtt_wire as wire
from .base import TransportError
from .security import BrokerSecurity

MAX_BACKLOG = 4 << 20  # bytes waiting for the socket before slots are refused
MIN_MAX_AGE = 0.5
"""Seconds: the shortest age at which waiting telemetry counts as stale, whatever the telemetry
period, so that a broker that stops reading for a moment on a busy machine sheds nothing."""
_OUTQ = getattr(termios, "TIOCOUTQ", None)  # = SIOCOUTQ on a TCP socket: bytes the peer has not acknowledged


def unsent(fd: int) -> int:
    """Bytes written to a TCP socket that its peer has not acknowledged yet (0 where the system
    cannot tell)."""
    if _OUTQ is None or fd < 0:
        return 0
    with contextlib.suppress(OSError):
        return int.from_bytes(fcntl.ioctl(fd, _OUTQ, bytes(4)), sys.byteorder, signed=True)
    return 0


@dataclass(frozen=True, slots=True)
class Prepared:
    """The topics of a shard's nodes, encoded once, and how old its telemetry may grow while it
    waits for the socket before new slots are refused (seconds)."""

    topics: wire.TopicSet
    max_age: float


READ_CHUNK = 256 * 1024  # what asyncio reads at once; a shorter read means the socket ran dry


async def open_connection(protocol: asyncio.Protocol, host: str, port: int, security: BrokerSecurity) -> None:
    """A TCP (or, for ``mqtts``, TLS) connection to the broker run by ``protocol``."""
    loop = asyncio.get_running_loop()
    try:
        ctx = security.ssl_context()
        await loop.create_connection(lambda: protocol, host, port, ssl=ctx, server_hostname=host if ctx else None)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or e
        raise TransportError(f"cannot connect to broker {host}:{port}: {reason}") from None


def connect_packet(client_id: str, keepalive: int, security: BrokerSecurity) -> bytes:
    try:
        username, password = security.credentials(client_id)
    except ValueError as e:
        raise TransportError(f"cannot connect as {client_id}: {e}") from None
    return wire.connect(
        client_id, keepalive=keepalive, username=username, password=password.encode() if password else None
    )


class FastPublisher(asyncio.Protocol):
    """See the module docstring."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive: int = 10,
        max_backlog: int = MAX_BACKLOG,
        rng: random.Random | None = None,
        security: BrokerSecurity | None = None,
        yield_to: Callable[[], bool] | None = None,
    ) -> None:
        """``yield_to``: while it returns True (the connection that carries answers and events
        does not drain), slots are refused, so that telemetry is shed before any of those is."""
        self.security = security or BrokerSecurity()
        self.host = host
        self.port = port
        self.client_id = client_id
        self.keepalive = keepalive
        self.max_backlog = max_backlog
        self.yield_to = yield_to
        self._transport: asyncio.Transport | None = None
        self._fd = -1
        self._written = 0  # bytes of slots handed to the connection
        self._slots: deque[tuple[int, float]] = deque()  # (stream offset of a slot's end, when written)
        self._buffer = bytearray()
        self._connack: asyncio.Future[int] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._backoff = Backoff(rng=rng or random.Random())
        self.last_error = ""
        self.sent_packets = 0
        self.sent_bytes = 0
        self.refused_down = 0  # slots refused while the connection was down
        self.refused_backlog = 0  # slots refused because the socket was backed up
        self.refused_yielding = 0  # slots refused while answers and events could not leave
        self.refused_stale = 0  # slots refused while older telemetry waited longer than its max age
        self.connects = 0

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._transport = transport
        self._written = 0
        self._slots.clear()
        sock = transport.get_extra_info("socket")
        self._fd = -1
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._fd = sock.fileno()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        try:
            packets = wire.split_packets(self._buffer)
        except wire.WireError as e:
            self.last_error = str(e)
            if self._transport is not None:
                self._transport.abort()
            return
        for kind, body in packets:
            if kind == wire.CONNACK and self._connack is not None and not self._connack.done():
                self._connack.set_result(wire.parse_connack(bytes((kind, len(body))) + body))
            # PINGRESP needs no answer: any byte from the broker shows the connection lives

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fd = -1
        self._up.clear()
        if exc is not None:
            self.last_error = str(exc)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(TransportError(f"connection closed: {exc or 'by the broker'}"))
        self._lost.set()

    # --- the connection's life -------------------------------------------------------------------

    @property
    def up(self) -> bool:
        return self._up.is_set()

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._keep(), name=f"fast-publisher-{self.client_id}")

    async def wait_up(self, timeout: float | None = None) -> None:
        self.start()
        try:
            await asyncio.wait_for(self._up.wait(), 10.0 if timeout is None else timeout)
        except TimeoutError:
            raise TransportError(
                f"telemetry connection {self.client_id} to {self.host}:{self.port} is not up: "
                f"{self.last_error or 'no answer'}"
            ) from None

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        self._buffer.clear()
        self._lost.clear()
        self._connack = loop.create_future()
        await open_connection(self, self.host, self.port, self.security.for_client(self.client_id))
        assert self._transport is not None
        self._transport.write(connect_packet(self.client_id, self.keepalive, self.security))
        try:
            code = await asyncio.wait_for(self._connack, 10.0)
        except TimeoutError:
            self._transport.abort()
            raise TransportError(f"no CONNACK from {self.host}:{self.port}") from None
        if code != 0:
            self._transport.close()
            raise TransportError(f"broker refused the telemetry connection: {wire.CONNACK_RETURN.get(code, code)}")

    async def _keep(self) -> None:
        while not self._closing:
            try:
                await self._connect()
                self.connects += 1
                self._backoff.reset()
                self._up.set()
                await self._ping_until_lost()
            except TransportError as e:
                self.last_error = str(e)
            self._up.clear()
            if not self._closing:
                await asyncio.sleep(self._backoff.next())

    async def _ping_until_lost(self) -> None:
        """PINGREQ every half keep-alive; the broker drops a silent client after 1.5 keep-alives."""
        period = max(1.0, self.keepalive / 2)
        while not self._lost.is_set():
            try:
                await asyncio.wait_for(self._lost.wait(), period)
            except TimeoutError:
                tr = self._transport
                if tr is not None and not tr.is_closing():
                    tr.write(wire.PINGREQ_PACKET)

    async def close(self) -> None:
        """DISCONNECT and close."""
        self._closing = True
        tr = self._transport
        if tr is not None and not tr.is_closing():
            tr.write(wire.DISCONNECT_PACKET)
            tr.close()
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None

    # --- telemetry -------------------------------------------------------------------------------

    def prepare(self, topics: Sequence[str], payload_size: int, *, max_age: float = 1.0) -> Prepared:
        """The headers of ``topics`` for payloads of ``payload_size`` bytes, built once; slots
        sent with them are refused while telemetry written more than ``max_age`` seconds ago (its
        telemetry period; at least :data:`MIN_MAX_AGE`) still waits for the socket."""
        return Prepared(wire.TopicSet(topics, payload_size), max(MIN_MAX_AGE, max_age))

    def waiting_since(self) -> float | None:
        """When the oldest slot still waiting for the socket or the peer was written
        (``time.monotonic()``), None when all went."""
        tr = self._transport
        if tr is None or not self._slots:
            return None
        gone = self._written - tr.get_write_buffer_size() - unsent(self._fd)
        slots = self._slots
        while slots and slots[0][0] <= gone:
            slots.popleft()
        return slots[0][1] if slots else None

    def send_prepared(self, topics: Prepared, rows: np.ndarray, payloads: np.ndarray) -> bool:
        tr = self._transport
        if tr is None or not self._up.is_set() or tr.is_closing():
            self.refused_down += 1
            return False
        if tr.get_write_buffer_size() > self.max_backlog:
            self.refused_backlog += 1
            return False
        if self.yield_to is not None and self.yield_to():
            self.refused_yielding += 1
            return False
        now = time.monotonic()
        since = self.waiting_since()
        if since is not None and now - since > topics.max_age:
            self.refused_stale += 1
            return False
        blob = topics.topics.encode(rows, payloads)
        tr.write(blob)
        self._written += len(blob)
        self._slots.append((self._written, now))
        self.sent_packets += len(rows)
        self.sent_bytes += len(blob)
        return True

    def summary(self) -> str:
        return (
            f"telemetry connection {self.client_id}: {self.sent_packets} packets ({self.sent_bytes} bytes), "
            f"{self.connects} connects, slots refused: {self.refused_down} down, {self.refused_backlog} backed up, "
            f"{self.refused_yielding} yielding to answers, {self.refused_stale} behind stale telemetry"
        )


class FastSubscriber(asyncio.Protocol):
    """A QoS 0 subscriber that hands every PUBLISH it receives to ``on_publish(topic, payload)``
    (the topic's bytes, and a view of the payload valid during the call), parsing the stream in bulk:
    for counting traffic at rates a library client cannot keep up with (``mcm-emu bench``'s
    independent subscriber)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        topic_filter: str,
        on_publish: Callable[[bytes, memoryview], None],
        keepalive: int = 30,
        batch_s: float = 0.002,
        security: BrokerSecurity | None = None,
        bulk: Callable[[bytearray, int], tuple[int, int]] | None = None,
    ) -> None:
        """``bulk``, when given, takes the runs of PUBLISH packets instead of ``on_publish``:
        called with the stream's buffer and the offset of a PUBLISH, it consumes the complete
        PUBLISH packets from there and returns (the offset it reached, the packets it took); it
        stops before any other packet, which this class reads."""
        self.security = security or BrokerSecurity()
        self.host, self.port, self.client_id = host, port, client_id
        self.topic_filter = topic_filter
        self.on_publish = on_publish
        self.keepalive = keepalive
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._suback: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[int] | None = None
        self.closed = asyncio.Event()
        self.packets = 0
        self.batch_s = batch_s
        self.bulk = bulk

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        """Walk the stream packet by packet without copying: the hot loop of a counter that keeps
        up with a broker's full rate (a QoS 0 PUBLISH costs a varint, a topic and a call)."""
        buf = self._buffer
        buf += data
        view = memoryview(buf)
        on_publish, bulk = self.on_publish, self.bulk
        i, n, count = 0, len(buf), 0
        try:
            while i + 2 <= n:
                first, j, length, shift = buf[i], i + 1, 0, 0
                if bulk is not None and first & 0xF0 == wire.PUBLISH:
                    reached, got = bulk(buf, i)
                    count += got
                    if reached == i:
                        break  # an incomplete PUBLISH: it waits for the rest
                    i = reached
                    continue
                while j < n:
                    digit = buf[j]
                    j += 1
                    length |= (digit & 0x7F) << shift
                    if digit < 0x80:
                        break
                    shift += 7
                else:
                    break  # the length itself is not complete yet
                end = j + length
                if end > n:
                    break
                if first & 0xF0 == wire.PUBLISH:
                    t_end = j + 2 + ((buf[j] << 8) | buf[j + 1])
                    # a packet id follows the topic at QoS 1 or 2 (never sent to this QoS 0 subscriber)
                    on_publish(bytes(view[j + 2 : t_end]), view[t_end + (2 if first & 0x06 else 0) : end])
                    count += 1
                elif first == wire.CONNACK and self._connack is not None and not self._connack.done():
                    self._connack.set_result(buf[j + 1])
                elif first == wire.SUBACK and self._suback is not None and not self._suback.done():
                    self._suback.set_result(None)
                i = end
        finally:
            self.packets += count
            view.release()
            del buf[:i]
        tr = self._transport
        if tr is not None and len(data) < READ_CHUNK and self.batch_s > 0:
            # a short read: let the broker's writes pile up a little before the next wake-up
            tr.pause_reading()
            asyncio.get_running_loop().call_later(self.batch_s, self._resume)

    def _resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self.closed.set()
        for fut in (self._connack, self._suback):
            if fut is not None and not fut.done():
                fut.set_exception(TransportError(f"connection closed: {exc or 'by the broker'}"))

    async def start(self) -> None:
        """Connect and subscribe; TransportError when either fails."""
        loop = asyncio.get_running_loop()
        self._connack, self._suback = loop.create_future(), loop.create_future()
        await open_connection(self, self.host, self.port, self.security.for_client(self.client_id))
        assert self._transport is not None
        self._transport.write(connect_packet(self.client_id, self.keepalive, self.security))
        code = await asyncio.wait_for(self._connack, 10)
        if code != 0:
            raise TransportError(f"broker refused the subscriber: {wire.CONNACK_RETURN.get(code, code)}")
        self._transport.write(wire.subscribe(1, self.topic_filter))
        await asyncio.wait_for(self._suback, 10)

    def ping(self) -> None:
        if self._transport is not None:
            self._transport.write(wire.PINGREQ_PACKET)

    def send(self, packet: bytes) -> bool:
        """Write a packet of one's own on the connection (e.g. a PUBLISH); False when it is down."""
        if self._transport is None or self._transport.is_closing():
            return False
        self._transport.write(packet)
        return True

    def close(self) -> None:
        if self._transport is not None:
            self._transport.write(wire.DISCONNECT_PACKET)
            self._transport.close()
