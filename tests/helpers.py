"""Helpers shared by the tests: a fleet on a loopback bus, a recorder of published frames."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from mcm_firmware.clock import LoopClock
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
