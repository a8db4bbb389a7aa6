"""``mcm-emu nodes``: the nodes of a fleet, from the broker's retained state."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from typing import Any

from .common import EXIT_FAILURE, EXIT_OK, BadInput, Failure, bounded, client_options, link_url


def add_parser(sub: Any) -> None:
    nodes = sub.add_parser(
        "nodes",
        help="list the nodes of a fleet (from the broker's retained state)",
        description="List every node the broker holds a state for: its id, whether it is online (its BIRTH "
        "in force; a carried node also needs its carrier's link up; and heard live: a frame of its own "
        "that the broker did not keep, within --listen), profile, firmware, boot count, "
        "bdseq, since when and for how long (from its BIRTH); for an offline node the reason of its DEATH. A retained BIRTH is what the "
        "broker remembers (a persistent broker restores the BIRTHs of nodes long gone): a node whose BIRTH is "
        "kept but that was not heard is shown stale. --ping asks those nodes for an answer too, and "
        "exits 1 when one does not answer.",
    )
    client_options(nodes)
    nodes.add_argument(
        "--listen",
        type=bounded(float, 0, 3600, "--listen"),
        default=3.0,
        metavar="S",
        help="seconds to listen for the nodes' live frames, over once every node was heard; 0: do not "
        "listen, the retained state alone (default %(default)s: three periods of the slowest shipped "
        "telemetry rate, 1 Hz)",
    )
    nodes.add_argument(
        "--ping",
        action="store_true",
        help="also PING every node online by the broker's state (stale ones too: one that answers is shown "
        "online) and show the round trip; exit 1 when one does not answer",
    )
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
    from ..host.discovery import listen, read_state
    from ..protocol import Birth, Death, DeathReason, Op
    from ..transport import TransportError, transport_factory
    from .common import frame_auth

    if args.serial:
        raise BadInput("nodes reads the retained state of a broker: give --broker, not --serial")
    factory = transport_factory(link_url(args))
    auth = frame_auth(args, args.fleet)
    try:
        state = await read_state(factory, args.fleet, settle=0.3, auth=auth)
        kept = [n for n in sorted(state.nodes) if state.online(n)]
        heard = (
            (await listen(factory, args.fleet, args.listen, wanted=kept, auth=auth)).heard()
            if args.listen > 0
            else None
        )
    except TransportError as e:
        raise Failure(str(e)) from None
    rows: list[dict[str, Any]] = []
    for node in sorted(state.nodes):
        msg = state.nodes[node]
        row: dict[str, Any] = {"node": node, "online": state.online(node), "since": _since(msg.timestamp_ns)}
        if heard is not None:
            row["live"] = node in heard
            if row["online"] and not row["live"]:  # the broker's memory only
                row["online"], row["stale"] = False, True
                row["why"] = f"stale: its BIRTH is kept by the broker, nothing of it heard within {args.listen:g} s"
        if isinstance(msg, Birth) and row["online"]:
            row["up_s"] = max(0.0, round(time.time() - msg.timestamp_ns / 1e9, 1))  # since this BIRTH
        if isinstance(msg, Birth):
            row.update(
                profile=msg.profile, firmware=msg.firmware, boot_count=msg.boot_count, bdseq=msg.bdseq & 0x7FFFFFFF
            )
            row["carried"] = bool(msg.bdseq & 0x80000000)
            if not row["online"] and not row.get("stale"):
                row["why"] = "its carrier's link is down"
        elif isinstance(msg, Death):
            row.update(boot_count=msg.boot_count, bdseq=msg.bdseq & 0x7FFFFFFF, why=f"DEATH: {msg.reason.name}")
            if msg.reason is DeathReason.CONNECTION_LOST:  # the Last Will: stamped when the node connected
                row["since"] = None
                row["why"] += f" (its Last Will, registered when it connected at {_since(msg.timestamp_ns)})"
        rows.append(row)
    if args.ping and rows:  # every node online by the broker's state, stale ones too: an answer is life
        online = [r for r in rows if r["online"] or r.get("stale")]
        try:
            async with HostClient(
                factory(f"mcm-nodes-h{uuid.uuid4().hex[:8]}"),
                fleet=args.fleet,
                timeout=args.timeout,
                retries=0,
                auth=auth,
            ) as host:

                async def ping(r: dict[str, Any]) -> None:
                    t0 = time.perf_counter()
                    try:
                        await host.request(r["node"], Op.PING)
                        r["ping_ms"] = round((time.perf_counter() - t0) * 1e3, 2)
                        if r.pop("stale", False):  # silent, but it answers: live after all
                            r["online"] = r["live"] = True
                            del r["why"]
                    except HostError:
                        r["ping_ms"] = None

                await asyncio.gather(*(ping(r) for r in online))
        except TransportError as e:
            raise Failure(str(e)) from None
    # --ping: a node online by the broker's state (shown online, or stale) that does not answer is a failure
    code = EXIT_FAILURE if any(r.get("ping_ms", 0) is None for r in rows) else EXIT_OK
    if args.json:
        print(json.dumps({"fleet": args.fleet, "nodes": rows}), flush=True)
        return code
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
            f"{r['node']:>6}  {'online' if r['online'] else 'stale' if r.get('stale') else 'offline':7}  {r.get('profile', '-'):20}  "
            f"{r.get('firmware', '-'):8}  {r.get('boot_count', '-'):>4}  {r.get('bdseq', '-'):>5}  {r['since'] or '-':20}"
            f"  {_up(r.get('up_s')):>8}"
        )
        if args.ping:
            ms = r.get("ping_ms")
            line += f"  {'-' if 'ping_ms' not in r else ('no reply' if ms is None else f'{ms:.1f} ms'):>8}"
        notes = [x for x in (r.get("why"), "carried" if r.get("carried") else None) if x]
        print(line + ("  " + "; ".join(notes) if notes else ""), flush=True)
    up = sum(r["online"] for r in rows)
    stale = sum(bool(r.get("stale")) for r in rows)
    counts = f"{up} online, " + (f"{stale} stale, " if stale else "") + f"{len(rows) - up - stale} offline"
    print(f"{len(rows)} nodes in fleet {args.fleet!r}: {counts}", flush=True)
    return code
