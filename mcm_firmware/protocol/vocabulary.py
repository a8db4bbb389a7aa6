"""The wire vocabulary: every enumeration whose numbers cross the wire.

Frames carry these as plain integers; every layer that gives them meaning (the controllers that
set reason bits, the RAS firmware that picks a recovery action, the host views that print names)
imports them from here, so a number has one name everywhere. The command operations live beside
their argument layouts in :mod:`.ops`.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

MODULE_SUBJECT = 0xFFFF
"""``Event.subject`` when an event concerns the whole module."""


class MsgType(IntEnum):
    BIRTH = 1
    DEATH = 2
    TELEMETRY = 3
    COMMAND = 4
    RESPONSE = 5
    EVENT = 6
    LINK = 7  # the state of a carrier link: one connection that carries many nodes
    SAMPLES = 8  # telemetry with a batch of high-rate samples (a profile's samples_per_frame > 1)


class FrameFlags(IntFlag):
    """Header flag bits; bits not named here must be zero."""

    HOST = 0x01  # sent by a host (commands); node frames leave it clear
    RETRY = 0x02  # a retransmission of a command with the same request id
    AUTH = 0x04  # an authentication trailer follows the CRC (set by sealing: protocol.auth)


KNOWN_FLAGS = int(FrameFlags.HOST | FrameFlags.RETRY | FrameFlags.AUTH)
MESSAGE_FLAGS = int(FrameFlags.HOST | FrameFlags.RETRY)
"""The flags a message carries by itself; AUTH is the sealing's, never the encoder's."""


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


class LinkCondition(IntEnum):
    """What a LINK frame says of its link and of every node it carries."""

    LOST = 0  # the link's Last Will, published by the broker: its nodes are offline
    ONLINE = 1  # the link is up; its nodes' own BIRTH and DEATH frames tell each node's state
    SHUTDOWN = 2  # the link closed cleanly (its nodes published their DEATH first)


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
    POWER_CAP_SET = 25  # value: the power limit now enforced, W
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
    XID = 70  # subject: stack (0xFFFF: module); value: the XID number (NVIDIA's XID catalog); text: the XID line


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


class ClockReason(IntFlag):
    """NVML ``nvmlClocksEventReasons`` bits, as carried in a die's ``reasons`` field."""

    GPU_IDLE = 0x1
    APPLICATIONS_CLOCKS_SETTING = 0x2
    SW_POWER_CAP = 0x4
    HW_SLOWDOWN = 0x8
    SYNC_BOOST = 0x10
    SW_THERMAL_SLOWDOWN = 0x20
    HW_THERMAL_SLOWDOWN = 0x40
    HW_POWER_BRAKE_SLOWDOWN = 0x80


def reason_names(mask: int) -> list[str]:
    """The names of the clock-event-reason bits set in ``mask``, lowest bit first."""
    return [r.name for r in ClockReason if mask & r and r.name is not None]


class RecoveryAction(IntEnum):
    """What the RAS firmware asks of the operator: NVML's ``nvmlDeviceGpuRecoveryAction_t`` values
    (NONE, GPU_RESET, NODE_REBOOT; the emulator has no peer-to-peer traffic to drain)."""

    NONE = 0
    GPU_RESET = 1
    NODE_REBOOT = 2


class PowerLimitSource(IntEnum):
    """Who set the power limit that is enforced (the lowest of those set): the board's default
    (the profile's ``default_cap_w``, in force while no in-band limit is set), the host's driver
    in band (``SET_POWER_CAP``, ``nvidia-smi -pl``), or the baseboard management controller out of
    band (Redfish). NVML reports the lowest as ``nvmlDeviceGetEnforcedPowerLimit``."""

    DEFAULT = 0
    IN_BAND = 1
    OUT_OF_BAND = 2

    @property
    def label(self) -> str:
        """The name on the command line: ``in-band``."""
        return self.name.lower().replace("_", "-")


class EccMode(IntEnum):
    SECDED = 0  # Hamming (39,32) per 32-bit word
    CHIPKILL = 1  # Reed-Solomon RS(20,16) per 16-byte line


class RasFlags(IntFlag):
    """The ``flags`` byte of RAS data."""

    REMAP_PENDING = 0x01
    REMAP_FAILED = 0x02
    CE_STORM = 0x04


class Reason(IntEnum):
    """Why a frame was rejected; carried in FRAME_REJECTED events as their subject."""

    TRUNCATED = 1
    BAD_MAGIC = 2
    UNSUPPORTED_VERSION = 3
    TRAILING_BYTES = 4
    BAD_CRC = 5
    UNKNOWN_TYPE = 6
    LENGTH_MISMATCH = 7
    BAD_FIELD = 8
    UNAUTHENTICATED = 9  # a fleet with frame authentication: a frame without its trailer
    BAD_TAG = 10  # the tag does not verify, or names a key this side does not have
    REPLAYED = 11  # a sequence number seen already, or older than the replay window
    STALE = 12  # a new sender whose timestamp is outside the freshness limit


AUTH_REASONS = frozenset({Reason.UNAUTHENTICATED, Reason.BAD_TAG, Reason.REPLAYED, Reason.STALE})
"""The reasons of frame authentication (protocol.auth); the others are the decoder's."""


class FaultKind(IntEnum):
    """The faults of the model (``INJECT`` / ``CLEAR_FAULT``'s ``kind``); see :mod:`mcm_firmware.faults`."""

    PUMP_FAIL = 1
    PUMP_OVERCURRENT = 2
    VALVE_STUCK = 3
    SENSOR_STUCK = 4
    SENSOR_DRIFT = 5
    SENSOR_NOISE = 6
    SENSOR_DROPOUT = 7
    SENSOR_FAILED = 8
    VRM_OVERCURRENT = 9
    INLET_STEP = 10
    POWER_BRAKE = 11
    HBM_FLIP = 12
    HBM_DEVICE = 13
    CE_STORM = 14
    LINK_DROP = 15
    LINK_CORRUPT = 16
    LINK_DUPLICATE = 17
    LINK_DELAY = 18
    LINK_REORDER = 19
    CRASH = 20
    REBOOT = 21
    PCIE_ERRORS = 22

    @property
    def label(self) -> str:
        """The name on the command line and in scenario files: ``pump-fail``."""
        return self.name.lower().replace("_", "-")
