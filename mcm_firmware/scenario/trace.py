"""The trace of a run: every frame seen on the fleet's topics, its digest, and signals per node.

Telemetry payloads are kept as bytes and decoded in bulk through the numpy record layout of the
Snapshot declaration, so a day of telemetry from a fleet stays small and every signal is one
vectorised expression.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..protocol import (
    Birth,
    ClockReason,
    CoolingMode,
    Death,
    Event,
    EventCode,
    FrameError,
    MsgType,
    NodeState,
    PumpFlags,
    SnapshotFlags,
    decode,
)
from ..protocol.codec import COUNTS_OFFSET, envelope, samples_snapshot_offset, snapshot_dtype
from ..transport import Address, Channel
from ..transport.topics import topic


@dataclass
class EventRecord:
    t: float
    code: int
    subject: int
    value: float
    text: str


@dataclass
class NodeTrace:
    node: int
    times: list[float] = field(default_factory=list)
    payloads: list[bytes] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    states: list[tuple[float, str, int]] = field(default_factory=list)  # (t, BIRTH|DEATH, reason/boot)
    profile: str = ""
    pump_names: tuple[str, ...] = ()
    _records: np.ndarray | None = None

    def records(self) -> np.ndarray:
        """All telemetry of the node as one structured array (the wire layout)."""
        if self._records is None or len(self._records) != len(self.payloads):
            if not self.payloads:
                return np.zeros(0, snapshot_dtype(0, 0, 0, 0))
            counts = tuple(self.payloads[0][COUNTS_OFFSET : COUNTS_OFFSET + 4])
            dt = snapshot_dtype(*counts)
            same = [p for p in self.payloads if len(p) == dt.itemsize]
            self._records = np.frombuffer(b"".join(same), dt)
        return self._records


class Trace:
    """Frames in arrival order, with times relative to ``t0_ns`` (the scenario's start)."""

    def __init__(self, t0_ns: int = 0) -> None:
        self.t0_ns = t0_ns
        self.nodes: dict[int, NodeTrace] = {}
        self.frames = 0
        self.rejected = 0
        self._digest = hashlib.sha256()

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def node(self, node_id: int) -> NodeTrace:
        nt = self.nodes.get(node_id)
        if nt is None:
            nt = self.nodes[node_id] = NodeTrace(node_id)
        return nt

    def add(self, address: Address, payload: bytes) -> None:
        """Account one frame: digest, then what it says."""
        self.frames += 1
        t_bytes = topic(address).encode()
        self._digest.update(len(t_bytes).to_bytes(2, "little") + t_bytes)
        self._digest.update(len(payload).to_bytes(4, "little") + payload)
        nt = self.node(address.node)
        if address.channel is Channel.TLM:
            # fast path: the envelope checked here, the body decoded in bulk when a signal is read
            try:
                env = envelope(payload)
            except FrameError:
                env = None
            if env is not None and env.msg_type == MsgType.TELEMETRY:
                nt.times.append((env.timestamp_ns - self.t0_ns) / 1e9)
                nt.payloads.append(bytes(env.payload))
                return
            if env is not None and env.msg_type == MsgType.SAMPLES:  # its snapshot, as TELEMETRY's
                try:
                    start = samples_snapshot_offset(env.payload)
                except FrameError:
                    self.rejected += 1
                    return
                nt.times.append((env.timestamp_ns - self.t0_ns) / 1e9)
                nt.payloads.append(bytes(env.payload[start:]))
                return
        try:
            msg = decode(payload)
        except FrameError:
            self.rejected += 1
            return
        t = (msg.timestamp_ns - self.t0_ns) / 1e9
        if isinstance(msg, Event):
            nt.events.append(EventRecord(t, msg.code, msg.subject, msg.value, msg.text))
        elif isinstance(msg, Birth):
            nt.states.append((t, "BIRTH", msg.boot_count))
            nt.profile = msg.profile
        elif isinstance(msg, Death):
            nt.states.append((t, "DEATH", int(msg.reason)))

    # --- signals ------------------------------------------------------------------------------

    def signal(self, node_id: int, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of a named signal of a node; see :data:`SIGNALS`."""
        nt = self.nodes.get(node_id)
        if nt is None:
            return np.zeros(0), np.zeros(0)
        rec = nt.records()
        t = np.asarray(nt.times[: len(rec)], float)
        base, _, arg = name.partition(":")
        fn = SIGNALS[base]
        return t, np.asarray(fn(rec, arg, nt), float)


def _die(rec: np.ndarray, arg: str, field_name: str, how: Callable[..., np.ndarray]) -> np.ndarray:
    v = rec["dies"][field_name].astype(float)
    if arg:
        return v[:, int(arg)]
    return how(v, axis=1) if len(v) else np.zeros(0)


def _hbm(rec: np.ndarray, arg: str, field_name: str, how: Callable[..., np.ndarray]) -> np.ndarray:
    v = rec["hbm"][field_name].astype(float)
    if arg:
        return v[:, int(arg)]
    return how(v, axis=1) if len(v) else np.zeros(0)


def _pump(rec: np.ndarray, arg: str, nt: NodeTrace) -> int:
    names = list(nt.pump_names) or [chr(ord("A") + i) for i in range(rec["pumps"].shape[1])]
    if arg in names:
        return names.index(arg)
    return int(arg)


def _nanmax(v: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = np.where(np.isnan(v), -np.inf, v).max(axis=axis)
    return np.where(np.isinf(out), math.nan, out)


def _reason(rec: np.ndarray, arg: str, nt: NodeTrace) -> np.ndarray:
    bit = int(ClockReason[arg.upper()])
    return (np.bitwise_or.reduce(rec["dies"]["reasons"], axis=1) & bit) != 0 if len(rec) else np.zeros(0)


def _flag(flag: int) -> Callable[[np.ndarray, str, NodeTrace], np.ndarray]:
    return lambda rec, arg, nt: (rec["flags"] & flag) != 0


SIGNALS: dict[str, Callable[[np.ndarray, str, NodeTrace], np.ndarray]] = {
    "die_temp": lambda r, a, nt: _die(r, a, "temp_c", _nanmax),
    "clock": lambda r, a, nt: _die(r, a, "clock_mhz", np.mean),
    "die_power": lambda r, a, nt: _die(r, a, "power_w", np.sum),
    "util": lambda r, a, nt: _die(r, a, "util_pct", np.mean),
    "pstate": lambda r, a, nt: _die(r, a, "pstate", np.min),
    "hbm_temp": lambda r, a, nt: _hbm(r, a, "temp_c", _nanmax),
    "ce": lambda r, a, nt: _hbm(r, a, "ce", np.sum),
    "ue": lambda r, a, nt: _hbm(r, a, "ue", np.sum),
    "power": lambda r, a, nt: r["power_w"],
    "cap": lambda r, a, nt: r["power_cap_w"],
    "vrm_current": lambda r, a, nt: r["vrm_current_a"],
    "inlet": lambda r, a, nt: r["inlet_c"],
    "outlet": lambda r, a, nt: r["outlet_c"],
    "flow": lambda r, a, nt: r["flow_lpm"],
    "valve": lambda r, a, nt: r["valves"]["position_pct"][:, int(a or 0)],
    "pump_running": lambda r, a, nt: (r["pumps"]["flags"][:, _pump(r, a, nt)] & PumpFlags.RUNNING) != 0,
    "pump_lead": lambda r, a, nt: (r["pumps"]["flags"][:, _pump(r, a, nt)] & PumpFlags.LEAD) != 0,
    "pump_fault": lambda r, a, nt: (r["pumps"]["flags"][:, _pump(r, a, nt)] & PumpFlags.FAULT) != 0,
    "pump_rpm": lambda r, a, nt: r["pumps"]["rpm"][:, _pump(r, a, nt)],
    "reason": _reason,
    "failsafe": _flag(SnapshotFlags.FAILSAFE),
    "remap_pending": _flag(SnapshotFlags.REMAP_PENDING),
    "remap_failed": _flag(SnapshotFlags.REMAP_FAILED),
    "ce_storm": _flag(SnapshotFlags.CE_STORM),
    "recovery_action": lambda r, a, nt: r["recovery_action"],
    "state": lambda r, a, nt: r["state"],
    "shutdown": lambda r, a, nt: r["state"] == NodeState.SHUTDOWN,
    "mode": lambda r, a, nt: r["mode"],
    "natural_convection": lambda r, a, nt: r["mode"] == CoolingMode.NATURAL_CONVECTION,
    "rx_rejected": lambda r, a, nt: r["rx_rejected"],
    "pcie_replays": lambda r, a, nt: r["pcie_replays"],
    "pcie_aer_correctable": lambda r, a, nt: r["pcie_aer_correctable"],
    "pcie_aer_uncorrectable": lambda r, a, nt: r["pcie_aer_uncorrectable"],
    "limit_source": lambda r, a, nt: r["power_limit_source"],
}
SIGNAL_ARGS = {  # what the part after ':' names, where a signal takes one
    "die_temp": "die",
    "clock": "die",
    "die_power": "die",
    "util": "die",
    "pstate": "die",
    "hbm_temp": "stack",
    "ce": "stack",
    "ue": "stack",
    "valve": "valve",
    "pump_running": "pump",
    "pump_lead": "pump",
    "pump_fault": "pump",
    "pump_rpm": "pump",
    "reason": "reason",
}
EVENT_CODES = {c.name for c in EventCode}
