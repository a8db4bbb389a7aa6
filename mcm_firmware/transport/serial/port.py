"""Serial ports: what a port URL says, and opening it as an asyncio transport.

pyserial is imported here and nowhere else. Port URLs: a device path (``/dev/ttyUSB0``), ``pty`` (a
new pseudo-terminal; its path is returned), ``loop://``, ``socket://HOST:PORT``,
``rfc2217://HOST:PORT``. Options go in the query: ``?baud=921600`` (the line rate a link is paced
to; ``0``, the default for ``pty``, ``loop://`` and ``socket://``, means unpaced), ``&mtu=64``
(message bytes per MCTP packet, 64..251: DSP0236's baseline up to what a DSP0253 byte count
carries); a key given twice is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import tty
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import serial
import serial_asyncio_fast

from ...protocol import mctp
from ..base import TransportError


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
        raise ValueError(
            f"serial port URL {text!r}: scheme {parts.scheme!r} is not one of "
            "a device path, pty, loop://, socket://, rfc2217://"
        )
    rest: list[tuple[str, str]] = []
    baud, mtu = None, mctp.BASELINE_MTU
    seen: set[str] = set()
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("baud", "mtu"):
            if key in seen:
                raise ValueError(f"serial port URL {text!r}: {key} is given more than once")
            seen.add(key)
            try:
                number = int(value)
            except ValueError:
                raise ValueError(f"serial port URL {text!r}: {key}={value!r} is not an integer") from None
            if key == "baud":
                if not 0 <= number <= 100_000_000:
                    raise ValueError(f"serial port URL {text!r}: baud {number} is outside 0..100000000")
                baud = number
            else:
                if not mctp.BASELINE_MTU <= number <= mctp.MAX_MTU:
                    raise ValueError(
                        f"serial port URL {text!r}: mtu {number} is outside {mctp.BASELINE_MTU}..{mctp.MAX_MTU} "
                        f"(DSP0236's baseline transmission unit, {mctp.BASELINE_MTU} bytes, is the least an "
                        f"MCTP endpoint must accept; {mctp.MAX_MTU} what one DSP0253 byte count carries)"
                    )
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
        exc: Exception | None = None
        while not self._closing:
            try:
                data = self._port.read(max(1, self._port.in_waiting))
            except Exception as e:  # noqa: BLE001 - whatever the port raised, it went away
                exc = e
                break
            if data and not self._closing:
                self._loop.call_soon_threadsafe(self._deliver, data)
        if exc is not None and not self._closing:
            self._loop.call_soon_threadsafe(self._lost, exc)

    def _deliver(self, data: bytes) -> None:
        if not self._closing:
            self._protocol.data_received(data)

    def _lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def write(self, data: Any) -> None:
        if not self._closing:
            try:
                self._port.write(data)
            except Exception as e:  # noqa: BLE001 - a failed write loses the port, as a read would
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


async def open_port(spec: PortSpec, protocol: asyncio.Protocol) -> tuple[asyncio.Transport, str | None]:
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
            transport: asyncio.Transport = GuardedSerialTransport(loop, protocol, port)
        elif url.startswith("socket://"):
            parts = urlsplit(url)
            if not parts.hostname or parts.port is None:  # parse_port_url has checked this
                raise ValueError("socket:// needs HOST:PORT")
            transport, _ = await loop.create_connection(lambda: protocol, parts.hostname, parts.port)
        else:
            port = await loop.run_in_executor(
                None, lambda: serial.serial_for_url(url, baudrate=spec.baud or 115200, timeout=0.05)
            )
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
        self._writer = asyncio.StreamWriter(transport, protocol, reader, asyncio.get_running_loop())
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
