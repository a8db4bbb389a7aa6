"""The Redfish service's link to a fleet: a host like any other on the binary protocol.

It subscribes to the fleet's ``state``, ``tlm`` and ``evt`` topics and keeps each node's newest
BIRTH/DEATH and telemetry (:class:`~.state.FleetView`); it asks a node for its STATUS when the node
is born and when its power limit changes (for the limits and faults no telemetry frame carries),
and sends commands through a :class:`~mcm_firmware.host.client.HostClient`.
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
from ..protocol.ops import PowerLimitArgs, SetValveArgs
from ..tasks import cancel_and_wait
from ..transport import Channel, Subscription, Transport, TransportError, TransportFactory
from . import events
from .events import NodeLog, Record
from .state import FleetView

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
    ) -> None:
        """``alive_window``: a node from which no fresh frame came for this long (s) is offline;
        ``source``: the broker's URL as the service shows it (its AggregationSource; no credentials)."""
        self.view = FleetView(fleet)
        self.source = source
        self.alive_window = alive_window
        self.logs: dict[int, NodeLog] = {}
        self.listeners: list[Callable[[Record], None]] = []  # told of every record logged
        self._sweeper: asyncio.Task[None] | None = None
        self._telemetry_waiters: dict[int, list[asyncio.Future[None]]] = {}
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

    def _host_client(self) -> HostClient:
        tag = uuid.uuid4().hex[:8]
        return HostClient(
            self._factory(f"mcm-redfish-cmd-{tag}"), fleet=self.fleet, timeout=self.timeout, auth=self.auth
        )

    async def _connect(self) -> None:
        """Subscribe to the fleet (its retained state comes first) and open the host client."""
        watch = self._factory(f"mcm-redfish-{uuid.uuid4().hex[:8]}")
        await watch.connect()
        try:
            for ch in (Channel.STATE, Channel.TLM, Channel.EVT):
                await watch.subscribe(Subscription(self.fleet, None, ch))
            await self.host.__aenter__()
        except BaseException:
            await watch.close()
            raise
        self._watch = watch

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
        if self._watch is not None:
            await self._watch.close()
            self._watch = None

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
                await self._receive(self._watch)
            except TransportError as e:
                log.warning("redfish: link to the broker lost: %s", e)
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
            view = self.view.take(msg, retained=d.retained, now=time.monotonic())
            if view is None:
                continue
            if not d.retained:
                view.stale = False  # a fresh frame: alive
            if isinstance(msg, (Telemetry, Samples)):
                for fut in self._telemetry_waiters.pop(view.node, []):
                    if not fut.done():
                        fut.set_result(None)
            nlog = self.log(view.node)
            if isinstance(msg, Event) and not d.retained:
                self._tell(events.from_event(nlog, view, msg))
            for rec in events.changes(nlog, view, time.time_ns()):
                self._tell(rec)
            if (isinstance(msg, Birth) and view.limits is None) or (isinstance(msg, Event) and msg.code in REFRESH_ON):
                self.ask(view.node)

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
        """Judge every node's liveness (a silent node goes offline without a frame to tell it)."""
        while True:
            await asyncio.sleep(period)
            now, now_ns = time.monotonic(), time.time_ns()
            for view in list(self.view.nodes.values()):
                view.judge(now, self.alive_window)
                for rec in events.changes(self.log(view.node), view, now_ns):
                    self._tell(rec)

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
        self.view.take_status(node, resp.data, resp.timestamp_ns, now=time.monotonic())
        return True

    async def set_power_limit(self, node: int, watts: float | None) -> Response:
        """Set (or with None clear) the node's out-of-band power limit; the node's answer (any
        status); HostError when none comes. The node's STATUS is read again after an OK."""
        args = PowerLimitArgs(source=int(PowerLimitSource.OUT_OF_BAND), watts=math.nan if watts is None else watts)
        resp = await self.host.request(node, Op.SET_POWER_LIMIT, args, check=False)
        if resp.status == 0:
            with contextlib.suppress(HostError):
                await self.refresh(node)
        return resp

    async def next_telemetry(self, node: int, timeout: float = 2.0) -> bool:
        """Wait for the node's next telemetry frame; False when none came within ``timeout`` s."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._telemetry_waiters.setdefault(node, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._telemetry_waiters.get(node)
            if waiters and fut in waiters:
                waiters.remove(fut)

    async def set_valve(self, node: int, valve: int, pct: float | None) -> Response:
        """Hold ``valve`` at ``pct`` % (None: give it back to the controller); the node's answer."""
        args = SetValveArgs(valve=valve, auto=int(pct is None), pct=0.0 if pct is None else pct)
        resp = await self.host.request(node, Op.SET_VALVE, args, check=False)
        if resp.status == 0:  # the VALVE_MANUAL/VALVE_AUTO event follows; known now
            view = self.view.node(node)
            if pct is None:
                view.valve_setpoints.pop(valve, None)
            else:
                view.valve_setpoints[valve] = pct
        return resp

    async def reset(self, node: int) -> Response:
        """The module reset (RESET: pending row remaps applied); the node's answer."""
        return await self.host.request(node, Op.RESET, check=False)
