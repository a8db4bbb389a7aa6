"""One emulated management controller: its link, its command handler, its outbound frames.

A node is given a transport factory (it does not inherit a transport) and its row in a
:class:`~.shard.Shard`. It runs two named tasks:

``node-<id>-link``
    connects (registering a DEATH frame as the Last Will), subscribes to its ``cmd`` channel,
    publishes a retained BIRTH, then handles incoming frames until the link fails; it then
    reconnects with exponential backoff and jitter and publishes BIRTH again.
``node-<id>-tx``
    sends outbound frames in priority order: responses, then events, then the latest telemetry.
    Telemetry that cannot be sent is dropped (only the newest matters); responses and events wait
    for the link, up to a bound.

Every frame gets the node's next sequence number when it is sent, so sequence numbers on the wire
strictly increase (modulo 2^32). A frame that fails to decode is counted in ``rx_rejected`` and
reported as a FRAME_REJECTED event; if a request id could be read it is also answered.
Repeated request ids are executed once and answered again from a cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__
from ..backoff import Backoff, RateLimiter
from ..clock import Clock
from ..faults import Fault
from ..protocol import (
    MODULE_SUBJECT,
    Birth,
    Capability,
    Command,
    Death,
    DeathReason,
    Event,
    EventCode,
    FrameError,
    FrameFlags,
    Message,
    MsgType,
    NodeState,
    Op,
    PendingRow,
    RasFlags,
    RasResult,
    Reason,
    Response,
    Severity,
    StackErrors,
    Status,
    StatusResult,
    decode,
    frame_bytes,
)
from ..protocol.auth import AuthError, FrameAuth
from ..protocol.codec import command_op, encode_body, request_id, snapshot_from_payload
from ..protocol.frames import AUTH_TRAILER_SIZE, CRC_SIZE, HEADER_SIZE, MAX_PAYLOAD
from ..protocol.ops import FAULT_CONTROL, LinkFaultCounts, PowerLimits, StatsResult
from ..tasks import cancel_and_wait, cancelled_under_way
from ..transport import (
    Address,
    Channel,
    Delivery,
    Subscription,
    Transport,
    TransportError,
    TransportFactory,
    Will,
)
from ..transport.link_faults import LINK_FAULT_KINDS, LinkFaultParam, LinkFaultParams, LinkFaults
from . import heap
from .meter import DECIMATED, DROPPED, DUE, SENT, Quantiles, RunMeter, telemetry_counters
from .shard import Shard

log = logging.getLogger(__name__)

CAPABILITIES = (
    Capability.TELEMETRY
    | Capability.DVFS
    | Capability.POWER_CAP
    | Capability.COOLANT_CONTROL
    | Capability.RAS
    | Capability.FAULT_INJECTION
)
RESPONSE_CACHE = 256  # request ids remembered for duplicate detection
LARGEST_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE + AUTH_TRAILER_SIZE
BOOT_TIME_S = 2.0  # a rebooting controller is away this long
LIFECYCLE_GRACE_S = 0.05  # a crash or reboot waits this long, so that its command is answered
OUTBOX_LIMIT = 1024  # events/responses kept while the link is down
COMMAND_RATE = 200.0
"""Commands a node runs per second, in bursts of up to :data:`COMMAND_BURST`; more are answered
REFUSED and counted (``cmd_refused``), so that a flood cannot take the controller's time. The
fault control plane (INJECT, CLEAR_FAULT, GET_FAULTS) is not limited."""
COMMAND_BURST = 400.0
U32 = 0xFFFFFFFF


def _clip(text: str) -> str:
    """At most 255 UTF-8 bytes (a Text8 field), cut on a character boundary."""
    return text.encode("utf-8")[:255].decode("utf-8", "ignore")


class CommandError(Exception):
    """Raised by a command handler: answered with ``status`` and the message, nothing changed."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


Handler = Callable[["Node", Command], object]
"""Runs one command on a node; returns the answer's data (or None), or raises CommandError."""


@dataclass(frozen=True, slots=True)
class _Out:
    """A frame waiting to leave: its body is encoded already (plain bytes, which the garbage
    collector does not track however many wait); the header is added when it is sent."""

    channel: Channel
    msg_type: MsgType
    body: bytes
    retain: bool = False
    control: bool = False
    """An answer of the fault control plane (:data:`FAULT_CONTROL`): it passes by the link faults."""

    @classmethod
    def of(cls, channel: Channel, msg: Message, *, retain: bool = False, control: bool = False) -> _Out:
        return cls(channel, msg.TYPE, encode_body(msg), retain, control)


@dataclass
class Counters:
    rx_frames: int = 0
    rx_rejected: int = 0
    rx_duplicates: int = 0
    tx_frames: int = 0
    rsp_dropped: int = 0  # lost to a full outbox
    evt_dropped: int = 0
    cmd_refused: int = 0  # commands above the node's rate, answered REFUSED and not run
    cmd_bad_argument: int = 0  # commands answered BAD_ARGUMENT (an argument out of range, unknown)
    auth_refused: int = 0  # frames frame authentication refused (also in rx_rejected)
    reconnects: int = 0
    events_suppressed: int = 0


def _link_counts() -> dict[str, int]:
    return dict.fromkeys(LINK_FAULT_KINDS, 0)


class Node:
    def __init__(
        self,
        *,
        node_id: int,
        fleet: str,
        shard: Shard,
        row: int,
        transport_factory: TransportFactory,
        clock: Clock,
        seed: int = 0,
        boot_count: int = 1,
        handlers: Mapping[Op, Handler],
        backoff: Backoff | None = None,
        meter: RunMeter | None = None,
        tlm: np.ndarray | None = None,
        auth: FrameAuth | None = None,
    ) -> None:
        """``handlers``: the command set this firmware runs (:data:`.handlers.HANDLERS`); ``meter``:
        the fleet's self-measurement; ``tlm``: this node's column of its shard's telemetry counters
        (:func:`.meter.telemetry_counters`), its own when not given; ``auth``: the fleet's frame
        authentication (every frame sealed, every command verified), None for none."""
        if not 0 <= node_id <= U32:
            raise ValueError(f"node id {node_id} is not a u32")
        self.node_id = node_id
        self.fleet = fleet
        self.shard = shard
        self.row = row
        self.profile = shard.profile
        self.clock = clock
        self.boot_count = boot_count
        self.counters = Counters()
        self.meter = meter
        self.tlm = tlm if tlm is not None else telemetry_counters(1)[:, 0]
        self.state = NodeState.BOOTING
        self._handlers = handlers
        self._factory = transport_factory
        self._rng = random.Random(seed)
        self._backoff = backoff or Backoff(rng=self._rng)
        self.bdseq = 0
        self._transport: Transport | None = None
        self._link_up = asyncio.Event()
        self._wake = asyncio.Event()
        self._urgent: deque[_Out] = deque()  # responses and rebirths
        self._events: deque[_Out] = deque()
        self._telemetry: bytes | None = None
        self._telemetry_type = MsgType.TELEMETRY
        self._answered: OrderedDict[int, bytes] = OrderedDict()  # request id -> encoded response body
        self._reject_limiter = RateLimiter(rate=10.0, burst=20.0)
        self._cmd_limiter = RateLimiter(rate=COMMAND_RATE, burst=COMMAND_BURST)
        self._tasks: list[asyncio.Task[None]] = []
        self._life: asyncio.Task[None] | None = None  # a crash or reboot under way
        self._delayed: set[asyncio.TimerHandle] = set()
        self._stray: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.connected_once = asyncio.Event()
        self.link_faults: dict[str, LinkFaults] = {}  # per direction ("out", "in") where any is set
        # what the link faults did per direction, since boot: each fault hook counts into these, so
        # the counts outlive the fault (clear-fault) and a change of its parameters
        self.link_counts: dict[str, dict[str, int]] = {"out": _link_counts(), "in": _link_counts()}
        self._link_params: dict[str, LinkFaultParams] = {"out": {}, "in": {}}
        self.faults: dict[tuple[int, str], Fault] = {}  # injected and not cleared
        self.tlm_address = self.address(Channel.TLM)
        self.auth = auth
        self.sender = _new_sender()  # this boot's session, in the trailer of sealed frames

    # --- identity and framing ---------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return f"mcm-{self.fleet}-{self.node_id}"

    def address(self, channel: Channel) -> Address:
        return Address(self.fleet, self.node_id, channel)

    @property
    def seq(self) -> int:
        """The sequence number the next frame will carry (kept in the shard: telemetry of many
        nodes is framed there in one pass)."""
        return int(self.shard.seq[self.row])

    def _frame(self, msg_type: MsgType, payload: bytes) -> bytes:
        seq = int(self.shard.seq[self.row])
        self.shard.seq[self.row] = (seq + 1) & U32
        frame = frame_bytes(msg_type, self.node_id, seq, self.clock.now_ns(), 0, payload)
        return frame if self.auth is None else self.auth.seal(frame, self.sender)

    def _encode(self, msg: Message) -> bytes:
        return self._frame(msg.TYPE, encode_body(msg))

    def birth(self) -> Birth:
        p = self.profile
        return Birth(
            node_id=self.node_id,
            profile=p.name,
            firmware=__version__,
            capabilities=int(CAPABILITIES),
            boot_count=self.boot_count,
            bdseq=self.bdseq,
            dies=p.die.count,
            hbm_stacks=p.hbm.count,
            pumps=len(p.cooling.pumps),
            valves=p.cooling.valves,
        )

    def death(self, reason: DeathReason) -> Death:
        return Death(node_id=self.node_id, boot_count=self.boot_count, bdseq=self.bdseq, reason=reason)

    # --- lifecycle --------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """The controller is running (not stopped, not crashed, not rebooting)."""
        return bool(self._tasks) and not self._stopping

    @property
    def rebooting(self) -> bool:
        """A crash with a reboot to come, or a reboot, is under way."""
        return self._life is not None and not self._life.done()

    def start(self) -> None:
        """Boot: BOOT event, then the link and tx tasks."""
        if self._tasks:
            raise RuntimeError("node already started")
        self._stopping = False
        self.shard.booted(self.row)
        self.shard.active[self.row] = True
        self.state = NodeState.RUNNING
        self.emit_event(Severity.INFO, EventCode.BOOT, value=self.boot_count, text=f"firmware {__version__}")
        self._tasks = [
            asyncio.create_task(self._link_task(), name=f"node-{self.node_id}-link"),
            asyncio.create_task(self._tx_task(), name=f"node-{self.node_id}-tx"),
        ]

    async def stop(self, *, reason: DeathReason = DeathReason.SHUTDOWN, timeout: float = 2.0) -> None:
        """Clean shutdown: flush what is queued, publish a retained DEATH, close the link."""
        if self._life is not None and self._life is not asyncio.current_task():
            await cancel_and_wait([self._life])
            self._life = None
        if self._stopping or not self._tasks:
            return
        self._stopping = True
        self.state = NodeState.STOPPING
        tr = self._transport
        if tr is not None and self._link_up.is_set():
            try:
                await asyncio.wait_for(self._flush(), timeout)
                await asyncio.wait_for(
                    tr.publish(
                        self.address(Channel.STATE), self._encode(self.death(reason)), retain=True, reliable=True
                    ),
                    timeout,
                )
                self.counters.tx_frames += 1
            except (TransportError, TimeoutError):
                pass
        await self._teardown(abort=False)

    async def _teardown(self, *, abort: bool) -> None:
        """End this life: tasks, delayed frames, the link (closed cleanly, or aborted so that the
        will fires). The module's hardware keeps running on its last settings."""
        self._stopping = True
        tr, self._transport = self._transport, None
        self._link_up.clear()
        self.shard.linked[self.row] = False
        if tr is not None and abort:
            await tr.abort()
        current = asyncio.current_task()
        await cancel_and_wait([t for t in self._tasks if t is not current])
        self._tasks = []
        for handle in list(self._delayed):
            handle.cancel()
        self._delayed.clear()
        await cancel_and_wait(list(self._stray))
        if tr is not None and not abort:
            await tr.close()
        self._urgent.clear()
        self._events.clear()
        self._telemetry = None
        self.shard.active[self.row] = False
        self.shard.reporting[self.row] = False

    def crash(self, *, reboot_after: float = 0.0) -> None:
        """Vanish without a word: the link is aborted (the will fires); after ``reboot_after``
        seconds (0: never) the controller boots again."""
        self._spawn_life(self._crash(reboot_after), "crash")

    def reboot(self) -> None:
        """A clean reboot: DEATH (REBOOT), down for BOOT_TIME_S, then a new BIRTH."""
        self._spawn_life(self._reboot(), "reboot")

    def _spawn_life(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        if self._life is not None and not self._life.done():
            coro.close()
            raise CommandError(Status.REFUSED, f"a {what} is already under way")
        self._life = asyncio.get_running_loop().create_task(coro, name=f"node-{self.node_id}-{what}")

    async def _crash(self, reboot_after: float) -> None:
        await asyncio.sleep(LIFECYCLE_GRACE_S)  # let the answer to the command leave first
        await self._teardown(abort=True)
        self.state = NodeState.BOOTING
        if reboot_after > 0:
            await self.clock.sleep(reboot_after)
            self._boot_again()

    async def _reboot(self) -> None:
        await asyncio.sleep(LIFECYCLE_GRACE_S)
        await self.stop(reason=DeathReason.REBOOT)
        self.state = NodeState.BOOTING
        await self.clock.sleep(BOOT_TIME_S)
        self._boot_again()

    def _boot_again(self) -> None:
        self.boot_count = (self.boot_count + 1) & U32
        self.counters = Counters()
        self.sender = _new_sender()
        self._answered.clear()
        self._link_params = {"out": {}, "in": {}}
        self.link_faults = {}
        self.link_counts = {"out": _link_counts(), "in": _link_counts()}
        self.shard.link_faulty[self.row] = False
        self.shard.reset_row(self.row)
        self.start()

    async def _flush(self) -> None:
        while self._urgent or self._events:  # noqa: ASYNC110 - polls the tx task's two queues
            await asyncio.sleep(0.005)

    @property
    def link_up(self) -> bool:
        return self._link_up.is_set()

    # --- link faults (applied by the node's own link layer, on any transport) -------------------

    def set_link_fault(
        self, name: LinkFaultParam, value: float | None, *, direction: str = "out", after_answer: bool = False
    ) -> None:
        """``drop``, ``corrupt``, ``duplicate`` (probabilities), ``delay``, ``jitter`` (seconds) on
        the frames the node sends (``direction`` ``out``), receives (``in``) or both; None removes
        it. ``after_answer``: from just after the answer to the command that set it. The fault
        control plane (:data:`FAULT_CONTROL`) passes by them either way."""
        if after_answer:
            self._later(LIFECYCLE_GRACE_S, self._set_link_fault, name, value, direction)
            return
        self._set_link_fault(name, value, direction)

    def _set_link_fault(self, name: LinkFaultParam, value: float | None, direction: str) -> None:
        for way in ("out", "in") if direction == "both" else (direction,):
            params = self._link_params[way]
            if value is None:
                params.pop(name, None)
            else:
                params[name] = value
            self.link_faults.pop(way, None)
            if params:
                hook = LinkFaults(seed=self._rng.getrandbits(32), **params)
                hook.counts = self.link_counts[way]  # what the link did so far stays counted
                self.link_faults[way] = hook
        self.shard.link_faulty[self.row] = bool(self.link_faults)

    def _plan(self, addr: Address, payload: bytes, way: str) -> list[tuple[float, Delivery]]:
        d = Delivery(addr, payload)
        hook = self.link_faults.get(way)
        if hook is None or (way == "in" and command_op(payload) in FAULT_CONTROL):
            return [(0.0, d)]
        return hook(d)

    def _later(self, delay: float, fn: Callable[..., None], *args: object) -> None:
        handle: asyncio.TimerHandle

        def run() -> None:
            self._delayed.discard(handle)
            fn(*args)

        handle = asyncio.get_running_loop().call_later(delay, run)
        self._delayed.add(handle)

    def _publish_later(self, tr: Transport, d: Delivery, retain: bool, reliable: bool) -> None:
        task = asyncio.get_running_loop().create_task(
            _publish_quietly(tr, d.address, d.payload, retain=retain, reliable=reliable),
            name=f"node-{self.node_id}-delayed-tx",
        )
        self._stray.add(task)
        task.add_done_callback(self._stray.discard)

    async def _link_task(self) -> None:
        first = True
        while not self._stopping:
            tr = self._factory(self.client_id)
            tr.correlate = request_id  # a serial binding answers a command with its MCTP tag
            try:
                # a carried node's bdseq is its carrier's (docs/protocol.md, "Carrier links")
                session = await tr.link_session()
                self.bdseq = (self.bdseq + 1) & U32 if session is None else session
                will = Will(self.address(Channel.STATE), self._encode(self.death(DeathReason.CONNECTION_LOST)))
                await tr.connect(will=will)
                await tr.subscribe(Subscription(self.fleet, self.node_id, Channel.CMD))
                await tr.publish(self.address(Channel.STATE), self._encode(self.birth()), retain=True, reliable=True)
                self.counters.tx_frames += 1
                self._transport = tr
                if not first:
                    self.counters.reconnects += 1
                first = False
                self._backoff.reset()
                self._link_up.set()
                self.shard.linked[self.row] = self.shard.reporting[self.row] = True
                self._wake.set()
                self.connected_once.set()
                while True:
                    delivery = await tr.receive()
                    if delivery.oversize:  # skipped unread by the transport: counted as a rejection
                        self.counters.rx_frames += 1
                        self._reject(
                            Reason.TRAILING_BYTES,
                            f"a message of {delivery.oversize} bytes, larger than any frame's packet: skipped unread",
                        )
                        continue
                    for delay, d in self._plan(delivery.address, delivery.payload, "in"):
                        if delay > 0:
                            self._later(delay, self._on_frame, d.payload)
                        else:
                            self._on_frame(d.payload)
            except TransportError as e:
                if not self._stopping:
                    log.info("node %s: link down: %s", self.node_id, e)
            finally:
                self._link_up.clear()
                self.shard.linked[self.row] = False
                if self._transport is tr:
                    self._transport = None
                if not self._stopping:
                    await tr.close()
            if not self._stopping:  # else the loop ends: stop() ran meanwhile
                self._telemetry = None
                await asyncio.sleep(self._backoff.next())

    async def _tx_task(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._urgent or self._events or self._telemetry is not None:
                tr = self._transport
                if tr is None or not self._link_up.is_set():
                    if self._telemetry is not None:
                        self._telemetry = None
                        self.tlm[DROPPED] += 1
                    await self._link_up.wait()
                    continue
                queue = self._urgent if self._urgent else self._events if self._events else None
                if queue is not None:
                    out = queue.popleft()
                    frame = self._frame(out.msg_type, out.body)
                    addr, retain, reliable = self.address(out.channel), out.retain, True
                    way = "control" if out.control else "out"
                else:
                    payload, self._telemetry = self._telemetry, None
                    assert payload is not None
                    frame = self._frame(self._telemetry_type, payload)
                    addr, retain, reliable = self.address(Channel.TLM), False, False
                    way = "out"
                try:
                    for delay, d in self._plan(addr, frame, way):
                        if delay > 0:
                            self._publish_later(tr, d, retain, reliable)
                        else:
                            await tr.publish(d.address, d.payload, retain=retain, reliable=reliable)
                    self.counters.tx_frames += 1
                    if queue is None:
                        self.tlm[SENT] += 1
                except TransportError:
                    if queue is not None:
                        queue.appendleft(out)  # sent again once the link is back
                    else:
                        self.tlm[DROPPED] += 1
                    await asyncio.sleep(0)
                if cancelled_under_way():  # a cancel a library's wait_for swallowed
                    raise asyncio.CancelledError

    # --- outbound ---------------------------------------------------------------------------

    def offer_telemetry(self, payload: bytes, msg_type: MsgType = MsgType.TELEMETRY) -> None:
        """The newest telemetry payload (TELEMETRY or SAMPLES); an unsent older one is replaced
        (and counted decimated)."""
        if self._telemetry is not None:
            self.tlm[DECIMATED] += 1
        self._telemetry = payload
        self._telemetry_type = msg_type
        self._wake.set()

    def _queue(self, queue: deque[_Out], out: _Out) -> None:
        if len(queue) >= OUTBOX_LIMIT:
            dropped = queue.popleft()
            if dropped.channel is Channel.RSP:
                self.counters.rsp_dropped += 1
            else:
                self.counters.evt_dropped += 1
        queue.append(out)
        self._wake.set()

    def emit_event(
        self, severity: Severity, code: EventCode, *, subject: int = MODULE_SUBJECT, value: float = 0.0, text: str = ""
    ) -> None:
        if self._stopping:
            return  # a controller that is down reports nothing
        self._queue(
            self._events,
            _Out.of(
                Channel.EVT,
                Event(
                    node_id=self.node_id,
                    severity=severity,
                    code=int(code),
                    subject=subject,
                    value=value,
                    text=_clip(text),
                ),
            ),
        )

    def _respond(self, resp: Response) -> bytes:
        out = _Out.of(Channel.RSP, resp, control=resp.op in FAULT_CONTROL)
        self._queue(self._urgent, out)
        return out.body

    def rebirth(self) -> None:
        """Publish BIRTH again (the host asked: it lost track of this node)."""
        self._queue(self._urgent, _Out.of(Channel.STATE, self.birth(), retain=True))

    # --- inbound ----------------------------------------------------------------------------

    def _reject(
        self,
        reason: Reason,
        message: str,
        *,
        request_id: int | None = None,
        op: int = 0,
        status: Status = Status.BAD_REQUEST,
    ) -> None:
        self.counters.rx_rejected += 1
        self.shard.rx_rejected[self.row] = self.counters.rx_rejected & U32
        now = self.clock.now()
        if self._reject_limiter.allow(now):
            if self.counters.events_suppressed:
                self.emit_event(
                    Severity.WARNING,
                    EventCode.EVENTS_SUPPRESSED,
                    value=self.counters.events_suppressed,
                    text=f"{self.counters.events_suppressed} rejection events suppressed",
                )
                self.counters.events_suppressed = 0
            self.emit_event(
                Severity.WARNING,
                EventCode.FRAME_REJECTED,
                subject=int(reason),
                value=-1 if request_id is None else request_id,
                text=message,
            )
        else:
            self.counters.events_suppressed += 1
        if request_id is not None:
            self._respond(
                Response(node_id=self.node_id, request_id=request_id, op=op, status=status, message=_clip(message))
            )

    def _on_frame(self, data: bytes) -> None:
        self.counters.rx_frames += 1
        if len(data) > LARGEST_FRAME:  # refused below; then the heap it took goes back to the system
            heap.release_soon(asyncio.get_running_loop())
        if self.auth is not None:
            try:  # before anything else: a refused frame changes nothing but the counters
                self.auth.open(data, self.clock.now_ns(), node=self.node_id)  # its own key only
            except AuthError as e:
                self.counters.auth_refused += 1
                self._reject(e.reason, str(e))
                return
        try:
            msg = decode(data)
        except FrameError as e:
            answerable = e.msg_type == MsgType.COMMAND and e.request_id is not None and e.node_id == self.node_id
            status = Status.BAD_REQUEST
            if e.op is not None and e.op not in Op._value2member_map_:
                status = Status.UNKNOWN_OP
            self._reject(e.reason, str(e), request_id=e.request_id if answerable else None, op=e.op or 0, status=status)
            return
        if not isinstance(msg, Command):
            self._reject(Reason.BAD_FIELD, f"{type(msg).__name__.upper()} frame on the command channel")
            return
        if msg.node_id != self.node_id:
            self._reject(Reason.BAD_FIELD, f"command addressed to node {msg.node_id}")
            return
        if not msg.flags & FrameFlags.HOST:
            self._reject(Reason.BAD_FIELD, "command without the HOST flag", request_id=msg.request_id, op=msg.op)
            return
        cached = self._answered.get(msg.request_id)
        if cached is not None:
            self.counters.rx_duplicates += 1
            self._answered.move_to_end(msg.request_id)
            self._queue(self._urgent, _Out(Channel.RSP, MsgType.RESPONSE, cached, control=msg.op in FAULT_CONTROL))
            return
        if msg.op not in FAULT_CONTROL and not self._cmd_limiter.allow(self.clock.now()):
            self.counters.cmd_refused += 1  # not cached: a retry after the flood is run
            self._respond(
                Response(
                    node_id=self.node_id,
                    seq=0,
                    timestamp_ns=0,
                    flags=0,
                    request_id=msg.request_id,
                    op=msg.op,
                    status=Status.REFUSED,
                    message=f"over the node's command rate ({COMMAND_RATE:g}/s, bursts of {COMMAND_BURST:g})",
                )
            )
            return
        self._answered[msg.request_id] = self._respond(self.execute(msg))
        if len(self._answered) > RESPONSE_CACHE:
            self._answered.popitem(last=False)

    def execute(self, cmd: Command) -> Response:
        """Run one command against the node and its shard row; never raises."""
        fn = self._handlers.get(cmd.op)
        status, message, data = Status.OK, "", None
        if fn is None:
            status, message = Status.UNKNOWN_OP, f"operation {cmd.op.name} is not implemented"
        else:
            try:
                data = fn(self, cmd)
            except CommandError as e:
                status, message = e.status, str(e)
                if status is Status.BAD_ARGUMENT:
                    self.counters.cmd_bad_argument += 1
            except Exception as e:
                log.exception("node %s: %s failed", self.node_id, cmd.op.name)
                status, message = Status.INTERNAL, f"{type(e).__name__}: {e}"
                self.emit_event(
                    Severity.ERROR,
                    EventCode.FRAME_REJECTED,
                    subject=0,
                    value=cmd.request_id,
                    text=f"internal error in {cmd.op.name}",
                )
        return Response(
            node_id=self.node_id, request_id=cmd.request_id, op=cmd.op, status=status, message=_clip(message), data=data
        )

    # --- views ------------------------------------------------------------------------------

    def record(self, *, telemetry: bool = True) -> np.void:
        rec = self.shard.records(np.array([self.row]), telemetry=telemetry)
        if self.state is NodeState.STOPPING:
            rec["state"] = NodeState.STOPPING
        return rec[0]

    def ras_result(self) -> RasResult:
        ctl = self.shard.ras[self.row]
        flags = (
            (RasFlags.REMAP_PENDING if ctl.remap_pending else 0)
            | (RasFlags.REMAP_FAILED if ctl.remap_failed else 0)
            | (RasFlags.CE_STORM if ctl.storm else 0)
        )
        stacks = tuple(
            StackErrors(
                ce=tuple(int(min(x, U32)) for x in ctl.ce[s]),
                ue=tuple(int(min(x, U32)) for x in ctl.ue[s]),
                failed_devices=tuple(sorted(ctl.store.failed_devices.get(s, ()))),
            )
            for s in range(ctl.ce.shape[0])
        )
        pending = tuple(PendingRow(stack=k[0], channel=k[1], bank=k[2], row=k[3]) for k in sorted(ctl.pending))
        corr, unc = ctl.remapped_rows_by_cause()
        hist = ctl.histogram()
        t = self.shard.t
        return RasResult(
            ecc=int(ctl.cfg.mode),
            flags=int(flags),
            recovery_action=int(ctl.recovery_action),
            ce=int(ctl.ce.sum()),
            ue=int(ctl.ue.sum()),
            remapped_rows=len(ctl.remapped),
            spare_rows_free=max(0, ctl.spare_rows_free),
            remapped_correctable=corr,
            remapped_uncorrectable=unc,
            banks_max=hist[0],
            banks_high=hist[1],
            banks_partial=hist[2],
            banks_low=hist[3],
            banks_none=hist[4],
            last_xid=ctl.last_xid,
            scrub_passes=ctl.passes_at(t) & U32,
            scrubbed_words=ctl.scrubbed_at(t),
            stacks=stacks,
            pending=pending[:1000],
        )

    def link_util_permille(self) -> int:
        tr = self._transport
        util = tr.utilisation() if tr is not None else None
        return 0 if util is None else max(0, min(1000, round(util * 1000)))

    @property
    def tx_dropped(self) -> int:
        """Every frame lost on the way out: telemetry dropped or decimated, responses and events."""
        c = self.counters
        return int(self.tlm[DROPPED] + self.tlm[DECIMATED]) + c.rsp_dropped + c.evt_dropped

    def stats(self) -> StatsResult:
        c, t = self.counters, self.tlm
        late = self.meter.recent_tick_late(self.shard.name) if self.meter else Quantiles.of(np.zeros(0))
        lag = Quantiles.of(self.meter.loop_lag.recent(600) if self.meter else np.zeros(0))

        def us(seconds: float) -> int:
            return min(U32, round(seconds * 1e6))

        return StatsResult(
            tlm_due=int(t[DUE]) & U32,
            tlm_sent=int(t[SENT]) & U32,
            tlm_dropped=int(t[DROPPED]) & U32,
            tlm_decimated=int(t[DECIMATED]) & U32,
            rsp_dropped=c.rsp_dropped & U32,
            evt_dropped=c.evt_dropped & U32,
            rx_duplicates=c.rx_duplicates & U32,
            cmd_refused=c.cmd_refused & U32,
            cmd_bad_argument=c.cmd_bad_argument & U32,
            auth_refused=c.auth_refused & U32,
            tx_queued=min(0xFFFF, len(self._urgent) + len(self._events)),
            ticks=min(0xFFFF, late.n),
            tick_late_p50_us=us(late.p50),
            tick_late_p99_us=us(late.p99),
            tick_late_max_us=us(late.max),
            periods_late=self.shard.periods_late & U32,
            loop_lag_p99_us=us(lag.p99),
            loop_lag_max_us=us(lag.max),
            gc_ms=min(U32, round(self.meter.totals.gc_s * 1e3)) if self.meter else 0,
            link_out=self._link_fault_counts("out"),
            link_in=self._link_fault_counts("in"),
        )

    def _link_fault_counts(self, way: str) -> LinkFaultCounts:
        n = self.link_counts[way]
        return LinkFaultCounts(
            dropped=n["dropped"] & U32,
            corrupted=n["corrupted"] & U32,
            duplicated=n["duplicated"] & U32,
            delayed=n["delayed"] & U32,
        )

    def power_limits(self) -> PowerLimits:
        st, pw = self.shard.dvfs, self.profile.power
        return PowerLimits(
            default_w=float(st.limit_default[self.row]),
            in_band_w=float(st.limit_in_band[self.row]),
            out_of_band_w=float(st.limit_out_of_band[self.row]),
            min_w=pw.min_cap_w,
            max_w=pw.max_cap_w,
        )

    def status(self) -> StatusResult:
        c = self.counters
        return StatusResult(
            profile=self.profile.name,
            firmware=__version__,
            boot_count=self.boot_count,
            tx_seq=self.seq,
            rx_frames=c.rx_frames & U32,
            tx_frames=c.tx_frames & U32,
            tx_dropped=self.tx_dropped & U32,
            reconnects=c.reconnects & U32,
            link_util_permille=self.link_util_permille(),
            pump_names=tuple(p.name for p in self.profile.cooling.pumps),
            faults=tuple(str(f) for f in self.faults.values())[:255],
            power_limits=self.power_limits(),
            snapshot=snapshot_from_payload(self.record(telemetry=False).tobytes()),
        )


def _new_sender() -> int:
    return int.from_bytes(os.urandom(4), "little")


async def _publish_quietly(tr: Transport, addr: Address, frame: bytes, *, retain: bool, reliable: bool) -> None:
    with contextlib.suppress(TransportError):
        await tr.publish(addr, frame, retain=retain, reliable=reliable)


__all__ = ["CommandError", "Handler", "Node"]
