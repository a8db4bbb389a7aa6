#!/usr/bin/env python3
"""The Redfish gateway in front of a fleet of N modules: request latencies and what the gateway
keeps up with.

    python tools/bench_redfish.py [--nodes N ...] [--seconds S] [--requests K] [--json]

For each N: a Mosquitto of its own on a free loopback port (the bench's ``Broker``), ``mcm-emu run
--nodes N`` and ``mcm-emu redfish`` in front of it, each a process of its own; once every module is
served and has answered the STATUS the gateway asks it for, a warm-up, then

1. ``S`` seconds with no request: the gateway's CPU % (``/proc``) and its telemetry frames received
   per second against those due (N x 10 for ``colossus-mcm``), frames missed (gaps in the nodes'
   sequence numbers), decoded on arrival, rejected, and the oldest a frame was on arrival (its
   counts read by SIGUSR1);
2. an HTTP client in a process of its own (this file with ``--client``: ``requests``, one
   keep-alive connection, requests one after another) times ``K`` requests of each kind, to
   random modules: the service root, the Chassis collection (N members), one Chassis, its
   Sensors collection, one Sensor, and a PATCH of the power-limit Control (the node's answer and
   its STATUS read again, a round trip over the broker); p50 / p99 / max ms, with the gateway's
   CPU % over the client's run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcm_firmware.cli.bench import Broker, _cpu_seconds, _drain, _free_port, _lines_until

FLEET = "rfbench"
USER, PASSWORD = "bench", "bench-secret-1"
KINDS = ("service root", "Chassis collection", "Chassis", "Sensors collection", "Sensor", "PATCH PowerLimit")


# --- the client (a process of its own) -----------------------------------------------------------


def client(url: str, nodes: int, count: int, seed: int) -> dict[str, Any]:
    import requests

    rng = random.Random(seed)
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    out: dict[str, Any] = {}
    errors: dict[str, int] = {}
    first: dict[str, str] = {}  # the message of each kind of error, the first time
    for kind in KINDS:
        times: list[float] = []
        n = max(5, count // 10) if kind == "Chassis collection" else count
        for i in range(n):
            node = rng.randrange(nodes)
            base = f"{url}/redfish/v1/Chassis/{node}"
            t = time.perf_counter()
            if kind == "service root":
                r = s.get(f"{url}/redfish/v1/")
            elif kind == "Chassis collection":
                r = s.get(f"{url}/redfish/v1/Chassis")
            elif kind == "Chassis":
                r = s.get(base)
            elif kind == "Sensors collection":
                r = s.get(f"{base}/Sensors")
            elif kind == "Sensor":
                r = s.get(f"{base}/Sensors/Die0Temp")
            else:
                r = s.patch(f"{base}/Controls/PowerLimit", json={"SetPoint": 900 + (i % 2) * 100})
            _ = r.content
            times.append((time.perf_counter() - t) * 1000)
            if r.status_code != 200:
                key = f"{kind} {r.status_code}"
                if key not in errors:
                    info = r.json()["error"]["@Message.ExtendedInfo"][0]
                    first[key] = f"{info['MessageId']} {info.get('MessageArgs')}"
                errors[key] = errors.get(key, 0) + 1
        times.sort()
        out[kind] = {
            "n": len(times),
            "p50": times[len(times) // 2],
            "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "max": times[-1],
        }
    chassis = s.get(f"{url}/redfish/v1/Chassis").json()
    return {
        "latency_ms": out,
        "errors": errors,
        "error_messages": first,
        "chassis_members": chassis["Members@odata.count"],
    }


# --- the gateway's intake on one core, without a broker ------------------------------------------


def intake(nodes: int, rounds: int) -> dict[str, Any]:
    """CPU µs per telemetry frame the gateway takes in (its subscriber's parsing of PUBLISH packets
    included), fed ``rounds`` telemetry slots of ``nodes`` real ``colossus-mcm`` frames as one
    broker connection would deliver them, in 64 KiB reads: the service's path (payload kept raw,
    health's inputs compared) against decoding every frame (the path before), same frames, same
    run. The first slot (every module new: all decoded) is not timed."""
    import numpy as np

    from mcm_firmware.profile import load_profile
    from mcm_firmware.protocol import MsgType, decode
    from mcm_firmware.protocol.codec import frame_block
    from mcm_firmware.redfish.gateway import Gateway
    from mcm_firmware.runtime.shard import Shard
    from mcm_firmware.transport import mqtt_wire as wire
    from mcm_firmware.transport import transport_factory
    from mcm_firmware.transport.mqtt_fast import FastSubscriber

    shard = Shard(load_profile("colossus-mcm"), nodes, seed=1)
    for _ in range(40):
        shard.tick()
    rows = np.arange(nodes)
    ids = rows.astype(np.uint32)
    slots = []
    for _ in range(rounds + 1):
        shard.tick()
        block = frame_block(MsgType.TELEMETRY, ids, shard.seq, time.time_ns(), shard.records(rows))
        shard.seq += np.uint32(1)
        slots.append(
            b"".join(
                wire.publish_header(f"mcm/v1/{FLEET}/{i}/tlm".encode(), block.shape[1]) + block[i].tobytes()
                for i in range(nodes)
            )
        )

    async def feed(old: bool) -> float:
        gw = Gateway(transport_factory("loopback://bench"), FLEET)

        def decode_all(topic: bytes, payload: memoryview) -> None:
            gw._take(decode(payload), retained=False)

        sub = FastSubscriber(host="-", port=0, client_id="-", topic_filter="-",
                             on_publish=decode_all if old else gw._on_telemetry)  # fmt: skip
        cpu = 0.0
        for k, stream in enumerate(slots):
            t = time.process_time()
            for i in range(0, len(stream), 65536):
                sub.data_received(stream[i : i + 65536])
            if k:
                cpu += time.process_time() - t
        assert len(gw.view.nodes) == nodes and gw.rejected == 0 and gw.view.missed == 0
        return cpu / (rounds * nodes) * 1e6

    new_us = asyncio.run(feed(False))
    old_us = asyncio.run(feed(True))
    return {
        "nodes": nodes,
        "frames_timed": rounds * nodes,
        "us_per_frame": round(new_us, 2),
        "us_per_frame_decoding_every_frame": round(old_us, 2),
        "ratio": round(old_us / new_us, 1),
        "frames_per_s_one_core": round(1e6 / new_us),
        "frames_per_s_one_core_decoding_every_frame": round(1e6 / old_us),
    }


# --- the bench -----------------------------------------------------------------------------------


async def _stats(gw: asyncio.subprocess.Process, lines: list[str]) -> dict[str, Any]:
    before = sum(1 for ln in lines if ln.startswith('{"redfish"'))
    gw.send_signal(signal.SIGUSR1)
    for _ in range(1200):  # 30 s
        got = [ln for ln in lines if ln.startswith('{"redfish"')]
        if len(got) > before:
            return dict(json.loads(got[-1])["redfish"])
        await asyncio.sleep(0.025)
    raise RuntimeError("the gateway did not print its counts")


async def measure(n: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    broker = Broker(workdir)
    await broker.start()
    procs: list[asyncio.subprocess.Process] = []
    try:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        py = (sys.executable, "-m", "mcm_firmware")
        run = await asyncio.create_subprocess_exec(
            *py, "run", "--broker", broker.url, "--nodes", str(n), "--fleet", FLEET, "--profile", args.profile,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(run)
        assert run.stdout is not None
        seen: list[str] = []
        await _lines_until(run.stdout, "up: ", 600, seen)
        drain_run = asyncio.create_task(_drain(run.stdout, []))
        accounts = workdir / "accounts.toml"
        accounts.write_text(f'[accounts.{USER}]\nrole = "Operator"\npassword = "{PASSWORD}"\n')
        port = _free_port()
        gw = await asyncio.create_subprocess_exec(
            *py, "redfish", "--broker", broker.url, "--fleet", FLEET, "--port", str(port), "--accounts", str(accounts),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(gw)
        assert gw.stdout is not None
        gw_lines: list[str] = []
        await _lines_until(gw.stdout, "redfish: http://", 60, gw_lines)
        drain_gw = asyncio.create_task(_drain(gw.stdout, gw_lines))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while (st := await _stats(gw, gw_lines))["nodes_born"] < n or st["status_pending"]:
            # every module known, and the STATUS the gateway asks each for at its birth answered
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway knows {st['nodes']} of {n} modules after 120 s: {st}")
            await asyncio.sleep(0.5)
        ready_s = round(time.monotonic() - deadline + 120, 1)
        await asyncio.sleep(args.warmup)
        # 1. telemetry only
        s0, c0, t0 = await _stats(gw, gw_lines), _cpu_seconds(gw.pid), time.monotonic()
        await asyncio.sleep(args.seconds)
        s1, c1, t1 = await _stats(gw, gw_lines), _cpu_seconds(gw.pid), time.monotonic()
        wall = t1 - t0
        idle = {
            "seconds": round(wall, 2),
            "cpu_pct": round(100 * (c1 - c0) / wall, 1),
            "due_per_s": n * 10,
            "received_per_s": round((s1["telemetry_received"] - s0["telemetry_received"]) / wall),
            "missed_per_s": round((s1["missed"] - s0["missed"]) / wall, 1),
            "decoded_on_arrival_per_s": round(
                (s1["telemetry_decoded_on_arrival"] - s0["telemetry_decoded_on_arrival"]) / wall, 1
            ),
            "rejected": s1["rejected"] - s0["rejected"],
            "age_max_s": s1["telemetry_age_max_s"],
        }
        # 2. the client
        c0, t0 = _cpu_seconds(gw.pid), time.monotonic()
        s0 = await _stats(gw, gw_lines)
        cl = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", url, "--nodes", str(n), "--requests", str(args.requests),
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        procs.append(cl)
        out, _ = await cl.communicate()
        c1, t1 = _cpu_seconds(gw.pid), time.monotonic()
        s1 = await _stats(gw, gw_lines)
        result = json.loads(out.decode().strip().splitlines()[-1])
        busy_wall = t1 - t0
        busy = {
            "seconds": round(busy_wall, 2),
            "cpu_pct": round(100 * (c1 - c0) / busy_wall, 1),
            "received_per_s": round((s1["telemetry_received"] - s0["telemetry_received"]) / busy_wall),
            "missed_per_s": round((s1["missed"] - s0["missed"]) / busy_wall, 1),
            "age_max_s": s1["telemetry_age_max_s"],
        }
        for p in (gw, run):
            p.send_signal(signal.SIGTERM)
        for p in (gw, run):
            await asyncio.wait_for(p.wait(), 60)
        drain_run.cancel()
        drain_gw.cancel()
        return {"nodes": n, "profile": args.profile, "ready_s": ready_s, "status_failed": s1["status_failed"],
                "telemetry_only": idle, "with_client": busy, **result}  # fmt: skip
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()
        await broker.stop()


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| nodes | request | n | p50 ms | p99 ms | max ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for kind in KINDS:
            q = r["latency_ms"][kind]
            rows.append(f"| {r['nodes']:,} | {kind} | {q['n']} | {q['p50']:.1f} | {q['p99']:.1f} | {q['max']:.1f} |")
    rows += [
        "",
        "| nodes | telemetry due / received per s | missed per s | decoded on arrival per s | oldest on arrival s "
        "| gateway CPU % (telemetry only) | gateway CPU % (with the client) | errors |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        i, b = r["telemetry_only"], r["with_client"]
        rows.append(
            f"| {r['nodes']:,} | {i['due_per_s']:,} / {i['received_per_s']:,} | {i['missed_per_s']} "
            f"| {i['decoded_on_arrival_per_s']} | {max(i['age_max_s'], b['age_max_s']):.3f} | {i['cpu_pct']} "
            f"| {b['cpu_pct']} | {r['errors'] or 'none'} |"
        )
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[1000, 10_000], help="fleet sizes (default 1000 10000)")
    ap.add_argument("--profile", default="colossus-mcm", help="profile of the modules (default colossus-mcm)")
    ap.add_argument("--seconds", type=float, default=10.0, help="the telemetry-only window, s (default 10)")
    ap.add_argument("--warmup", type=float, default=5.0, help="after every module is served, s (default 5)")
    ap.add_argument("--requests", type=int, default=200, help="requests of each kind (default 200)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON, not tables")
    ap.add_argument("--intake", action="store_true", help="only the gateway's intake on one core, no broker")
    ap.add_argument("--rounds", type=int, default=5, help="telemetry slots fed to the intake (default 5)")
    ap.add_argument("--client", metavar="URL", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.intake:
        print(json.dumps([intake(n, args.rounds) for n in args.nodes], indent=1))
        return 0
    if args.client:
        print(json.dumps(client(args.client, args.nodes[0], args.requests, seed=1)), flush=True)
        return 0
    results = []
    for n in args.nodes:
        with tempfile.TemporaryDirectory(prefix="rfbench-") as tmp:
            results.append(asyncio.run(measure(n, args, Path(tmp))))
        print(json.dumps(results[-1]) if args.json else f"{n} nodes done", file=sys.stderr, flush=True)
    print(json.dumps(results, indent=1) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
