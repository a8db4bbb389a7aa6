"""Serial links: MCTP over DSP0253 framing on a serial port, paced to its baud rate.

pyserial is imported here and nowhere else. One :class:`SerialLink` is one open port; endpoints
(:class:`SerialTransport`, one per node, or one host) attach to it, each with its own MCTP
endpoint id (EID): several nodes can share one link, told apart by EID.

Port URLs: a device path (``/dev/ttyUSB0``), ``pty`` (a new pseudo-terminal; its path is
:attr:`SerialLink.path`), ``loop://``, ``socket://HOST:PORT``, ``rfc2217://HOST:PORT``. Options
go in the query: ``?baud=921600`` (the line rate the link is paced to; ``0``, the default for
``pty``, ``loop://`` and ``socket://``, means unpaced), ``&mtu=64`` (message bytes per MCTP
packet, 1..251).

What MQTT gives and a serial line does not is done here, at the link level (no firmware logic):

* retained frames: a node endpoint keeps the last retained frame per channel and sends it again
  when a host attaches (HELLO); the host endpoint keeps what it heard for late subscribers;
* Last Will: a node endpoint sends its will (WILL) on connect and KEEPALIVE when it has sent
  nothing for ``keepalive`` seconds; the host endpoint publishes the will of a node it has not
  heard from for 3 × keepalive, and forgets it on BYE (a clean close);
* priorities: frames of the ``tlm`` channel are bulk. When the line is busy only the newest
  telemetry frame of each node waits (older ones are dropped and counted as decimated); every
  other frame (commands, responses, events, state) waits its turn and is never dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import tty
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

import serial
import serial_asyncio_fast

from ..protocol import mctp
from ..protocol.mctp import EID_BROADCAST, ChannelCode, Kind, VendorMessage
from ..tasks import cancel_and_wait
from .base import Address, Channel, Delivery, Subscription, Transport, TransportError, Will

HOST_EID = 8
"""The host (bus owner) end of every link; MCTP EIDs 0..7 are reserved."""
FIRST_NODE_EID = 9
BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
DEFAULT_KEEPALIVE = 1.0
URGENT_LIMIT = 4096
"""Messages waiting for the line beyond this many: the oldest are dropped (counted)."""
HIGH_WATER = 16 * 1024
"""Bytes buffered under the port before the link stops writing and waits for the OS to drain."""
UTIL_WINDOW = 1.0

_CHANNEL_CODE = {Channel.STATE: ChannelCode.STATE, Channel.TLM: ChannelCode.TLM,
                 Channel.EVT: ChannelCode.EVT, Channel.CMD: ChannelCode.CMD, Channel.RSP: ChannelCode.RSP}
_CODE_CHANNEL = {int(v): k for k, v in _CHANNEL_CODE.items()}


@dataclass(frozen=True, slots=True)
class PortSpec:
    url: str
    """``pty`` or a pyserial URL (device path, loop://, socket://, rfc2217://) without our options."""
    baud: int = 0
    """Line rate in bit/s the link is paced to; 0: unpaced."""
    mtu: int = mctp.BASELINE_MTU

    @property
    def paced(self) -> bool:
        return self.baud > 0


def parse_port_url(text: str) -> PortSpec:
    """``pty``, a device path or a pyserial URL, with ``baud`` / ``mtu`` in the query; ValueError
    names what is wrong."""
    if not text:
        raise ValueError("serial port URL is empty")
    parts = urlsplit(text)
    if parts.scheme not in ("", "loop", "socket", "rfc2217"):
        raise ValueError(f"serial port URL {text!r}: scheme {parts.scheme!r} is not one of "
                         "a device path, pty, loop://, socket://, rfc2217://")
    rest: list[tuple[str, str]] = []
    baud, mtu = None, mctp.BASELINE_MTU
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("baud", "mtu"):
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"serial port URL {text!r}: {key}={value!r} is not an integer") from None
            if key == "baud":
                if not 0 <= number <= 100_000_000:
                    raise ValueError(f"serial port URL {text!r}: baud {number} is outside 0..100000000")
                baud = number
            else:
                if not 1 <= number <= mctp.MAX_MTU:
                    raise ValueError(f"serial port URL {text!r}: mtu {number} is outside 1..{mctp.MAX_MTU}")
                mtu = number
        else:
            rest.append((key, value))
    base = text.split("?", 1)[0]
    if parts.scheme in ("socket", "rfc2217") and (not parts.hostname or parts.port is None):
        raise ValueError(f"serial port URL {text!r} needs HOST:PORT")
    if not parts.scheme and base != "pty" and not base.startswith("/"):
        raise ValueError(f"serial port {text!r} is not a device path (/dev/...), pty or a URL")
    url = base + ("?" + urlencode(rest) if rest else "")
    # A real UART paces itself at its baud rate; give it the same figure for the bookkeeping.
    # A pseudo-terminal (ours, or one under /dev/pts) is unthrottled unless told otherwise.
    if baud is None:
        baud = 0 if parts.scheme or base == "pty" or base.startswith("/dev/pts/") else 115200
    return PortSpec(url, baud, mtu)


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


class _PtyPort:
    """The master side of a pseudo-terminal, shaped like the part of ``serial.Serial`` that
    pyserial-asyncio-fast uses. The slave is kept open (raw) so the far end may come and go."""

    def __init__(self) -> None:
        self.fd, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.fd, False)
        self.path = os.ttyname(self._slave)
        self.timeout: float | None = 0
        self.write_timeout: float | None = 0
        self.is_open = True

    def fileno(self) -> int:
        return self.fd

    def read(self, n: int) -> bytes:
        try:
            return os.read(self.fd, n)
        except BlockingIOError:
            return b""
        except OSError as e:
            raise serial.SerialException(f"pty {self.path}: {e.strerror}") from None

    def write(self, data: bytes) -> int:
        try:
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            raise
        except OSError as e:
            raise serial.SerialException(f"pty {self.path}: {e.strerror}") from None

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.is_open:
            self.is_open = False
            for fd in (self.fd, self._slave):
                with contextlib.suppress(OSError):
                    os.close(fd)


class GuardedSerialTransport(serial_asyncio_fast.SerialTransport):
    """pyserial-asyncio-fast's transport with its writer disarmed once the buffer is empty.

    In 0.16 a partial write arms the event-loop writer; the callback that later sends the rest
    leaves it armed, and the next callback finds an empty buffer and fails with "Write buffer
    should not be empty" (or, under ``-O``, spins). Fixed upstream only in an open pull request.
    """

    def _write_ready(self) -> None:
        if not self._write_buffer:
            self._remove_writer()
            return
        super()._write_ready()
        if not self._write_buffer and self._has_writer:
            self._remove_writer()


class _ThreadedPort(asyncio.Transport):
    """An asyncio transport over a pyserial port without a file descriptor (``loop://``,
    ``rfc2217://``): one named reader thread, writes done in place."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, port: Any) -> None:
        super().__init__()
        self._loop = loop
        self._protocol = protocol
        self._port = port
        self._closing = False
        self._thread = threading.Thread(target=self._reader, name=f"serial-reader-{port.name}", daemon=True)
        loop.call_soon(protocol.connection_made, self)
        self._thread.start()

    def _reader(self) -> None:
        exc: BaseException | None = None
        while not self._closing:
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except Exception as e:  # the port went away
                exc = e
                break
            if data and not self._closing:
                self._loop.call_soon_threadsafe(self._deliver, data)
        if exc is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._lost, exc)

    def _deliver(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)

    def _lost(self, exc: BaseException | None) -> None:
        self._protocol.connection_lost(exc)  # type: ignore[arg-type]

    def write(self, data: Any) -> None:
        if not self._closing:
            try:
                self._port.write(data)
            except Exception as e:
                self._loop.call_soon(self._lost, e)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            if hasattr(self._port, "cancel_read"):
                self._port.cancel_read()
            self._thread.join(timeout=2)
            with contextlib.suppress(Exception):
                self._port.close()
            self._loop.call_soon(self._lost, None)

    def abort(self) -> None:
        self.close()


async def open_port(spec: PortSpec, protocol: asyncio.Protocol) -> tuple[asyncio.BaseTransport, str | None]:
    """Open the port ``spec`` names with ``protocol`` on it: an asyncio transport and the port's
    path (the slave side of a new pty, a device's path; None for URLs). TransportError names
    what failed."""
    loop = asyncio.get_running_loop()
    url = spec.url
    path = None
    try:
        if url == "pty":
            port: Any = _PtyPort()
            path = port.path
            transport: asyncio.BaseTransport = GuardedSerialTransport(loop, protocol, port)
        elif url.startswith("socket://"):
            parts = urlsplit(url)
            transport, _ = await loop.create_connection(lambda: protocol, parts.hostname, parts.port)
        else:
            port = await loop.run_in_executor(None, lambda: serial.serial_for_url(
                url, baudrate=spec.baud or 115200, timeout=0.05))
            try:
                port.fileno()
            except (OSError, ValueError, AttributeError):
                transport = _ThreadedPort(loop, protocol, port)  # loop://, rfc2217://
            else:
                path = port.port
                port.reset_input_buffer()  # what was sent before we came is stale
                transport = GuardedSerialTransport(loop, protocol, port)
    except (serial.SerialException, OSError, ValueError) as e:
        raise TransportError(f"cannot open serial port {url}: {e}") from None
    await asyncio.sleep(0)  # connection_made runs
    return transport, path


class SerialLink(asyncio.Protocol):
    """One open serial port shared by endpoints, each with its own EID."""

    def __init__(self, spec: PortSpec | str) -> None:
        self.spec = parse_port_url(spec) if isinstance(spec, str) else spec
        self.path: str | None = None  # the pty's path, for the far end to open
        self.stats = LinkStats()
        self.decoder = mctp.FrameDecoder()
        self.reassembler = mctp.Reassembler()
        self._transport: asyncio.BaseTransport | None = None
        self._endpoints: dict[int, SerialTransport] = {}
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

    async def __aenter__(self) -> SerialLink:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        if hasattr(transport, "set_write_buffer_limits"):
            transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]

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
            try:
                vm = mctp.parse_vendor(message)
            except mctp.LinkError:
                self.stats.rejected += 1
                continue
            self.stats.rx_messages += 1
            if head.dest == EID_BROADCAST:
                for ep in list(self._endpoints.values()):
                    ep._on_message(head.src, vm)
            else:
                ep = self._endpoints.get(head.dest)
                if ep is None:
                    self.stats.not_for_us += 1
                else:
                    ep._on_message(head.src, vm)

    def _fail(self, why: str) -> None:
        if self._down is None:
            self._down = why
            for ep in list(self._endpoints.values()):
                ep._link_down(why)

    # --- endpoints ---------------------------------------------------------------------------

    def attach(self, ep: SerialTransport) -> None:
        if self._down is not None:
            raise TransportError(self._down)
        if self._transport is None:
            raise TransportError(f"serial port {self.spec.url} is not open")
        other = self._endpoints.get(ep.eid)
        if other is not None and other is not ep:
            raise TransportError(f"EID {ep.eid} is already in use on {self.path or self.spec.url}")
        self._endpoints[ep.eid] = ep

    def detach(self, ep: SerialTransport) -> None:
        if self._endpoints.get(ep.eid) is ep:
            del self._endpoints[ep.eid]

    # --- sending -----------------------------------------------------------------------------

    def send(self, vm: VendorMessage, *, src: int, dest: int, bulk: bool = False) -> None:
        """Queue one message; it leaves as soon as the line allows, telemetry after the rest."""
        if self._down is not None:
            raise TransportError(self._down)
        tag = self._tags.get(src, 0)
        self._tags[src] = (tag + 1) & 7
        packets = mctp.fragment(vm.to_bytes(), dest=dest, src=src, tag=tag, mtu=self.spec.mtu)
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

    def summary(self) -> str:
        """Counters in one line: what went out and came in, and what was dropped and why."""
        s = self.stats
        drops = {k: v for k, v in {**self.decoder.drops, **self.reassembler.losses}.items() if v}
        return (f"tx {s.tx_messages} messages ({s.tx_bytes} bytes), rx {s.rx_messages} messages "
                f"({s.rx_bytes} bytes), telemetry decimated {s.decimated}, dropped "
                + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none")
                + (f", not ours {s.rejected}" if s.rejected else ""))

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
                tr.write(wire)  # type: ignore[attr-defined]
                self._sending = False
                self.stats.tx_bytes += len(wire)
                self.stats.tx_messages += 1

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued has gone to the port (and, paced, out of the line)."""
        deadline = time.monotonic() + timeout
        while ((self._urgent or self._bulk or self._sending) and time.monotonic() < deadline
               and self._down is None):
            await asyncio.sleep(0.002)


_DOWN = object()
Role = Literal["node", "host"]


class SerialTransport(Transport):
    """One endpoint on a :class:`SerialLink`: a node (with its node id) or the host."""

    name = "serial"

    def __init__(self, link: SerialLink, *, role: Role, eid: int, fleet: str = "default",
                 node: int | None = None, owns_link: bool = False,
                 keepalive: float = DEFAULT_KEEPALIVE) -> None:
        if not 8 <= eid <= 254:
            raise ValueError(f"EID {eid} is outside the assignable range 8..254")
        if role == "node" and node is None:
            raise ValueError("a node endpoint needs its node id")
        self.link = link
        self.role = role
        self.eid = eid
        self.fleet = fleet
        self.node = node
        self.owns_link = owns_link
        self.keepalive = keepalive
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._subs: list[Subscription] = []
        self._connected = False
        self._will: Will | None = None
        self._retained: dict[Address, bytes] = {}
        self._peer = HOST_EID  # node side: the host's EID, learned from what it sends
        self._eids: dict[int, int] = {}  # host side: node id -> EID
        self._heard: dict[int, float] = {}  # host side: node id -> when last heard
        self._wills: dict[int, tuple[Address, bytes]] = {}
        self._last_tx = 0.0
        self._timer: asyncio.Task[None] | None = None
        self.rejected = 0  # frames for a channel this role does not receive
        self._why = "serial link closed"

    @classmethod
    def host(cls, url: str, *, fleet: str = "default", eid: int = HOST_EID) -> SerialTransport:
        """A host endpoint that opens (and on close, closes) its own link to ``url``."""
        return cls(SerialLink(url), role="host", eid=eid, fleet=fleet, owns_link=True)

    # --- Transport ---------------------------------------------------------------------------

    async def connect(self, *, will: Will | None = None) -> None:
        if self._connected:
            raise TransportError("already connected")
        if self.owns_link and not self.link.is_open:
            await self.link.open()
        self.link.attach(self)
        self._connected = True
        self._will = will
        loop = asyncio.get_running_loop()
        self._last_tx = loop.time()
        if self.role == "node":
            if will is not None:
                self._send(VendorMessage(Kind.WILL, self.node or 0, _CHANNEL_CODE[will.address.channel],
                                         0, will.payload), dest=self._peer)
            self._timer = asyncio.create_task(self._keepalive(), name=f"serial-keepalive-{self.eid}")
        else:
            self._timer = asyncio.create_task(self._watch_nodes(), name=f"serial-watch-{self.eid}")

    async def close(self) -> None:
        if self._connected and self.role == "node" and self.link.is_open:
            with contextlib.suppress(TransportError):
                self._send(VendorMessage(Kind.BYE, self.node or 0), dest=self._peer)
                await self.link.flush(0.5)
        await self._shut()

    async def abort(self) -> None:
        """Go silent without BYE, as a crashed controller would: the host publishes the will."""
        await self._shut()

    async def _shut(self) -> None:
        if self._timer is not None:
            await cancel_and_wait([self._timer])
            self._timer = None
        if self._connected:
            self._connected = False
            self.link.detach(self)
            self._queue.put_nowait(_DOWN)
        if self.owns_link:
            await self.link.close()

    async def subscribe(self, sub: Subscription) -> None:
        if not self._connected:
            raise TransportError("not connected")
        self._subs.append(sub)
        if self.role == "host":
            self.fleet = sub.fleet  # a serial link carries one fleet: the one the host asks for
            for addr, payload in self._retained.items():
                if sub.matches(addr):
                    self._queue.put_nowait(Delivery(addr, payload, True))
            if sub.channel in (None, Channel.STATE):
                self._send(VendorMessage(Kind.HELLO, 0 if sub.node is None else sub.node),
                           dest=EID_BROADCAST)

    async def publish(self, address: Address, payload: bytes, *, retain: bool = False,
                      reliable: bool = False) -> None:
        if not self._connected:
            raise TransportError("serial link is down")
        code = _CHANNEL_CODE[address.channel]
        vm = VendorMessage(Kind.FRAME, address.node, code, mctp.VENDOR_RETAIN if retain else 0, payload)
        if self.role == "node":
            if retain:
                self._retained[address] = payload
            self._send(vm, dest=self._peer, bulk=address.channel is Channel.TLM)
        else:
            self._send(vm, dest=self._eids.get(address.node, EID_BROADCAST))

    async def receive(self) -> Delivery:
        if not self._connected and self._queue.empty():
            raise TransportError("serial link is down")
        item = await self._queue.get()
        if item is _DOWN:
            raise TransportError(self._why)
        assert isinstance(item, Delivery)
        return item

    def utilisation(self) -> float | None:
        return self.link.utilisation()

    # --- link side ---------------------------------------------------------------------------

    def _send(self, vm: VendorMessage, *, dest: int, bulk: bool = False) -> None:
        self.link.send(vm, src=self.eid, dest=dest, bulk=bulk)
        self._last_tx = asyncio.get_running_loop().time()

    def _link_down(self, why: str) -> None:
        if self._connected:
            self._connected = False
            self._why = why
            self._queue.put_nowait(_DOWN)

    def _offer(self, addr: Address, payload: bytes, retained: bool) -> None:
        if any(s.matches(addr) for s in self._subs):
            self._queue.put_nowait(Delivery(addr, payload, retained))

    def _on_message(self, src: int, vm: VendorMessage) -> None:
        if not self._connected:
            return
        if self.role == "node":
            self._peer = src
            if vm.kind is Kind.HELLO:
                if vm.node in (0, self.node):
                    if self._will is not None:
                        self._send(VendorMessage(Kind.WILL, self.node or 0,
                                                 _CHANNEL_CODE[self._will.address.channel], 0,
                                                 self._will.payload), dest=src)
                    for addr, payload in self._retained.items():
                        self._send(VendorMessage(Kind.FRAME, addr.node, _CHANNEL_CODE[addr.channel],
                                                 mctp.VENDOR_RETAIN, payload), dest=src)
            elif vm.kind is Kind.FRAME and vm.node == self.node:
                channel = _CODE_CHANNEL[vm.channel]
                if channel is Channel.CMD:
                    self._offer(Address(self.fleet, vm.node, channel), vm.data, False)
                else:
                    self.rejected += 1
            return
        # host
        loop = asyncio.get_running_loop()
        self._eids[vm.node] = src
        self._heard[vm.node] = loop.time()
        if vm.kind is Kind.WILL:
            self._wills[vm.node] = (Address(self.fleet, vm.node, _CODE_CHANNEL.get(vm.channel, Channel.STATE)), vm.data)
        elif vm.kind is Kind.BYE:
            self._wills.pop(vm.node, None)
            self._heard.pop(vm.node, None)
        elif vm.kind is Kind.FRAME:
            channel = _CODE_CHANNEL[vm.channel]
            if channel is Channel.CMD:
                self.rejected += 1
                return
            addr = Address(self.fleet, vm.node, channel)
            retained = bool(vm.flags & mctp.VENDOR_RETAIN)
            if retained:
                self._retained[addr] = vm.data
            self._offer(addr, vm.data, retained)

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._last_tx + self.keepalive - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            with contextlib.suppress(TransportError):
                self._send(VendorMessage(Kind.KEEPALIVE, self.node or 0), dest=self._peer)

    async def _watch_nodes(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.keepalive
        while True:
            await asyncio.sleep(period / 2)
            now = loop.time()
            for node, heard in list(self._heard.items()):
                if now - heard > 3 * period:
                    del self._heard[node]
                    will = self._wills.pop(node, None)
                    if will is not None:
                        addr, payload = will
                        self._retained[addr] = payload
                        self._offer(addr, payload, False)


@dataclass(frozen=True, slots=True)
class NodeLink:
    node: int
    link: SerialLink
    eid: int

    def factory(self, fleet: str) -> Any:
        """A transport factory (client id -> transport) for this node on its link."""
        return lambda client_id: SerialTransport(self.link, role="node", eid=self.eid, fleet=fleet,
                                                 node=self.node)


def plan_node_links(urls: list[str], nodes: list[int], *, mux: bool = False) -> list[NodeLink]:
    """Links for ``nodes`` (not yet open): one URL per node; or ``pty`` once, a new pseudo-terminal
    per node; or one URL (or ``pty`` with ``mux``) shared by all, told apart by EID (9, 10, ...)."""
    specs = [parse_port_url(u) for u in urls]
    if not specs:
        raise ValueError("no serial port given")
    if len(specs) == len(nodes) and not mux:
        return [NodeLink(n, SerialLink(s), FIRST_NODE_EID) for n, s in zip(nodes, specs)]
    if len(specs) == 1 and specs[0].url == "pty" and not mux:
        return [NodeLink(n, SerialLink(specs[0]), FIRST_NODE_EID) for n in nodes]
    if len(specs) == 1:
        if len(nodes) > 254 - FIRST_NODE_EID + 1:
            raise ValueError(f"{len(nodes)} nodes do not fit on one serial link "
                             f"(EIDs {FIRST_NODE_EID}..254: at most {254 - FIRST_NODE_EID + 1})")
        link = SerialLink(specs[0])
        return [NodeLink(n, link, FIRST_NODE_EID + k) for k, n in enumerate(nodes)]
    raise ValueError(f"--serial is given {len(specs)} times for {len(nodes)} nodes: give it once "
                     "(pty: one pseudo-terminal per node; a port: all nodes on it) or once per node")


class LinePort:
    """A serial port carrying text lines (a rig's protocol), over the same port kinds as links."""

    def __init__(self, spec: PortSpec | str) -> None:
        self.spec = parse_port_url(spec) if isinstance(spec, str) else spec
        self.path: str | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> LinePort:
        reader = asyncio.StreamReader(limit=4096)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, self.path = await open_port(self.spec, protocol)
        self._reader = reader
        self._writer = asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())  # type: ignore[arg-type]
        return self

    async def readline(self) -> bytes:
        """The next line (without its end), or TransportError once the port is gone."""
        assert self._reader is not None
        try:
            line = await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise TransportError(f"serial port {self.path or self.spec.url} closed") from None
        except asyncio.LimitOverrunError as e:
            await self._reader.readexactly(e.consumed)  # an endless line: drop it
            return b""
        return line.rstrip(b"\r\n")

    def write_line(self, text: str) -> None:
        assert self._writer is not None
        if not self._writer.transport.is_closing():
            self._writer.write(text.encode("ascii") + b"\n")

    async def close(self) -> None:
        w, self._writer = self._writer, None
        if w is not None:
            w.transport.abort() if hasattr(w.transport, "abort") else w.close()
            await asyncio.sleep(0.01)
