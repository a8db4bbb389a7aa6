"""MQTT transport over aiomqtt (paho underneath). aiomqtt is imported here and nowhere else.

Topics as :mod:`.topics` spells them. Frames travel as binary payloads unchanged. A message
larger than any frame's packet is skipped without being read whole (:class:`_BoundedReader`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

import aiomqtt

from .base import Address, Delivery, Subscription, Transport, TransportError, Will
from .security import MAX_PACKET, TLS_PORT, BrokerSecurity, security_of
from .topics import parse_topic, topic, topic_filter

DEFAULT_PORT = 1883
log = logging.getLogger(__name__)
# aiomqtt warns whenever more than ten publishes are pending, as a carrier's are by design
_LIBRARY_LOG = logging.getLogger(__name__ + ".aiomqtt")
_LIBRARY_LOG.setLevel(logging.ERROR)
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
_PAHO_LOG_ERR = 8  # paho.mqtt.client.MQTT_LOG_ERR


def parse_broker_url(url: str) -> tuple[str, int]:
    """``mqtt://HOST[:PORT]`` (also ``tcp://``), or ``mqtts://HOST[:PORT]`` for TLS, with the
    security parameters of :mod:`.security` as a query -> (host, port); ValueError names what is
    wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp", "mqtts"):
        raise ValueError(
            f"broker URL {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
            + (f" (the scheme {parts.scheme!r} is not one)" if parts.scheme else "")
        )
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r} names no host")
    try:
        port = parts.port or (TLS_PORT if parts.scheme == "mqtts" else DEFAULT_PORT)
    except ValueError:
        raise ValueError(f"broker URL {url!r} has an invalid port") from None
    if parts.path not in ("", "/"):
        raise ValueError(f"broker URL {url!r} must not have a path")
    security_of(url)
    return parts.hostname, port


def _read_disconnect(client: aiomqtt.Client) -> None:
    """A connection the broker dropped (or one that never came up) leaves aiomqtt's
    "disconnected" future failed and unread, which asyncio would report as an error at exit: it
    is read here, the loss being known and handled by the caller."""
    gone: Any = getattr(client, "_disconnected", None)
    if gone is not None and gone.done() and not gone.cancelled():
        gone.exception()
    elif gone is not None and not gone.done():
        gone.add_done_callback(lambda f: f.cancelled() or f.exception())


def _guard_socket_callbacks(client: aiomqtt.Client) -> None:
    """aiomqtt (2.x) hands paho's "socket wants writing" to the loop as ``add_writer(fd)`` through
    ``call_soon_threadsafe``; when the connection breaks in between, the socket is closed by the
    time the loop runs it and the loop logs an ``OSError: Bad file descriptor`` traceback (hundreds
    of them when a broker with a thousand connections goes away). The same callbacks, with the
    descriptor read when the loop runs them and a closed socket skipped."""
    inner: Any = client
    paho = inner._client
    loop = inner._loop

    def register_write(_paho: Any, _userdata: Any, sock: Any) -> None:
        def write() -> None:
            try:
                _paho.loop_write()
            except Exception as exc:  # noqa: BLE001 - as aiomqtt does: a broken connection ends the client
                if not inner._disconnected.done():
                    inner._disconnected.set_exception(exc)

        def add() -> None:
            fd = sock.fileno()
            if fd >= 0:
                with contextlib.suppress(OSError, ValueError):
                    loop.add_writer(fd, write)

        loop.call_soon_threadsafe(add)

    def unregister_write(_paho: Any, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if fd >= 0:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_writer(fd)

    paho.on_socket_register_write = register_write
    paho.on_socket_unregister_write = unregister_write


SKIP_CHUNK = 64 * 1024
"""Bytes of an oversize packet read (and dropped) at once."""
_PUBLISH = 0x30


class _Oversize(aiomqtt.Message):
    """What stands for a PUBLISH larger than :data:`.security.MAX_PACKET` in aiomqtt's queue: its
    topic, no payload, its size."""

    def __init__(self, topic: str, qos: int, retain: bool, mid: int, size: int) -> None:
        super().__init__(topic, b"", qos, retain, mid, None)
        self.size = size


class _BoundedReader:
    """paho reads a packet whole, asking the socket for all its remaining length at once (a 10 MB
    PUBLISH is a 10 MB ``recv``, then a 10 MB buffer). Here, once a packet's fixed header says it is
    larger than :data:`.security.MAX_PACKET`, only its head (topic, packet id) is kept: the rest is
    read :data:`SKIP_CHUNK` bytes at a time and dropped (paho is handed one byte of each read, so
    that its count of the bytes still due stays right), and instead of the packet the receive queue
    gets an :class:`_Oversize` (acknowledged at QoS 1, as a message handed over is). paho's
    ``_sock_recv`` and ``_packet_handle`` of this one client are wrapped; MQTT 3.1.1 stays (its
    sessions, wills and retained messages as they are): the bound holds on any broker, the embedded
    one included, and every oversize message is counted by the node it was for."""

    def __init__(self, client: aiomqtt.Client, owner: MqttTransport) -> None:
        inner: Any = client
        self.paho = paho = inner._client
        self.queue: asyncio.Queue[aiomqtt.Message] = inner._queue
        self.owner = owner
        self.recv = paho._sock_recv
        self.handle = paho._packet_handle
        paho._sock_recv = self._recv
        paho._packet_handle = self._handle

    def _size(self) -> int:
        """The size of the packet being read when it is oversize, else 0."""
        pkt = self.paho._in_packet
        if not pkt["have_remaining"]:
            return 0
        size = 1 + len(pkt["remaining_count"]) + pkt["remaining_length"]
        return size if size > MAX_PACKET else 0

    @staticmethod
    def _head(command: int, got: bytearray, remaining: int) -> int:
        """Bytes of an oversize packet's body to keep: a PUBLISH's topic and packet id."""
        if command & 0xF0 != _PUBLISH:
            return 0
        if len(got) < 2:
            return min(2, remaining)
        return min(2 + ((got[0] << 8) | got[1]) + (2 if command & 0x06 else 0), remaining)

    def _recv(self, bufsize: int) -> bytes:
        if not self._size():
            return cast(bytes, self.recv(bufsize))
        pkt = self.paho._in_packet
        got: bytearray = pkt["packet"]
        keep = self._head(pkt["command"], got, pkt["remaining_length"])
        if len(got) < keep:
            return cast(bytes, self.recv(min(bufsize, keep - len(got))))
        del got[keep:]  # the byte paho kept of the last read
        data = cast(bytes, self.recv(min(bufsize, SKIP_CHUNK)))
        if len(data) > 1:
            pkt["to_process"] -= len(data) - 1
            self.owner.skipped_bytes += len(data) - 1
            return data[-1:]
        return data

    def _handle(self) -> Any:
        size = self._size()
        if not size:
            return self.handle()
        pkt = self.paho._in_packet
        command: int = pkt["command"]
        self.owner.oversize += 1
        got = bytes(pkt["packet"])
        if command & 0xF0 != _PUBLISH or len(got) < 2:
            return 0  # MQTT_ERR_SUCCESS: nothing of it to hand over
        t_end = 2 + ((got[0] << 8) | got[1])
        qos = (command >> 1) & 0x03
        mid = (got[t_end] << 8) | got[t_end + 1] if qos and len(got) >= t_end + 2 else 0
        try:
            name = got[2:t_end].decode()
            self.queue.put_nowait(_Oversize(name, qos, bool(command & 0x01), mid, size))
        except (UnicodeDecodeError, ValueError):  # a topic that is no topic
            self.owner.foreign += 1
        return self.paho._send_puback(mid) if qos == 1 else 0


class _Watchdog:
    """One task per event loop that looks at every live MQTT connection once a second and aborts
    the half-open ones (:meth:`MqttTransport._half_open`): one wake-up a second for a whole fleet
    instead of one per connection."""

    def __init__(self) -> None:
        self.live: set[MqttTransport] = set()
        self.task: asyncio.Task[None] | None = None
        self.aborted = 0

    def add(self, tr: MqttTransport) -> None:
        self.live.add(tr)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-keepalive-watchdog")

    def discard(self, tr: MqttTransport) -> None:
        self.live.discard(tr)
        if not self.live and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self) -> None:
        while self.live:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for tr in [t for t in self.live if t._half_open(now)]:
                self.live.discard(tr)
                self.aborted += 1
                log.info("%s: no answer to a keep-alive ping: the connection is half-open, closing it", tr.client_id)
                tr._shut_socket()


_WATCHDOGS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Watchdog] = weakref.WeakKeyDictionary()


def _watchdog() -> _Watchdog:
    loop = asyncio.get_running_loop()
    dog = _WATCHDOGS.get(loop)
    if dog is None:
        dog = _WATCHDOGS[loop] = _Watchdog()
    return dog


class MqttTransport(Transport):
    name = "mqtt"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        client_id: str | None = None,
        keepalive: int = 10,
        connect_timeout: float = 5.0,
        bind_address: str = "",
        security: BrokerSecurity | None = None,
    ) -> None:
        self.host = host
        self.security = security or BrokerSecurity()
        self.bind_address = bind_address  # the local address to connect from ("": the OS chooses)
        self.port = port
        self.client_id = client_id or f"mcm-{uuid.uuid4().hex[:12]}"
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self._client: aiomqtt.Client | None = None
        self._messages: AsyncIterator[aiomqtt.Message] | None = None
        self.foreign = 0  # frames on topics outside the contract, ignored
        self.unsolicited = 0  # frames matching none of our subscriptions, ignored
        self.oversize = 0  # packets above MAX_PACKET, skipped unread (_BoundedReader)
        self.skipped_bytes = 0  # their bytes, dropped as they were read
        self._subs: list[Subscription] = []

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.security.tls else 'mqtt'}://{self.host}:{self.port}"

    async def connect(self, *, will: Will | None = None) -> None:
        if self._client is not None:
            raise TransportError("already connected")
        try:
            username, password = self.security.credentials(self.client_id)
            tls_context = self.security.ssl_context(self.client_id)
        except (ValueError, OSError) as e:  # a secret file or certificate that cannot be read
            raise TransportError(f"cannot connect to broker {self.url}: {e}") from None
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.client_id,
            username=username,
            password=password,
            tls_context=tls_context,
            will=aiomqtt.Will(topic(will.address), will.payload, qos=1, retain=True) if will else None,
            keepalive=self.keepalive,
            timeout=self.connect_timeout,
            clean_session=True,
            socket_options=_NODELAY,
            logger=_LIBRARY_LOG,
            # paho's default of 20 messages in flight rescans every queued message on each PUBACK:
            # quadratic for a carrier with thousands of BIRTHs and DEATHs at once
            max_inflight_messages=0,
            bind_address=self.bind_address,
        )
        _guard_socket_callbacks(client)
        _BoundedReader(client, self)
        # what paho says went wrong while connecting (a TLS alert from the broker: a certificate
        # required or refused), which aiomqtt reports only as a time-out; read while connecting only
        errors: list[str] = []
        paho: Any = client._client

        def on_log(_client: Any, _userdata: Any, level: int, text: str) -> None:
            if level == _PAHO_LOG_ERR:
                errors.append(text)

        paho.on_log = on_log
        try:
            await client.__aenter__()
        except aiomqtt.MqttError as e:
            _read_disconnect(client)
            why = f"{e}: {errors[-1]}" if errors else str(e)
            raise TransportError(f"cannot connect to broker {self.url}: {why}") from None
        except OSError as e:
            _read_disconnect(client)
            raise TransportError(f"cannot connect to broker {self.url}: {e.strerror or e}") from None
        finally:
            paho.on_log = None
        self._client = client
        _watchdog().add(self)
        self._messages = client.messages.__aiter__()

    def _half_open(self, now: float) -> bool:
        """True when the broker has not answered a keep-alive ping for half a keep-alive period:
        paho pings after a keep-alive period without traffic, so a connection over which nothing
        comes back is known dead within 1.5 x keep-alive (paho itself would wait a second
        period)."""
        client = self._client
        if client is None:
            return False
        paho: Any = client._client
        sent = getattr(paho, "_ping_t", 0)
        return bool(sent) and now - sent > self.keepalive / 2

    async def close(self) -> None:
        _watchdog().discard(self)
        client, self._client = self._client, None
        self._messages = None
        if client is not None:
            # already down, or the broker does not answer: nothing to close cleanly
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await asyncio.wait_for(client.__aexit__(None, None, None), self.connect_timeout)
            _read_disconnect(client)

    async def abort(self) -> None:
        """Shut the TCP connection down under the MQTT client: no DISCONNECT is sent, so the
        broker publishes the Last Will at once."""
        self._shut_socket()
        await self.close()

    def _shut_socket(self) -> None:
        """Shut the TCP connection down under the MQTT client (no DISCONNECT): the client sees
        the connection lost, the broker publishes the will."""
        client = self._client
        if client is not None:
            # paho's socket; aiomqtt exposes no abort. paho types it as its SocketLike protocol
            # (no shutdown); it is a socket.socket or an ssl.SSLSocket, both of which have it.
            sock = cast("socket.socket | None", client._client.socket())
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _require(self) -> aiomqtt.Client:
        if self._client is None:
            raise TransportError(f"not connected to {self.url}")
        return self._client

    async def subscribe(self, sub: Subscription) -> None:
        self._subs.append(sub)
        try:
            await self._require().subscribe(topic_filter(sub), qos=1)
        except aiomqtt.MqttError as e:
            raise TransportError(f"subscribe failed: {e}") from None

    async def publish(self, address: Address, payload: bytes, *, retain: bool = False, reliable: bool = False) -> None:
        """Until the frame is written (QoS 0) or acknowledged (QoS 1), however long the connection
        takes to drain, or until the connection is lost (TransportError). No time limit of its own:
        a frame given up on while paho still holds it would be sent anyway, counted lost (a
        response requeued after a timeout went out twice, and was counted dropped as well); a
        connection that carries nothing is found half-open and aborted (:class:`_Watchdog`)."""
        client = self._require()
        gone: asyncio.Future[None] = client._disconnected
        if gone.done():
            raise TransportError(f"publish failed: connection to {self.url} lost")
        sent = asyncio.ensure_future(
            client.publish(topic(address), payload, qos=1 if reliable else 0, retain=retain, timeout=math.inf)
        )
        try:
            await asyncio.wait((sent, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not sent.done():
                sent.cancel()
                await asyncio.gather(sent, return_exceptions=True)
        if sent.cancelled():
            raise TransportError(f"publish failed: connection to {self.url} lost")
        e = sent.exception()
        if isinstance(e, aiomqtt.MqttError):
            raise TransportError(f"publish failed: {e}") from None
        if e is not None:
            raise e

    async def receive(self) -> Delivery:
        self._require()
        while True:
            messages = self._messages  # set and cleared with _client
            if messages is None:  # close() ran while the last message was awaited
                raise TransportError(f"connection to {self.url} closed")
            try:
                msg = await messages.__anext__()
            except aiomqtt.MqttError as e:
                raise TransportError(f"connection to {self.url} lost: {e}") from None
            except StopAsyncIteration:
                raise TransportError(f"connection to {self.url} closed") from None
            addr = parse_topic(msg.topic.value)
            if addr is None:
                self.foreign += 1
                continue
            # A broker must only send what matches our filters (MQTT 3.1.1 §3.3.1); amqtt 0.12
            # replays, on every connect, retained messages for filters of *other* clients.
            if not any(s.matches(addr) for s in self._subs):
                self.unsolicited += 1
                continue
            if isinstance(msg, _Oversize):
                return Delivery(addr, b"", bool(msg.retain), msg.size)
            payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else b""
            return Delivery(addr, bytes(payload), bool(msg.retain))
