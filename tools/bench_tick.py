#!/usr/bin/env python3
"""What one control tick of a shard costs, by shard size: the plant, the sensors and every
controller of ``Shard.tick()`` for N modules at once, in process (no link).

    python tools/bench_tick.py [--profile NAME] [--sizes 256,1024,2048,4096,8192] [--ticks K]

The cost per module and tick, times the profile's tick rate, is the CPU a module's control needs
each second: the figure the capacity model of docs/performance.md starts from.
"""

from __future__ import annotations

import argparse
import time

import mcm_firmware.runtime.fleet as fleet_mod
from mcm_firmware.clock import RealClock
from mcm_firmware.profile import load_profile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="colossus-mcm", help="profile of the modules (default colossus-mcm)")
    ap.add_argument("--sizes", default="256,1024,2048,4096,8192", help="shard sizes to time")
    ap.add_argument("--ticks", type=int, default=40, help="ticks timed per size (default 40)")
    args = ap.parse_args()
    profile = load_profile(args.profile)
    hz = profile.rates.tick_hz
    print(f"{profile.name}: control ticks at {hz:g} Hz")
    for size in (int(s) for s in args.sizes.split(",")):
        fleet_mod.MAX_SHARD = max(size, fleet_mod.MAX_SHARD)  # one shard of exactly this size
        fl = fleet_mod.Fleet(
            members=[(i, profile) for i in range(size)],
            fleet="b",
            transport_factory=lambda cid: None,
            clock=RealClock(),
        )
        (shard,) = fl.shards.values()
        for _ in range(5):
            shard.tick()
        t0 = time.process_time()
        for _ in range(args.ticks):
            shard.tick()
        per_tick = (time.process_time() - t0) / args.ticks
        per_module = per_tick / size
        print(
            f"  shard of {size:>6,}: {per_tick * 1e3:7.2f} ms a tick, {per_module * 1e6:5.2f} us a module, "
            f"{per_module * hz * 100:6.3f} % of a core per module -> {1 / (per_module * hz):,.0f} modules a core"
        )


if __name__ == "__main__":
    main()
