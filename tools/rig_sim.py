#!/usr/bin/env python3
"""A bench rig simulator: the far end of a rig's serial port, speaking the rig line protocol.

It stands in for a bench (a thermocouple on a cold-plate mock-up, a flow meter and a proportional
valve behind a microcontroller) in the tests, and shows the protocol by example:

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

For an ``io`` rig the physics is deliberately simple: the valve slews at 50 %/s towards its command, the flow is
proportional to the valve, and the thermocouple relaxes (time constant 5 s) towards a
temperature that falls as the flow rises, with a little noise. Raw values use the rig profile's
scaling (``raw = (value - offset) / scale``).

    python tools/rig_sim.py /dev/pts/7 --rig bench-tc-valve [--seconds S] [--silent-after S]
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import serial

from mcm_firmware.profile import ProfileError
from mcm_firmware.profile.rig import load_rig_profile


class Bench:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("port", help="the rig's serial port (the path mcm-emu run --rig prints)")
    ap.add_argument("--rig", default="bench-tc-valve", help="rig profile name or path")
    ap.add_argument("--baud", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None, help="exit after this long")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        rig = load_rig_profile(args.rig)
    except ProfileError as e:
        print(f"rig_sim: {e}", file=sys.stderr)
        return 2
    sensors = {c.channel: c for c in rig.sensor}
    actuators = {c.channel: c for c in rig.actuator}
    try:
        port = serial.serial_for_url(args.port, baudrate=args.baud or rig.baud, timeout=0.05)
    except serial.SerialException as e:
        print(f"rig_sim: cannot open {args.port}: {e}", file=sys.stderr)
        return 1
    bench = Bench(args.seed)
    print(f"rig_sim: {rig.name} on {args.port}", flush=True)
    end = None if args.seconds is None else time.monotonic() + args.seconds
    buf = b""
    answered = 0
    while end is None or time.monotonic() < end:
        buf += port.read(max(1, port.in_waiting))
        bench.step()
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            parts = line.decode("ascii", "replace").split()
            if len(parts) < 2 or not parts[1].isdigit():
                continue  # not for us: a rig ignores what it does not understand
            kind, ch = parts[0], int(parts[1])
            if rig.mode == "controller":
                out = controller_answer(kind, ch, parts, sensors, actuators)
                if out is None:
                    continue
            elif kind == "R" and ch in sensors:
                c = sensors[ch]
                out = f"V {ch} {(bench.read(c.target) - c.offset) / c.scale:.1f}"
            elif kind == "W" and ch in actuators and len(parts) == 3:
                c = actuators[ch]
                try:
                    bench.command = max(0.0, min(100.0, float(parts[2]) * c.scale + c.offset))
                except ValueError:
                    out = f"E {ch} bad value"
                else:
                    out = f"A {ch} {(bench.valve - c.offset) / c.scale:.1f}"
            else:
                out = f"E {ch} no such channel"
            port.write(out.encode("ascii") + b"\n")
            answered += 1
    print(f"rig_sim: answered {answered} requests", flush=True)
    port.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
