"""MQTT 3.1.1 packets for the telemetry fast path, encoded here. No I/O.

A fleet's telemetry is the bulk of its traffic: tens of thousands of QoS 0 PUBLISH packets a
second. Through a client library each one costs a call chain, a future and a ``send()``; here the
packets of a whole telemetry slot are assembled in one vectorised pass (:class:`TopicSet`: the
header before each topic is built once) and leave in one write. What the fast paths need is here: CONNECT (with a will), CONNACK,
PUBLISH at QoS 0 and 1, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT (OASIS MQTT 3.1.1,
section 3): a publish-only telemetry connection, a counting subscriber, and a carrier's control
connection (:mod:`.mqtt_raw`).
``tests/transport/test_mqtt_wire.py`` checks every packet byte for byte against what paho-mqtt
(the library under aiomqtt) encodes for the same call.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

CONNECT, CONNACK, PUBLISH, PUBACK, SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = (
    0x10,
    0x20,
    0x30,
    0x40,
    0x82,
    0x90,
    0xC0,
    0xD0,
    0xE0,
)
MAX_REMAINING = 268_435_455  # four bytes of remaining length
PINGREQ_PACKET = bytes((PINGREQ, 0))
DISCONNECT_PACKET = bytes((DISCONNECT, 0))
CONNACK_RETURN = {
    0: "accepted",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class WireError(ValueError):
    """Bytes from the broker that are not the packet expected."""


def remaining_length(n: int) -> bytes:
    """The variable-length encoding of a packet's remaining length (1 to 4 bytes)."""
    if not 0 <= n <= MAX_REMAINING:
        raise ValueError(f"remaining length {n} outside 0..{MAX_REMAINING}")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _str16(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"field of {len(data)} bytes is longer than 65535")
    return struct.pack("!H", len(data)) + data


def connect(
    client_id: str,
    *,
    keepalive: int,
    clean_session: bool = True,
    username: str | None = None,
    password: bytes | None = None,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    """A CONNECT packet (protocol level 4); ``will``: (topic, payload, QoS, retain)."""
    if not 0 <= keepalive <= 0xFFFF:
        raise ValueError(f"keepalive {keepalive} outside 0..65535")
    flags = (0x02 if clean_session else 0) | (0x80 if username is not None else 0)
    flags |= 0x40 if password is not None else 0
    if will is not None:
        flags |= 0x04 | (will[2] << 3) | (0x20 if will[3] else 0)
    body = _str16(b"MQTT") + bytes((4, flags)) + struct.pack("!H", keepalive) + _str16(client_id.encode())
    if will is not None:
        body += _str16(will[0].encode()) + _str16(will[1])
    if username is not None:
        body += _str16(username.encode())
    if password is not None:
        body += _str16(password)
    return bytes((CONNECT,)) + remaining_length(len(body)) + body


def parse_connack(data: bytes) -> int:
    """The return code of a CONNACK packet (0: accepted)."""
    if len(data) != 4 or data[0] != CONNACK or data[1] != 2:
        raise WireError(f"expected CONNACK, got {data[:8].hex()}")
    return data[3]


def publish_header(topic: bytes, payload_len: int) -> bytes:
    """Everything of a QoS 0 PUBLISH (no DUP, no RETAIN) that comes before the payload."""
    return bytes((PUBLISH,)) + remaining_length(2 + len(topic) + payload_len) + _str16(topic)


def publish(topic: str, payload: bytes, *, retain: bool = False) -> bytes:
    """One QoS 0 PUBLISH packet."""
    t = topic.encode()
    return bytes((PUBLISH | retain,)) + remaining_length(2 + len(t) + len(payload)) + _str16(t) + payload


def publish_qos1(topic: str, packet_id: int, payload: bytes, *, retain: bool = False) -> bytes:
    """One QoS 1 PUBLISH packet (no DUP); the broker answers with PUBACK ``packet_id``."""
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet id {packet_id} outside 1..65535")
    t = topic.encode()
    return (
        bytes((PUBLISH | 0x02 | retain,))
        + remaining_length(2 + len(t) + 2 + len(payload))
        + _str16(t)
        + struct.pack("!H", packet_id)
        + payload
    )


def puback(packet_id: int) -> bytes:
    """The PUBACK of a QoS 1 PUBLISH received."""
    return bytes((PUBACK, 2)) + struct.pack("!H", packet_id)


def subscribe(packet_id: int, topic_filter: str, qos: int = 0) -> bytes:
    """A SUBSCRIBE packet for one topic filter."""
    body = struct.pack("!H", packet_id) + _str16(topic_filter.encode()) + bytes((qos,))
    return bytes((SUBSCRIBE,)) + remaining_length(len(body)) + body


def parse_publish(first: int, body: bytes) -> tuple[str, bytes]:
    """Topic and payload of a PUBLISH packet received at QoS 0."""
    if first & 0xF0 != PUBLISH or first & 0x06:
        raise WireError(f"expected a QoS 0 PUBLISH, got first byte {first:#04x}")
    (n,) = struct.unpack_from("!H", body)
    return body[2 : 2 + n].decode(), body[2 + n :]


class TopicSet:
    """The QoS 0 PUBLISH headers of a fixed list of topics for payloads of one size, laid out so that
    the packets of any subset of them are assembled without a loop per packet: headers of equal
    length sit in one uint8 matrix, and a subset's packets are a matrix of ``[header | payload]``
    rows per header length (topic ids of 1, 2, ... digits), written one after another."""

    def __init__(self, topics: Sequence[str], payload_size: int) -> None:
        heads = [publish_header(t.encode(), payload_size) for t in topics]
        self.payload_size = payload_size
        self.lengths = np.array([len(h) for h in heads], np.intp)
        self.pos = np.zeros(len(heads), np.intp)  # row of each topic in its length's matrix
        self.heads: dict[int, np.ndarray] = {}
        for length in np.unique(self.lengths):
            members = np.nonzero(self.lengths == length)[0]
            self.pos[members] = np.arange(len(members))
            self.heads[int(length)] = np.frombuffer(b"".join(heads[i] for i in members), np.uint8).reshape(
                len(members), int(length)
            )

    def encode(self, rows: np.ndarray, payloads: np.ndarray) -> bytes:
        """The packets of topics ``rows`` carrying ``payloads`` (a ``[len(rows), payload_size]``
        uint8 array, one payload a row)."""
        if payloads.shape != (len(rows), self.payload_size):
            raise ValueError(f"payloads of shape {payloads.shape}, expected ({len(rows)}, {self.payload_size})")
        lengths = self.lengths[rows]
        parts = []
        for length in np.unique(lengths):
            sel = lengths == length
            which = rows[sel]
            out = np.empty((len(which), int(length) + self.payload_size), np.uint8)
            out[:, : int(length)] = self.heads[int(length)][self.pos[which]]
            out[:, int(length) :] = payloads[sel]
            parts.append(out.tobytes())
        return b"".join(parts)


def split_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete packet off the front of ``buffer``: (first byte, body) pairs."""
    out: list[tuple[int, bytes]] = []
    while len(buffer) >= 2:
        n, shift, i = 0, 0, 1
        while True:
            if i >= len(buffer):
                return out
            digit = buffer[i]
            n |= (digit & 0x7F) << shift
            i += 1
            if not digit & 0x80:
                break
            shift += 7
            if shift > 21:
                raise WireError("remaining length longer than four bytes")
        if len(buffer) < i + n:
            return out
        out.append((buffer[0], bytes(buffer[i : i + n])))
        del buffer[: i + n]
    return out
