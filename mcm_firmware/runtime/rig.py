"""Hardware in the loop: a rig on a serial port provides some of a node's sensors and actuators.

The rig line protocol (ASCII, one message a line, ``\\n`` ends it; docs/hil.md):

=====================  =========  ==================================================
line                   direction  meaning
=====================  =========  ==================================================
``R <ch>``             node→rig   read sensor channel ``ch``
``W <ch> <raw>``       node→rig   set actuator channel ``ch`` to ``raw``
``V <ch> <raw>``       rig→node   the reading of sensor channel ``ch``
``A <ch> <raw>``       rig→node   actuator channel ``ch`` is at ``raw``
``E <ch> <text>``      rig→node   channel ``ch`` cannot answer (``text`` says why)
=====================  =========  ==================================================

In ``controller`` mode (plant in the loop: the rig runs the controller under test):

=====================  =========  ==================================================
``S <ch> <raw>``       node→rig   the node's reading of sensor channel ``ch``
``C <ch> <raw>``       rig→node   the rig's command for actuator channel ``ch``
=====================  =========  ==================================================

The rig's commands drive the plant's valves (above the node's own valve PIDs and failsafe, below
an operator's manual setting); a rig that stops answering hands the valves back to the node's own
controller (RIG_LOST).

Every ``1 / poll_hz`` the driver reads every sensor channel and writes every actuator channel
(``io``), or sends every sensor reading (``controller``).
A reading becomes the node's sensor value (``raw * scale + offset``) stamped with the time it
arrived; a rig that stops answering leaves those readings to age, so the coolant zones go to
failsafe once they are older than the profile's sensor timeout, and the driver reports RIG_LOST
after the rig profile's ``timeout_s`` (RIG_RESTORED when it answers again). Lines that do not
parse are dropped and counted (``rejected``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math

from ..clock import Deadlines
from ..profile.rig import RigProfile
from ..protocol import EventCode, Severity
from ..tasks import cancel_and_wait
from ..transport import TransportError
from ..transport.serial import LinePort, parse_port_url
from .node import Node

log = logging.getLogger(__name__)


class RigDriver:
    def __init__(self, node: Node, rig: RigProfile, port: str) -> None:
        shard = node.shard
        rig.check_against(shard.s_die.value.shape[1], shard.s_hbm.value.shape[1], shard.s_flow.value.shape[1])
        self.node = node
        self.rig = rig
        spec = parse_port_url(port)
        if "baud=" not in port and spec.url != "pty":
            spec = dataclasses.replace(spec, baud=rig.baud)  # a device runs at the rig's rate
        self.port = LinePort(spec)
        self._banks = {"die": shard.s_die, "hbm": shard.s_hbm, "flow": shard.s_flow}
        self._sensors = {c.channel: c for c in rig.sensor}
        self._actuators = {c.channel: c for c in rig.actuator}
        self.answers = 0
        self.rejected = 0
        self.errors = 0
        self.lost = False
        self.controller = rig.mode == "controller"
        self.last_answer = -math.inf
        self.positions: dict[int, float] = {}  # actuator channel -> what the rig said it is at
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def path(self) -> str | None:
        return self.port.path

    async def start(self) -> None:
        await self.port.open()
        row = self.node.row
        if not self.controller:
            for c in self.rig.sensor:
                self._banks[c.kind].attach_external(row, c.index)
        nid = self.node.node_id
        self._tasks = [
            asyncio.create_task(self._poll(), name=f"rig-{nid}-poll"),
            asyncio.create_task(self._receive(), name=f"rig-{nid}-rx"),
        ]

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        row = self.node.row
        if self.controller:
            self._release_actuators()
        else:
            for c in self.rig.sensor:
                self._banks[c.kind].detach_external(row, c.index)
        await self.port.close()

    def _release_actuators(self) -> None:
        for c in self.rig.actuator:
            self.node.shard.cool.external[self.node.row, c.index] = math.nan

    async def _poll(self) -> None:
        clock = self.node.clock
        deadlines = Deadlines(clock, 1.0 / self.rig.poll_hz)
        cool = self.node.shard.cool
        row = self.node.row
        while True:
            await deadlines.wait()
            if self.controller:
                for ch, sc in self._sensors.items():
                    value = float(self._banks[sc.kind].value[row, sc.index])
                    if math.isfinite(value):  # a failed sensor is not sent: the rig sees it stale
                        self.port.write_line(f"S {ch} {(value - sc.offset) / sc.scale:.6g}")
            else:
                for ch in self._sensors:
                    self.port.write_line(f"R {ch}")
                for ch, c in self._actuators.items():
                    value = float(cool.valve_cmd[row, c.index])
                    self.port.write_line(f"W {ch} {(value - c.offset) / c.scale:.6g}")
            silent = clock.now() - self.last_answer
            if not self.lost and silent > self.rig.timeout_s:
                self.lost = True
                if self.controller:
                    self._release_actuators()  # the node's own controller takes the valves back
                self.node.emit_event(
                    Severity.ERROR,
                    EventCode.RIG_LOST,
                    value=silent if math.isfinite(silent) else -1.0,
                    text=f"rig {self.rig.name} at {self.path or self.port.spec.url} does not answer",
                )

    async def _receive(self) -> None:
        try:
            while True:
                self._on_line(await self.port.readline())
        except TransportError as e:
            log.warning("node %s: %s", self.node.node_id, e)

    def _on_line(self, line: bytes) -> None:
        parts = line.split()
        try:
            kind, ch = parts[0], int(parts[1])
            if self.controller:
                if kind != b"C" or ch not in self._actuators or len(parts) != 3:
                    raise ValueError
                c = self._actuators[ch]
                value = float(parts[2]) * c.scale + c.offset
                if not math.isfinite(value):
                    raise ValueError
                self.node.shard.cool.external[self.node.row, c.index] = min(100.0, max(0.0, value))
            elif kind == b"V" and ch in self._sensors and len(parts) == 3:
                sc = self._sensors[ch]
                raw = float(parts[2])
                if not math.isfinite(raw):
                    raise ValueError
                self._banks[sc.kind].set_external(
                    self.node.row, sc.index, raw * sc.scale + sc.offset, self.node.clock.now()
                )
            elif kind == b"A" and ch in self._actuators and len(parts) == 3:
                c = self._actuators[ch]
                self.positions[ch] = float(parts[2]) * c.scale + c.offset
            elif kind == b"E" and (ch in self._sensors or ch in self._actuators):
                self.errors += 1
            else:
                raise ValueError
        except (ValueError, IndexError):
            self.rejected += 1
            return
        self.answers += 1
        self.last_answer = self.node.clock.now()
        if self.lost:
            self.lost = False
            self.node.emit_event(Severity.INFO, EventCode.RIG_RESTORED, text=f"rig {self.rig.name} answers again")
