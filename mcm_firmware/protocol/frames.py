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
for host commands. See ``docs/protocol.md`` for every payload layout and golden frames.
"""

from __future__ import annotations

import zlib
from enum import IntEnum, IntFlag

import construct as c
from construct import this

MAGIC = b"MC"
VERSION = 1
HEADER_SIZE = 23
CRC_SIZE = 4
MAX_PAYLOAD = 0xFFFF


class MsgType(IntEnum):
    BIRTH = 1
    DEATH = 2
    TELEMETRY = 3
    COMMAND = 4
    RESPONSE = 5
    EVENT = 6


class FrameFlags(IntFlag):
    """Header flag bits; bits not named here must be zero."""

    HOST = 0x01  # sent by a host (commands); node frames leave it clear
    RETRY = 0x02  # a retransmission of a command with the same request id


KNOWN_FLAGS = int(FrameFlags.HOST | FrameFlags.RETRY)


class Op(IntEnum):
    """Command operations."""

    PING = 0x0001
    STATUS = 0x0002
    REBIRTH = 0x0003
    SET_POWER_CAP = 0x0010
    LOCK_CLOCKS = 0x0011
    RESET_CLOCKS = 0x0012
    SET_VALVE = 0x0013
    RAS = 0x0020
    CLEAR_RAS = 0x0021
    RESET = 0x0022
    INJECT = 0x0030
    CLEAR_FAULT = 0x0031


class Status(IntEnum):
    """Response status codes."""

    OK = 0
    BAD_REQUEST = 1  # the frame could not be decoded but carried a readable request id
    UNKNOWN_OP = 2
    BAD_ARGUMENT = 3  # an argument is out of range or names something the module lacks
    REFUSED = 4  # valid, but not allowed in the node's present state
    INTERNAL = 5


class NodeState(IntEnum):
    BOOTING = 0
    RUNNING = 1
    SHUTDOWN = 2  # dice powered off by a protection (thermal or cooling loss)
    STOPPING = 3


class CoolingMode(IntEnum):
    NORMAL = 0
    FAILSAFE = 1
    NATURAL_CONVECTION = 2


class DeathReason(IntEnum):
    SHUTDOWN = 0  # clean shutdown, published by the node itself
    CONNECTION_LOST = 1  # registered as the Last Will; published by the broker
    REBOOT = 2


class Severity(IntEnum):
    DEBUG = 0
    INFO = 1
    NOTICE = 2
    WARNING = 3
    ERROR = 4
    CRITICAL = 5


class EventCode(IntEnum):
    """What an EVENT reports. ``subject`` and ``value`` are explained per code."""

    BOOT = 1  # value: boot count
    FRAME_REJECTED = 10  # subject: codec Reason; value: request id or -1; text: the error
    EVENTS_SUPPRESSED = 11  # value: events dropped by the rate limit since the last report
    CLOCK_REASONS = 20  # subject: die; value: new NVML clock-event-reasons mask
    THERMAL_SHUTDOWN = 21  # value: hottest die °C
    THERMAL_RECOVERY = 22  # value: hottest die °C
    VRM_OVERCURRENT = 23  # value: current A
    VRM_RECOVERED = 24
    POWER_CAP_SET = 25  # value: new cap W
    CLOCKS_LOCKED = 26  # value: locked MHz
    CLOCKS_RESET = 27
    FAILSAFE_ENTER = 30  # subject: zone (valve)
    FAILSAFE_EXIT = 31  # subject: zone (valve)
    PUMP_FAULT = 32  # subject: pump
    PUMP_FAILOVER = 33  # subject: the new lead pump
    PUMP_ALTERNATE = 34  # subject: the new lead pump
    NATURAL_CONVECTION = 35  # no pump left: lowest P-state
    COOLING_RESTORED = 36
    SENSOR_FAULT = 37  # subject: sensor index in its bank; text: which bank
    PUMP_RETRY = 49  # subject: a latched pump released for another attempt
    VALVE_MANUAL = 38  # subject: valve; value: commanded %
    VALVE_AUTO = 39  # subject: valve
    UE = 40  # subject: stack; value: word address
    REMAP_PENDING = 41  # subject: stack
    REMAP_FAILED = 42  # subject: stack
    CE_STORM = 43  # subject: stack
    CE_STORM_END = 44
    ROW_REMAPPED = 45  # subject: stack
    RAS_CLEARED = 46
    RESET_DONE = 47  # value: rows remapped
    FAULT_INJECTED = 50  # subject: fault kind; text: the fault
    FAULT_CLEARED = 51  # subject: fault kind (0: all); text: what was cleared
    RIG_LOST = 60  # a hardware-in-the-loop rig stopped answering; value: seconds since its last answer
    RIG_RESTORED = 61  # the rig answers again


class Capability(IntFlag):
    """What a node's firmware can do, announced in BIRTH."""

    TELEMETRY = 0x0001
    DVFS = 0x0002
    POWER_CAP = 0x0004
    COOLANT_CONTROL = 0x0008
    RAS = 0x0010
    FAULT_INJECTION = 0x0020


class SnapshotFlags(IntFlag):
    FAILSAFE = 0x0001
    CLOCKS_LOCKED = 0x0002
    LINK_DEGRADED = 0x0004
    REMAP_PENDING = 0x0008
    REMAP_FAILED = 0x0010
    CE_STORM = 0x0020


class PumpFlags(IntFlag):
    RUNNING = 0x01
    LEAD = 0x02
    FAULT = 0x04


class ValveFlags(IntFlag):
    MANUAL = 0x01
    EXTERNAL = 0x02  # commanded by an external controller (a plant-in-the-loop rig)


_READ_EXACT = """
def read_exact(io, n):
    data = io.read(n)
    if len(data) != n:
        raise StreamError("stream read less than specified amount, expected %d, found %d" % (n, len(data)))
    return data
"""


def _text8() -> c.Construct:
    """A UTF-8 string after a u8 byte count: ``PascalString(Int8ul, "utf8")``, except that its
    compiled parser checks the count against the bytes present (construct 2.10's compiled
    PascalString reads ``io.read(n)`` unchecked and so accepts a count that overruns the payload,
    where the uncompiled parser raises StreamError)."""
    macro = c.PascalString(c.Int8ul, "utf8")

    def _emitparse(code: c.CodeGen) -> str:
        code.append(_READ_EXACT)
        return f"read_exact(io, {c.Int8ul._compileparse(code)}).decode('utf8')"

    macro._emitparse = _emitparse
    return macro


Text8 = _text8()

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

DieTlm = c.Struct(
    "temp_c" / c.Float32l,
    "power_w" / c.Float32l,
    "clock_mhz" / c.Int16ul,
    "voltage_mv" / c.Int16ul,
    "reasons" / c.Int32ul,  # NVML clock-event-reasons bitmask
    "pstate" / c.Int8ul,
    "util_pct" / c.Int8ul,
)

HbmTlm = c.Struct(
    "temp_c" / c.Float32l,
    "ce" / c.Int32ul,
    "ue" / c.Int32ul,
)

PumpTlm = c.Struct(
    "rpm" / c.Int16ul,
    "flags" / c.Int8ul,  # PumpFlags
)

ValveTlm = c.Struct(
    "position_pct" / c.Float32l,
    "flags" / c.Int8ul,  # ValveFlags
)

# The telemetry body. Counts come first so that a reader knows the whole layout after 4 bytes
# of it; an array field ``x`` is always sized by a count field named ``n_x``.
Snapshot = c.Struct(
    "uptime_ns" / c.Int64ul,
    "state" / c.Int8ul,  # NodeState
    "mode" / c.Int8ul,  # CoolingMode
    "flags" / c.Int16ul,  # SnapshotFlags
    "power_w" / c.Float32l,
    "power_cap_w" / c.Float32l,
    "inlet_c" / c.Float32l,
    "outlet_c" / c.Float32l,
    "flow_lpm" / c.Float32l,
    "vrm_current_a" / c.Float32l,
    "rx_rejected" / c.Int32ul,
    "recovery_action" / c.Int8ul,  # 0 NONE, 1 GPU_RESET, 2 NODE_REBOOT
    "n_dies" / c.Int8ul,
    "n_hbm" / c.Int8ul,
    "n_pumps" / c.Int8ul,
    "n_valves" / c.Int8ul,
    "dies" / c.Array(this.n_dies, DieTlm),
    "hbm" / c.Array(this.n_hbm, HbmTlm),
    "pumps" / c.Array(this.n_pumps, PumpTlm),
    "valves" / c.Array(this.n_valves, ValveTlm),
)

Telemetry = c.Struct(
    "snapshot" / Snapshot,
    c.Terminated,
)

# Arguments of each operation; an operation missing here takes no arguments.
CommandArgs: dict[Op, c.Construct] = {
    Op.SET_POWER_CAP: c.Struct("watts" / c.Float32l),
    Op.LOCK_CLOCKS: c.Struct("mhz" / c.Int16ul),
    Op.SET_VALVE: c.Struct(
        "valve" / c.Int8ul,
        "auto" / c.Int8ul,  # 1: back to automatic control (pct ignored)
        "pct" / c.Float32l,
    ),
    # the fault model of mcm_firmware.faults: kind, target text, two numbers (NaN: not given)
    Op.INJECT: c.Struct(
        "kind" / c.Int8ul,
        "target" / Text8,
        "value" / c.Float64l,
        "value2" / c.Float64l,
    ),
    Op.CLEAR_FAULT: c.Struct(
        "kind" / c.Int8ul,  # 0: every fault
        "target" / Text8,  # empty: every target of the kind
    ),
}

Command = c.Struct(
    "request_id" / c.Int32ul,
    "op" / c.Int16ul,  # Op
    "args" / c.Switch(this.op, {int(op): con for op, con in CommandArgs.items()}, default=c.Pass),
    c.Terminated,
)

StatusData = c.Struct(
    "profile" / Text8,
    "firmware" / Text8,
    "boot_count" / c.Int32ul,
    "tx_seq" / c.Int32ul,
    "rx_frames" / c.Int32ul,
    "tx_frames" / c.Int32ul,
    "tx_dropped" / c.Int32ul,
    "reconnects" / c.Int32ul,
    "link_util_permille" / c.Int16ul,  # share of a rate-limited link (serial) in use; 0 otherwise
    "pump_names" / c.PrefixedArray(c.Int8ul, Text8),
    "faults" / c.PrefixedArray(c.Int8ul, Text8),  # injected faults in force, as "kind target value"
    "snapshot" / Snapshot,
)

RasData = c.Struct(
    "ecc" / c.Int8ul,  # 0 SECDED, 1 CHIPKILL
    "flags" / c.Int8ul,  # bit 0 REMAP_PENDING, bit 1 REMAP_FAILED, bit 2 CE_STORM
    "recovery_action" / c.Int8ul,
    "ce" / c.Int64ul,
    "ue" / c.Int64ul,
    "remapped_rows" / c.Int32ul,
    "spare_rows_free" / c.Int32ul,
    "scrub_passes" / c.Int32ul,
    "scrubbed_words" / c.Int64ul,
    "stacks"
    / c.PrefixedArray(
        c.Int8ul,
        c.Struct(
            "ce" / c.PrefixedArray(c.Int8ul, c.Int32ul),  # per channel
            "ue" / c.PrefixedArray(c.Int8ul, c.Int32ul),
            "failed_devices" / c.PrefixedArray(c.Int8ul, c.Int8ul),
        ),
    ),
    "pending" / c.PrefixedArray(
        c.Int16ul,
        c.Struct("stack" / c.Int8ul, "channel" / c.Int8ul, "bank" / c.Int16ul, "row" / c.Int32ul),
    ),
)

# Data of a successful response, per operation; an operation missing here answers no data.
ResponseData: dict[Op, c.Construct] = {
    Op.STATUS: StatusData,
    Op.RAS: RasData,
}

Response = c.Struct(
    "request_id" / c.Int32ul,
    "op" / c.Int16ul,  # echoes the command's operation, also one the node did not know
    "status" / c.Int8ul,  # Status
    "message" / Text8,
    "data"
    / c.If(
        this.status == int(Status.OK),
        c.Switch(this.op, {int(op): con for op, con in ResponseData.items()}, default=c.Pass),
    ),
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
    c.Terminated,
)


def compiled(con: c.Construct) -> c.Construct:
    """Compile a declaration once; construct's compiled parsers are ~5x faster."""
    return con.compile()


COMPILED_BODIES: dict[MsgType, c.Construct] = {t: compiled(b) for t, b in BODIES.items()}
