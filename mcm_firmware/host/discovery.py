"""What a broker says of a fleet: the retained state of its nodes and carrier links, and which of
them are alive.

Retained frames outlive the run that published them (a broker with persistence keeps a BIRTH
across a restart; a killed run's nodes may not have had their will published yet), so a BIRTH is
not proof of life: :func:`live_nodes` asks the node itself with a PING.

In a fleet that authenticates its frames (docs/protocol.md, "Frame authentication") every state
frame is sealed, a carrier's LINK frames included: given the fleet's :class:`FrameAuth`,
:func:`read_state` keeps only the frames whose tag verifies (by tag alone, as retained frames are:
a subscriber is handed the latest again), so that a forged BIRTH, DEATH or LINK frame, which could
take a node (or every node a carrier carries) online or offline, is counted and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..protocol import Birth, Death, FrameError, Link, LinkCondition, Op, decode
from ..protocol.auth import AuthError, FrameAuth
from ..tasks import cancel_and_wait
from ..transport import Channel, Subscription, TransportError, TransportFactory
from ..transport.carrier import CARRIED
from .client import HostClient, HostError, connect_within


@dataclass
class FleetState:
    """The newest retained state frame of each node, and each carrier link's newest LINK frame."""

    fleet: str
    nodes: dict[int, Birth | Death] = field(default_factory=dict)
    links: dict[int, Link] = field(default_factory=dict)  # by the link's first node
    refused: int = 0  # state frames frame authentication refused (forged, or unsealed in a sealed fleet)

    def take(self, node: int, payload: bytes, auth: FrameAuth | None = None) -> Birth | Death | Link | None:
        """Keep a frame of ``node``'s ``state`` or ``link`` topic as its newest: the BIRTH, DEATH
        or LINK it holds, or None for one left out (a tag that does not verify, counted in
        ``refused``; retained state is legitimately old, so its tag only is checked; a frame that
        does not decode)."""
        if auth is not None:
            try:
                auth.open(payload, window=False)
            except AuthError:
                self.refused += 1
                return None
        try:
            msg = decode(payload)
        except FrameError:
            return None
        if isinstance(msg, (Birth, Death)):
            self.nodes[node] = msg
            return msg
        if isinstance(msg, Link):
            self.links[node] = msg
            return msg
        return None

    def online(self, node: int) -> bool:
        """The node's retained state says online: a BIRTH, and for a carried node (bit 31 of its
        ``bdseq`` set) a LINK frame that carries it, ONLINE with the same ``bdseq``
        (docs/protocol.md, "LINK (7)")."""
        state = self.nodes.get(node)
        if not isinstance(state, Birth):
            return False
        if not state.bdseq & CARRIED:
            return True
        return any(
            link.carries(node) and link.condition is LinkCondition.ONLINE and link.bdseq == state.bdseq
            for link in self.links.values()
        )


@dataclass
class Liveness:
    """Which nodes are alive, judged from what they say now rather than from what a broker
    remembers: a retained BIRTH can outlive its node (a broker with persistence restores it
    after a restart before any node is back), so a node counts as alive only while a frame of
    it that was *not* retained (telemetry, an event, a fresh BIRTH) arrived within ``window``
    seconds (three telemetry periods is the rule of docs/protocol.md)."""

    window: float
    last: dict[int, float] = field(default_factory=dict)

    def saw(self, node: int, *, retained: bool, now: float) -> None:
        if not retained:
            self.last[node] = now

    def alive(self, node: int, now: float) -> bool:
        t = self.last.get(node)
        return t is not None and now - t <= self.window

    def alive_nodes(self, now: float) -> list[int]:
        return sorted(n for n, t in self.last.items() if now - t <= self.window)

    def heard(self) -> set[int]:
        """Every node heard at all."""
        return set(self.last)


LISTEN_S = 3.0
"""How long a host listens for a fleet's live frames by default: three periods of the slowest
telemetry rate shipped (colossus-mcm-batched, 1 Hz), the rule of :class:`Liveness`."""

LIVE_CHANNELS = (Channel.TLM, Channel.EVT, Channel.RSP, Channel.STATE)
"""What a node itself sends (a command is a host's, a LINK frame its carrier's)."""


def reconnect_window() -> float:
    """How long a node on a connection of its own may take to be back once its broker is: the
    backoff cap (its next attempt comes at most that long after its last refused one) and the
    connect timeout of that attempt."""
    from ..backoff import Backoff
    from ..transport.mqtt import MqttTransport

    return Backoff().maximum + MqttTransport(client_id="mcm-window").connect_timeout


def reconnected_recently(state: FleetState, now_ns: int | None = None) -> bool:
    """Some node of the fleet was born again lately: a BIRTH of a connection after its first
    (``bdseq`` above 1) stamped within :func:`reconnect_window` of ``now_ns``. The fleet is coming
    back from a lost broker or link, so a node not seen yet may be on its way."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    window_ns = int(reconnect_window() * 1e9)
    return any(
        isinstance(msg, Birth) and msg.bdseq & 0x7FFFFFFF > 1 and now_ns - msg.timestamp_ns <= window_ns
        for msg in state.nodes.values()
    )


async def listen(
    factory: TransportFactory,
    fleet: str,
    seconds: float = LISTEN_S,
    *,
    wanted: Iterable[int] | None = None,
    connect_timeout: float | None = None,
    auth: FrameAuth | None = None,
) -> Liveness:
    """The nodes of ``fleet`` heard live within ``seconds``: a frame of a node's own (telemetry,
    an event, an answer, a BIRTH) that the broker did not hand over as retained. Ends sooner once
    every node of ``wanted`` has been heard. ``auth``: a frame whose tag does not verify (or a
    replay) is not heard."""
    live = Liveness(window=seconds)
    todo = None if wanted is None else set(wanted)
    if seconds <= 0 or todo == set():
        return live
    tr = factory(f"mcm-listen-h{uuid.uuid4().hex[:8]}")
    if connect_timeout is None:
        await tr.connect()
    else:
        await connect_within(tr, connect_timeout)
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        for channel in LIVE_CHANNELS:
            await tr.subscribe(Subscription(fleet, None, channel))
        while (left := end - loop.time()) > 0:
            try:
                d = await asyncio.wait_for(tr.receive(), left)
            except TimeoutError:
                break
            if d.retained or d.address.fleet != fleet or d.address.channel not in LIVE_CHANNELS:
                continue
            if auth is not None:
                try:
                    auth.open(d.payload, time.time_ns())
                except AuthError:
                    continue
            live.saw(d.address.node, retained=False, now=loop.time())
            if todo is not None:
                todo.discard(d.address.node)
                if not todo:
                    break
    finally:
        await tr.close()
    return live


async def read_state(
    factory: TransportFactory,
    fleet: str,
    *,
    settle: float = 0.5,
    connect_timeout: float | None = None,
    auth: FrameAuth | None = None,
) -> FleetState:
    """The retained state frames of ``fleet``: everything the broker hands a new subscriber, read
    until ``settle`` seconds pass without another; ``connect_timeout`` bounds the connect (the
    transport's own bound when None); ``auth``: the fleet's frame authentication, a frame whose
    tag does not verify is left out (counted in ``refused``)."""
    state = FleetState(fleet)
    tr = factory(f"mcm-probe-h{uuid.uuid4().hex[:8]}")
    if connect_timeout is None:
        await tr.connect()
    else:
        await connect_within(tr, connect_timeout)
    try:
        await tr.subscribe(Subscription(fleet, None, Channel.STATE))
        await tr.subscribe(Subscription(fleet, None, Channel.LINK))
        while True:
            try:
                d = await asyncio.wait_for(tr.receive(), settle)
            except TimeoutError:
                break
            state.take(d.address.node, d.payload, auth)
    finally:
        await tr.close()
    return state


async def live_nodes(
    factory: TransportFactory,
    fleet: str,
    candidates: Iterable[int],
    *,
    timeout: float = 1.0,
    most: int = 3,
    auth: FrameAuth | None = None,
) -> list[int]:
    """Which of (at most ``most`` of, spread over the list) ``candidates`` answer a PING within
    ``timeout``."""
    every = sorted(candidates)
    picked = sorted({every[i * (len(every) - 1) // max(1, most - 1)] for i in range(most)}) if every else []
    if not picked:
        return []
    tr = factory(f"mcm-probe-h{uuid.uuid4().hex[:8]}")
    alive: list[int] = []
    async with HostClient(tr, fleet=fleet, timeout=timeout, retries=0, auth=auth) as host:

        async def ping(node: int) -> None:
            with contextlib.suppress(HostError, TransportError):
                await host.request(node, Op.PING)
                alive.append(node)

        tasks = [asyncio.create_task(ping(n), name=f"probe-ping-{n}") for n in picked]
        try:
            await asyncio.gather(*tasks)
        finally:
            await cancel_and_wait(tasks)
    return sorted(alive)


async def running_elsewhere(
    factory: TransportFactory, fleet: str, ids: Iterable[int], *, auth: FrameAuth | None = None
) -> list[int]:
    """Nodes among ``ids`` that something else on the broker runs now: retained online state, and
    an answer to a PING (none of ours runs yet)."""
    wanted = set(ids)
    state = await read_state(factory, fleet, auth=auth)
    candidates = sorted(n for n in wanted if state.online(n))
    return await live_nodes(factory, fleet, candidates, auth=auth)
