"""``mcm-emu rig-sim``: a bench rig simulator on the far end of a rig's serial port.

It speaks the rig line protocol (docs/hil.md) and stands in for a bench (a thermocouple on a
cold-plate mock-up, a flow meter and a proportional valve behind a microcontroller) in the tests
and on a desk, and shows the protocol by example:

    node -> rig   R <ch>          read sensor channel ch
                  W <ch> <raw>    set actuator channel ch
    rig -> node   V <ch> <raw>    a reading
                  A <ch> <raw>    where the actuator now is
                  E <ch> <text>   the channel cannot answer

A rig profile in ``controller`` mode (plant in the loop) makes it a controller board instead:

    node -> rig   S <ch> <raw>    the node's reading of sensor channel ch
    rig -> node   C <ch> <raw>    a command for actuator channel ch

answered with a proportional valve controller (valve % = 20 + 8 × (T − 55 °C), clamped) that
drives the actuator whose index matches the sensor's (valve:i for die:i).

For an ``io`` rig the physics is deliberately simple: the valve slews at 50 %/s towards its
command, the flow is proportional to the valve, and the thermocouple relaxes (time constant 5 s)
towards a temperature that falls as the flow rises, with a little noise. Raw values use the rig
profile's scaling (``raw = (value - offset) / scale``).

    mcm-emu rig-sim /dev/pts/7 --rig bench-tc-valve [--seconds S] [--seed N]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, BadInput, Failure, bounded

SUMMARY = "simulate a bench rig on the far end of a rig's serial port (the rig line protocol)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "rig-sim",
        help=SUMMARY,
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="The port is the path `mcm-emu run --rig NODE=RIG` prints (rig: node N (RIG) at /dev/pts/M).",
    )
    add_arguments(p)
    p.set_defaults(func=cmd_rig_sim)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "port", metavar="PORT", help="the rig's serial port: a device path, socket://HOST:PORT or rfc2217://HOST:PORT"
    )
    p.add_argument("--rig", default="bench-tc-valve", help="rig profile name or path (default: bench-tc-valve)")
    p.add_argument(
        "--baud",
        type=bounded(int, 300, 10_000_000, "--baud"),
        default=None,
        help="line rate of a device port (default: the rig profile's baud)",
    )
    p.add_argument(
        "--seconds",
        type=bounded(float, 0.0, 1e9, "--seconds"),
        default=None,
        help="exit after this long (default: run until the port closes or Ctrl-C)",
    )
    p.add_argument("--seed", type=bounded(int, 0, 2**32 - 1, "--seed"), default=0, help="noise seed (default: 0)")


class Bench:
    """The simulated bench: a valve slewing to its command, the flow it lets through and a
    thermocouple on a plate that the flow cools."""

    def __init__(self, seed: int) -> None:
        self.valve = 50.0  # %
        self.command = 50.0
        self.temp_c = 45.0
        self.rng = random.Random(seed)
        self.t = time.monotonic()

    def step(self) -> None:
        now = time.monotonic()
        dt, self.t = now - self.t, now
        self.valve += max(-50 * dt, min(50 * dt, self.command - self.valve))
        target = 75.0 - 0.35 * self.valve  # more flow, cooler plate
        self.temp_c += (target - self.temp_c) * min(1.0, dt / 5.0)

    def flow_lpm(self) -> float:
        return 0.5 * self.valve / 100

    def read(self, target: str) -> float:
        kind = target.split(":")[0]
        if kind in ("die", "hbm"):
            return self.temp_c + self.rng.gauss(0, 0.1)
        return self.flow_lpm()


def controller_answer(kind: str, ch: int, parts: list[str], sensors: dict, actuators: dict) -> str | None:
    """A proportional valve controller: a temperature in, a valve command out."""
    if kind != "S" or ch not in sensors or len(parts) != 3:
        return f"E {ch} no such channel" if kind == "S" else None
    c = sensors[ch]
    try:
        temp = float(parts[2]) * c.scale + c.offset
    except ValueError:
        return f"E {ch} bad value"
    for a_ch, a in actuators.items():
        if a.index == c.index:
            pct = max(0.0, min(100.0, 20.0 + 8.0 * (temp - 55.0)))
            return f"C {a_ch} {(pct - a.offset) / a.scale:.2f}"
    return None


class RigSim:
    """The rig's side of the line protocol for one rig profile."""

    def __init__(self, rig: Any, seed: int) -> None:
        self.rig = rig
        self.sensors = {c.channel: c for c in rig.sensor}
        self.actuators = {c.channel: c for c in rig.actuator}
        self.bench = Bench(seed)

    def answer(self, line: bytes) -> str | None:
        """The answer to one line from the node, or None (a rig ignores what it does not understand)."""
        self.bench.step()
        parts = line.decode("ascii", "replace").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return None
        kind, ch = parts[0], int(parts[1])
        if self.rig.mode == "controller":
            return controller_answer(kind, ch, parts, self.sensors, self.actuators)
        if kind == "R" and ch in self.sensors:
            c = self.sensors[ch]
            return f"V {ch} {(self.bench.read(c.target) - c.offset) / c.scale:.1f}"
        if kind == "W" and ch in self.actuators and len(parts) == 3:
            c = self.actuators[ch]
            try:
                self.bench.command = max(0.0, min(100.0, float(parts[2]) * c.scale + c.offset))
            except ValueError:
                return f"E {ch} bad value"
            return f"A {ch} {(self.bench.valve - c.offset) / c.scale:.1f}"
        return f"E {ch} no such channel"


async def cmd_rig_sim(args: argparse.Namespace) -> int:
    from ..profile import ProfileError
    from ..profile.rig import load_rig_profile
    from ..transport import TransportError
    from ..transport.serial import LinePort, parse_port_url

    try:
        rig = load_rig_profile(args.rig)
    except ProfileError as e:
        raise BadInput(f"--rig: {e}") from None
    try:
        spec = parse_port_url(args.port)
    except ValueError as e:
        raise BadInput(str(e)) from None
    if spec.url == "pty":
        raise BadInput("rig-sim needs the rig's port (the path mcm-emu run --rig prints), not a new pty")
    if "baud=" not in args.port:
        spec = dataclasses.replace(spec, baud=args.baud or rig.baud)
    port = LinePort(spec)
    try:
        await port.open()
    except TransportError as e:
        raise Failure(str(e)) from None
    sim = RigSim(rig, args.seed)
    answered = 0
    print(f"rig-sim: {rig.name} on {args.port}", flush=True)
    try:
        async with asyncio.timeout(args.seconds):
            while True:
                out = sim.answer(await port.readline())
                if out is not None:
                    port.write_line(out)
                    answered += 1
    except TimeoutError:
        pass
    except TransportError as e:
        print(f"rig-sim: {e}", flush=True)
    finally:
        await port.close()
        print(f"rig-sim: answered {answered} requests", flush=True)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``mcm-emu rig-sim`` on its own (tools/rig_sim.py): the same arguments, exit codes and errors."""
    from . import _Parser  # usage errors in one line, as mcm-emu's

    p = _Parser(prog="mcm-emu rig-sim", description=SUMMARY)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return asyncio.run(cmd_rig_sim(args))
    except BadInput as e:
        print(f"mcm-emu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as e:
        print(f"mcm-emu: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_OK
