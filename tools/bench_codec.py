#!/usr/bin/env python3
"""Telemetry codec cost per frame: this codec against a hand-written ``struct`` baseline and
against construct (compiled and uncompiled), plus the vectorised node-side encode.

    python tools/bench_codec.py [--seconds S]

The baseline packs the same fields of the same 261-byte colossus-mcm frame with one ``struct``
call and a CRC: the floor for any Python encoder of this layout.
"""

from __future__ import annotations

import argparse
import struct
import time
import zlib

import numpy as np

from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import MsgType, Telemetry, codec, decode, encode, frames
from mcm_firmware.protocol.messages import to_container
from mcm_firmware.runtime.shard import Shard


def per_call(fn, seconds: float) -> float:
    """Median over 5 runs of the mean time of one call, in µs."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > seconds / 10:
            break
        n *= 2
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(runs)[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    profile = load_profile("colossus-mcm")
    shard = Shard(profile, 1000, seed=1)
    for _ in range(40):
        shard.tick()
    rows = np.arange(1000)
    rec = shard.records(rows)
    payload = rec[0].tobytes()
    msg = Telemetry(node_id=1, seq=1, timestamp_ns=1, snapshot=codec.snapshot_from_payload(payload))
    frame = encode(msg)
    snap = msg.snapshot
    container = {"snapshot": to_container(snap)}
    counts = (len(snap.dies), len(snap.hbm), len(snap.pumps), len(snap.valves))
    fmt = codec._tlm_struct(counts)
    flat = list(fmt.unpack(payload))
    head = struct.Struct("<2sBBBIIQH")

    def baseline_build() -> bytes:
        body = fmt.pack(*flat)
        h = head.pack(b"MC", 1, 3, 0, 1, 1, 1, len(body))
        return h + body + struct.pack("<I", zlib.crc32(body, zlib.crc32(h)))

    def baseline_parse() -> tuple:
        h = head.unpack_from(frame)
        zlib.crc32(frame[:-4])
        return h, fmt.unpack_from(frame, 23)

    compiled = frames.COMPILED_BODIES[MsgType.TELEMETRY]
    results = {
        "struct baseline: build": per_call(baseline_build, args.seconds),
        "struct baseline: parse": per_call(baseline_parse, args.seconds),
        "mcm codec: encode (typed message -> frame)": per_call(lambda: encode(msg), args.seconds),
        "mcm codec: decode (frame -> typed message)": per_call(lambda: decode(frame), args.seconds),
        "mcm node path: frame_bytes(record bytes)": per_call(
            lambda: codec.frame_bytes(3, 1, 1, 1, 0, rec[0].tobytes()), args.seconds
        ),
        "construct compiled: build body": per_call(lambda: compiled.build(container), args.seconds),
        "construct compiled: parse body": per_call(lambda: compiled.parse(payload), args.seconds),
        "construct uncompiled: parse whole frame (RawCopy+Checksum)": per_call(
            lambda: frames.Frame.parse(frame), args.seconds
        ),
    }
    vec = per_call(lambda: shard.records(rows), args.seconds)
    print(f"telemetry frame: {len(frame)} bytes (colossus-mcm: 4 dice, 8 HBM stacks, 2 pumps, 4 valves)")
    for name, us in results.items():
        print(f"  {name:<60} {us:9.2f} us/frame")
    print(f"  {'shard.records() for 1000 nodes (vectorised), per node':<60} {vec / 1000:9.2f} us/frame")


if __name__ == "__main__":
    main()
