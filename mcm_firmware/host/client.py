"""The host side: send commands to nodes and wait for their answers, over any transport.

Each request carries a request id unique to this client. When no answer comes within a slice of
the timeout, the same request (same id, the RETRY flag set) is sent again; the node executes a
request id once and answers repeats from its cache, so a retry never runs a command twice.
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


class NodeError(HostError):
    """The node answered with a status other than OK."""

    def __init__(self, node: int, response: Response) -> None:
        status = response.status.name if isinstance(response.status, Status) else response.status
        super().__init__(f"node {node} answered {status}: {response.message or '(no message)'}")
        self.node = node
        self.response = response


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
        self.fleet = fleet
        self.timeout = timeout
        self.retries = retries
        self._seq = 0
        self._next_id = int.from_bytes(os.urandom(4), "little")
        self._pending: dict[tuple[int, int], asyncio.Future[Response]] = {}
        self._rx: asyncio.Task[None] | None = None
        self._down: BaseException | None = None
        self.rejected = 0  # frames that failed to decode
        self.unmatched = 0  # answers to nobody's request (late or duplicate)
        self.auth = auth
        self.sender = int.from_bytes(os.urandom(4), "little")  # this client's session
        self.auth_refused = 0

    async def __aenter__(self) -> HostClient:
        await self.transport.connect()
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
        fut: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        addr = Address(self.fleet, node, Channel.CMD)
        try:
            for attempt in range(attempts):
                try:
                    await self.transport.publish(addr, self._frame(node, rid, op, args, attempt > 0), reliable=True)
                except TransportError as e:
                    raise HostError(f"cannot send to node {node}: {e}") from None
                try:
                    resp = await asyncio.wait_for(asyncio.shield(fut), total / attempts)
                    break
                except TimeoutError:
                    continue
            else:
                raise RequestTimeout(node, op, total)
        finally:
            self._pending.pop(key, None)
        if check and resp.status != Status.OK:
            raise NodeError(node, resp)
        return resp

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
