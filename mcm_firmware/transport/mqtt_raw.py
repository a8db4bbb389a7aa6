"""An MQTT 3.1.1 transport on the packets of :mod:`.mqtt_wire`: a carrier's control connection.

A carrier's one connection takes every command of the nodes it carries and sends their answers,
events and state changes: a thousand commands a second is two thousand packets through one client.
Through a client library each costs a call chain, futures and a timer (about 0.2 ms of CPU in
paho-mqtt and aiomqtt here: see docs/performance.md); here a received PUBLISH costs a parse and an
acknowledgement, a sent one a write. The packets are byte for byte what paho-mqtt encodes
(``tests/transport/test_mqtt_wire.py``), and the transport behaves as :class:`.mqtt.MqttTransport`
does (``tests/transport/test_mqtt_raw.py`` runs both against a real Mosquitto):

* ``connect`` registers the will (QoS 1, retained), clean session, ``keepalive`` seconds;
* QoS 1 publishes (``reliable``) are written at once and acknowledged by the broker later; at most
  :data:`IN_FLIGHT` wait for their PUBACK (more wait their turn), and ``close`` waits for those
  in flight before DISCONNECT;
* QoS 1 PUBLISH received are acknowledged at once and queued for ``receive``;
* a packet larger than :data:`.security.MAX_PACKET` (the largest frame's, with topic and header) is
  never buffered: its topic and packet id are read, it is acknowledged, the rest of its bytes are
  dropped as they arrive, and ``receive`` hands the node it was for a :class:`.base.Delivery` with
  its size in ``oversize`` (the node counts it rejected);
* a PINGREQ goes out when the connection has been quiet for half the keep-alive; no packet from the
  broker for 1.5 keep-alives means a half-open link: the connection is dropped and ``receive``
  raises TransportError;
* ``abort`` drops the connection without DISCONNECT (the broker publishes the will).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections import deque
from typing import cast

from ..tasks import cancel_and_wait
from . import mqtt_wire as wire
from .base import Address, Delivery, Subscription, Transport, TransportError, Will
from .mqtt_fast import open_connection
from .security import MAX_PACKET, BrokerSecurity
from .topics import parse_topic, topic, topic_filter

IN_FLIGHT = 1024
"""QoS 1 publishes waiting for their PUBACK at once."""
HIGH_WATER = 1 << 20
"""Bytes waiting for the socket before publishes wait for it to drain."""
ACK_LATE_S = 0.5
"""A QoS 1 publish unacknowledged this long means the connection does not drain (a healthy broker
acknowledges within milliseconds, a burst of thousands within a tenth of a second)."""

_DOWN = object()
_PID = struct.Struct("!H")


class Slots:
    """At most ``n`` held at once, the waiters served in order: an ``asyncio.Semaphore`` whose
    release is O(1). (Python 3.11's Semaphore leaves a woken waiter in its deque until that task
    runs, so a burst of releases, one per PUBACK of a thousand QoS 1 publishes acknowledged in one
    read, scanned past every woken one: quadratic, tens of milliseconds in one callback.)"""

    def __init__(self, n: int) -> None:
        self.free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # handed a slot, then cancelled before taking it: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():  # a cancelled waiter is skipped
                fut.set_result(None)
                return
        self.free += 1


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RawMqttTransport) -> None:
        self.owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tr = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        sock = tr.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tr.set_write_buffer_limits(high=HIGH_WATER)
        self.owner._transport = tr

    def data_received(self, data: bytes) -> None:
        self.owner._data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(f"connection closed: {exc or 'by the broker'}")

    def pause_writing(self) -> None:
        self.owner._drained.clear()

    def resume_writing(self) -> None:
        self.owner._drained.set()


class RawMqttTransport(Transport):
    name = "mqtt"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 1883,
        client_id: str,
        keepalive: int = 10,
        connect_timeout: float = 5.0,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.security = security or BrokerSecurity()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._connack: asyncio.Future[int] | None = None
        self._subacks: dict[int, asyncio.Future[int]] = {}
        self._unacked: dict[int, asyncio.Future[None] | None] = {}
        self._sent_at: dict[int, float] = {}  # when each unacknowledged publish left, oldest first
        self._slots = Slots(IN_FLIGHT)
        self._drained = asyncio.Event()
        self._drained.set()
        self._next_pid = 0
        self._last_rx = self._last_tx = time.monotonic()
        self._keeper: asyncio.Task[None] | None = None
        self._why: str | None = None
        self._connected = False
        self.foreign = 0  # frames on topics outside the contract, ignored
        self.received = 0
        self.sent = 0
        self.oversize = 0  # packets above MAX_PACKET, skipped unread
        self.skipped_bytes = 0  # their bytes, dropped as they arrived
        self._skip = 0  # bytes of the oversize packet under way still to drop

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.security.tls else 'mqtt'}://{self.host}:{self.port}"

    # --- packets in --------------------------------------------------------------------------

    def _data(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        if self._skip:  # the rest of an oversize packet: dropped as it comes, never buffered
            dropped = min(self._skip, len(data))
            self._skip -= dropped
            self.skipped_bytes += dropped
            if dropped == len(data):
                return
            data = data[dropped:]
        buf = self._buffer
        buf += data
        i, n = 0, len(buf)
        tr = self._transport
        acks = []
        try:
            while i + 2 <= n:
                first, j, length, shift = buf[i], i + 1, 0, 0
                while j < n:
                    digit = buf[j]
                    j += 1
                    length |= (digit & 0x7F) << shift
                    if digit < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise wire.WireError("remaining length longer than four bytes")
                else:
                    break
                end = j + length
                kind = first & 0xF0
                if end - i > MAX_PACKET:
                    # larger than any frame's packet: its head (topic, packet id) is read, the
                    # rest dropped as it arrives; the node it was for counts it
                    head = self._oversize_head(first, buf, j, n, end)
                    if head is None:
                        break  # the head is not all here yet (at most MAX_PACKET bytes)
                    if kind == wire.PUBLISH:
                        topic_bytes, pid = head
                        if pid is not None:
                            acks.append(wire.puback(pid))
                        self._deliver(topic_bytes, b"", bool(first & 0x01), oversize=end - i)
                    self.oversize += 1
                    self._skip = max(0, end - n)
                    self.skipped_bytes += min(end, n) - i
                    i = min(end, n)
                    continue
                if end > n:
                    break
                if kind == wire.PUBLISH:
                    t_end = j + 2 + ((buf[j] << 8) | buf[j + 1])
                    start = t_end
                    if first & 0x06:
                        acks.append(wire.puback((buf[t_end] << 8) | buf[t_end + 1]))
                        start += 2
                    self._deliver(bytes(buf[j + 2 : t_end]), bytes(buf[start:end]), bool(first & 0x01))
                elif kind == wire.PUBACK:
                    pid = (buf[j] << 8) | buf[j + 1]
                    if pid in self._unacked:
                        fut = self._unacked.pop(pid)
                        self._sent_at.pop(pid, None)
                        self._slots.release()
                        if fut is not None and not fut.done():
                            fut.set_result(None)
                elif kind == wire.SUBACK:
                    sub = self._subacks.pop((buf[j] << 8) | buf[j + 1], None)
                    if sub is not None and not sub.done():
                        sub.set_result(buf[j + 2] if length > 2 else 0x80)
                elif kind == wire.CONNACK and self._connack is not None and not self._connack.done():
                    self._connack.set_result(buf[j + 1])
                i = end
        except (wire.WireError, IndexError) as e:
            if tr is not None:
                tr.abort()
            self._lost(f"bad packet from the broker: {e}")
        finally:
            del buf[:i]
        if acks and tr is not None and not tr.is_closing():
            tr.write(b"".join(acks))
            self._last_tx = time.monotonic()

    @staticmethod
    def _oversize_head(first: int, buf: bytearray, j: int, n: int, end: int) -> tuple[bytes, int | None] | None:
        """The topic and packet id (None at QoS 0) of an oversize packet whose body starts at
        ``buf[j]``, or None while they have not all arrived; ``(b"", None)`` for a packet that is
        not a PUBLISH (nothing of it is needed)."""
        if first & 0xF0 != wire.PUBLISH:
            return b"", None
        if j + 2 > n:
            return None
        t_end = j + 2 + ((buf[j] << 8) | buf[j + 1])
        h_end = t_end + (2 if first & 0x06 else 0)
        if h_end > end:
            raise wire.WireError("a PUBLISH shorter than its topic")
        if h_end > n:
            return None
        return bytes(buf[j + 2 : t_end]), ((buf[t_end] << 8) | buf[t_end + 1]) if first & 0x06 else None

    def _deliver(self, topic_bytes: bytes, payload: bytes, retained: bool, *, oversize: int = 0) -> None:
        try:
            address = parse_topic(topic_bytes.decode())
        except UnicodeDecodeError:
            address = None
        if address is None:
            self.foreign += 1
            return
        self.received += 1
        self._queue.put_nowait(Delivery(address, payload, retained, oversize))

    def _lost(self, why: str) -> None:
        if self._why is None:
            self._why = why
        self._transport = None
        self._connected = False
        self._queue.put_nowait(_DOWN)
        err = TransportError(self._why)
        for fut in [self._connack, *self._subacks.values(), *self._unacked.values()]:
            if fut is not None and not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: nobody may be waiting for it
        self._drained.set()

    # --- the connection ----------------------------------------------------------------------

    async def connect(self, *, will: Will | None = None) -> None:
        if self._connected or self._why is not None:
            raise TransportError("already connected" if self._connected else "a transport connects once")
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        try:
            username, password = self.security.credentials(self.client_id)
            packet = wire.connect(
                self.client_id,
                keepalive=self.keepalive,
                username=username,
                password=password.encode() if password else None,
                will=(topic(will.address), will.payload, 1, True) if will else None,
            )
        except (ValueError, OSError) as e:
            raise TransportError(f"cannot connect to broker {self.url}: {e}") from None
        try:
            await asyncio.wait_for(
                open_connection(_Protocol(self), self.host, self.port, self.security.for_client(self.client_id)),
                self.connect_timeout,
            )
        except TimeoutError:
            raise TransportError(
                f"cannot connect to broker {self.url}: no answer in {self.connect_timeout:g} s"
            ) from None
        tr = self._transport
        if tr is None:
            raise TransportError(self._why or f"cannot connect to broker {self.url}")
        tr.write(packet)
        try:
            code = await asyncio.wait_for(self._connack, self.connect_timeout)
        except (TimeoutError, TransportError) as e:
            tr.abort()
            raise TransportError(f"cannot connect to broker {self.url}: {e or 'no CONNACK'}") from None
        if code != 0:
            tr.abort()
            raise TransportError(
                f"broker {self.url} refused {self.client_id}: {wire.CONNACK_RETURN.get(code, f'code {code}')}"
            )
        self._connected = True
        self._last_rx = self._last_tx = time.monotonic()
        self._keeper = loop.create_task(self._keep_alive(), name=f"mqtt-raw-keepalive-{self.client_id}")

    async def _keep_alive(self) -> None:
        half = self.keepalive / 2
        while True:
            await asyncio.sleep(min(half, 1.0))
            now = time.monotonic()
            tr = self._transport
            if tr is None:
                return
            if now - self._last_rx > 1.5 * self.keepalive:
                tr.abort()
                self._lost(f"no packet from broker {self.url} for {now - self._last_rx:.1f} s (half-open link)")
                return
            if now - self._last_tx >= half:
                tr.write(wire.PINGREQ_PACKET)
                self._last_tx = now

    def _pid(self) -> int:
        for _ in range(0xFFFF):
            self._next_pid = self._next_pid % 0xFFFF + 1
            if self._next_pid not in self._unacked and self._next_pid not in self._subacks:
                return self._next_pid
        raise TransportError("no free packet id")

    async def subscribe(self, sub: Subscription) -> None:
        tr = self._transport
        if tr is None or not self._connected:
            raise TransportError(self._why or "not connected")
        pid = self._pid()
        fut = self._subacks[pid] = asyncio.get_running_loop().create_future()
        tr.write(wire.subscribe(pid, topic_filter(sub), qos=1))
        self._last_tx = time.monotonic()
        try:
            granted = await asyncio.wait_for(fut, self.connect_timeout)
        except TimeoutError:
            raise TransportError(f"no SUBACK from broker {self.url} for {topic_filter(sub)}") from None
        if granted == 0x80:
            raise TransportError(f"broker {self.url} refused the subscription {topic_filter(sub)} (not authorised?)")

    @property
    def backed_up(self) -> bool:
        """The connection does not drain: more than :data:`HIGH_WATER` bytes wait for the socket,
        or a QoS 1 publish has waited :data:`ACK_LATE_S` for its PUBACK."""
        if not self._connected:
            return False
        if not self._drained.is_set():
            return True
        oldest = next(iter(self._sent_at.values()), None)
        return oldest is not None and time.monotonic() - oldest > ACK_LATE_S

    async def publish(self, address: Address, payload: bytes, *, retain: bool = False, reliable: bool = False) -> None:
        if not self._drained.is_set():
            await self._drained.wait()
        tr = self._transport
        if tr is None or not self._connected:
            raise TransportError(self._why or "not connected")
        if reliable:
            await self._slots.acquire()
            tr = self._transport
            if tr is None:
                self._slots.release()
                raise TransportError(self._why or "not connected")
            pid = self._pid()
            self._unacked[pid] = None
            tr.write(wire.publish_qos1(topic(address), pid, payload, retain=retain))
            self._last_tx = self._sent_at[pid] = time.monotonic()
        else:
            tr.write(wire.publish(topic(address), payload, retain=retain))
            self._last_tx = time.monotonic()
        self.sent += 1

    async def receive(self) -> Delivery:
        item = await self._queue.get()
        if item is _DOWN:
            self._queue.put_nowait(_DOWN)  # every later receive fails too
            raise TransportError(self._why or "connection closed")
        return cast(Delivery, item)

    async def _settle(self, timeout: float) -> None:
        """Until every QoS 1 publish in flight is acknowledged (at most ``timeout`` s)."""
        loop = asyncio.get_running_loop()
        waits = []
        for pid, fut in list(self._unacked.items()):
            if fut is None:
                fut = self._unacked[pid] = loop.create_future()
            waits.append(fut)
        if waits:
            with contextlib.suppress(TimeoutError, TransportError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), timeout)

    async def close(self) -> None:
        tr = self._transport
        if tr is not None and self._connected:
            await self._settle(2.0)
            tr = self._transport
            if tr is not None:
                tr.write(wire.DISCONNECT_PACKET)
                tr.close()
        self._connected = False
        if self._why is None:
            self._lost("closed")
        if self._keeper is not None:
            await cancel_and_wait([self._keeper])
            self._keeper = None

    async def abort(self) -> None:
        tr = self._transport
        if tr is not None:
            tr.abort()
        self._lost("aborted")
        if self._keeper is not None:
            await cancel_and_wait([self._keeper])
            self._keeper = None
