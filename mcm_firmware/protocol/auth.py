"""Frame authentication: an HMAC-SHA256 tag per frame and a replay window per sender. No I/O.

A fleet may authenticate its frames (``--frame-keys FILE``). A sealed frame is the frame with its
``AUTH`` flag set (the CRC-32 computed with it) followed by a 21-byte trailer::

    frame (header .. crc32) | key_id u8 | sender u32 | tag (16 B)

``tag`` is the first 16 bytes of HMAC-SHA256(K, frame || key_id || sender), where K is the node's
key: HMAC-SHA256(fleet secret ``key_id``, "mcm-frame-key/v1/<fleet>/<node id>"), the node being
the frame's ``node_id`` (the sender of a node frame, the addressee of a command). ``sender`` names
the session that made the frame: random per node boot and per host client. A receiver keeps,
per (node, sender), a window of the 64 latest sequence numbers: a frame whose tag does not verify,
whose number it has seen, or which is older than the window is refused and changes nothing; a
frame reordered within the window is accepted once. A sender it does not know yet must carry a
timestamp within the freshness limit of the receiver's clock (a replay of a session forgotten
long ago is stale). See docs/protocol.md, "Frame authentication".
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable

from .frames import AUTH_TAG_SIZE, AUTH_TRAILER_SIZE, CRC_SIZE, HEADER_SIZE
from .vocabulary import FrameFlags, Reason

WINDOW = 64
"""Sequence numbers a receiver remembers per sender."""
SENDERS = 256
"""Senders a receiver keeps windows for; the least recently heard is forgotten first."""
FRESHNESS_S = 300.0
"""How far a new sender's timestamp may be from the receiver's clock (None: not checked)."""
MIN_SECRET = 16

_FLAGS_OFFSET = 4
_SEQ = struct.Struct("<I")
_HEAD = struct.Struct("<BI")  # key_id, sender
_CRC = struct.Struct("<I")
_AUTH = int(FrameFlags.AUTH)
_U32 = 0xFFFFFFFF


class AuthError(ValueError):
    """A frame that authentication refuses: ``reason`` as the codec's (a :class:`Reason`)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def node_key(secret: bytes, fleet: str, node: int) -> bytes:
    """The key of node ``node`` of ``fleet`` under one fleet secret."""
    return hmac.new(secret, f"mcm-frame-key/v1/{fleet}/{node}".encode(), hashlib.sha256).digest()


def _tag(key: bytes, signed: bytes | bytearray | memoryview) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()[:AUTH_TAG_SIZE]


def seal(frame: bytes, key: bytes, key_id: int, sender: int) -> bytes:
    """``frame`` (a whole frame as the codec makes it) with its AUTH flag set and its trailer."""
    b = bytearray(frame)
    b[_FLAGS_OFFSET] |= _AUTH
    _CRC.pack_into(b, len(b) - CRC_SIZE, zlib.crc32(memoryview(b)[: len(b) - CRC_SIZE]))
    b += _HEAD.pack(key_id, sender)
    return bytes(b) + _tag(key, b)


def seal_probe(auth: FrameAuth, data: bytes, *, node: int, sender: int, seq: int) -> bytes:
    """Seal any bytes as a host would seal a frame for ``node`` (for fuzzing a sealed fleet):
    sequence number ``seq`` written, the AUTH flag set, the CRC-32 changed so that it keeps
    whatever error it had (right stays right, wrong stays as wrong), the trailer added. Bytes too
    short to be a frame go as they are (refused unauthenticated, as they are refused undecodable
    without authentication)."""
    if len(data) < HEADER_SIZE + CRC_SIZE:
        return data
    b = bytearray(data)
    error = _CRC.unpack_from(b, len(b) - CRC_SIZE)[0] ^ zlib.crc32(memoryview(b)[: len(b) - CRC_SIZE])
    _SEQ.pack_into(b, 9, seq & _U32)
    b[_FLAGS_OFFSET] |= _AUTH
    _CRC.pack_into(b, len(b) - CRC_SIZE, zlib.crc32(memoryview(b)[: len(b) - CRC_SIZE]) ^ error)
    key_id = auth.current_key_id()
    key = auth.key(key_id, node)
    if key is None:
        raise ValueError(f"no fleet secret with key id {key_id}")
    b += _HEAD.pack(key_id, sender)
    return bytes(b) + _tag(key, b)


def is_sealed(data: bytes | bytearray | memoryview) -> bool:
    return len(data) > HEADER_SIZE and bool(data[_FLAGS_OFFSET] & _AUTH)


def trailer(data: bytes | bytearray | memoryview) -> tuple[int, int, bytes] | None:
    """``(key_id, sender, tag)`` of a sealed frame, None for a frame without the AUTH flag."""
    if not is_sealed(data) or len(data) < HEADER_SIZE + CRC_SIZE + AUTH_TRAILER_SIZE:
        return None
    key_id, sender = _HEAD.unpack_from(data, len(data) - AUTH_TRAILER_SIZE)
    return key_id, sender, bytes(data[len(data) - AUTH_TAG_SIZE :])


class ReplayWindow:
    """The latest :data:`WINDOW` sequence numbers of one sender (modulo 2^32, as RFC 4303's)."""

    __slots__ = ("mask", "top")

    def __init__(self) -> None:
        self.top: int | None = None
        self.mask = 0  # bit i: top - i seen

    def check(self, seq: int) -> str | None:
        """Why ``seq`` is refused, or None (nothing is changed: :meth:`accept` after the tag)."""
        if self.top is None:
            return None
        ahead = (seq - self.top) & _U32
        if 0 < ahead < 1 << 31:
            return None
        behind = (self.top - seq) & _U32
        if behind >= WINDOW:
            return f"sequence number {seq} is older than the window (latest {self.top}, window {WINDOW})"
        if self.mask >> behind & 1:
            return f"sequence number {seq} was seen already"
        return None

    def accept(self, seq: int) -> None:
        if self.top is None:
            self.top, self.mask = seq, 1
            return
        ahead = (seq - self.top) & _U32
        if 0 < ahead < 1 << 31:
            self.mask = (self.mask << ahead | 1) & ((1 << WINDOW) - 1) if ahead < WINDOW else 1
            self.top = seq
        else:
            self.mask |= 1 << ((self.top - seq) & _U32)


KeyLookup = Callable[[int], bytes | None]
"""A fleet secret by key id, None for an id this side does not have."""


class FrameAuth:
    """Seals and opens the frames of one fleet with the fleet's secrets.

    ``secrets`` gives a fleet secret by key id; ``current`` the key id frames are sealed with.
    Both are called per frame, so a key file reloaded under them takes effect at once (rotation
    without restart). Counters per refusal reason in ``refused``."""

    def __init__(
        self,
        fleet: str,
        secrets: KeyLookup,
        current: Callable[[], int],
        *,
        freshness_s: float | None = FRESHNESS_S,
        senders: int = SENDERS,
    ) -> None:
        self.fleet = fleet
        self._secrets = secrets
        self._current = current
        self.freshness_ns = None if freshness_s is None else int(freshness_s * 1e9)
        self._max_senders = senders
        self._keys: dict[tuple[int, bytes, int], bytes] = {}
        self._windows: OrderedDict[tuple[int, int], ReplayWindow] = OrderedDict()
        self.refused: dict[str, int] = {
            r.name: 0 for r in (Reason.UNAUTHENTICATED, Reason.BAD_TAG, Reason.REPLAYED, Reason.STALE)
        }
        self.accepted = 0

    def key(self, key_id: int, node: int) -> bytes | None:
        secret = self._secrets(key_id)
        if secret is None:
            return None
        k = (key_id, secret, node)
        key = self._keys.get(k)
        if key is None:
            if len(self._keys) > 4096:
                self._keys.clear()
            key = self._keys[k] = node_key(secret, self.fleet, node)
        return key

    def current_key_id(self) -> int:
        return self._current()

    def seal(self, frame: bytes, sender: int) -> bytes:
        """Seal a frame of node ``node_id`` (its header's) under the current key."""
        key_id = self._current()
        node = int.from_bytes(frame[5:9], "little")
        key = self.key(key_id, node)
        if key is None:
            raise ValueError(f"no fleet secret with key id {key_id}")
        return seal(frame, key, key_id, sender)

    def _refuse(self, reason: Reason, detail: str) -> AuthError:
        self.refused[reason.name] += 1
        return AuthError(reason, detail)

    def open(
        self,
        data: bytes | bytearray | memoryview,
        now_ns: int | None = None,
        *,
        window: bool = True,
        node: int | None = None,
    ) -> int:
        """Verify a sealed frame; its sender. AuthError (counted) for one refused, with nothing
        changed. ``window=False`` checks the tag only (retained frames: a subscriber is handed
        the latest again, legitimately old). ``node``: verify with this node's key only (a node
        verifying what it receives), else with the key of the node the header names."""
        t = trailer(data)
        if t is None:
            raise self._refuse(Reason.UNAUTHENTICATED, "frame is not authenticated (no AUTH flag and trailer)")
        key_id, sender, tag = t
        if node is None:
            node = int.from_bytes(bytes(data[5:9]), "little")
        key = self.key(key_id, node)
        if key is None:
            raise self._refuse(Reason.BAD_TAG, f"frame sealed with key id {key_id}, which this side does not have")
        body = memoryview(data)[: len(data) - AUTH_TAG_SIZE]
        if not hmac.compare_digest(_tag(key, body), tag):
            raise self._refuse(Reason.BAD_TAG, f"tag does not verify (key id {key_id}, node {node})")
        if not window:
            self.accepted += 1
            return sender
        (seq,) = _SEQ.unpack_from(data, 9)
        wkey = (node, sender)
        win = self._windows.get(wkey)
        if win is None:
            if self.freshness_ns is not None and now_ns is not None:
                ts = int.from_bytes(bytes(data[13:21]), "little")
                if abs(ts - now_ns) > self.freshness_ns:
                    raise self._refuse(
                        Reason.STALE,
                        f"new sender {sender:#010x}: timestamp {(ts - now_ns) / 1e9:+.0f} s from this clock "
                        f"(limit {self.freshness_ns / 1e9:g} s)",
                    )
            win = ReplayWindow()
        else:
            why = win.check(seq)
            if why is not None:
                raise self._refuse(Reason.REPLAYED, f"sender {sender:#010x}: {why}")
        win.accept(seq)
        self._windows[wkey] = win
        self._windows.move_to_end(wkey)
        if len(self._windows) > self._max_senders:
            self._windows.popitem(last=False)
        self.accepted += 1
        return sender
