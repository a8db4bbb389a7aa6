"""The wire protocol: vocabulary, frame declarations, command operations, typed messages, codec.
No I/O here."""

from .codec import FrameError, decode, encode, frame_bytes, snapshot_dtype
from .messages import Birth, Command, Death, Event, Message, Response, Telemetry
from .ops import (
    OPS,
    ClearFaultArgs,
    InjectArgs,
    LockClocksArgs,
    Op,
    OpSpec,
    PendingRow,
    PowerCapArgs,
    RasResult,
    SetValveArgs,
    StackErrors,
    StatusResult,
)
from .telemetry import DieTelemetry, HbmTelemetry, PumpTelemetry, Snapshot, ValveTelemetry
from .vocabulary import (
    MODULE_SUBJECT,
    Capability,
    ClockReason,
    CoolingMode,
    DeathReason,
    EccMode,
    EventCode,
    FaultKind,
    FrameFlags,
    MsgType,
    NodeState,
    PumpFlags,
    RasFlags,
    Reason,
    RecoveryAction,
    Severity,
    SnapshotFlags,
    Status,
    ValveFlags,
    reason_names,
)

__all__ = [
    "MODULE_SUBJECT", "OPS", "Birth", "Capability", "ClearFaultArgs", "ClockReason", "Command",
    "CoolingMode", "Death", "DeathReason", "DieTelemetry", "EccMode", "Event", "EventCode",
    "FaultKind", "FrameError", "FrameFlags", "HbmTelemetry", "InjectArgs", "LockClocksArgs",
    "Message", "MsgType", "NodeState", "Op", "OpSpec", "PendingRow", "PowerCapArgs",
    "PumpFlags", "PumpTelemetry", "RasFlags", "RasResult", "Reason", "RecoveryAction",
    "Response", "SetValveArgs", "Severity", "Snapshot", "SnapshotFlags", "StackErrors", "Status",
    "StatusResult", "Telemetry", "ValveFlags", "ValveTelemetry", "decode", "encode",
    "frame_bytes", "reason_names", "snapshot_dtype",
]
