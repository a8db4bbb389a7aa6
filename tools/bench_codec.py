#!/usr/bin/env python3
"""Telemetry codec cost per frame against a hand-written ``struct`` floor (the part ``mcm-emu bench
--parts codec`` also runs).

    python tools/bench_codec.py [--seconds S]

The floor packs the same fields of the same colossus-mcm frame with one ``struct`` call and a CRC:
the least any Python encoder of this layout can cost.
"""

from __future__ import annotations

import argparse

from mcm_firmware.cli.bench_parts import codec_costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="time per measurement (default 1)")
    args = ap.parse_args()
    out = codec_costs(args.seconds)
    print(f"telemetry frame: {out['frame_bytes']} bytes (colossus-mcm: 4 dice, 8 HBM stacks, 2 pumps, 4 valves)")
    for name, us in out["us_per_frame"].items():
        print(f"  {name:<64} {us:9.3f} us/frame")
    print(
        f"encode {out['encode_vs_floor']}x, decode {out['decode_vs_floor']}x, "
        f"fleet path {out['fleet_path_vs_floor']}x the struct floor"
    )


if __name__ == "__main__":
    main()
