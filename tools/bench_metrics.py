#!/usr/bin/env python3
"""What one Prometheus scrape of a large fleet costs: series, bytes and CPU time of the exposition,
with the run's renderer and with prometheus-client's ``generate_latest`` for the same collector.

    python tools/bench_metrics.py [--nodes N] [--detail module|die] [--repeat K]

The fleet is built in process (no link; a few control ticks so that every value is set), as
``mcm-emu run --metrics-port`` holds it.
"""

from __future__ import annotations

import argparse
import gc
import time

from prometheus_client import CollectorRegistry, generate_latest

from mcm_firmware.clock import RealClock
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.runtime.metrics import FleetCollector, Renderer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=10_000, help="modules in the fleet (default 10000)")
    ap.add_argument("--detail", choices=["module", "die"], default="module", help="metrics detail (default module)")
    ap.add_argument("--profile", default="colossus-mcm", help="profile of the modules (default colossus-mcm)")
    ap.add_argument("--repeat", type=int, default=5, help="scrapes timed; the best is reported (default 5)")
    args = ap.parse_args()

    profile = load_profile(args.profile)
    fleet = Fleet(
        members=[(i, profile) for i in range(args.nodes)],
        fleet="bench",
        transport_factory=lambda cid: None,
        clock=RealClock(),
    )
    for shard in fleet.shards.values():
        for _ in range(3):
            shard.tick()
    collector = FleetCollector(fleet, detail=args.detail)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    renderer = Renderer(collector)
    gc.collect()
    gc.freeze()

    def best(fn) -> tuple[float, bytes]:
        times, body = [], b""
        for _ in range(args.repeat):
            t0 = time.process_time()
            body = fn()
            times.append(time.process_time() - t0)
        return min(times), body

    fast_s, body = best(renderer.render)
    lib_s, lib_body = best(lambda: generate_latest(registry))
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    print(f"{args.nodes:,} nodes of {profile.name}, detail {args.detail}: {series:,} series, {len(body) / 1e6:.1f} MB")
    print(f"  run's renderer:                 {fast_s * 1e3:8.1f} ms CPU a scrape (best of {args.repeat})")
    print(f"  prometheus-client generate_latest {lib_s * 1e3:6.1f} ms CPU a scrape ({lib_s / fast_s:.1f}x)")
    print(f"  same bytes: {body == lib_body} (the run's self-measurement may differ by the GC figure)")


if __name__ == "__main__":
    main()
