"""The in-process transport: a small broker (retained frames, wills) with a fault hook.

It is a full backend, not a test double: whole fleets run on it in virtual time, and the fault
hook lets tests and scenarios drop, corrupt, delay, duplicate or reorder frames on the way.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, TypeVar

from .base import Address, Delivery, Subscription, Transport, TransportError, Will
from .link_faults import FaultHook

_K = TypeVar("_K")


class LoopbackBus:
    """An in-process message bus with MQTT's retained-message and Last-Will semantics."""

    _named: ClassVar[dict[str, LoopbackBus]] = {}

    def __init__(self, *, hook: FaultHook | None = None) -> None:
        self.hook = hook
        self._endpoints: set[LoopbackTransport] = set()
        self._retained: dict[Address, bytes] = {}
        self.published = 0
        # subscriptions indexed by (fleet, node): the node-specific ones, and fleet-wide ones
        self._by_node: dict[tuple[str, int], list[tuple[LoopbackTransport, Subscription]]] = {}
        self._by_fleet: dict[str, list[tuple[LoopbackTransport, Subscription]]] = {}

    @classmethod
    def named(cls, name: str) -> LoopbackBus:
        """The process-wide bus called ``name`` (``loopback://name``), created on first use."""
        bus = cls._named.get(name)
        if bus is None:
            bus = cls._named[name] = cls()
        return bus

    def retained(self) -> dict[Address, bytes]:
        return dict(self._retained)

    def route(self, address: Address, payload: bytes, *, retain: bool) -> None:
        self.published += 1
        if retain:
            if payload:
                self._retained[address] = payload
            else:  # an empty retained publish clears, as in MQTT
                self._retained.pop(address, None)
        d = Delivery(address, payload, False)
        plan = self.hook(d) if self.hook is not None else ((0.0, d),)
        for delay, item in plan:
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self._fan_out, item)
            else:
                self._fan_out(item)

    def _fan_out(self, d: Delivery) -> None:
        a = d.address
        seen: set[int] = set()
        for ep, sub in (*self._by_fleet.get(a.fleet, ()), *self._by_node.get((a.fleet, a.node), ())):
            if id(ep) not in seen and (sub.channel is None or sub.channel == a.channel):
                seen.add(id(ep))
                ep._offer(d)

    def index(self, ep: LoopbackTransport, sub: Subscription) -> None:
        if sub.node is None:
            self._by_fleet.setdefault(sub.fleet, []).append((ep, sub))
        else:
            self._by_node.setdefault((sub.fleet, sub.node), []).append((ep, sub))

    def attach(self, ep: LoopbackTransport) -> None:
        self._endpoints.add(ep)

    def detach(self, ep: LoopbackTransport, *, will: Will | None) -> None:
        self._endpoints.discard(ep)
        _unindex(self._by_fleet, ep)
        _unindex(self._by_node, ep)
        if will is not None:
            self.route(will.address, will.payload, retain=True)

    def sever(self, ep: LoopbackTransport) -> None:
        """Cut one endpoint off as a network failure would: its will fires, its receive fails."""
        if ep in self._endpoints:
            ep._severed()

    def endpoints(self) -> list[LoopbackTransport]:
        return list(self._endpoints)


def _unindex(table: dict[_K, list[tuple[LoopbackTransport, Subscription]]], ep: LoopbackTransport) -> None:
    """Remove every subscription of ``ep`` from one index, dropping keys left empty."""
    for key in [k for k, subs in table.items() if any(e is ep for e, _ in subs)]:
        table[key] = [(e, s) for e, s in table[key] if e is not ep]
        if not table[key]:
            del table[key]


_DOWN = object()


class LoopbackTransport(Transport):
    name = "loopback"

    def __init__(self, bus: LoopbackBus, *, client_id: str = "") -> None:
        self.bus = bus
        self.client_id = client_id
        self._subs: list[Subscription] = []
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._will: Will | None = None
        self._connected = False

    async def connect(self, *, will: Will | None = None) -> None:
        if self._connected:
            raise TransportError("already connected")
        self._will = will
        self._connected = True
        self.bus.attach(self)

    async def close(self) -> None:
        if self._connected:
            self._connected = False
            self.bus.detach(self, will=None)
            self._queue.put_nowait(_DOWN)

    def crash(self) -> None:
        """Vanish without closing: the bus publishes the will (like a killed process)."""
        self._severed()

    async def abort(self) -> None:
        self.crash()

    def _severed(self) -> None:
        if self._connected:
            self._connected = False
            self.bus.detach(self, will=self._will)
            self._queue.put_nowait(_DOWN)

    async def subscribe(self, sub: Subscription) -> None:
        if not self._connected:
            raise TransportError("not connected")
        self._subs.append(sub)
        self.bus.index(self, sub)
        for addr, payload in self.bus.retained().items():
            if sub.matches(addr):
                self._queue.put_nowait(Delivery(addr, payload, True))

    async def publish(self, address: Address, payload: bytes, *, retain: bool = False, reliable: bool = False) -> None:
        if not self._connected:
            raise TransportError("loopback link is down")
        self.bus.route(address, bytes(payload), retain=retain)

    def _offer(self, d: Delivery) -> None:
        if self._connected:
            self._queue.put_nowait(d)

    async def receive(self) -> Delivery:
        if not self._connected and self._queue.empty():
            raise TransportError("loopback link is down")
        item = await self._queue.get()
        if item is _DOWN:
            raise TransportError("loopback link closed")
        assert isinstance(item, Delivery)
        return item

    @property
    def connected(self) -> bool:
        return self._connected
