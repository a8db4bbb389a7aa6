"""MCTP over a serial line: DMTF DSP0253 framing, DSP0236 packets, fragmentation. No I/O here.

A serial frame (DSP0253)::

    7E | 01 (revision) | byte count | MCTP packet, escaped | FCS high | FCS low | 7E

The byte count is the length of the unescaped packet (1..255). Inside the packet body 0x7E is sent
as ``7D 5E`` and 0x7D as ``7D 5D``; revision, count and FCS are sent as they are. The FCS is
CRC-16/MCRF4XX (reflected polynomial 0x8408, init 0xFFFF, no final XOR) over revision, byte count
and the unescaped packet, high byte first.

An MCTP packet (DSP0236) is a 4-byte header and up to ``mtu`` bytes of message::

    byte 0  reserved(4) | header version(4) = 1
    byte 1  destination EID
    byte 2  source EID
    byte 3  SOM(1) | EOM(1) | packet sequence(2) | tag owner(1) | message tag(3)

A message longer than the MTU travels as several packets, SOM on the first, EOM on the last, the
sequence number counting modulo 4. Messages of this project are vendor-defined (message type
0x7F, IANA enterprise number 32473, the number RFC 5612 reserves for documentation) and carry one
protocol frame each::

    7F | IANA enterprise number (u32 BE) | kind u8 | channel u8 | flags u8 | node id (u32 BE) | data

The layouts are declared with construct below (the reference) and packed with ``struct`` on the
hot path; the tests check that the two agree.
"""

from __future__ import annotations

import binascii
import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import construct as c

FLAG = 0x7E
ESC = 0x7D
REVISION = 0x01
MAX_PACKET = 255
"""The byte count is one byte: an MCTP packet on a serial line is at most 255 bytes."""
HEADER_VERSION = 1
MCTP_HEADER_SIZE = 4
BASELINE_MTU = 64
"""DSP0236 baseline transmission unit: the message bytes every MCTP endpoint must accept."""
MAX_MTU = MAX_PACKET - MCTP_HEADER_SIZE
MAX_MESSAGE = 64 * 1024
"""A message being reassembled longer than this is dropped (a sender that never sends EOM)."""
EID_NULL = 0
EID_BROADCAST = 0xFF
MSG_TYPE_VENDOR_IANA = 0x7F
IANA_PEN = 32473
"""IANA private enterprise number for documentation use (RFC 5612)."""

# ------------------------------------------------------------------------------------------
# CRC-16/MCRF4XX
# ------------------------------------------------------------------------------------------

_REV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _rev16(x: int) -> int:
    return (_REV8[x & 0xFF] << 8) | _REV8[x >> 8]


def crc16_mcrf4xx(data: bytes | bytearray | memoryview, crc: int = 0xFFFF) -> int:
    """CRC-16/MCRF4XX (poly 0x1021 reflected, init 0xFFFF, no final XOR); ``crc`` chains calls.

    The reflected CRC equals the bit-reversed normal CRC (``binascii.crc_hqx``, poly 0x1021) of
    the bit-reversed bytes, so the work is done in C.
    """
    return _rev16(binascii.crc_hqx(bytes(data).translate(_REV8), _rev16(crc)))


# ------------------------------------------------------------------------------------------
# DSP0253 serial framing
# ------------------------------------------------------------------------------------------

_ESC_BYTES = bytes((ESC,))
_FLAG_BYTES = bytes((FLAG,))


def escape(body: bytes) -> bytes:
    return body.replace(b"\x7d", b"\x7d\x5d").replace(b"\x7e", b"\x7d\x5e")


def unescape(body: bytes) -> bytes:
    return body.replace(b"\x7d\x5e", b"\x7e").replace(b"\x7d\x5d", b"\x7d")


def encode_frame(packet: bytes) -> bytes:
    """One serial frame around one MCTP packet."""
    n = len(packet)
    if not 1 <= n <= MAX_PACKET:
        raise ValueError(f"an MCTP packet on a serial line is 1..{MAX_PACKET} bytes, got {n}")
    fcs = crc16_mcrf4xx(bytes((REVISION, n)) + packet)
    return b"\x7e\x01" + bytes((n,)) + escape(packet) + bytes((fcs >> 8, fcs & 0xFF, FLAG))


class Drop(enum.StrEnum):
    """Why the stream decoder dropped bytes."""

    GARBAGE = "garbage"  # bytes outside any frame
    BAD_REVISION = "bad_revision"
    BAD_COUNT = "bad_count"  # a count of 0, or no closing flag where the count says it ends
    TRUNCATED = "truncated"  # a flag inside the packet body: the frame was cut short
    BAD_ESCAPE = "bad_escape"  # 7D followed by something other than 5E / 5D, or at the end
    BAD_FCS = "bad_fcs"


class FrameDecoder:
    """Serial bytes in, MCTP packets out; resynchronises on the next flag after anything bad.

    After a failed frame, decoding resumes at the first flag after the failed frame's opening
    flag: neither revision, count nor FCS is escaped, so any of them may be a 7E that is really
    the opening flag of the next frame (a count that lies, garbage before a frame).

    Flags may be shared (one 7E closing a frame and opening the next) or repeated (idle flags).
    ``drops`` counts dropped frames per reason (for ``garbage``: runs of bytes outside frames);
    ``garbage_bytes`` counts those bytes.

    ``tap`` (for captures) is called with the bytes of every accepted frame, opening and closing
    flag included, and ``True``; bytes the decoder dropped are handed over as one run, with
    ``False``, before the next accepted frame (or on :meth:`flush_tap`).
    """

    def __init__(self, tap: Callable[[bytes, bool], None] | None = None) -> None:
        self._buf = bytearray()
        self.frames = 0
        self.drops: dict[str, int] = dict.fromkeys(Drop, 0)
        self.garbage_bytes = 0
        self.tap = tap
        self._junk = bytearray()

    def flush_tap(self) -> None:
        """Hand the dropped bytes held for the tap over now."""
        if self._junk and self.tap is not None:
            self.tap(bytes(self._junk), False)
        self._junk.clear()

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def _drop(self, why: Drop) -> None:
        self.drops[why] += 1

    def _skip(self, buf: bytearray, i: int, j: int) -> None:
        if self.tap is not None:
            self._junk += buf[i:j]

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        i = 0
        n = len(buf)
        while True:
            if i >= n or buf[i] != FLAG:
                j = buf.find(_FLAG_BYTES, i)
                if j < 0:
                    if i < n:
                        self.garbage_bytes += n - i
                        self._drop(Drop.GARBAGE)
                        self._skip(buf, i, n)
                    i = n
                    break
                self.garbage_bytes += j - i
                self._drop(Drop.GARBAGE)
                self._skip(buf, i, j)
                i = j
            # buf[i] is a flag
            if i + 1 >= n:
                break
            if buf[i + 1] == FLAG:  # idle or shared flag
                i += 1
                continue
            if buf[i + 1] != REVISION:
                self._drop(Drop.BAD_REVISION)
                self._skip(buf, i, i + 1)
                i += 1
                continue
            if i + 2 >= n:
                break
            count = buf[i + 2]
            start = i + 3
            if count == 0:
                self._drop(Drop.BAD_COUNT)
                self._skip(buf, i, i + 1)
                i += 1
                continue
            # the escaped body is the shortest region holding `count` unescaped bytes
            k = start + count
            while True:
                k2 = start + count + buf.count(_ESC_BYTES, start, min(k, n))
                if k2 == k:
                    break
                k = k2
            cut = buf.find(_FLAG_BYTES, start, min(k, n))
            if cut >= 0:
                self._drop(Drop.TRUNCATED)
                self._skip(buf, i, i + 1)
                i += 1
                continue
            if k + 3 > n:
                break  # wait for the rest
            if buf[k + 2] != FLAG:
                self._drop(Drop.BAD_COUNT)
                self._skip(buf, i, i + 1)
                i += 1
                continue
            region = bytes(buf[start:k])
            packet = unescape(region)
            if len(packet) != count or escape(packet) != region:
                self._drop(Drop.BAD_ESCAPE)
                self._skip(buf, i, i + 1)
                i += 1
                continue
            fcs = (buf[k] << 8) | buf[k + 1]
            if crc16_mcrf4xx(bytes((REVISION, count)) + packet) != fcs:
                self._drop(Drop.BAD_FCS)
                self._skip(buf, i, i + 1)
                i += 1
                continue
            self.frames += 1
            out.append(packet)
            if self.tap is not None:
                self.flush_tap()
                self.tap(bytes(buf[i : k + 3]), True)
            i = k + 2  # the closing flag may open the next frame
        del buf[:i]
        return out

    def reset(self) -> None:
        self._buf.clear()


# ------------------------------------------------------------------------------------------
# MCTP packets (DSP0236)
# ------------------------------------------------------------------------------------------

MctpHeader = c.BitStruct(
    "reserved" / c.Default(c.BitsInteger(4), 0),
    "version" / c.Default(c.BitsInteger(4), HEADER_VERSION),
    "dest" / c.BitsInteger(8),
    "src" / c.BitsInteger(8),
    "som" / c.Flag,
    "eom" / c.Flag,
    "seq" / c.BitsInteger(2),
    "tag_owner" / c.Flag,
    "tag" / c.BitsInteger(3),
)
"""The 4-byte MCTP transport header (the reference declaration)."""


class Kind(enum.IntEnum):
    """What a vendor message of this project carries."""

    FRAME = 1  # a protocol frame for a channel
    WILL = 2  # node -> host: publish this (a DEATH frame) if I go silent
    HELLO = 3  # host -> nodes: send your retained frames again (a host that just attached)
    KEEPALIVE = 4  # node -> host: still here (sent when idle)
    BYE = 5  # node -> host: closing cleanly, forget my will


class ChannelCode(enum.IntEnum):
    STATE = 1
    TLM = 2
    EVT = 3
    CMD = 4
    RSP = 5


VENDOR_RETAIN = 0x01
_CHANNEL_CODES = frozenset(int(x) for x in ChannelCode)

VendorHeader = c.Struct(
    "msg_type" / c.Const(MSG_TYPE_VENDOR_IANA, c.Int8ub),
    "iana" / c.Const(IANA_PEN, c.Int32ub),
    "kind" / c.Enum(c.Int8ub, Kind),
    "channel" / c.Int8ub,
    "flags" / c.Int8ub,
    "node" / c.Int32ub,
)
"""The start of every message of this project (the reference declaration)."""

_MCTP = struct.Struct(">BBBB")
_VENDOR = struct.Struct(">BIBBBI")
VENDOR_HEADER_SIZE = _VENDOR.size


class LinkError(ValueError):
    """A packet or message that does not fit the layouts above."""


@dataclass(frozen=True, slots=True)
class Packet:
    dest: int
    src: int
    som: bool
    eom: bool
    seq: int
    tag_owner: bool
    tag: int
    body: bytes

    def to_bytes(self) -> bytes:
        b3 = (self.som << 7) | (self.eom << 6) | ((self.seq & 3) << 4) | (self.tag_owner << 3) | (self.tag & 7)
        return _MCTP.pack(HEADER_VERSION, self.dest, self.src, b3) + self.body


def parse_packet(data: bytes) -> Packet:
    if len(data) < MCTP_HEADER_SIZE + 1:
        raise LinkError(f"MCTP packet of {len(data)} bytes is shorter than a header and one byte")
    b0, dest, src, b3 = _MCTP.unpack_from(data)
    if b0 & 0x0F != HEADER_VERSION:
        raise LinkError(f"MCTP header version {b0 & 0x0F} is not {HEADER_VERSION}")
    return Packet(
        dest,
        src,
        bool(b3 & 0x80),
        bool(b3 & 0x40),
        (b3 >> 4) & 3,
        bool(b3 & 0x08),
        b3 & 7,
        bytes(data[MCTP_HEADER_SIZE:]),
    )


def fragment(
    message: bytes, *, dest: int, src: int, tag: int, tag_owner: bool = True, mtu: int = BASELINE_MTU, seq: int = 0
) -> list[bytes]:
    """Split one message into MCTP packets of at most ``mtu`` message bytes each."""
    if not 1 <= mtu <= MAX_MTU:
        raise ValueError(f"MTU must be 1..{MAX_MTU} bytes, got {mtu}")
    if not message:
        raise ValueError("an MCTP message is at least one byte (its type)")
    chunks = [message[o : o + mtu] for o in range(0, len(message), mtu)]
    last = len(chunks) - 1
    return [
        Packet(dest, src, k == 0, k == last, (seq + k) & 3, tag_owner, tag, chunk).to_bytes()
        for k, chunk in enumerate(chunks)
    ]


class Loss(enum.StrEnum):
    """Why the reassembler dropped packets or messages."""

    BAD_HEADER = "bad_header"
    NO_SOM = "no_som"  # a middle or last packet of a message whose start was not seen
    OUT_OF_SEQUENCE = "out_of_sequence"  # a packet lost or reordered: the message is dropped
    RESTARTED = "restarted"  # a new SOM while a message with the same tag was incomplete
    TOO_BIG = "too_big"


@dataclass
class Reassembler:
    """MCTP packets in, whole messages out, per (source EID, tag owner, tag)."""

    max_message: int = MAX_MESSAGE
    messages: int = 0
    losses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Loss, 0))
    _partial: dict[tuple[int, bool, int], tuple[int, bytearray]] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return sum(self.losses.values())

    def feed(self, data: bytes) -> tuple[Packet, bytes] | None:
        """The first packet's header and the whole message once its EOM packet arrives."""
        try:
            p = parse_packet(data)
        except LinkError:
            self.losses[Loss.BAD_HEADER] += 1
            return None
        key = (p.src, p.tag_owner, p.tag)
        if p.som:
            if key in self._partial:
                del self._partial[key]
                self.losses[Loss.RESTARTED] += 1
            if p.eom:
                self.messages += 1
                return p, p.body
            self._partial[key] = (p.seq, bytearray(p.body))
            return None
        held = self._partial.get(key)
        if held is None:
            self.losses[Loss.NO_SOM] += 1
            return None
        seq, buf = held
        if p.seq != (seq + 1) & 3:
            del self._partial[key]
            self.losses[Loss.OUT_OF_SEQUENCE] += 1
            return None
        buf += p.body
        if len(buf) > self.max_message:
            del self._partial[key]
            self.losses[Loss.TOO_BIG] += 1
            return None
        if p.eom:
            del self._partial[key]
            self.messages += 1
            return p, bytes(buf)
        self._partial[key] = (p.seq, buf)
        return None


# ------------------------------------------------------------------------------------------
# Vendor messages of this project
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VendorMessage:
    kind: Kind
    node: int
    channel: int = 0
    flags: int = 0
    data: bytes = b""

    def to_bytes(self) -> bytes:
        return _VENDOR.pack(MSG_TYPE_VENDOR_IANA, IANA_PEN, self.kind, self.channel, self.flags, self.node) + self.data


def parse_vendor(message: bytes) -> VendorMessage:
    if len(message) < VENDOR_HEADER_SIZE:
        raise LinkError(f"message of {len(message)} bytes is shorter than the {VENDOR_HEADER_SIZE}-byte vendor header")
    mtype, pen, kind, channel, flags, node = _VENDOR.unpack_from(message)
    if mtype & 0x7F != MSG_TYPE_VENDOR_IANA:
        raise LinkError(f"MCTP message type 0x{mtype & 0x7F:02x} is not vendor-defined IANA (0x7f)")
    if mtype & 0x80:
        raise LinkError("integrity check bit set: message integrity checks are not supported")
    if pen != IANA_PEN:
        raise LinkError(f"IANA enterprise number {pen} is not {IANA_PEN}")
    try:
        k = Kind(kind)
    except ValueError:
        raise LinkError(f"unknown vendor message kind {kind}") from None
    if k is Kind.FRAME and channel not in _CHANNEL_CODES:
        raise LinkError(f"unknown channel code {channel}")
    return VendorMessage(k, node, channel, flags, bytes(message[VENDOR_HEADER_SIZE:]))
