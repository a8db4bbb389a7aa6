"""The host side: send commands to nodes and wait for their answers, over any transport.

Each request carries a request id unique to this client. When no answer comes within a slice of
the timeout, the same request (same id, the RETRY flag set) is sent again; the node executes a
request id once and answers repeats from its cache, so a retry never runs a command twice.

The timeout bounds the whole request, its publishes and the answer: a transport's publish waits
for its acknowledgement as long as the connection lives (a stalled link is only found dead after
1.5 keep-alives), so the client gives up on it at the request's deadline, with
:class:`BrokerTimeout` (no acknowledgement) told apart from :class:`RequestTimeout` (no answer),
each counted. The timeout bounds the connect too (:func:`limit_connect`): a broker that takes
the TCP connection and never answers CONNECT is given up on within it.

A node away from its broker (the broker restarted, or the node lost its link) does not receive a
command the broker took meanwhile: nodes use clean sessions. So when a request's first slice goes
unanswered (or for a second, if that is sooner), the client reads the node's state (its ``state`` topic) and, while that says the node
is reconnecting (a DEATH that is not SHUTDOWN, or no state at all: a broker restarted without
persistence), spends no retry on it but waits for the node's next BIRTH, up to the request's
deadline; a BIRTH that arrives live (not retained) while a request waits has the request sent
again at once, with the same request id, whatever the node's state said (counted
``resent_on_birth``). A node not back within the deadline is reported as such
(:class:`NodeAway`, counted ``away``). See docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from ..protocol import (
    Birth,
    Command,
    Death,
    DeathReason,
    FrameError,
    FrameFlags,
    Op,
    Response,
    Status,
    StatusResult,
    decode,
    encode,
)
from ..protocol.auth import AuthError, FrameAuth
from ..protocol.codec import answerable
from ..tasks import cancel_and_wait
from ..transport import Address, Channel, Delivery, Subscription, Transport, TransportError

U32 = 0xFFFFFFFF


class HostError(Exception):
    """Base of what the host client raises."""


class RequestTimeout(HostError, TimeoutError):
    def __init__(self, node: int, op: Op, timeout: float) -> None:
        super().__init__(f"no reply from node {node} to {op.name.lower()} within {timeout:g} s")
        self.node = node
        self.op = op


class NodeAway(RequestTimeout):
    """No answer within the deadline from a node whose state says it is reconnecting (a DEATH that
    is not SHUTDOWN, or no state on the broker) and that published no new BIRTH meanwhile."""

    def __init__(self, node: int, op: Op, timeout: float, state: str) -> None:
        super().__init__(node, op, timeout)
        self.args = (
            f"no reply from node {node} to {op.name.lower()} within {timeout:g} s: the node is reconnecting "
            f"({state}) and published no new BIRTH within that time; whether the command ran is not known",
        )
        self.state = state


class _Watch:
    """What a client knows of one node's state: the newest BIRTH or DEATH on its ``state`` topic,
    and an event set by each BIRTH that arrives live (the node is back)."""

    __slots__ = ("born", "since", "state")

    def __init__(self, since: float) -> None:
        self.state: Birth | Death | None = None
        self.since = since  # when the subscription was acknowledged (loop time)
        self.born = asyncio.Event()

    def away(self, now: float, grace: float) -> str | None:
        """Why the node is taken to be reconnecting, or None (online, shut down, or not known yet)."""
        st = self.state
        if isinstance(st, Death):
            return None if st.reason == DeathReason.SHUTDOWN else f"its state: DEATH {DeathReason(st.reason).name}"
        if st is None and now - self.since >= grace:
            return "no state on the broker: restarted, or never seen"
        return None


WATCH_AFTER_S = 1.0
"""A request unanswered this long (or for its first slice, if shorter) has the client follow its
node's state: one subscription per node and client, none for a request answered in time."""
STATE_GRACE_S = 0.5
"""How long after subscribing to a node's state a client waits for the retained frame before it
takes its absence as "no state" (a broker restarted without persistence)."""


class BrokerTimeout(HostError, TimeoutError):
    """The broker did not acknowledge a command within the request's timeout: the link to it is
    stalled (half-open), or the broker is overloaded. Nothing is known of the node."""

    def __init__(self, node: int, op: Op, timeout: float) -> None:
        super().__init__(
            f"no acknowledgement from the broker within {timeout:g} s (sending {op.name.lower()} to node {node}): "
            "the link to the broker is stalled, or the broker is overloaded"
        )
        self.node = node
        self.op = op


class NodeError(HostError):
    """The node answered with a status other than OK."""

    def __init__(self, node: int, response: Response) -> None:
        status = response.status.name if isinstance(response.status, Status) else response.status
        super().__init__(f"node {node} answered {status}: {response.message or '(no message)'}")
        self.node = node
        self.response = response


def limit_connect(transport: Transport, timeout: float) -> Transport:
    """Bound the time ``transport`` waits for its broker to accept it (CONNACK, then SUBACK) to
    ``timeout`` seconds where the transport has such a bound of its own (MQTT's
    ``connect_timeout``, 5 s), so that a host's timeout also covers its connect."""
    own = getattr(transport, "connect_timeout", None)
    if isinstance(own, int | float) and timeout < own:
        transport.connect_timeout = timeout  # type: ignore[attr-defined]
    return transport


async def connect_within(transport: Transport, timeout: float) -> None:
    """Connect ``transport`` (:func:`limit_connect`); a connect that ran out of time says so."""
    limit_connect(transport, timeout)
    t0 = time.monotonic()
    try:
        await transport.connect()
    except TransportError as e:
        if time.monotonic() - t0 >= 0.9 * timeout:  # the broker took the connection, never answered
            raise TransportError(f"{e} (no answer within {timeout:g} s)") from None
        raise


class HostClient:
    def __init__(
        self,
        transport: Transport,
        *,
        fleet: str = "default",
        timeout: float = 2.0,
        retries: int = 2,
        auth: FrameAuth | None = None,
    ) -> None:
        """``auth``: the fleet's frame authentication: commands are sealed, answers verified (an
        answer that does not verify is dropped and counted in ``auth_refused``)."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if retries < 0:
            raise ValueError("retries must not be negative")
        self.transport = transport
        transport.answerable = answerable  # a serial binding's requests own a tag until answered
        self.fleet = fleet
        self.timeout = timeout
        self.retries = retries
        self._seq = 0
        self._next_id = int.from_bytes(os.urandom(4), "little")
        self._pending: dict[tuple[int, int], asyncio.Future[Response]] = {}
        self._rx: asyncio.Task[None] | None = None
        self._down: BaseException | None = None
        self._stalled = False  # a publish was given up on unacknowledged
        self.rejected = 0  # frames that failed to decode
        self.unmatched = 0  # answers to nobody's request (late or duplicate)
        self.unacknowledged = 0  # requests given up on: the broker acknowledged no send in time
        self.unanswered = 0  # requests given up on: sent, acknowledged, no answer in time
        self.auth = auth
        self.sender = int.from_bytes(os.urandom(4), "little")  # this client's session
        self.auth_refused = 0
        self.resent_on_birth = 0  # requests sent again when their node published a new BIRTH
        self.away = 0  # requests given up on: the node reconnecting, not back within the deadline
        self._watches: dict[int, _Watch] = {}

    async def __aenter__(self) -> HostClient:
        await connect_within(self.transport, self.timeout)
        try:
            await self.transport.subscribe(Subscription(self.fleet, None, Channel.RSP))
        except BaseException:
            await self.transport.close()
            raise
        self._rx = asyncio.create_task(self._receive(), name="host-rx")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._rx is not None:
            await cancel_and_wait([self._rx])
            self._rx = None
        if self._stalled:
            # a clean close would wait on the stalled link for the broker's goodbye; a host has no
            # will, so dropping the connection loses nothing
            await self.transport.abort()
        else:
            await self.transport.close()

    async def _receive(self) -> None:
        try:
            while True:
                d = await self.transport.receive()
                self._on_delivery(d)
        except TransportError as e:
            self._down = e
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(HostError(f"link lost: {e}"))

    def _on_delivery(self, d: Delivery) -> None:
        if self.auth is not None:
            try:
                self.auth.open(d.payload, time.time_ns(), window=not d.retained)
            except AuthError:
                self.auth_refused += 1
                return
        try:
            msg = decode(d.payload)
        except FrameError:
            self.rejected += 1
            return
        if isinstance(msg, (Birth, Death)):
            w = self._watches.get(d.address.node)
            if w is not None and d.address.channel is Channel.STATE:
                w.state = msg
                if isinstance(msg, Birth) and not d.retained:
                    w.born.set()
            return
        if not isinstance(msg, Response):
            return
        fut = self._pending.get((msg.node_id, msg.request_id))
        if fut is None or fut.done():
            self.unmatched += 1
            return
        fut.set_result(msg)

    def _new_request_id(self) -> int:
        rid = self._next_id
        self._next_id = (rid + 1) & U32
        return rid

    def _frame(self, node: int, request_id: int, op: Op, args: Any, retry: bool) -> bytes:
        seq = self._seq
        self._seq = (seq + 1) & U32
        flags = FrameFlags.HOST | (FrameFlags.RETRY if retry else 0)
        frame = encode(
            Command(
                node_id=node,
                seq=seq,
                timestamp_ns=time.time_ns(),
                flags=int(flags),
                request_id=request_id,
                op=op,
                args=args,
            )
        )
        return frame if self.auth is None else self.auth.seal(frame, self.sender)

    async def request(
        self, node: int, op: Op, args: Any = None, *, timeout: float | None = None, check: bool = True
    ) -> Response:
        """Send one command and return its response; NodeError for a status other than OK
        (unless ``check`` is false), RequestTimeout when no answer comes."""
        if self._down is not None:
            raise HostError(f"link lost: {self._down}")
        total = self.timeout if timeout is None else timeout
        attempts = self.retries + 1
        rid = self._new_request_id()
        key = (node, rid)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Response] = loop.create_future()
        self._pending[key] = fut
        addr = Address(self.fleet, node, Channel.CMD)
        start = loop.time()
        deadline = start + total
        watch: _Watch | None = None
        watched = self.retries == 0  # a request with no retry sends once: nothing to watch for
        sends = 0
        try:
            for attempt in range(attempts):
                # a retry at a slice's end, unless the node is known to be away: then its BIRTH
                away = watch.away(loop.time(), STATE_GRACE_S) if watch is not None else None
                if away is None:
                    await self._send_attempt(addr, node, rid, op, args, sends > 0, fut, deadline, total)
                    sends += 1
                slice_end = deadline if attempt == attempts - 1 else start + (attempt + 1) * total / attempts
                while not fut.done() and loop.time() < slice_end:
                    if not watched and loop.time() >= start + WATCH_AFTER_S:
                        watched = True
                        watch = await self._watch(node, deadline)
                        continue
                    until = slice_end if watched else min(slice_end, start + WATCH_AFTER_S)
                    waits: list[asyncio.Future[Any]] = [asyncio.shield(fut)]
                    if watch is not None:
                        waits.append(asyncio.ensure_future(watch.born.wait()))
                    try:
                        await asyncio.wait(
                            waits, timeout=max(0.0, until - loop.time()), return_when=asyncio.FIRST_COMPLETED
                        )
                    finally:
                        for w in waits[1:]:
                            w.cancel()
                    if watch is not None and watch.born.is_set() and not fut.done():
                        # the node is back (a live BIRTH): it is subscribed again, send at once
                        watch.born.clear()
                        self.resent_on_birth += 1
                        await self._send_attempt(addr, node, rid, op, args, sends > 0, fut, deadline, total)
                        sends += 1
                if fut.done():
                    resp = fut.result()
                    break
            else:
                away = watch.away(loop.time(), STATE_GRACE_S) if watch is not None else None
                if away is not None:
                    self.away += 1
                    raise NodeAway(node, op, total, away)
                self.unanswered += 1
                raise RequestTimeout(node, op, total)
        finally:
            self._pending.pop(key, None)
        if check and resp.status != Status.OK:
            raise NodeError(node, resp)
        return resp

    async def _send_attempt(
        self,
        addr: Address,
        node: int,
        rid: int,
        op: Op,
        args: Any,
        retry: bool,
        fut: asyncio.Future[Response],
        deadline: float,
        total: float,
    ) -> None:
        frame = self._frame(node, rid, op, args, retry)
        if not await self._send(addr, frame, fut, deadline):
            self.unacknowledged += 1
            self._stalled = True
            raise BrokerTimeout(node, op, total)

    async def _watch(self, node: int, deadline: float) -> _Watch | None:
        """Follow ``node``'s state from now on (one subscription per node and client); None when
        the broker does not acknowledge the subscription before ``deadline``."""
        w = self._watches.get(node)
        if w is not None:
            return w
        loop = asyncio.get_running_loop()
        w = _Watch(loop.time())
        self._watches[node] = w  # before the subscription: its retained frame may come at once
        try:
            await asyncio.wait_for(
                self.transport.subscribe(Subscription(self.fleet, node, Channel.STATE)),
                max(0.0, deadline - loop.time()),
            )
        except (TimeoutError, TransportError):
            del self._watches[node]
            return None
        w.since = loop.time()
        return w

    async def _send(self, addr: Address, frame: bytes, answered: asyncio.Future[Response], deadline: float) -> bool:
        """Publish ``frame`` and wait for the broker's acknowledgement (or the answer, which
        implies it) until ``deadline``; False when neither came. HostError when the link fails."""
        sent = asyncio.ensure_future(self.transport.publish(addr, frame, reliable=True))
        try:
            remaining = deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait(
                (sent, answered), timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not sent.done():
                sent.cancel()  # paho may still send it: the node runs a request id once
                await asyncio.gather(sent, return_exceptions=True)
        if sent in done and not sent.cancelled():
            e = sent.exception()
            if isinstance(e, TransportError):
                raise HostError(f"cannot send to node {addr.node}: {e}") from None
            if e is not None:
                raise e
        return bool(done)

    async def ping(self, node: int, *, timeout: float | None = None) -> float:
        """Round-trip time of a PING, seconds."""
        t0 = time.perf_counter()
        await self.request(node, Op.PING, timeout=timeout)
        return time.perf_counter() - t0

    async def status(self, node: int, *, timeout: float | None = None) -> StatusResult:
        resp = await self.request(node, Op.STATUS, timeout=timeout)
        assert isinstance(resp.data, StatusResult)
        return resp.data


async def watch_states(transport: Transport, fleet: str) -> AsyncIterator[tuple[Address, Birth | Death]]:
    """Births and deaths of a fleet's nodes (retained ones first) on a connected transport."""
    await transport.subscribe(Subscription(fleet, None, Channel.STATE))
    while True:
        d = await transport.receive()
        try:
            msg = decode(d.payload)
        except FrameError:
            continue
        if isinstance(msg, (Birth, Death)):
            yield d.address, msg
