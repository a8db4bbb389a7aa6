"""The Redfish service's link to a fleet: a host like any other on the binary protocol.

It subscribes to the fleet's ``state``, ``tlm`` and ``evt`` topics and keeps each node's newest
BIRTH/DEATH and telemetry (:class:`~.state.FleetView`); it asks a node for its STATUS when the node
is born and when its power limit changes (for the limits and faults no telemetry frame carries),
and sends commands through a :class:`~mcm_firmware.host.client.HostClient`.

Telemetry, 10 frames a second a module, comes on a connection of its own when the broker speaks
MQTT (``telemetry_url``): a QoS 0 subscriber that parses the stream in bulk
(:class:`~mcm_firmware.transport.mqtt_fast.FastSubscriber`), each frame's envelope checked (CRC),
its payload kept raw and decoded when read, its health's inputs compared with the previous frame's
(:mod:`.state`). Frames counted: received, taken in, rejected, and missed (gaps in a node's
sequence numbers), and how old a frame was when it arrived (``tlm_age_max``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..backoff import Backoff
from ..host.client import HostClient, HostError
from ..protocol import Birth, Event, EventCode, FrameError, Op, PowerLimitSource, Response, Samples, Telemetry, decode
from ..protocol.auth import AuthError, FrameAuth
from ..protocol.codec import envelope
from ..protocol.frames import KNOWN_FLAGS
from ..protocol.ops import PowerLimitArgs, SetValveArgs
from ..protocol.vocabulary import MsgType
from ..tasks import cancel_and_wait
from ..transport import Channel, Subscription, Transport, TransportError, TransportFactory
from ..transport.topics import PREFIX
from . import events
from .events import NodeLog, Record
from .state import FleetView, NodeView

log = logging.getLogger(__name__)

# events after which a node's STATUS is read again (its limits or faults changed)
REFRESH_ON = (EventCode.POWER_CAP_SET, EventCode.FAULT_INJECTED, EventCode.FAULT_CLEARED)


class Gateway:
    def __init__(
        self,
        factory: TransportFactory,
        fleet: str = "default",
        *,
        timeout: float = 2.0,
        auth: FrameAuth | None = None,
        alive_window: float = 3.0,
        source: str | None = None,
        telemetry_url: str | None = None,
    ) -> None:
        """``alive_window``: a node from which no fresh frame came for this long (s) is offline;
        ``source``: the broker's URL as the service shows it (its AggregationSource; no credentials);
        ``telemetry_url``: an MQTT broker URL (with its security) to take telemetry from on a
        subscriber of its own, parsed in bulk (None: telemetry comes through ``factory``'s transport)."""
        self.view = FleetView(fleet)
        self.source = source
        self.alive_window = alive_window
        self.logs: dict[int, NodeLog] = {}
        self.listeners: list[Callable[[Record], None]] = []  # told of every record logged
        self._sweeper: asyncio.Task[None] | None = None
        self._telemetry_waiters: dict[int, list[tuple[asyncio.Future[None], int | None]]] = {}
        self.fleet = fleet
        self.auth = auth
        self.timeout = timeout
        self._factory = factory
        self._watch: Transport | None = None
        self.host = self._host_client()
        self._rx: asyncio.Task[None] | None = None
        self._asks: dict[int, asyncio.Task[bool]] = {}
        self._limit = asyncio.Semaphore(32)  # STATUS requests in flight
        self.rejected = 0  # frames that did not decode or verify
        self.status_failed = 0
        self.reconnects = 0
        self.telemetry_url = telemetry_url
        self._fast: list[Any] = []  # the telemetry and state subscribers (FastSubscriber) while connected
        self.tlm_received = 0  # telemetry frames received (on the telemetry connection)
        self.tlm_decoded = 0  # of them decoded on arrival (their health's inputs changed)
        self.tlm_age_max = 0.0  # the oldest a telemetry frame was on arrival, s (its timestamp to now)
        # frames on the telemetry or state connection whose topic is not the one it subscribed to:
        # amqtt (the broker ``mcm-emu run`` embeds) replays, on every connect, the retained messages
        # that match *other* clients' filters, so the telemetry connection got each node's retained
        # BIRTH, an old frame that was taken as live (its sequence number far behind the telemetry's)
        self.unsolicited = 0
        self._topic_head = f"{PREFIX}/{fleet}/".encode()

    def _host_client(self) -> HostClient:
        tag = uuid.uuid4().hex[:8]
        return HostClient(
            self._factory(f"mcm-redfish-cmd-h{tag}"), fleet=self.fleet, timeout=self.timeout, auth=self.auth
        )

    async def _connect(self) -> None:
        """Subscribe to the fleet (its retained state comes first) and open the host client."""
        watch = self._factory(f"mcm-redfish-h{uuid.uuid4().hex[:8]}")
        await watch.connect()
        fast: list[Any] = []
        try:
            await self.host.__aenter__()  # first: a BIRTH taken on subscribing asks the node for its STATUS
            channels = (Channel.EVT,) if self.telemetry_url else (Channel.STATE, Channel.TLM, Channel.EVT)
            for ch in channels:
                await watch.subscribe(Subscription(self.fleet, None, ch))
            if self.telemetry_url:
                # telemetry, and the nodes' BIRTH/DEATH (retained: the broker sends one a node at
                # once on subscribing, more than it queues for a QoS 1 subscriber, 1,000 by default)
                for ch, take in ((Channel.TLM, self._on_telemetry), (Channel.STATE, self._on_state)):
                    sub = self._subscriber(self.telemetry_url, ch, take)
                    fast.append(sub)
                    await sub.start()
        except BaseException:
            for sub in fast:
                sub.close()
            await watch.close()
            await self.host.close()
            self.host = self._host_client()  # a client is connected once: a new one for the next try
            raise
        self._watch, self._fast = watch, fast

    def _subscriber(self, url: str, channel: Channel, take: Callable[[bytes, memoryview], None]) -> Any:
        from ..transport.mqtt import parse_broker_url
        from ..transport.mqtt_fast import FastSubscriber
        from ..transport.security import security_of
        from ..transport.topics import topic_filter

        host, port = parse_broker_url(url)
        return FastSubscriber(
            host=host,
            port=port,
            client_id=f"mcm-redfish-{channel.value}-h{uuid.uuid4().hex[:8]}",
            topic_filter=topic_filter(Subscription(self.fleet, None, channel)),
            on_publish=take,
            security=security_of(url),
        )

    async def start(self) -> None:
        """Connect; TransportError when the broker cannot be reached. A link lost later is
        connected again (with backoff) in the background."""
        await self._connect()
        self._rx = asyncio.create_task(self._follow(), name="redfish-rx")
        self._sweeper = asyncio.create_task(self._sweep(), name="redfish-sweep")

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = [t for t in (self._rx, self._sweeper, *self._asks.values()) if t is not None]
        await cancel_and_wait(tasks)
        self._rx = self._sweeper = None
        self._asks.clear()
        await self.host.close()
        self._close_telemetry()
        if self._watch is not None:
            await self._watch.close()
            self._watch = None

    def stats(self) -> dict[str, Any]:
        """The frames counted so far."""
        return {
            "nodes": len(self.view.nodes),
            "nodes_born": sum(1 for v in self.view.nodes.values() if v.birth is not None and v.death is None),
            "frames": self.view.frames,
            "telemetry_received": self.tlm_received,
            "telemetry_decoded_on_arrival": self.tlm_decoded,
            "rejected": self.rejected,
            "missed": self.view.missed,
            "unsolicited": self.unsolicited,
            "telemetry_age_max_s": round(self.tlm_age_max, 4),
            "status_pending": sum(1 for t in self._asks.values() if not t.done()),  # STATUS asks not answered yet
            "status_failed": self.status_failed,
            "reconnects": self.reconnects,
        }

    def summary(self) -> str:
        s = self.stats()
        return (
            f"{s['frames']} frames of {s['nodes']} nodes taken in ({s['telemetry_received']} telemetry frames "
            f"received, {s['telemetry_decoded_on_arrival']} decoded on arrival), {s['rejected']} rejected, "
            f"{s['missed']} missed (gaps in sequence numbers), {s['unsolicited']} unsolicited (not of the topics "
            f"subscribed), telemetry at most {s['telemetry_age_max_s']:.3f} s old on arrival"
        )

    def _close_telemetry(self) -> None:
        for sub in self._fast:
            sub.close()
        self._fast = []

    @property
    def connected(self) -> bool:
        """Connected to the broker now."""
        return self._watch is not None

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _follow(self) -> None:
        backoff = Backoff(initial=0.5, maximum=5.0)
        while True:
            try:
                assert self._watch is not None
                await self._until_lost(self._watch)
            except TransportError as e:
                log.warning("redfish: link to the broker lost: %s", e)
            self._close_telemetry()
            if self._watch is not None:
                await self._watch.close()
                self._watch = None
            await self.host.close()
            self.host = self._host_client()  # a client whose link was lost stays down: a new one
            while True:
                await asyncio.sleep(backoff.next())
                try:
                    await self._connect()
                except TransportError as e:
                    log.info("redfish: broker still unreachable: %s", e)
                    continue
                self.reconnects += 1
                backoff.reset()
                log.warning("redfish: connected to the broker again")
                break

    async def _until_lost(self, watch: Transport) -> None:
        """Receive until the link (or the telemetry's) is lost: TransportError."""
        if not self._fast:
            await self._receive(watch)
            return
        rx = asyncio.create_task(self._receive(watch))
        lost = [asyncio.create_task(sub.closed.wait()) for sub in self._fast]
        try:
            await asyncio.wait((rx, *lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait([rx, *lost])
        if rx.done() and not rx.cancelled() and rx.exception() is not None:
            raise rx.exception()  # type: ignore[misc]
        raise TransportError("the telemetry or state connection was closed")

    def _on_state(self, topic: bytes, payload: memoryview) -> None:
        """A BIRTH or DEATH on the state connection (QoS 0, so the retain flag is not seen: each is
        taken as retained, no sign of life by itself; the node's telemetry is)."""
        if not self._solicited(topic, b"/state"):
            return
        if self.auth is not None:
            try:
                self.auth.open(payload, time.time_ns(), window=False)
            except AuthError:
                self.rejected += 1
                return
        try:
            msg = decode(payload)
        except FrameError:
            self.rejected += 1
            return
        self._take(msg, retained=True)

    def _on_telemetry(self, topic: bytes, payload: memoryview) -> None:
        """A PUBLISH on the telemetry connection (the hot path: every telemetry frame of the fleet)."""
        if not self._solicited(topic, b"/tlm"):
            return
        self.tlm_received += 1
        if self.auth is not None:
            try:
                self.auth.open(payload, time.time_ns())
            except AuthError:
                self.rejected += 1
                return
        try:
            env = envelope(payload)
            if env.msg_type != MsgType.TELEMETRY or env.flags & ~KNOWN_FLAGS:
                self._take(decode(payload), retained=False)  # SAMPLES, or anything else: decoded
                return
            view, changed = self.view.take_telemetry(
                env.node_id, env.seq, env.timestamp_ns, env.payload, now=time.monotonic()
            )
        except FrameError:
            self.rejected += 1
            return
        age = time.time() - env.timestamp_ns * 1e-9
        if age > self.tlm_age_max:
            self.tlm_age_max = age
        if view.stale:  # alive again
            view.stale = False
            changed = True
        if self._telemetry_waiters:
            self._told_telemetry(view.node, env.seq)
        if changed:  # the inputs of its health changed: judged now (the frame decoded), as of the frame
            self.tlm_decoded += 1
            self._judge(view, env.timestamp_ns)

    def _solicited(self, topic: bytes, tail: bytes) -> bool:
        """Whether ``topic`` is one of the fleet's on the channel ending in ``tail``; counted when not."""
        if topic.startswith(self._topic_head) and topic.endswith(tail):
            return True
        self.unsolicited += 1
        return False

    def _told_telemetry(self, node: int, seq: int) -> None:
        waiting = self._telemetry_waiters.get(node)
        if not waiting:
            return
        keep: list[tuple[asyncio.Future[None], int | None]] = []
        for fut, after in waiting:
            if after is not None and not 0 < (seq - after) & 0xFFFFFFFF < 0x80000000:
                keep.append((fut, after))  # sent before the frame it waits to be after
            elif not fut.done():
                fut.set_result(None)
        if keep:
            self._telemetry_waiters[node] = keep
        else:
            del self._telemetry_waiters[node]

    def _judge(self, view: NodeView, now_ns: int) -> None:
        for rec in events.changes(self.log(view.node), view, now_ns):
            self._tell(rec)

    def _take(self, msg: object, *, retained: bool) -> None:
        """A decoded frame of the fleet."""
        view = self.view.take(msg, retained=retained, now=time.monotonic())
        if view is None:
            return
        if not retained:
            view.stale = False  # a fresh frame: alive
        if isinstance(msg, (Telemetry, Samples)):
            self._told_telemetry(view.node, msg.seq)
        nlog = self.log(view.node)
        if isinstance(msg, Event) and not retained:
            self._tell(events.from_event(nlog, view, msg))
        # a change a live frame shows is stamped with the frame's time (the node's clock)
        self._judge(
            view, time.time_ns() if retained or not isinstance(msg, (Telemetry, Samples, Event)) else msg.timestamp_ns
        )
        if (isinstance(msg, Birth) and view.limits is None) or (isinstance(msg, Event) and msg.code in REFRESH_ON):
            self.ask(view.node)

    async def _receive(self, watch: Transport) -> None:
        while True:
            d = await watch.receive()
            if self.auth is not None:
                try:
                    self.auth.open(d.payload, time.time_ns(), window=not d.retained)
                except AuthError:
                    self.rejected += 1
                    continue
            try:
                msg = decode(d.payload)
            except FrameError:
                self.rejected += 1
                continue
            self._take(msg, retained=d.retained)

    def log(self, node: int) -> NodeLog:
        nlog = self.logs.get(node)
        if nlog is None:
            nlog = self.logs[node] = NodeLog()
        return nlog

    def _tell(self, rec: Record) -> None:
        for listener in self.listeners:
            try:
                listener(rec)
            except Exception:
                log.exception("redfish: a listener failed on %s", rec.message_id)

    async def _sweep(self, period: float = 0.5) -> None:
        """Judge every node's liveness (a silent node goes offline without a frame to tell it);
        keep the telemetry connection alive (a PINGREQ every 10 s)."""
        pinged = time.monotonic()
        while True:
            await asyncio.sleep(period)
            now, now_ns = time.monotonic(), time.time_ns()
            if self._fast and now - pinged >= 10.0:
                for sub in self._fast:
                    sub.ping()
                pinged = now
            for view in list(self.view.nodes.values()):
                was = view.stale
                view.judge(now, self.alive_window)
                if view.stale != was:
                    self._judge(view, now_ns)

    def ask(self, node: int) -> None:
        """Ask ``node`` for its STATUS in the background (once at a time per node)."""
        task = self._asks.get(node)
        if task is not None and not task.done():
            return
        self._asks[node] = asyncio.create_task(self.refresh(node), name=f"redfish-status-{node}")

    async def refresh(self, node: int) -> bool:
        """Ask ``node`` for its STATUS now; False when it does not answer."""
        async with self._limit:
            try:
                resp = await self.host.request(node, Op.STATUS)
            except HostError as e:
                self.status_failed += 1
                log.info("redfish: node %d: no status: %s", node, e)
                return False
        self.view.seen(node, resp.seq)
        self.view.take_status(node, resp.data, resp.timestamp_ns, now=time.monotonic())
        self._judge(self.view.node(node), resp.timestamp_ns)  # its faults may have changed its health
        return True

    async def set_power_limit(self, node: int, watts: float | None) -> Response:
        """Set (or with None clear) the node's out-of-band power limit; the node's answer (any
        status); HostError when none comes. The node's STATUS is read again after an OK."""
        args = PowerLimitArgs(source=int(PowerLimitSource.OUT_OF_BAND), watts=math.nan if watts is None else watts)
        resp = await self.host.request(node, Op.SET_POWER_LIMIT, args, check=False)
        self.view.seen(node, resp.seq)
        if resp.status == 0:
            with contextlib.suppress(HostError):
                await self.refresh(node)
        return resp

    async def next_telemetry(self, node: int, timeout: float = 2.0, *, after_seq: int | None = None) -> bool:
        """Wait for the node's next telemetry frame (with ``after_seq``: the next one the node sent
        after its frame of that sequence number, e.g. its answer: telemetry travels on a connection
        of its own, and a frame built before the answer may arrive after it); False when none came
        within ``timeout`` s."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (fut, after_seq)
        self._telemetry_waiters.setdefault(node, []).append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._telemetry_waiters.get(node)
            if waiters and entry in waiters:
                waiters.remove(entry)

    async def set_valve(self, node: int, valve: int, pct: float | None) -> Response:
        """Hold ``valve`` at ``pct`` % (None: give it back to the controller); the node's answer."""
        args = SetValveArgs(valve=valve, auto=int(pct is None), pct=0.0 if pct is None else pct)
        resp = await self.host.request(node, Op.SET_VALVE, args, check=False)
        self.view.seen(node, resp.seq)
        if resp.status == 0:  # the VALVE_MANUAL/VALVE_AUTO event follows; known now
            view = self.view.node(node)
            if pct is None:
                view.valve_setpoints.pop(valve, None)
            else:
                view.valve_setpoints[valve] = pct
        return resp

    async def reset(self, node: int) -> Response:
        """The module reset (RESET: pending row remaps applied); the node's answer."""
        resp = await self.host.request(node, Op.RESET, check=False)
        self.view.seen(node, resp.seq)
        return resp
