"""A Hypothesis state machine over one node: its controllers and command handler, stepped in
virtual time (no asyncio inside the rules), checked against a simple reference model.

The node is the real :class:`~mcm_firmware.runtime.node.Node` over a one-row
:class:`~mcm_firmware.runtime.shard.Shard`; its link tasks are not started. Frames go in through
the node's receive path (``Node._on_frame``, what its link task calls) and what it would send is
taken from its outboxes and framed in order, as its transmit task would.

Rules: commands (power cap, clocks, valves, RAS, faults), time advance, malformed frames,
wrong-direction messages, replayed commands. Invariants: no die above the shutdown temperature
for a tick without the node in shutdown; a zone with a failed required sensor is in failsafe and
its valve at or above the failsafe opening (unless set by hand); sequence numbers strictly
increase; a rejected frame changes no state; the long-window average power stays at or below
the cap (+2 %) once the window has passed since the last change; RAS counters never decrease
except on clear; every answer matches the reference model's verdict.

Run it with ``NodeMachine.TestCase`` (see ``tests/testing/test_stateful.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ..clock import Clock
from ..plant.workload import Workload
from ..profile import load_profile
from ..protocol import (
    ClearFaultArgs,
    Command,
    FaultKind,
    FrameError,
    FrameFlags,
    InjectArgs,
    LockClocksArgs,
    MsgType,
    Op,
    PowerCapArgs,
    Response,
    SetValveArgs,
    Status,
    decode,
    encode,
)
from ..runtime.handlers import HANDLERS
from ..runtime.node import Node
from ..runtime.shard import Shard
from ..transport import Transport
from .strategies import MUTATIONS, NODE_SENT, messages

NODE = 5
CAP_TOLERANCE = 1.02


class ShardClock(Clock):
    """The shard's own time: the node reads the time the controllers are at."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard

    def now(self) -> float:
        return self.shard.t

    async def sleep_until(self, deadline: float) -> None:  # pragma: no cover - not used here
        raise RuntimeError("a stepped node does not sleep")


def _no_transport(client_id: str) -> Transport:  # pragma: no cover - not used here
    raise RuntimeError("a stepped node opens no link")


class Model:
    """What the node should hold, from the commands it accepted."""

    def __init__(self, profile: Any) -> None:
        self.profile = profile
        self.cap_w = profile.power.default_cap_w
        self.cap_since = 0.0
        self.manual: dict[int, float] = {}
        self.faults: set[str] = set()

    def cap_ok(self, watts: float) -> bool:
        pw = self.profile.power
        return math.isfinite(watts) and pw.min_cap_w <= watts <= pw.max_cap_w


class NodeMachine(RuleBasedStateMachine):
    profile_name = "colossus-mcm"

    def __init__(self) -> None:
        super().__init__()
        self.profile = load_profile(self.profile_name)
        self.shard = Shard(self.profile, 1, seed=11)
        self.node = Node(
            node_id=NODE,
            fleet="fuzz",
            shard=self.shard,
            row=0,
            transport_factory=_no_transport,
            clock=ShardClock(self.shard),
            handlers=HANDLERS,
        )
        self.model = Model(self.profile)
        self.request_id = 1
        self.last_seq: int | None = None
        self.sent: list[Any] = []  # every message the node sent, decoded
        self.over_shutdown = False
        self.ras_floor = (0, 0)
        self.cleared = False
        self.last_command: Command | None = None
        self.failsafe_since: dict[int, float] = {}

    # --- plumbing ---------------------------------------------------------------------------

    def _drain(self) -> list[Any]:
        """Frame what the node would send, in its transmit order, and check the sequence."""
        node = self.node
        out = []
        for queue in (node._urgent, node._events):
            while queue:
                out_frame = queue.popleft()
                frame = node._frame(out_frame.msg_type, out_frame.body)
                msg = decode(frame)
                if self.last_seq is not None:
                    assert msg.seq == (self.last_seq + 1) & 0xFFFFFFFF, "sequence numbers must increase by one"
                self.last_seq = msg.seq
                out.append(msg)
        self.sent.extend(out)
        return out

    def _send(self, frame: bytes) -> list[Any]:
        self.node._on_frame(frame)
        return self._drain()

    def _command(self, op: Op, args: Any = None, *, request_id: int | None = None) -> Response:
        rid = self.request_id if request_id is None else request_id
        if request_id is None:
            self.request_id += 1
        cmd = Command(
            node_id=NODE, seq=rid, timestamp_ns=0, flags=int(FrameFlags.HOST), request_id=rid, op=op, args=args
        )
        self.last_command = cmd
        replies = [m for m in self._send(encode(cmd)) if isinstance(m, Response)]
        assert len(replies) == 1 and replies[0].request_id == rid, replies
        return replies[0]

    def _state(self) -> tuple[Any, ...]:
        """What a rejected frame must not change."""
        d, c = self.shard.dvfs, self.shard.cool
        ras = self.shard.ras[0]
        return (
            float(d.cap_w[0]),
            float(d.lock_mhz[0]),
            tuple(np.nan_to_num(c.manual[0], nan=-1.0)),
            tuple(sorted(str(f) for f in self.node.faults.values())),
            int(ras.ce.sum()),
            int(ras.ue.sum()),
            self.node.counters.rx_duplicates,
        )

    # --- rules ------------------------------------------------------------------------------

    @initialize()
    def boot(self) -> None:
        self.shard.set_workload(0, Workload.STEADY)
        self._advance(2.0)

    def _advance(self, seconds: float) -> None:
        shutdown_c = self.profile.thermal.shutdown_c
        for _ in range(max(1, round(seconds / self.shard.dt))):
            if self.over_shutdown:
                assert self.shard.dvfs.shutdown[0], "a die stayed above shutdown without the node shutting down"
            self.shard.tick()
            for ev in self.shard.take_events():
                self.node.emit_event(ev.severity, ev.code, subject=ev.subject, value=ev.value, text=ev.text)
            self.over_shutdown = bool(self.shard.plant.t_die[0].max() > shutdown_c)
        self._drain()

    @rule(seconds=st.floats(0.05, 8.0))
    def advance(self, seconds: float) -> None:
        self._advance(seconds)

    @rule(kind=st.sampled_from([Workload.IDLE, Workload.STEADY, Workload.TRAINING, Workload.INFERENCE]))
    def workload(self, kind: Workload) -> None:
        self.shard.set_workload(0, kind)
        self.model.cap_since = self.shard.t

    @rule(watts=st.one_of(st.floats(300, 1600), st.sampled_from([math.nan, math.inf, -math.inf, 500.0, 1400.0])))
    def set_power_cap(self, watts: float) -> None:
        resp = self._command(Op.SET_POWER_CAP, PowerCapArgs(watts=watts))
        ok = self.model.cap_ok(np.float32(watts).item())
        assert (resp.status is Status.OK) == ok, (watts, resp)
        if ok:
            self.model.cap_w = float(np.float32(watts))
            self.model.cap_since = self.shard.t

    @rule(mhz=st.integers(0, 3000))
    def lock_clocks(self, mhz: int) -> None:
        resp = self._command(Op.LOCK_CLOCKS, LockClocksArgs(mhz=mhz))
        assert resp.status in (Status.OK, Status.BAD_ARGUMENT)
        self.model.cap_since = self.shard.t

    @rule()
    def reset_clocks(self) -> None:
        assert self._command(Op.RESET_CLOCKS).status is Status.OK

    @rule(valve=st.integers(0, 6), pct=st.one_of(st.floats(-10, 110), st.just(math.nan)), auto=st.booleans())
    def set_valve(self, valve: int, pct: float, auto: bool) -> None:
        resp = self._command(Op.SET_VALVE, SetValveArgs(valve=valve, auto=int(auto), pct=pct))
        pct32 = float(np.float32(pct))
        valid = valve < self.profile.cooling.valves and (auto or (math.isfinite(pct32) and 0 <= pct32 <= 100))
        assert (resp.status is Status.OK) == valid, (valve, pct, auto, resp)
        if valid:
            if auto:
                self.model.manual.pop(valve, None)
            else:
                self.model.manual[valve] = pct32

    @rule(
        fault=st.sampled_from(
            [
                (FaultKind.PUMP_FAIL, "A"),
                (FaultKind.PUMP_FAIL, "B"),
                (FaultKind.PUMP_FAIL, "C"),
                (FaultKind.SENSOR_FAILED, "die:1"),
                (FaultKind.SENSOR_FAILED, "die:9"),
                (FaultKind.SENSOR_STUCK, "die:0"),
                (FaultKind.CE_STORM, "0"),
            ]
        )
    )
    def inject(self, fault: tuple[FaultKind, str]) -> None:
        kind, target = fault
        value = {FaultKind.SENSOR_STUCK: 40.0, FaultKind.CE_STORM: 100.0}.get(kind, math.nan)
        resp = self._command(Op.INJECT, InjectArgs(kind=int(kind), target=target, value=value, value2=math.nan))
        exists = target not in ("C", "die:9")  # a two-pump, four-die module
        assert resp.status is (Status.OK if exists else Status.BAD_ARGUMENT), (fault, resp)

    @rule()
    def clear_faults(self) -> None:
        assert self._command(Op.CLEAR_FAULT, ClearFaultArgs(kind=0, target="all")).status is Status.OK
        assert not self.node.faults

    @rule()
    def clear_ras(self) -> None:
        assert self._command(Op.CLEAR_RAS).status is Status.OK
        self.cleared = True

    @rule(data=st.data())
    def malformed_frame(self, data: st.DataObject) -> None:
        """A command made wrong on the wire: rejected (counted) without changing anything, or,
        where the mutation left a valid frame, handled like any frame."""
        cmd = data.draw(messages(MsgType.COMMAND))
        mutation = data.draw(st.sampled_from(MUTATIONS))
        frame = mutation.apply(data.draw, encode(cmd))
        try:
            decode(frame)
        except FrameError:
            before, rejected = self._state(), self.node.counters.rx_rejected
            self._send(frame)
            assert self._state() == before, mutation.name
            assert self.node.counters.rx_rejected == rejected + 1

    @rule(data=st.data())
    def wrong_direction(self, data: st.DataObject) -> None:
        msg = data.draw(messages(*NODE_SENT))
        before, rejected = self._state(), self.node.counters.rx_rejected
        replies = self._send(encode(msg))
        assert not any(isinstance(m, Response) for m in replies)
        assert self._state() == before and self.node.counters.rx_rejected == rejected + 1

    @precondition(lambda self: self.last_command is not None)
    @rule()
    def replay(self) -> None:
        """The last command again, same request id: answered from the cache, not run twice."""
        cmd = self.last_command
        assert cmd is not None
        dup = self.node.counters.rx_duplicates
        first = [m for m in self.sent if isinstance(m, Response) and m.request_id == cmd.request_id][-1]
        again = self._command(cmd.op, cmd.args, request_id=cmd.request_id)
        assert self.node.counters.rx_duplicates == dup + 1
        assert (again.status, again.data is None) == (first.status, first.data is None)

    # --- invariants -------------------------------------------------------------------------

    @invariant()
    def model_agrees(self) -> None:
        d, c = self.shard.dvfs, self.shard.cool
        assert float(d.cap_w[0]) == self.model.cap_w
        manual = {v: float(c.manual[0, v]) for v in range(c.manual.shape[1]) if not math.isnan(c.manual[0, v])}
        assert manual == self.model.manual

    @invariant()
    def failsafe_rules(self) -> None:
        s, c = self.shard, self.shard.cool
        zones = c.failsafe.shape[1]
        period = 1.0 / self.profile.rates.thermal_hz
        for die in np.nonzero(s.s_die.failed[0])[0]:
            zone = int(die) % zones
            if s.t - float(s.s_die.read_at[0, die]) > self.profile.cooling.sensor_timeout_s + period:
                assert c.failsafe[0, zone], f"die sensor {die} failed but zone {zone} is not in failsafe"
        floor = self.profile.cooling.failsafe_pct
        settle = 1.0 / self.profile.rates.valve_hz  # the valve follows at its next period
        for zone in range(zones):
            if not c.failsafe[0, zone]:
                self.failsafe_since.pop(zone, None)
                continue
            since = self.failsafe_since.setdefault(zone, s.t)
            if s.t - since >= settle and math.isnan(c.manual[0, zone]) and math.isnan(c.external[0, zone]):
                assert c.valve_cmd[0, zone] >= floor - 1e-9, f"zone {zone} in failsafe, valve {c.valve_cmd[0, zone]}"

    @invariant()
    def power_within_cap(self) -> None:
        d = self.shard.dvfs
        window = self.profile.power.long_window_s
        if self.shard.t - self.model.cap_since > 3 * window and not d.lock_mhz[0]:
            assert float(d.avg_long[0]) <= float(d.cap_w[0]) * CAP_TOLERANCE, (float(d.avg_long[0]), float(d.cap_w[0]))

    @invariant()
    def ras_counters_monotonic(self) -> None:
        ras = self.shard.ras[0]
        now = (int(ras.ce.sum()), int(ras.ue.sum()))
        if not self.cleared:
            assert now[0] >= self.ras_floor[0] and now[1] >= self.ras_floor[1], (now, self.ras_floor)
        self.cleared = False
        self.ras_floor = now
