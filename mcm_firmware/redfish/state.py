"""What the Redfish service knows of each node: its newest state frame (BIRTH or DEATH), its newest
telemetry snapshot and what its last STATUS answer said of its power limits and faults. Plain data,
updated from decoded frames; no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..protocol import Birth, Death, Event, EventCode, Samples, Telemetry
from ..protocol.ops import PowerLimits, StatusResult
from ..protocol.telemetry import Snapshot


@dataclass
class NodeView:
    node: int
    birth: Birth | None = None
    death: Death | None = None  # the newest state frame was this DEATH (``birth`` keeps the last BIRTH)
    snapshot: Snapshot | None = None
    snapshot_ns: int = 0  # the telemetry frame's timestamp
    limits: PowerLimits | None = None  # from the newest STATUS answer
    pump_names: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    last_event: Event | None = None
    valve_setpoints: dict[int, float] = field(default_factory=dict)  # valves held (VALVE_MANUAL), their %
    # HBM stacks named by REMAP_PENDING / REMAP_FAILED events (the telemetry's flags are per module)
    remap_pending: set[int] = field(default_factory=set)
    remap_failed: set[int] = field(default_factory=set)
    last_seen: float | None = None  # monotonic time of the newest frame that was not retained
    stale: bool = False  # set by judge(): online by its state, but silent too long

    @property
    def online(self) -> bool:
        """Its BIRTH is in force and it has not gone silent (``judge``)."""
        return self.birth is not None and self.death is None and not self.stale

    def judge(self, now: float, window: float) -> None:
        """A node is taken as alive only while frames of it that were not retained keep coming
        (docs/protocol.md, "Stale or live"): a retained BIRTH can outlive its node, and a lost
        link to the broker silences every node."""
        self.stale = self.last_seen is None or now - self.last_seen > window


@dataclass
class FleetView:
    fleet: str
    nodes: dict[int, NodeView] = field(default_factory=dict)
    frames: int = 0  # frames taken in

    def node(self, node: int) -> NodeView:
        view = self.nodes.get(node)
        if view is None:
            view = self.nodes[node] = NodeView(node)
        return view

    def take(self, msg: object, *, retained: bool = False, now: float = 0.0) -> NodeView | None:
        """Update from one decoded frame of the fleet (``now``: monotonic time of its arrival);
        the node it concerns, None for a frame that says nothing the service shows."""
        if isinstance(msg, Birth):
            view = self.node(msg.node_id)
            if view.birth is None or view.death is not None or msg.bdseq != view.birth.bdseq:
                view.limits = None  # a new life: ask again
                view.valve_setpoints = {}
            view.birth, view.death = msg, None
        elif isinstance(msg, Death):
            view = self.node(msg.node_id)
            view.death = msg
        elif isinstance(msg, (Telemetry, Samples)):
            view = self.node(msg.node_id)
            view.snapshot, view.snapshot_ns = msg.snapshot, msg.timestamp_ns
        elif isinstance(msg, Event):
            view = self.node(msg.node_id)
            view.last_event = msg
            if msg.code == EventCode.VALVE_MANUAL:
                view.valve_setpoints[msg.subject] = msg.value
            elif msg.code == EventCode.VALVE_AUTO:
                view.valve_setpoints.pop(msg.subject, None)
            elif msg.code == EventCode.REMAP_PENDING:
                view.remap_pending.add(msg.subject)
            elif msg.code == EventCode.REMAP_FAILED:
                view.remap_failed.add(msg.subject)
            elif msg.code == EventCode.RESET_DONE:
                view.remap_pending.clear()  # the pending remaps are applied
        else:
            return None
        if not retained:
            view.last_seen = now
        self.frames += 1
        return view

    def take_status(self, node: int, status: StatusResult, timestamp_ns: int, *, now: float | None = None) -> None:
        """Update from a STATUS answer (``now``: monotonic time of its arrival, an answer is a
        sign of life too)."""
        view = self.node(node)
        if now is not None:
            view.last_seen = now
        view.limits = status.power_limits
        view.pump_names = tuple(status.pump_names)
        view.faults = tuple(status.faults)
        if view.snapshot is None or view.snapshot_ns <= timestamp_ns:
            view.snapshot, view.snapshot_ns = status.snapshot, timestamp_ns
