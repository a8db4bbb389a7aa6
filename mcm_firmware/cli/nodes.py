"""``mcm-emu nodes``: the nodes of a fleet, from the broker's retained state."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

from .common import EXIT_OK, BadInput, Failure, client_options, link_url


def add_parser(sub: Any) -> None:
    nodes = sub.add_parser(
        "nodes",
        help="list the nodes of a fleet (from the broker's retained state)",
        description="List every node the broker holds a state for: its id, whether it is online (its BIRTH "
        "in force; a carried node also needs its carrier's link up), profile, firmware, boot count, "
        "bdseq, since when and for how long (from its BIRTH); for an offline node the reason of its DEATH. A retained BIRTH is what the "
        "broker remembers: --ping asks each online node for an answer too.",
    )
    client_options(nodes)
    nodes.add_argument("--ping", action="store_true", help="also PING every online node and show the round trip")
    nodes.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each PING (default 1)")
    nodes.set_defaults(func=cmd_nodes)


def _since(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _up(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def cmd_nodes(args: argparse.Namespace) -> int:
    import asyncio
    import uuid

    from ..host.client import HostClient, HostError
    from ..host.discovery import read_state
    from ..protocol import Birth, Death, DeathReason, Op
    from ..transport import TransportError, transport_factory
    from .common import frame_auth

    if args.serial:
        raise BadInput("nodes reads the retained state of a broker: give --broker, not --serial")
    factory = transport_factory(link_url(args))
    try:
        state = await read_state(factory, args.fleet, settle=0.3)
    except TransportError as e:
        raise Failure(str(e)) from None
    rows: list[dict[str, Any]] = []
    for node in sorted(state.nodes):
        msg = state.nodes[node]
        row: dict[str, Any] = {"node": node, "online": state.online(node), "since": _since(msg.timestamp_ns)}
        if isinstance(msg, Birth) and row["online"]:
            row["up_s"] = max(0.0, round(time.time() - msg.timestamp_ns / 1e9, 1))  # since this BIRTH
        if isinstance(msg, Birth):
            row.update(
                profile=msg.profile, firmware=msg.firmware, boot_count=msg.boot_count, bdseq=msg.bdseq & 0x7FFFFFFF
            )
            row["carried"] = bool(msg.bdseq & 0x80000000)
            if not row["online"]:
                row["why"] = "its carrier's link is down"
        elif isinstance(msg, Death):
            row.update(boot_count=msg.boot_count, bdseq=msg.bdseq & 0x7FFFFFFF, why=f"DEATH: {msg.reason.name}")
            if msg.reason is DeathReason.CONNECTION_LOST:  # the Last Will: stamped when the node connected
                row["since"] = None
                row["why"] += f" (its Last Will, registered when it connected at {_since(msg.timestamp_ns)})"
        rows.append(row)
    if args.ping and rows:
        online = [r for r in rows if r["online"]]
        try:
            async with HostClient(
                factory(f"mcm-nodes-h{uuid.uuid4().hex[:8]}"),
                fleet=args.fleet,
                timeout=args.timeout,
                retries=0,
                auth=frame_auth(args, args.fleet),
            ) as host:

                async def ping(r: dict[str, Any]) -> None:
                    t0 = time.perf_counter()
                    try:
                        await host.request(r["node"], Op.PING)
                        r["ping_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
                    except HostError:
                        r["ping_ms"] = None

                await asyncio.gather(*(ping(r) for r in online))
        except TransportError as e:
            raise Failure(str(e)) from None
    if args.json:
        print(json.dumps({"fleet": args.fleet, "nodes": rows}), flush=True)
        return EXIT_OK
    if not rows:
        print(f"no node of fleet {args.fleet!r} on this broker", flush=True)
        return EXIT_OK
    head = (
        f"{'NODE':>6}  {'STATE':7}  {'PROFILE':20}  {'FIRMWARE':8}  {'BOOT':>4}  {'BDSEQ':>5}  {'SINCE':20}  {'UP':>8}"
    )
    if args.ping:
        head += f"  {'PING':>8}"
    print(head + "  NOTE", flush=True)
    for r in rows:
        line = (
            f"{r['node']:>6}  {'online' if r['online'] else 'offline':7}  {r.get('profile', '-'):20}  "
            f"{r.get('firmware', '-'):8}  {r.get('boot_count', '-'):>4}  {r.get('bdseq', '-'):>5}  {r['since'] or '-':20}"
            f"  {_up(r.get('up_s')):>8}"
        )
        if args.ping:
            ms = r.get("ping_ms")
            line += f"  {'-' if 'ping_ms' not in r else ('no reply' if ms is None else f'{ms:.1f} ms'):>8}"
        notes = [x for x in (r.get("why"), "carried" if r.get("carried") else None) if x]
        print(line + ("  " + "; ".join(notes) if notes else ""), flush=True)
    up = sum(r["online"] for r in rows)
    print(f"{len(rows)} nodes in fleet {args.fleet!r}: {up} online, {len(rows) - up} offline", flush=True)
    return EXIT_OK
