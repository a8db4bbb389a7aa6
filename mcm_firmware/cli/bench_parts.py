"""The parts of ``mcm-emu bench`` beside the fleet runs: the broker's own ceiling, the codec's cost
per frame against the ``struct`` floor, and the virtual-time speed-up of the 24-hour soak."""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from .common import Failure


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the broker's ceiling --------------------------------------------------------------------------


async def start_counter(url: str, fleet: str, seconds: float) -> asyncio.subprocess.Process:
    """The independent telemetry counter (``python -m mcm_firmware.host.tlm_count``) for
    ``seconds``, returned once it has subscribed; its JSON result is its last line of stdout."""
    counter = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mcm_firmware.host.tlm_count", "--broker", url, "--fleet", fleet),
        *("--duration", str(seconds)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert counter.stdout is not None and counter.stderr is not None
    while b"subscribed" not in (line := await asyncio.wait_for(counter.stderr.readline(), 30)):
        if not line:
            raise Failure("bench: the counter ended before it subscribed")
    return counter


def link_of(url: str) -> str:
    """How a client of ``url`` reaches the broker: ``tls`` or ``tcp``."""
    from ..transport.security import security_of

    return "tls" if security_of(url).tls else "tcp"


async def broker_ceiling(
    url: str, seconds: float, broker_pid: int | None, nodes: int = 10_000, *, host_url: str | None = None
) -> dict[str, Any]:
    """What the broker delivers to one subscriber while one connection offers telemetry frames as
    fast as the socket takes them (``python -m mcm_firmware.host.flood``), counted by the same
    independent subscriber as the fleet runs. The flood connects to ``url`` (where a run would),
    the subscriber to ``host_url`` (``url`` when None)."""
    fleet = "ceiling"
    counter = await start_counter(host_url or url, fleet, seconds + 2)
    flood = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcm_firmware.host.flood",
        "--broker",
        url,
        "--fleet",
        fleet,
        "--nodes",
        str(nodes),
        "--duration",
        str(seconds),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    cpu0 = {"flood": 0.0, "broker": _cpu_seconds(broker_pid) if broker_pid else 0.0}
    out, err = await flood.communicate()
    if flood.returncode != 0:
        raise Failure(f"bench: the flood publisher failed: {err.decode(errors='replace').strip()[-300:]}")
    written = json.loads(out.decode().strip().splitlines()[-1])
    broker_cpu = (_cpu_seconds(broker_pid) - cpu0["broker"]) / written["seconds"] * 100 if broker_pid else None
    counted = json.loads((await counter.communicate())[0].decode().strip().splitlines()[-1])
    per_s = [x for x in counted["per_second"] if x > 0][1:-1] or counted["per_second"]  # whole seconds only
    return {
        "written_per_s": round(written["packets"] / written["seconds"]),
        "received_per_s": round(sum(per_s) / len(per_s)),
        "received": counted["received"],
        "damaged": counted["damaged"],
        "broker_cpu_pct": round(broker_cpu, 1) if broker_cpu is not None else None,
        "link": link_of(url),
    }


# --- the codec -------------------------------------------------------------------------------------


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Median over 5 runs of the mean time of one call, in µs."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 > seconds / 10:
            break
        n *= 2
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return sorted(runs)[2]


def codec_costs(seconds: float = 1.0) -> dict[str, Any]:
    """µs per colossus-mcm telemetry frame: a hand-written ``struct`` build and parse (the floor of
    any Python codec of this layout), this codec's paths, construct's, and the vectorised block
    paths the fleet uses (records and whole frames for 1,000 nodes at once, per frame)."""
    import numpy as np

    from ..kernel import stream
    from ..profile import load_profile
    from ..protocol import MsgType, Telemetry, codec, decode, encode, frames
    from ..protocol.messages import to_container
    from ..runtime.shard import Shard

    shard = Shard(load_profile("colossus-mcm"), 1000, seed=1)
    for _ in range(40):
        shard.tick()
    rows = np.arange(1000)
    ids = rows.astype(np.uint32)
    rec = shard.records(rows)
    payload = rec[0].tobytes()
    msg = Telemetry(node_id=1, seq=1, timestamp_ns=1, snapshot=codec.snapshot_from_payload(payload))
    frame = encode(msg)
    snap = msg.snapshot
    container = {"snapshot": to_container(snap)}
    fmt = codec._tlm_struct((len(snap.dies), len(snap.hbm), len(snap.pumps), len(snap.valves)))
    flat = list(fmt.unpack(payload))
    head = struct.Struct("<2sBBBIIQH")

    def floor_build() -> bytes:
        body = fmt.pack(*flat)
        h = head.pack(b"MC", 1, 3, 0, 1, 1, 1, len(body))
        return h + body + struct.pack("<I", zlib.crc32(body, zlib.crc32(h)))

    def floor_parse() -> tuple[Any, ...]:
        h = head.unpack_from(frame)
        zlib.crc32(frame[:-4])
        return h, fmt.unpack_from(frame, 23)

    compiled = frames.COMPILED_BODIES[MsgType.TELEMETRY]
    batched = Shard(load_profile("colossus-mcm-batched"), 1000, seed=1)
    for _ in range(40):
        batched.tick()
    crc = stream.compiled_crc_rows()  # what a run's fleet path uses (None: zlib a frame at a time)
    us = {
        "struct floor: build": per_call(floor_build, seconds),
        "struct floor: parse": per_call(floor_parse, seconds),
        "codec: encode (typed message -> frame)": per_call(lambda: encode(msg), seconds),
        "codec: decode (frame -> typed message)": per_call(lambda: decode(frame), seconds),
        "node path: frame_bytes(record bytes)": per_call(lambda: codec.frame_bytes(3, 1, 1, 1, 0, payload), seconds),
        "construct compiled: build body": per_call(lambda: compiled.build(container), seconds),
        "construct compiled: parse body": per_call(lambda: compiled.parse(payload), seconds),
        "fleet path: records + frame_block, 1,000 nodes, per frame": per_call(
            lambda: codec.frame_block(MsgType.TELEMETRY, ids, shard.seq, 1, shard.records(rows), crc), seconds
        )
        / 1000,
        "fleet path: SAMPLES records + frame_block, 1,000 nodes, per frame": per_call(
            lambda: codec.frame_block(MsgType.SAMPLES, ids, batched.seq, 1, batched.telemetry_records(rows)[1], crc),
            seconds,
        )
        / 1000,
        "fleet path: records + frame_block, zlib CRC a frame at a time": per_call(
            lambda: codec.frame_block(MsgType.TELEMETRY, ids, shard.seq, 1, shard.records(rows)), seconds
        )
        / 1000,
    }
    floor = us["struct floor: build"]
    return {
        "frame_bytes": len(frame),
        "us_per_frame": {k: round(v, 3) for k, v in us.items()},
        "encode_vs_floor": round(us["codec: encode (typed message -> frame)"] / floor, 2),
        "decode_vs_floor": round(us["codec: decode (frame -> typed message)"] / us["struct floor: parse"], 2),
        "fleet_path_vs_floor": round(us["fleet path: records + frame_block, 1,000 nodes, per frame"] / floor, 2),
    }


# --- virtual time ------------------------------------------------------------------------------------


def _soak_text(own_rates: bool, duration_s: int | None) -> str:
    text = resources.files("mcm_firmware.scenario").joinpath("library/soak-24h.toml").read_text()
    if own_rates:  # the profile's own rates: the scenario's coarse [rates] table goes
        text = re.sub(r"(?ms)^\[rates\]\n.*?(?=^\[)", "", text)
    if duration_s is not None:
        text = re.sub(r"(?m)^duration_s = .*$", f"duration_s = {duration_s}", text)
    return text


async def soak_speedup(*, own_rates: bool = False, duration_s: int | None = None) -> dict[str, Any]:
    """Wall time of ``scenario run`` of the 24-hour soak (or of its first ``duration_s`` seconds),
    at its coarse rates or at the profile's own, and the speed-up over real time."""
    with tempfile.TemporaryDirectory(prefix="mcm-soak-") as tmp:
        path = Path(tmp) / "soak.toml"
        path.write_text(_soak_text(own_rates, duration_s))
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcm_firmware",
            "scenario",
            "run",
            str(path),
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate()
        process_s = time.monotonic() - t0
    if proc.returncode not in (0, 1):  # 1: an expectation failed (a shortened soak may miss some)
        raise Failure(f"bench: the soak run failed (exit {proc.returncode}): {err.decode(errors='replace')[-300:]}")
    summary = json.loads(out.decode())
    return {
        "rates": "profile" if own_rates else "scenario",
        "simulated_s": summary["simulated_s"],
        "wall_s": summary["wall_s"],  # the scenario's own measurement: start of the fleet to the end
        "process_s": round(process_s, 2),  # with interpreter start-up and the expectations
        "speedup": summary["speedup"],
        "frames": summary["frames"],
        "expectations_passed": summary["passed"],
    }
