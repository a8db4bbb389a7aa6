"""A fuzz campaign: Hypothesis draws cases of frames, a session sends them to a live node over its
real transport, an oracle judges every reply, and Hypothesis shrinks any failure to a minimal
frame sequence.

A case is 1..6 probes, each a frame sent on the node's command channel: a valid command (from the
strategies derived from the frame declarations, request id fresh each time), the same command
again (a replay), two commands whose sequence numbers go backwards, a command made wrong by one of the mutators (truncated, bit-flipped, lying
length, unknown type or version, oversized, a body byte changed with the CRC fixed, reserved
flags), a message of another direction (BIRTH, TELEMETRY, RESPONSE ... sent to a node), a command
for another node, or random bytes. After the probes the session sends a PING and waits for it:
once its answer is in, every answer to the probes is in (a node answers in order), and the node is
alive.

What each probe may get back is decided from the frame alone (:func:`judge`), so a saved case
can be judged again anywhere:

============================  ==========================================================
frame                         allowed answers
============================  ==========================================================
a command for the node        exactly one, any status but INTERNAL; a replay: the same
                              status as the first time
a command without HOST flag   none, or BAD_REQUEST
a command for another node    none
another message type          none
undecodable                   none, or (when the header past the CRC names this node and a
                              request id) BAD_REQUEST / UNKNOWN_OP
============================  ==========================================================

Anything else is a finding: ``internal-error``, ``no-reply``, ``executed-malformed``,
``unexpected-reply``, ``replay-mismatch``, ``hang`` (the PING goes unanswered), ``crash`` (the
node published its DEATH or the link went down).

Operations that would take the node away or disturb the campaign (INJECT, CLEAR_FAULT) are not
generated.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky

from ..protocol import (
    Command,
    Death,
    FrameError,
    FrameFlags,
    MsgType,
    Op,
    Response,
    Status,
    decode,
    encode,
)
from ..protocol.auth import FrameAuth, seal_probe
from ..protocol.codec import answerable
from ..tasks import cancel_and_wait
from ..testing.strategies import MUTATIONS, NODE_SENT, commands, messages
from ..transport import Address, Channel, Subscription, Transport, TransportError

U32 = 0xFFFFFFFF
SAFE_OPS = tuple(op for op in Op if op not in (Op.INJECT, Op.CLEAR_FAULT))
MAX_PROBES = 6


@dataclass(frozen=True)
class Probe:
    label: str
    """Coverage row: ``COMMAND/PING``, ``malformed/truncate``, ``RESPONSE``, ``random`` ..."""
    frame: bytes


@dataclass
class Finding:
    kind: str
    detail: str
    frames: list[Probe] = field(default_factory=list)
    flaky: bool = False

    @property
    def signature(self) -> tuple[str, tuple[str, ...]]:
        """Findings of one kind on the same sequence of probe kinds count once."""
        return self.kind, tuple(p.label for p in self.frames)


@dataclass
class Verdict:
    outcome: str  # coverage column: OK, BAD_ARGUMENT, ..., "dropped"
    finding: Finding | None = None


def judge(probe: Probe, replies: list[Response], *, node: int, earlier: dict[bytes, Status]) -> Verdict:
    """What ``replies`` (the answers carrying this probe's request id) say about the node."""
    try:
        msg = decode(probe.frame)
    except FrameError as e:
        may = e.msg_type == MsgType.COMMAND and e.request_id is not None and e.node_id == node
        bad = [r for r in replies if not (may and r.status in (Status.BAD_REQUEST, Status.UNKNOWN_OP))]
        if bad or len(replies) > 1:
            return Verdict(
                "executed",
                Finding(
                    "executed-malformed",
                    f"{probe.label} ({e.reason.name}: {e.detail}) was answered {bad[0].status.name if bad else 'twice'}",
                ),
            )
        return Verdict(replies[0].status.name if replies else "dropped")
    if not isinstance(msg, Command):
        if replies:
            return Verdict("answered", Finding("unexpected-reply", f"a {msg.TYPE.name} sent to the node was answered"))
        return Verdict("dropped")
    if msg.node_id != node:
        if replies:
            return Verdict(
                "answered", Finding("unexpected-reply", f"a command for node {msg.node_id} was answered by {node}")
            )
        return Verdict("dropped")
    if not msg.flags & FrameFlags.HOST:
        if any(r.status is not Status.BAD_REQUEST for r in replies) or len(replies) > 1:
            return Verdict("answered", Finding("unexpected-reply", "a command without the HOST flag was executed"))
        return Verdict(replies[0].status.name if replies else "dropped")
    if not replies:
        return Verdict("no-reply", Finding("no-reply", f"{probe.label} (request {msg.request_id:#x}) got no answer"))
    if len(replies) > 1:
        return Verdict("duplicate", Finding("unexpected-reply", f"{probe.label} was answered {len(replies)} times"))
    status = replies[0].status
    if status is Status.INTERNAL:
        return Verdict("INTERNAL", Finding("internal-error", f"{probe.label}: {replies[0].message}"))
    first = earlier.get(probe.frame)
    if first is not None and first is not status:
        return Verdict(
            status.name, Finding("replay-mismatch", f"{probe.label} answered {first.name}, then {status.name}")
        )
    earlier.setdefault(probe.frame, status)
    return Verdict(status.name)


def _request_id(frame: bytes) -> int | None:
    """The request id a reply to this frame would carry (read as the node would)."""
    try:
        msg = decode(frame)
    except FrameError as e:
        return e.request_id
    return msg.request_id if isinstance(msg, Command) else None


# --- the session: frames out, answers in ------------------------------------------------------


class Session:
    """Sends cases to one node and collects its answers (runs in the event loop)."""

    def __init__(
        self, transport: Transport, *, fleet: str, node: int, timeout: float = 2.0, auth: FrameAuth | None = None
    ) -> None:
        """``auth``: the fleet seals its frames; every probe is sealed as a host would seal it
        (:func:`~mcm_firmware.protocol.auth.seal_probe`), so the node judges its bytes as it
        would without authentication."""
        self.auth = auth
        self._sender = int.from_bytes(os.urandom(4), "little")
        self._seq = 0
        self.transport = transport
        self.fleet = fleet
        self.node = node
        self.timeout = timeout
        self._replies: dict[int, list[Response]] = {}
        self._stray: list[Response] = []
        self._expect: set[int] = set()
        self._waiter: tuple[int, asyncio.Future[Response]] | None = None
        self._rx: asyncio.Task[None] | None = None
        self.death: str | None = None
        self.down: str | None = None
        self._rng = random.Random(os.urandom(8))
        self._used: set[int] = set()

    def fresh_id(self) -> int:
        """A request id not used before in this session. Random, not counted: a mutation that
        flips a bit of one id must not produce the id of the next request."""
        while True:
            rid = self._rng.getrandbits(32)
            if rid not in self._used and rid not in self._expect:
                self._used.add(rid)
                return rid

    async def start(self) -> None:
        self.transport.answerable = answerable  # probes the node will not answer own no MCTP tag
        await self.transport.connect()
        await self.transport.subscribe(Subscription(self.fleet, self.node, Channel.RSP))
        await self.transport.subscribe(Subscription(self.fleet, self.node, Channel.STATE))
        self._rx = asyncio.create_task(self._receive(), name="fuzz-rx")

    async def close(self) -> None:
        if self._rx is not None:
            await cancel_and_wait([self._rx])
        await self.transport.close()

    async def _receive(self) -> None:
        try:
            while True:
                d = await self.transport.receive()
                try:
                    msg = decode(d.payload)
                except FrameError:
                    continue
                if isinstance(msg, Death) and not d.retained:
                    self.death = f"node published DEATH ({msg.reason.name})"
                if not isinstance(msg, Response) or d.retained:
                    continue
                if self._waiter is not None and msg.request_id == self._waiter[0]:
                    if not self._waiter[1].done():
                        self._waiter[1].set_result(msg)
                    continue
                if msg.request_id in self._expect:
                    self._replies.setdefault(msg.request_id, []).append(msg)
                else:
                    self._stray.append(msg)
        except TransportError as e:
            self.down = str(e)
            if self._waiter is not None and not self._waiter[1].done():
                self._waiter[1].set_exception(e)

    def _out(self, frame: bytes) -> bytes:
        if self.auth is None:
            return frame
        self._seq = (self._seq + 1) & U32
        return seal_probe(self.auth, frame, node=self.node, sender=self._sender, seq=self._seq)

    async def ping(self) -> float | None:
        """Round trip of a PING, or None when the node does not answer in time."""
        rid = self.fresh_id()
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiter = (rid, fut)
        frame = encode(
            Command(
                node_id=self.node,
                seq=rid,
                timestamp_ns=time.time_ns(),  # a sealed fleet takes a new sender only with a fresh time
                flags=int(FrameFlags.HOST),
                request_id=rid,
                op=Op.PING,
            )
        )
        t0 = time.perf_counter()
        try:
            await self.transport.publish(Address(self.fleet, self.node, Channel.CMD), self._out(frame), reliable=True)
            await asyncio.wait_for(fut, self.timeout)
        except (TimeoutError, TransportError):
            return None
        finally:
            self._waiter = None
        return time.perf_counter() - t0

    async def run_case(self, probes: list[Probe]) -> tuple[list[Verdict], list[Finding]]:
        self._replies.clear()
        self._stray.clear()
        rids = [_request_id(p.frame) for p in probes]
        self._expect = {rid for rid in rids if rid is not None}
        addr = Address(self.fleet, self.node, Channel.CMD)
        findings: list[Finding] = []
        try:
            for p in probes:
                await self.transport.publish(addr, self._out(p.frame), reliable=True)
        except TransportError as e:
            return [], [Finding("crash", f"link down while sending: {e}")]
        if await self.ping() is None:
            kind = "crash" if self.death or self.down else "hang"
            return [], [Finding(kind, self.death or self.down or f"no answer to PING within {self.timeout:g} s")]
        earlier: dict[bytes, Status] = {}
        verdicts = []
        left = Counter(r for r in rids if r is not None)
        for p, rid in zip(probes, rids, strict=True):
            # probes that share a request id (a replay) take one answer each, the last the rest
            replies: list[Response] = []
            if rid is not None:
                left[rid] -= 1
                got = self._replies.get(rid, [])
                replies = got[:1] if left[rid] > 0 else got[:]
                del got[: len(replies)]
            v = judge(p, replies, node=self.node, earlier=earlier)
            verdicts.append(v)
            if v.finding is not None:
                findings.append(v.finding)
        for r in self._stray:
            findings.append(
                Finding("unexpected-reply", f"an answer to request {r.request_id:#x}, which no probe carried")
            )
        if self.death:
            findings.append(Finding("crash", self.death))
        return verdicts, findings


# --- drawing cases ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """How to make one probe: drawn by Hypothesis, built with fresh request ids at run time."""

    kind: str
    message: Any = None  # a Command (request id replaced when built) or another message
    mutation: Any = None
    draws: tuple[Any, ...] = ()  # what the mutation drew, replayed on the real frame
    raw: bytes = b""

    def build(self, fresh: Callable[[], int]) -> list[Probe]:
        if self.kind == "random":
            return [Probe("random", self.raw)]
        if not isinstance(self.message, Command):
            return [Probe(self.message.TYPE.name, encode(self.message))]
        frame = encode(dataclasses.replace(self.message, request_id=fresh()))
        if self.mutation is not None:
            it = iter(self.draws)
            return [Probe(f"malformed/{self.mutation.name}", self.mutation.apply(lambda _s: next(it), frame))]
        if self.kind == "other-node":
            return [Probe("COMMAND/other-node", frame)]
        label = f"COMMAND/{self.message.op.name}"
        if self.kind == "replay":
            return [Probe(label, frame), Probe(label + "/replay", frame)]
        if self.kind == "reordered":  # the later frame carries the lower sequence number
            seq = self.message.seq
            later = encode(dataclasses.replace(self.message, request_id=fresh(), seq=seq))
            first = encode(dataclasses.replace(self.message, request_id=fresh(), seq=(seq + 1) & U32))
            return [Probe(label + "/reordered", first), Probe(label + "/reordered", later)]
        return [Probe(label, frame)]


@st.composite
def recipes(draw: Callable[..., Any], node: int) -> Recipe:
    kind = draw(st.sampled_from(["command", "replay", "reordered", "malformed", "other-type", "other-node", "random"]))
    if kind == "random":
        return Recipe(kind, raw=draw(st.binary(max_size=300)))
    if kind == "other-type":
        return Recipe(
            kind,
            draw(messages(*NODE_SENT)),
        )
    cmd = draw(commands(SAFE_OPS))
    target = node if kind != "other-node" else (node + 1 + draw(st.integers(0, 1000))) & U32
    flags = int(FrameFlags.HOST) if kind != "other-node" or draw(st.booleans()) else 0
    cmd = dataclasses.replace(cmd, node_id=target, request_id=0, flags=flags)
    if kind != "malformed":
        return Recipe(kind, cmd)
    mutation = draw(st.sampled_from(MUTATIONS))
    drawn: list[Any] = []

    def record(strategy: st.SearchStrategy[Any]) -> Any:
        value = draw(strategy)
        drawn.append(value)
        return value

    mutation.apply(record, encode(cmd))  # request ids have a fixed width: the draws fit any id
    return Recipe(kind, cmd, mutation, tuple(drawn))


def draw_case(data: st.DataObject, node: int, fresh: Callable[[], int]) -> list[Probe]:
    chosen = data.draw(st.lists(recipes(node), min_size=1, max_size=MAX_PROBES), label="case")
    return [p for r in chosen for p in r.build(fresh)]


# --- the campaign -------------------------------------------------------------------------------


@dataclass
class CampaignResult:
    target: str
    seed: int
    duration_s: float = 0.0
    cases: int = 0
    executions: int = 0
    findings: list[Finding] = field(default_factory=list)
    coverage: dict[str, Counter[str]] = field(default_factory=dict)
    timeline: list[tuple[float, int, int]] = field(default_factory=list)  # (s, executions, cells)
    ping_ms: list[float] = field(default_factory=list)

    @property
    def executions_per_s(self) -> float:
        return self.executions / self.duration_s if self.duration_s else 0.0

    @property
    def cells(self) -> int:
        return sum(len(v) for v in self.coverage.values())


class _Found(Exception):
    def __init__(self, finding: Finding) -> None:
        super().__init__(f"{finding.kind}: {finding.detail}")
        self.finding = finding


async def run_campaign(
    transport: Transport,
    *,
    fleet: str,
    node: int,
    target: str,
    duration: float,
    seed_value: int = 0,
    batch: int = 25,
    timeout: float = 2.0,
    max_findings: int = 10,
    max_batches: int | None = None,
    progress: Callable[[CampaignResult], None] | None = None,
    auth: FrameAuth | None = None,
) -> CampaignResult:
    """Fuzz ``node`` through ``transport`` for ``duration`` seconds, or ``max_batches`` batches of
    ``batch`` cases, whichever ends first (Hypothesis in a worker thread, the session in this event
    loop). Each failure is shrunk (Hypothesis, then one probe at a time) and kept once per
    signature; the campaign goes on until ``max_findings`` or a hang/crash."""
    loop = asyncio.get_running_loop()
    session = Session(transport, fleet=fleet, node=node, timeout=timeout, auth=auth)
    result = CampaignResult(target=target, seed=seed_value)
    await session.start()
    if await session.ping() is None:
        await session.close()
        raise TransportError(f"node {node} does not answer PING at {target}")
    t0 = time.perf_counter()
    last: list[Probe] = []
    done = loop.create_future()

    def execute(probes: list[Probe]) -> None:
        last[:] = probes
        verdicts, findings = asyncio.run_coroutine_threadsafe(session.run_case(probes), loop).result(timeout * 4 + 10)
        result.cases += 1
        result.executions += len(probes)
        for p, v in zip(probes, verdicts, strict=True):
            result.coverage.setdefault(p.label, Counter())[v.outcome] += 1
        if findings:
            raise _Found(dataclasses.replace(findings[0], frames=list(probes)))

    def drive() -> None:
        try:
            k = 0
            while time.perf_counter() - t0 < duration and (max_batches is None or k < max_batches):

                @settings(
                    max_examples=batch,
                    deadline=None,
                    database=None,
                    report_multiple_bugs=False,
                    phases=[Phase.generate, Phase.shrink],
                    suppress_health_check=list(HealthCheck),
                )
                @seed(seed_value * 1_000_003 + k)
                @given(st.data())
                def case(data: st.DataObject) -> None:
                    execute(draw_case(data, node, session.fresh_id))

                try:
                    case()
                except _Found as e:
                    found = dataclasses.replace(e.finding, frames=list(last))
                    found.frames = asyncio.run_coroutine_threadsafe(
                        minimize(session, found.frames, found.kind), loop
                    ).result(timeout * 40 + 30)
                    if found.signature not in {f.signature for f in result.findings}:
                        result.findings.append(found)
                    if found.kind in ("hang", "crash") or len(result.findings) >= max_findings:
                        break
                except Flaky as e:
                    result.findings.append(Finding("flaky", str(e).splitlines()[0], list(last), flaky=True))
                k += 1
                rtt = asyncio.run_coroutine_threadsafe(session.ping(), loop).result(timeout + 5)
                if rtt is None:
                    result.findings.append(Finding("hang", "no answer to PING between batches", list(last)))
                    break
                result.ping_ms.append(rtt * 1e3)
                result.duration_s = time.perf_counter() - t0
                result.timeline.append((result.duration_s, result.executions, result.cells))
                if progress is not None:
                    loop.call_soon_threadsafe(progress, result)
        except BaseException as e:  # noqa: BLE001 - handed to the event loop
            loop.call_soon_threadsafe(done.set_exception, e)
        else:
            loop.call_soon_threadsafe(done.set_result, None)

    worker = threading.Thread(target=drive, name="fuzz-hypothesis", daemon=True)
    worker.start()
    try:
        await done
    finally:
        worker.join(30)
        result.duration_s = time.perf_counter() - t0
        result.timeline.append((result.duration_s, result.executions, result.cells))
        await session.close()
    return result


async def minimize(session: Session, probes: list[Probe], kind: str) -> list[Probe]:
    """Drop probes one at a time while the case still fails the same way (1-minimal), after
    Hypothesis's own shrinking."""
    probes = list(probes)
    if kind in ("hang", "crash"):
        return probes  # the node is gone: nothing to try the smaller cases on
    i = len(probes) - 1
    while i >= 0 and len(probes) > 1:
        trial = probes[:i] + probes[i + 1 :]
        _, findings = await session.run_case(trial)
        if any(f.kind == kind for f in findings):
            probes = trial
        i -= 1
    return probes


async def replay(
    transport: Transport,
    frames: list[bytes],
    *,
    fleet: str,
    node: int,
    timeout: float = 2.0,
    auth: FrameAuth | None = None,
) -> list[Finding]:
    """Send one saved case to a node and judge it again (what a regression test does)."""
    session = Session(transport, fleet=fleet, node=node, timeout=timeout, auth=auth)
    await session.start()
    try:
        if await session.ping() is None:
            return [Finding("hang", f"node {node} does not answer PING")]
        _, findings = await session.run_case([Probe("saved", f) for f in frames])
        return findings
    finally:
        await session.close()
