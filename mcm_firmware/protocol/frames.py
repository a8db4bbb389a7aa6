"""Wire format v1, declared once with ``construct``.

Every byte the emulator puts on a wire is described here; the codec derives its fast paths
(``struct`` formats for the header, numpy record layouts for telemetry) from these declarations,
and the tests check that both paths produce identical bytes.

All integers and floats are little-endian. A frame is::

    +-------+---------+------+-------+---------+-----+--------------+-------------+---------+-------+
    | magic | version | type | flags | node_id | seq | timestamp_ns | payload_len | payload | crc32 |
    |  2 B  |   1 B   | 1 B  |  1 B  |   4 B   | 4 B |     8 B      |     2 B     |  n B    |  4 B  |
    +-------+---------+------+-------+---------+-----+--------------+-------------+---------+-------+
    |<------------------------------ header: 23 bytes ------------------------------>|

``magic`` is ASCII ``MC``; ``crc32`` is CRC-32/ISO-HDLC (``zlib.crc32``) over header and payload.
``node_id`` always names the module the frame concerns: the sender for node frames, the addressee
for host commands. See ``docs/protocol.md`` for every payload layout and golden frames. The
building blocks are in :mod:`.fields`, the arguments and answers of each command in :mod:`.ops`,
the numbers' names in :mod:`.vocabulary`.
"""

from __future__ import annotations

import zlib

import construct as c
from construct import this

from .fields import SAMPLES_LAYOUT, Sample, Snapshot, Text8
from .ops import ARG_LAYOUTS, RESULT_LAYOUTS
from .vocabulary import FrameFlags, MsgType, Status

MAGIC = b"MC"
VERSION = 1
HEADER_SIZE = 23
CRC_SIZE = 4
MAX_PAYLOAD = 0xFFFF


KNOWN_FLAGS = int(FrameFlags.HOST | FrameFlags.RETRY | FrameFlags.AUTH)
AUTH_TAG_SIZE = 16

# After the CRC of a frame whose AUTH flag is set (protocol.auth seals and opens it): the key, the
# sender's session and HMAC-SHA256(node key, frame with its CRC + key_id + sender), truncated.
AuthTrailer = c.Struct(
    "key_id" / c.Int8ul,
    "sender" / c.Int32ul,
    "tag" / c.Bytes(AUTH_TAG_SIZE),
)
AUTH_TRAILER_SIZE = AuthTrailer.sizeof()

Header = c.Struct(
    "magic" / c.Const(MAGIC),
    "version" / c.Int8ul,
    "type" / c.Int8ul,
    "flags" / c.Int8ul,
    "node_id" / c.Int32ul,
    "seq" / c.Int32ul,
    "timestamp_ns" / c.Int64ul,
    "payload_len" / c.Int16ul,
)

Birth = c.Struct(
    "profile" / Text8,
    "firmware" / Text8,
    "capabilities" / c.Int32ul,
    "boot_count" / c.Int32ul,
    "bdseq" / c.Int32ul,
    "dies" / c.Int8ul,
    "hbm_stacks" / c.Int8ul,
    "pumps" / c.Int8ul,
    "valves" / c.Int8ul,
    c.Terminated,
)

Death = c.Struct(
    "boot_count" / c.Int32ul,
    "bdseq" / c.Int32ul,
    "reason" / c.Int8ul,  # DeathReason
    c.Terminated,
)

Telemetry = c.Struct(
    "snapshot" / Snapshot,
    c.Terminated,
)

# Telemetry with the samples taken since the previous frame, oldest first, every ``period_us``;
# the snapshot is the module's state at the newest of them (as in TELEMETRY).
Samples = c.Struct(
    "layout" / c.Const(SAMPLES_LAYOUT, c.Int8ul),
    "period_us" / c.Int32ul,
    "n_samples" / c.Int8ul,
    "samples" / c.Array(this.n_samples, Sample),
    "snapshot" / Snapshot,
    c.Terminated,
)

Command = c.Struct(
    "request_id" / c.Int32ul,
    "op" / c.Int16ul,  # Op
    "args" / c.Switch(this.op, {int(op): con for op, con in ARG_LAYOUTS.items()}, default=c.Pass),
    c.Terminated,
)

Response = c.Struct(
    "request_id" / c.Int32ul,
    "op" / c.Int16ul,  # echoes the command's operation, also one the node did not know
    "status" / c.Int8ul,  # Status
    "message" / Text8,
    "data"
    / c.If(
        this.status == int(Status.OK),
        c.Switch(this.op, {int(op): con for op, con in RESULT_LAYOUTS.items()}, default=c.Pass),
    ),
    c.Terminated,
)

Link = c.Struct(
    "link" / Text8,  # the link's name (its MQTT client id)
    "bdseq" / c.Int32ul,  # increments on every connection of the link; its will carries the same
    "condition" / c.Int8ul,  # LinkCondition
    "ranges" / c.PrefixedArray(c.Int16ul, c.Struct("first" / c.Int32ul, "last" / c.Int32ul)),  # nodes carried
    c.Terminated,
)

Event = c.Struct(
    "severity" / c.Int8ul,  # Severity
    "code" / c.Int16ul,  # EventCode; codes a reader does not know are kept as numbers
    "subject" / c.Int16ul,  # die / stack / pump / valve index, or 0xFFFF for the module
    "value" / c.Float64l,
    "text" / Text8,
    c.Terminated,
)

BODIES: dict[MsgType, c.Construct] = {
    MsgType.BIRTH: Birth,
    MsgType.DEATH: Death,
    MsgType.TELEMETRY: Telemetry,
    MsgType.COMMAND: Command,
    MsgType.RESPONSE: Response,
    MsgType.EVENT: Event,
    MsgType.LINK: Link,
    MsgType.SAMPLES: Samples,
}

# The whole frame as one declaration: the reference the fast codec is tested against, and the
# picture ``docs/protocol.md`` draws. It checks the CRC itself (slowly, through RawCopy).
Frame = c.Struct(
    "raw"
    / c.RawCopy(
        c.Struct(
            "header" / Header,
            "body"
            / c.FixedSized(
                this.header.payload_len,
                c.Switch(this.header.type, {int(t): b for t, b in BODIES.items()}),
            ),
        )
    ),
    "crc" / c.Checksum(c.Int32ul, lambda data: zlib.crc32(data), this.raw.data),
    "auth" / c.If(this.raw.value.header.flags & int(FrameFlags.AUTH), AuthTrailer),
    c.Terminated,
)


def compiled(con: c.Construct) -> c.Construct:
    """Compile a declaration once; construct's compiled parsers are ~5x faster."""
    return con.compile()


COMPILED_BODIES: dict[MsgType, c.Construct] = {t: compiled(b) for t, b in BODIES.items()}
