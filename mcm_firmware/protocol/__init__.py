"""The wire protocol: frame declarations, typed messages and the codec. No I/O here."""

from .codec import FrameError, Reason, decode, encode, frame_bytes, snapshot_dtype
from .frames import (
    Capability,
    CoolingMode,
    DeathReason,
    EventCode,
    FrameFlags,
    MsgType,
    NodeState,
    Op,
    PumpFlags,
    Severity,
    SnapshotFlags,
    Status,
    ValveFlags,
)
from .messages import (
    MODULE_SUBJECT,
    Birth,
    Command,
    Death,
    DieTelemetry,
    Event,
    HbmTelemetry,
    ClearFaultArgs,
    InjectArgs,
    LockClocksArgs,
    Message,
    PendingRow,
    PowerCapArgs,
    PumpTelemetry,
    RasResult,
    Response,
    SetValveArgs,
    StackErrors,
    Snapshot,
    StatusResult,
    Telemetry,
    ValveTelemetry,
)

__all__ = [
    "MODULE_SUBJECT", "Birth", "Capability", "Command", "CoolingMode", "Death", "DeathReason", "EventCode",
    "DieTelemetry", "Event", "ClearFaultArgs", "InjectArgs", "LockClocksArgs", "PendingRow", "PowerCapArgs", "RasResult", "SetValveArgs",
    "StackErrors", "FrameError", "FrameFlags", "HbmTelemetry", "Message", "MsgType",
    "NodeState", "Op", "PumpFlags", "PumpTelemetry", "Reason", "Response", "Severity", "Snapshot",
    "SnapshotFlags", "Status", "StatusResult", "Telemetry", "ValveFlags", "ValveTelemetry",
    "decode", "encode", "frame_bytes", "snapshot_dtype",
]
