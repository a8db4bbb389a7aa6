"""What the Redfish service knows of each node: its newest state frame (BIRTH or DEATH), its newest
telemetry snapshot and what its last STATUS answer said of its power limits and faults. Plain data,
updated from frames; no I/O.

Telemetry is the bulk of what a fleet sends (10 frames a second a module), and a client reads a
module's sensors far less often than that: a TELEMETRY frame is kept as its raw payload
(:meth:`FleetView.take_telemetry`) and decoded when something reads the snapshot, once per frame
(``NodeView.snapshot``), as a BMC reads its sensors when asked. What must see every frame, whether
the module's health may have changed (the event log and events tell each change), is judged from a
few fields read from the raw payload with one ``struct`` call (``health_key``): the state, cooling
mode, flags, recovery action, the pumps' flags and whether any temperature or the flow is NaN —
every input of :func:`~.resources.health_of` but the faults a STATUS reports. Only a frame whose key
differs from the module's previous one is decoded on arrival.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from ..protocol import Birth, Death, Event, EventCode, Samples, Telemetry
from ..protocol.codec import COUNTS_OFFSET, FrameError, snapshot_dtype, snapshot_from_payload
from ..protocol.ops import PowerLimits, StatusResult
from ..protocol.telemetry import Snapshot
from ..protocol.vocabulary import CoolingMode, NodeState, Reason

_STATES = frozenset(int(s) for s in NodeState)
_MODES = frozenset(int(m) for m in CoolingMode)


@dataclass(frozen=True)
class _KeyLayout:
    """Where the inputs of a module's health sit in a telemetry payload of given array counts."""

    size: int  # the payload's length
    picks: struct.Struct  # state, mode, flags, inlet, outlet, flow, recovery, die temps, hbm temps, pump flags
    floats: tuple[int, int]  # the die and HBM temperatures among the values picked
    pumps: int  # where the pumps' flags start among them


_LAYOUTS: dict[bytes, _KeyLayout] = {}


def _layout(counts: bytes) -> _KeyLayout:
    lay = _LAYOUTS.get(counts)
    if lay is None:
        dies, hbm, pumps, valves = counts
        dt = snapshot_dtype(dies, hbm, pumps, valves)
        f = dt.fields
        assert f is not None
        picks: list[tuple[int, str]] = [(f[n][1], c) for n, c in
                                        (("state", "B"), ("mode", "B"), ("flags", "H"), ("inlet_c", "f"),
                                         ("outlet_c", "f"), ("flow_lpm", "f"), ("recovery_action", "B"))]  # fmt: skip
        for arr, member, code, n in (("dies", "temp_c", "f", dies), ("hbm", "temp_c", "f", hbm),
                                     ("pumps", "flags", "B", pumps)):  # fmt: skip
            sub, base = f[arr][0].base, f[arr][1]
            sub_fields = sub.fields
            assert sub_fields is not None
            off = sub_fields[member][1]
            picks += [(base + i * sub.itemsize + off, code) for i in range(n)]
        fmt, at = "<", 0
        for off, code in sorted(picks):
            fmt += ("x" * (off - at)) + code
            at = off + struct.calcsize("<" + code)
        lay = _LAYOUTS[counts] = _KeyLayout(dt.itemsize, struct.Struct(fmt), (7, 7 + dies + hbm), 7 + dies + hbm)
    return lay


def health_key(payload: bytes | memoryview) -> tuple[object, ...]:
    """The inputs of a module's health in a telemetry payload, read without decoding it; FrameError
    when the payload does not fit its counts or holds a state or mode that does not exist."""
    if len(payload) < COUNTS_OFFSET + 4:
        raise FrameError(Reason.LENGTH_MISMATCH, "telemetry payload shorter than its fixed part")
    lay = _layout(bytes(payload[COUNTS_OFFSET : COUNTS_OFFSET + 4]))
    if len(payload) != lay.size:
        raise FrameError(
            Reason.LENGTH_MISMATCH, f"telemetry payload is {len(payload)} bytes, its counts need {lay.size}"
        )
    v = lay.picks.unpack_from(payload)
    if v[0] not in _STATES or v[1] not in _MODES:
        raise FrameError(Reason.BAD_FIELD, f"TELEMETRY state {v[0]} or mode {v[1]} unknown")
    lo, hi = lay.floats
    total = sum(v[lo:hi], v[3] + v[4] + v[5])  # NaN when one of them is NaN
    nan: object = False
    if not math.isfinite(total):  # which of them (an infinity is no NaN: told apart)
        nan = tuple(x != x for x in (v[3], v[4], v[5], *v[lo:hi]))
    return (v[0], v[1], v[2], v[6], v[lay.pumps :], nan)


@dataclass
class NodeView:
    node: int
    birth: Birth | None = None
    death: Death | None = None  # the newest state frame was this DEATH (``birth`` keeps the last BIRTH)
    decoded: Snapshot | None = None  # the newest snapshot decoded (``snapshot`` decodes ``raw`` first)
    snapshot_ns: int = 0  # the telemetry frame's timestamp
    raw: bytes | None = None  # the newest telemetry payload, while not decoded yet
    seq: int | None = None  # the sequence number of the newest frame taken in
    health_key: tuple[object, ...] | None = None  # of the newest telemetry (``health_key``)
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
    def snapshot(self) -> Snapshot | None:
        """The newest telemetry snapshot, decoded once per frame, when first read."""
        raw = self.raw
        if raw is not None:
            self.decoded = snapshot_from_payload(raw)  # checked by health_key when taken in
            self.raw = None
        return self.decoded

    @snapshot.setter
    def snapshot(self, snap: Snapshot | None) -> None:
        self.decoded, self.raw = snap, None
        self.health_key = None

    @property
    def has_telemetry(self) -> bool:
        return self.raw is not None or self.decoded is not None

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
    missed: int = 0  # frames of a node not seen, by the gaps in its sequence numbers (an upper bound)

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
            self._sequence(view, msg.seq)
        self.frames += 1
        return view

    def _sequence(self, view: NodeView, seq: int) -> None:
        last = view.seq
        if last is None:
            view.seq = seq
            return
        ahead = (seq - last) & 0xFFFFFFFF
        if 0 < ahead <= 0x10000:
            self.missed += ahead - 1  # the frames in between not seen (yet)
            view.seq = seq
        elif ahead > 0xFFFFFFFF - 0x10000 and self.missed > 0:
            self.missed -= 1  # one counted missing came late, on another connection (an answer, an event)
        elif ahead > 0x10000 and ahead <= 0xFFFFFFFF - 0x10000:
            view.seq = seq  # a jump: the node started again

    def seen(self, node: int, seq: int) -> None:
        """A frame of ``node`` that came another way (an answer to the service's own request): its
        sequence number is not missing."""
        view = self.nodes.get(node)
        if view is not None:
            self._sequence(view, seq)

    def take_telemetry(
        self, node: int, seq: int, timestamp_ns: int, payload: memoryview, *, now: float
    ) -> tuple[NodeView, bool]:
        """A TELEMETRY frame's payload, kept raw (decoded when read); the node, and whether the
        inputs of its health changed (its health must be judged again). FrameError (nothing
        changed) for a payload that does not fit its layout."""
        key = health_key(payload)
        view = self.nodes.get(node)
        if view is None:
            view = self.node(node)
        view.raw, view.snapshot_ns = bytes(payload), timestamp_ns
        changed = key != view.health_key
        view.health_key = key
        view.last_seen = now
        self._sequence(view, seq)
        self.frames += 1
        return view, changed

    def take_status(self, node: int, status: StatusResult, timestamp_ns: int, *, now: float | None = None) -> None:
        """Update from a STATUS answer (``now``: monotonic time of its arrival, an answer is a
        sign of life too)."""
        view = self.node(node)
        if now is not None:
            view.last_seen = now
        view.limits = status.power_limits
        view.pump_names = tuple(status.pump_names)
        view.faults = tuple(status.faults)
        if not view.has_telemetry or view.snapshot_ns <= timestamp_ns:
            view.snapshot, view.snapshot_ns = status.snapshot, timestamp_ns
