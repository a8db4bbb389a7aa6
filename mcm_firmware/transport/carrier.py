"""Carrier links: one connection that carries many nodes, as a Sparkplug edge node carries its
devices. No firmware logic here; the frames a carrier publishes for itself come from the runtime.

One connection per module is what real modules have, and it stays the default for small fleets,
but a broker connection costs a socket, a client and its keep-alive each: at tens of thousands of
modules one process cannot drive that many. A :class:`Carrier` keeps one connection (any
:class:`~.base.Transport`: MQTT in practice, the loopback bus in tests) for all the nodes of a
process; every node still has its own topics, its own retained BIRTH and DEATH and its own command
topic, through a :class:`CarriedTransport` that behaves like a connection of its own:

* connecting waits for the carrier to be up; a node's Last Will is kept by the carrier, which
  publishes it when the node vanishes (a crash) while the carrier lives;
* the carrier's own Last Will is a retained LINK frame (``LinkCondition.LOST``) on the ``link``
  channel of the first node it carries, listing every node it carries: when the carrier's
  connection dies, that frame marks all of them offline at once (docs/protocol.md, "Carrier
  links"). It publishes ``ONLINE`` on every connection and ``SHUTDOWN`` when it closes cleanly;
* commands reach the carrier on one subscription (the fleet's ``cmd`` topics) and are handed to
  the node they name.

Telemetry can leave on a second connection of the carrier's (:class:`BlockSink`): a whole slot of
frames in one write, see :mod:`.mqtt_fast`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Sequence

from ..backoff import Backoff
from ..tasks import cancel_and_wait
from .base import (
    Address,
    BlockSink,
    Channel,
    Delivery,
    LinkFrameBuilder,
    LinkFrames,
    NodeLinks,
    Subscription,
    Transport,
    TransportError,
    TransportFactory,
    Will,
)

CARRIED = 0x8000_0000
"""Bit 31 of a carrier's ``bdseq``, which its nodes' BIRTH and DEATH frames carry: a BIRTH with it
set says the node is carried (its LINK frame tells whether the link still lives); a node with a
connection of its own counts its ``bdseq`` up from 1 and never reaches it."""
IN_FLIGHT = 128
"""Acknowledged publishes of a carrier waiting for their acknowledgement at once."""


def ranges(nodes: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted node ids as inclusive (first, last) runs."""
    out: list[tuple[int, int]] = []
    for n in sorted(nodes):
        if out and n == out[-1][1] + 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


class Carrier:
    """One connection carrying the nodes ``nodes`` of ``fleet`` (see the module docstring)."""

    def __init__(
        self,
        factory: TransportFactory,
        *,
        client_id: str,
        fleet: str,
        nodes: Sequence[int],
        connect_timeout: float = 10.0,
        rng: random.Random | None = None,
    ) -> None:
        if not nodes:
            raise ValueError("a carrier needs nodes to carry")
        self.factory = factory
        self.client_id = client_id
        self.fleet = fleet
        self.nodes = frozenset(nodes)
        self.ranges = ranges(nodes)
        self.address = Address(fleet, min(nodes), Channel.LINK)
        self.connect_timeout = connect_timeout
        self.build: LinkFrameBuilder | None = None  # set by the runtime before start()
        self.bdseq = CARRIED  # of the present connection: bit 31 set, the count in the rest
        self.connects = 0
        self.failures = 0
        self.others = 0  # commands for nodes another carrier carries (one wildcard subscription)
        self.last_error = ""
        self._backoff = Backoff(rng=rng or random.Random())
        self._endpoints: dict[int, CarriedTransport] = {}
        self._transport: Transport | None = None
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._in_flight = asyncio.Semaphore(IN_FLIGHT)
        self._urgent = asyncio.Semaphore(IN_FLIGHT)

    @property
    def up(self) -> bool:
        return self._up.is_set()

    @property
    def backed_up(self) -> bool:
        """The connection does not drain (its transport says so: :attr:`.mqtt_raw.RawMqttTransport.backed_up`):
        answers and events wait, and telemetry on the carrier's other connection yields to them."""
        return bool(getattr(self._transport, "backed_up", False))

    def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._keep(), name=f"carrier-{self.client_id}")

    async def wait_up(self, timeout: float | None = None) -> None:
        """Until the carrier is connected; TransportError (with its last error) after ``timeout``."""
        if self._closing:
            raise TransportError(f"carrier {self.client_id} is closed")
        self.start()
        try:
            await asyncio.wait_for(self._up.wait(), self.connect_timeout if timeout is None else timeout)
        except TimeoutError:
            raise TransportError(
                f"carrier {self.client_id} is not connected: {self.last_error or 'no answer'}"
            ) from None

    async def _keep(self) -> None:
        """Keep the connection: connect (will, subscription, ONLINE), hand commands to their
        nodes, and after a loss try again with exponential backoff and jitter."""
        while not self._closing:
            tr = self.factory(self.client_id)
            self.bdseq = CARRIED | ((self.bdseq + 1) & 0x7FFFFFFF)
            frames = self._frames()
            try:
                await tr.connect(will=Will(self.address, frames.lost) if frames else None)
                await tr.subscribe(Subscription(self.fleet, None, Channel.CMD))
                if frames:
                    await tr.publish(self.address, frames.online, retain=True, reliable=True)
                self._transport = tr
                self.connects += 1
                self._backoff.reset()
                self._up.set()
                while True:
                    d = await tr.receive()
                    ep = self._endpoints.get(d.address.node)
                    if ep is not None:
                        ep._offer(d)
                    else:
                        self.others += 1
            except TransportError as e:
                self.last_error = str(e)
                self.failures += 1
            finally:
                self._up.clear()
                self._transport = None
                for ep in list(self._endpoints.values()):
                    ep._lost(f"carrier {self.client_id} lost its connection: {self.last_error}")
                self._endpoints.clear()
                if not self._closing:
                    await tr.close()
            if not self._closing:
                await asyncio.sleep(self._backoff.next())

    def _frames(self) -> LinkFrames | None:
        return self.build(self.client_id, self.ranges, self.bdseq) if self.build is not None else None

    async def publish(self, address: Address, payload: bytes, *, retain: bool, reliable: bool) -> None:
        """Publish for a node; at most ``IN_FLIGHT`` acknowledged publishes wait for their
        acknowledgement at once (a client library's cost per publish grows with those pending)."""
        if not reliable:
            tr = self._transport
            if tr is None:
                raise TransportError(f"carrier {self.client_id} is down")
            await tr.publish(address, payload, retain=retain, reliable=False)
            return
        # responses and state changes never wait behind a burst of events
        lane = self._urgent if address.channel in (Channel.RSP, Channel.STATE) else self._in_flight
        async with lane:
            tr = self._transport
            if tr is None:
                raise TransportError(f"carrier {self.client_id} is down")
            await tr.publish(address, payload, retain=retain, reliable=True)

    def attach(self, ep: CarriedTransport) -> None:
        old = self._endpoints.get(ep.node)
        if old is not None and old is not ep:
            old._lost("replaced by a new connection of the same node")
        self._endpoints[ep.node] = ep

    def detach(self, ep: CarriedTransport) -> None:
        if self._endpoints.get(ep.node) is ep:
            del self._endpoints[ep.node]

    async def close(self) -> None:
        """Clean close: SHUTDOWN on the link channel, then the connection goes (no will)."""
        self._closing = True
        tr, frames = self._transport, self._frames()
        if tr is not None and frames is not None:
            with contextlib.suppress(TransportError, TimeoutError):
                await asyncio.wait_for(tr.publish(self.address, frames.shutdown, retain=True, reliable=True), 5.0)
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        if tr is not None:
            await tr.close()

    async def abort(self) -> None:
        """Drop the connection as a crashed process would: the broker publishes the LINK will."""
        self._closing = True
        tr = self._transport
        if tr is not None:
            await tr.abort()
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None


_DOWN = object()


class CarriedTransport(Transport):
    """One node's endpoint on a :class:`Carrier`: a transport like any other to the node."""

    name = "carried"

    def __init__(self, carrier: Carrier, node: int) -> None:
        if node not in carrier.nodes:
            raise ValueError(f"node {node} is not carried by {carrier.client_id}")
        self.carrier = carrier
        self.node = node
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._will: Will | None = None
        self._connected = False
        self._session: int | None = None
        self._why = "carried link closed"

    async def link_session(self) -> int:
        await self.carrier.wait_up()
        self._session = self.carrier.bdseq
        return self._session

    async def connect(self, *, will: Will | None = None) -> None:
        if self._connected:
            raise TransportError("already connected")
        await self.carrier.wait_up()
        if self._session is not None and self._session != self.carrier.bdseq:
            raise TransportError("the carrier reconnected meanwhile")
        self._will = will
        self._connected = True
        self.carrier.attach(self)

    async def close(self) -> None:
        if self._connected:
            self._connected = False
            self.carrier.detach(self)
            self._queue.put_nowait(_DOWN)

    async def abort(self) -> None:
        """The node vanished: its carrier, still alive, publishes its will for it."""
        will, connected = self._will, self._connected
        await self.close()
        if connected and will is not None:
            # when the carrier is gone too, its own will speaks for the node
            with contextlib.suppress(TransportError):
                await self.carrier.publish(will.address, will.payload, retain=True, reliable=True)

    async def subscribe(self, sub: Subscription) -> None:
        if not self._connected:
            raise TransportError("not connected")
        if sub.fleet != self.carrier.fleet or sub.node != self.node or sub.channel is not Channel.CMD:
            raise TransportError("a carried node receives its own commands only")

    async def publish(self, address: Address, payload: bytes, *, retain: bool = False, reliable: bool = False) -> None:
        if not self._connected:
            raise TransportError(self._why)
        await self.carrier.publish(address, payload, retain=retain, reliable=reliable)

    async def receive(self) -> Delivery:
        if not self._connected and self._queue.empty():
            raise TransportError(self._why)
        item = await self._queue.get()
        if item is _DOWN:
            raise TransportError(self._why)
        assert isinstance(item, Delivery)
        return item

    def _offer(self, d: Delivery) -> None:
        if self._connected:
            self._queue.put_nowait(d)

    def _lost(self, why: str) -> None:
        if self._connected:
            self._connected = False
            self._why = why
            self._queue.put_nowait(_DOWN)


class CarrierLinks(NodeLinks):
    """Every node of a process on one :class:`Carrier`, and telemetry through its sink."""

    def __init__(self, url: str, carrier: Carrier, sink: BlockSink | None = None) -> None:
        self.url = url
        self.carrier = carrier
        self.sink = sink

    async def open(self) -> None:
        try:
            await self.carrier.wait_up()
            if self.sink is not None:
                await self.sink.wait_up()
        except TransportError:
            await self.close()
            raise

    async def close(self) -> None:
        await self.carrier.close()
        if self.sink is not None:
            await self.sink.close()

    def factory(self, node: int) -> TransportFactory:
        carrier = self.carrier
        return lambda client_id: CarriedTransport(carrier, node)

    def host_url(self, node: int) -> str:
        return self.url

    def set_link_frames(self, build: LinkFrameBuilder) -> None:
        self.carrier.build = build

    def telemetry_sink(self) -> BlockSink | None:
        return self.sink

    def summary(self) -> list[str]:
        c = self.carrier
        out = [
            f"carrier {c.client_id}: {c.connects} connects, {c.failures} losses, "
            f"{c.others} commands for nodes it does not carry"
        ]
        summary = getattr(self.sink, "summary", None)
        if summary is not None:
            out.append(summary())
        return out

    def describe(self) -> list[str]:
        c = self.carrier
        runs = ", ".join(f"{a}..{b}" if a != b else str(a) for a, b in c.ranges)
        fast = " and a telemetry connection" if self.sink is not None else ""
        return [f"carrier: nodes {runs} on one connection ({c.client_id}){fast}; its state on {c.address.node}/link"]
