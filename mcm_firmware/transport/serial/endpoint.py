"""An endpoint on a serial link: a node (with its node id and EID) or the host.

What MQTT gives and a serial line does not is done here, at the link level (no firmware logic):

* retained frames: a node endpoint keeps the last retained frame per channel and sends it again
  when a host attaches (HELLO); the host endpoint keeps what it heard for late subscribers;
* Last Will: a node endpoint sends its will (WILL) on connect and KEEPALIVE when it has sent
  nothing for ``keepalive`` seconds; the host endpoint publishes the will of a node it has not
  heard from for 3 × keepalive, and forgets it on BYE (a clean close).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Literal

from ...protocol import mctp
from ...protocol.mctp import EID_BROADCAST, ChannelCode, Kind, VendorMessage
from ...tasks import cancel_and_wait
from ..base import Address, Channel, Delivery, Subscription, Transport, TransportError, Will
from .link import SerialLink

HOST_EID = 8
"""The host (bus owner) end of every link; MCTP EIDs 0..7 are reserved."""
FIRST_NODE_EID = 9
DEFAULT_KEEPALIVE = 1.0
_CHANNEL_CODE = {
    Channel.STATE: ChannelCode.STATE,
    Channel.TLM: ChannelCode.TLM,
    Channel.EVT: ChannelCode.EVT,
    Channel.CMD: ChannelCode.CMD,
    Channel.RSP: ChannelCode.RSP,
}
_CODE_CHANNEL = {int(v): k for k, v in _CHANNEL_CODE.items()}


_DOWN = object()
Role = Literal["node", "host"]


class SerialTransport(Transport):
    """One endpoint on a :class:`SerialLink`: a node (with its node id) or the host."""

    name = "serial"

    def __init__(
        self,
        link: SerialLink,
        *,
        role: Role,
        eid: int,
        fleet: str = "default",
        node: int | None = None,
        owns_link: bool = False,
        keepalive: float = DEFAULT_KEEPALIVE,
    ) -> None:
        if not 8 <= eid <= 254:
            raise ValueError(f"EID {eid} is outside the assignable range 8..254")
        if role == "node" and node is None:
            raise ValueError("a node endpoint needs its node id")
        self.link = link
        self.role = role
        self.eid = eid
        self.fleet = fleet
        self.node = node
        self.owns_link = owns_link
        self.keepalive = keepalive
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._subs: list[Subscription] = []
        self._connected = False
        self._will: Will | None = None
        self._retained: dict[Address, bytes] = {}
        self._peer = HOST_EID  # node side: the host's EID, learned from what it sends
        self._eids: dict[int, int] = {}  # host side: node id -> EID
        self._heard: dict[int, float] = {}  # host side: node id -> when last heard
        self._wills: dict[int, tuple[Address, bytes]] = {}
        self._last_tx = 0.0
        self._timer: asyncio.Task[None] | None = None
        self.rejected = 0  # frames for a channel this role does not receive
        # node side: (requester EID, request id) -> the MCTP tag its command came with
        self._request_tags: OrderedDict[tuple[int, int], int] = OrderedDict()
        self._why = "serial link closed"

    @classmethod
    def host(cls, url: str, *, fleet: str = "default", eid: int = HOST_EID) -> SerialTransport:
        """A host endpoint that opens (and on close, closes) its own link to ``url``."""
        return cls(SerialLink(url), role="host", eid=eid, fleet=fleet, owns_link=True)

    # --- Transport ---------------------------------------------------------------------------

    async def connect(self, *, will: Will | None = None) -> None:
        if self._connected:
            raise TransportError("already connected")
        if self.owns_link and not self.link.is_open:
            await self.link.open()
        self.link.attach(self)
        self._connected = True
        self._will = will
        loop = asyncio.get_running_loop()
        self._last_tx = loop.time()
        if self.role == "node":
            if will is not None:
                self._send(
                    VendorMessage(Kind.WILL, self.node or 0, _CHANNEL_CODE[will.address.channel], 0, will.payload),
                    dest=self._peer,
                )
            self._timer = asyncio.create_task(self._keepalive(), name=f"serial-keepalive-{self.eid}")
        else:
            self._timer = asyncio.create_task(self._watch_nodes(), name=f"serial-watch-{self.eid}")

    async def close(self) -> None:
        if self._connected and self.role == "node" and self.link.is_open:
            with contextlib.suppress(TransportError):
                self._send(VendorMessage(Kind.BYE, self.node or 0), dest=self._peer)
                await self.link.flush(0.5)
        await self._shut()

    async def abort(self) -> None:
        """Go silent without BYE, as a crashed controller would: the host publishes the will."""
        await self._shut()

    async def _shut(self) -> None:
        if self._timer is not None:
            await cancel_and_wait([self._timer])
            self._timer = None
        if self._connected:
            self._connected = False
            self.link.detach(self)
            self._queue.put_nowait(_DOWN)
        if self.owns_link:
            await self.link.close()

    async def subscribe(self, sub: Subscription) -> None:
        if not self._connected:
            raise TransportError("not connected")
        self._subs.append(sub)
        if self.role == "host":
            self.fleet = sub.fleet  # a serial link carries one fleet: the one the host asks for
            for addr, payload in self._retained.items():
                if sub.matches(addr):
                    self._queue.put_nowait(Delivery(addr, payload, True))
            if sub.channel in (None, Channel.STATE):
                self._send(VendorMessage(Kind.HELLO, 0 if sub.node is None else sub.node), dest=EID_BROADCAST)

    async def publish(self, address: Address, payload: bytes, *, retain: bool = False, reliable: bool = False) -> None:
        if not self._connected:
            raise TransportError("serial link is down")
        code = _CHANNEL_CODE[address.channel]
        vm = VendorMessage(Kind.FRAME, address.node, code, mctp.VENDOR_RETAIN if retain else 0, payload)
        if self.role == "node":
            if retain:
                self._retained[address] = payload
            reply_tag = None
            if address.channel is Channel.RSP:  # answers its command's tag, with TO=0
                rid = self.correlate(payload) if self.correlate else None
                reply_tag = None if rid is None else self._request_tags.pop((self._peer, rid), None)
            self._send(vm, dest=self._peer, bulk=address.channel is Channel.TLM, reply_tag=reply_tag)
        else:
            request = address.channel is Channel.CMD and (
                self.answerable is None or self.answerable(address.node, payload)
            )  # a frame the node will not answer owns no tag (it would hold one until the expiry)
            self._send(vm, dest=self._eids.get(address.node, EID_BROADCAST), request=request)

    async def receive(self) -> Delivery:
        if not self._connected and self._queue.empty():
            raise TransportError("serial link is down")
        item = await self._queue.get()
        if item is _DOWN:
            raise TransportError(self._why)
        assert isinstance(item, Delivery)
        return item

    def utilisation(self) -> float | None:
        return self.link.utilisation()

    # --- link side ---------------------------------------------------------------------------

    def _send(
        self, vm: VendorMessage, *, dest: int, bulk: bool = False, request: bool = False, reply_tag: int | None = None
    ) -> None:
        self.link.send(vm, src=self.eid, dest=dest, bulk=bulk, request=request, reply_tag=reply_tag)
        self._last_tx = asyncio.get_running_loop().time()

    def _link_down(self, why: str) -> None:
        if self._connected:
            self._connected = False
            self._why = why
            self._queue.put_nowait(_DOWN)

    def _offer(self, addr: Address, payload: bytes, retained: bool) -> None:
        if any(s.matches(addr) for s in self._subs):
            self._queue.put_nowait(Delivery(addr, payload, retained))

    def _on_message(self, src: int, vm: VendorMessage, tag_owner: bool = True, tag: int = 0) -> None:
        if not self._connected:
            return
        if self.role == "node":
            self._peer = src
            if vm.kind is Kind.HELLO:
                if vm.node in (0, self.node):
                    if self._will is not None:
                        self._send(
                            VendorMessage(
                                Kind.WILL,
                                self.node or 0,
                                _CHANNEL_CODE[self._will.address.channel],
                                0,
                                self._will.payload,
                            ),
                            dest=src,
                        )
                    for addr, payload in self._retained.items():
                        self._send(
                            VendorMessage(
                                Kind.FRAME, addr.node, _CHANNEL_CODE[addr.channel], mctp.VENDOR_RETAIN, payload
                            ),
                            dest=src,
                        )
            elif vm.kind is Kind.FRAME and vm.node == self.node:
                channel = _CODE_CHANNEL[vm.channel]
                if channel is Channel.CMD:
                    rid = self.correlate(vm.data) if self.correlate else None
                    if tag_owner and rid is not None:
                        self._request_tags[(src, rid)] = tag
                        while len(self._request_tags) > REQUEST_TAGS:
                            self._request_tags.popitem(last=False)
                    self._offer(Address(self.fleet, vm.node, channel), vm.data, False)
                else:
                    self.rejected += 1
            return
        # host
        loop = asyncio.get_running_loop()
        self._eids[vm.node] = src
        self._heard[vm.node] = loop.time()
        if vm.kind is Kind.WILL:
            self._wills[vm.node] = (Address(self.fleet, vm.node, _CODE_CHANNEL.get(vm.channel, Channel.STATE)), vm.data)
        elif vm.kind is Kind.BYE:
            self._wills.pop(vm.node, None)
            self._heard.pop(vm.node, None)
        elif vm.kind is Kind.FRAME:
            channel = _CODE_CHANNEL[vm.channel]
            if channel is Channel.CMD:
                self.rejected += 1
                return
            addr = Address(self.fleet, vm.node, channel)
            retained = bool(vm.flags & mctp.VENDOR_RETAIN)
            if retained:
                self._retained[addr] = vm.data
            self._offer(addr, vm.data, retained)

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            wait = self._last_tx + self.keepalive - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            with contextlib.suppress(TransportError):
                self._send(VendorMessage(Kind.KEEPALIVE, self.node or 0), dest=self._peer)

    async def _watch_nodes(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.keepalive
        while True:
            await asyncio.sleep(period / 2)
            now = loop.time()
            for node, heard in list(self._heard.items()):
                if now - heard > 3 * period:
                    del self._heard[node]
                    will = self._wills.pop(node, None)
                    if will is not None:
                        addr, payload = will
                        self._retained[addr] = payload
                        self._offer(addr, payload, False)


REQUEST_TAGS = 64
"""Commands a node remembers the tag of until it answers them (more than any host has in flight)."""
