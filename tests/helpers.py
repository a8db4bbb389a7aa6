"""Helpers shared by the tests: a fleet on a loopback bus, a recorder of published frames."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from mcm_firmware.clock import LoopClock, run_virtual
from mcm_firmware.host.client import HostClient
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import FrameError, Message, decode
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.transport import Address, Channel, Delivery, Subscription
from mcm_firmware.transport.loopback import LoopbackBus, LoopbackTransport


@dataclass
class Recorder:
    """Subscribes to a whole fleet and keeps every frame, decoded where possible."""

    bus: LoopbackBus
    fleet: str = "t"
    frames: list[tuple[Address, Message | FrameError, bool]] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _tr: LoopbackTransport | None = None

    async def start(self) -> Recorder:
        self._tr = LoopbackTransport(self.bus, client_id="recorder")
        await self._tr.connect()
        await self._tr.subscribe(Subscription(self.fleet))
        self._task = asyncio.create_task(self._run(), name="test-recorder")
        return self

    async def _run(self) -> None:
        assert self._tr is not None
        while True:
            d: Delivery = await self._tr.receive()
            try:
                msg: Message | FrameError = decode(d.payload)
            except FrameError as e:
                msg = e
            self.frames.append((d.address, msg, d.retained))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._tr:
            await self._tr.close()

    def of(self, node: int | None = None, channel: Channel | None = None) -> list[Message]:
        return [
            m
            for a, m, _ in self.frames
            if (node is None or a.node == node)
            and (channel is None or a.channel == channel)
            and not isinstance(m, FrameError)
        ]


def loopback_fleet(
    bus: LoopbackBus, nodes: int = 2, *, seed: int = 1, fleet: str = "t", profile: str = "colossus-mcm"
) -> Fleet:
    return Fleet.uniform(
        nodes=nodes,
        profile=load_profile(profile),
        fleet=fleet,
        transport_factory=lambda cid: LoopbackTransport(bus, client_id=cid),
        clock=LoopClock(),
        seed=seed,
    )


def on_fleet(
    fn: Callable[..., Coroutine[Any, Any, Any]],
    *,
    nodes: int = 2,
    settle: float = 0.0,
    host_timeout: float = 2.0,
    seed: int = 1,
    profile: str = "colossus-mcm",
) -> Any:
    """Run ``fn`` in virtual time against a fleet of ``nodes`` (of ``profile``) on a fresh loopback bus (fleet "t",
    ids 0..), and return what it returns. ``fn`` names what it needs among its parameters:
    ``bus``, ``fleet``, ``rec`` (a :class:`Recorder` of every frame, started before the fleet) and
    ``host`` (a connected :class:`HostClient`). It starts ``settle`` virtual seconds after the
    fleet (and the host); the fleet is stopped afterwards whatever happens."""
    wants = set(inspect.signature(fn).parameters)

    async def main() -> Any:
        bus = LoopbackBus()
        rec = await Recorder(bus).start()
        fleet = loopback_fleet(bus, nodes, seed=seed, profile=profile)
        await fleet.start()
        given: dict[str, Any] = {"bus": bus, "fleet": fleet, "rec": rec}
        try:
            if "host" not in wants:
                await asyncio.sleep(settle)
                return await fn(**{k: v for k, v in given.items() if k in wants})
            async with HostClient(LoopbackTransport(bus), fleet="t", timeout=host_timeout) as host:
                given["host"] = host
                await asyncio.sleep(settle)
                return await fn(**{k: v for k, v in given.items() if k in wants})
        finally:
            await fleet.stop()
            await rec.stop()

    return run_virtual(main)


def read_terminal(primary: int) -> bytes:
    """Everything a child wrote to a pseudo-terminal, until it closed it (EIO); closes ``primary``."""
    import os

    chunks = []
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(primary)
    return b"".join(chunks)
