"""The one small interface every transport implements. No firmware logic here.

A transport moves opaque frames between endpoints addressed by (fleet, node, channel). It knows
nothing of frame contents; the node and host runtimes decide what to send and what a frame means.

Channels follow the MQTT contract ``mcm/v1/<fleet>/<node>/<channel>``:

========  =========  =====================================================================
channel   direction  content
========  =========  =====================================================================
state     node->host BIRTH (retained) while online, DEATH (retained, also the Last Will)
tlm       node->host TELEMETRY or SAMPLES
evt       node->host EVENT
cmd       host->node COMMAND
rsp       node->host RESPONSE
========  =========  =====================================================================
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Channel(enum.StrEnum):
    STATE = "state"
    TLM = "tlm"
    EVT = "evt"
    CMD = "cmd"
    RSP = "rsp"
    LINK = "link"  # the state of a carrier link, on the channel of the first node it carries


@dataclass(frozen=True, slots=True)
class Address:
    fleet: str
    node: int
    channel: Channel


@dataclass(frozen=True, slots=True)
class Subscription:
    """What to receive: ``None`` for node or channel matches any."""

    fleet: str
    node: int | None = None
    channel: Channel | None = None

    def matches(self, addr: Address) -> bool:
        return (
            addr.fleet == self.fleet
            and (self.node is None or addr.node == self.node)
            and (self.channel is None or addr.channel == self.channel)
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """A frame received. ``oversize``: a message larger than any frame's packet (its size in
    bytes), skipped by the transport without being read whole; its payload is then empty."""

    address: Address
    payload: bytes
    retained: bool = False
    oversize: int = 0


@dataclass(frozen=True, slots=True)
class Will:
    """Published by the far side (the broker) if this endpoint vanishes without closing."""

    address: Address
    payload: bytes


class TransportError(Exception):
    """The link is not usable: cannot connect, or it went down. The caller may reconnect."""


class Transport(ABC):
    """One endpoint's link. Connect once; after a TransportError, make a new one."""

    name: str = "?"
    correlate: Callable[[bytes], int | None] | None = None
    """Reads the request id of a command or response frame; set by who knows the frames (the node
    runtime), for a binding that matches responses to requests below the frames (MCTP tags)."""
    answerable: Callable[[int, bytes], bool] | None = None
    """Whether a node answers a frame sent to its command channel; set by a host that knows the
    frames, for a binding whose requests hold something until answered (an MCTP tag, owned until
    the answer or its expiry): a frame no answer will come back to does not hold it. None: every
    frame on a command channel is taken for a request."""

    @abstractmethod
    async def connect(self, *, will: Will | None = None) -> None:
        """Open the link, registering ``will`` where the transport supports it."""

    @abstractmethod
    async def close(self) -> None:
        """Close cleanly (the will is not published). Idempotent."""

    async def abort(self) -> None:
        """Drop the link without a clean goodbye, as a crashed process would: the far side
        publishes the will. Transports without wills just close."""
        await self.close()

    @abstractmethod
    async def subscribe(self, sub: Subscription) -> None: ...

    @abstractmethod
    async def publish(self, address: Address, payload: bytes, *, retain: bool = False, reliable: bool = False) -> None:
        """Send one frame. ``reliable`` asks for acknowledged delivery (MQTT QoS 1)."""

    @abstractmethod
    async def receive(self) -> Delivery:
        """The next frame for one of this endpoint's subscriptions; TransportError when down."""

    async def link_session(self) -> int | None:
        """For an endpoint that shares a connection with others (a carried node): the sequence
        number of that connection, which the endpoint's BIRTH and DEATH carry as their ``bdseq``;
        it waits until the connection is up. None for an endpoint with a connection of its own."""
        return None

    def utilisation(self) -> float | None:
        """Share of the link's capacity in use lately (0..1), where the link has a fixed rate
        (a serial line); None otherwise."""
        return None

    async def __aenter__(self) -> Transport:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


TransportFactory = Callable[[str], Transport]
"""Makes a fresh, unconnected transport for one client id."""


@dataclass(frozen=True)
class LinkFrames:
    """The three frames of a carrier link's state for one of its connections (one ``bdseq``)."""

    online: bytes
    lost: bytes  # its Last Will
    shutdown: bytes


LinkFrameBuilder = Callable[[str, Sequence[tuple[int, int]], int], LinkFrames]
"""Given by the runtime: a carrier's state frames from its name, the (first, last) runs of node
ids it carries and the ``bdseq`` of a connection."""


class BlockSink(Protocol):
    """Where a whole telemetry slot goes in one write (:class:`.mqtt_fast.FastPublisher`): the
    topics of a shard's nodes are prepared once, then each slot is the rows of the nodes that send
    and their frames (a ``[rows, frame size]`` uint8 array)."""

    @property
    def up(self) -> bool: ...

    def prepare(self, topics: Sequence[str], payload_size: int, *, max_age: float = 1.0) -> Any:
        """``max_age``: seconds (of the wall clock) after which telemetry still waiting for the
        link is stale, and new slots are refused (its telemetry period)."""
        ...

    def send_prepared(self, topics: Any, rows: np.ndarray, payloads: np.ndarray) -> bool:
        """Hand the frames to the connection; False (nothing sent) when it is down or backed up."""
        ...

    async def wait_up(self, timeout: float | None = None) -> None: ...

    async def close(self) -> None: ...


class NodeLinks(ABC):
    """The links of a fleet's nodes, whatever the transport: a factory per node, opened before the
    nodes start and closed after they stop. One broker serves every node alike; serial nodes each
    have their own port, or share one told apart by EID."""

    async def open(self) -> None:  # noqa: B027 - optional: most links need no opening
        """Make the links usable; TransportError names what failed (and nothing stays open)."""

    async def close(self) -> None:  # noqa: B027 - optional, as open()
        """Release what :meth:`open` took."""

    @abstractmethod
    def factory(self, node: int) -> TransportFactory:
        """Node ``node``'s transport factory."""

    @abstractmethod
    def host_url(self, node: int) -> str:
        """Where a host reaches node ``node`` (``mqtt://...``, ``serial:///dev/pts/3``, ...)."""

    def describe(self) -> list[str]:
        """Lines to print once the links are open (where each node can be reached)."""
        return []

    def capture(self, path: str) -> list[str]:
        """Keep the frames on the links in pcap files for Wireshark (serial links); the files."""
        raise TransportError(f"{type(self).__name__} cannot capture to {path}: captures are of serial links")

    def set_link_frames(self, build: LinkFrameBuilder) -> None:  # noqa: B027 - only carriers have frames
        """Carrier links publish their own state: how to build its frames (call before open)."""

    def telemetry_sink(self) -> BlockSink | None:
        """A connection that takes a whole telemetry slot at once, or None: each node sends its own."""
        return None

    def summary(self) -> list[str]:
        """Lines to print once they are closed (counters)."""
        return []
