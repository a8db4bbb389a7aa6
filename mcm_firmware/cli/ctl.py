"""``mcm-emu ctl``: a command to a node (or a selection of nodes), the reply shown."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from typing import Any

from .common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    NO_FLEET,
    NOT_BACK,
    NOT_IN_FLEET,
    OFFLINE,
    STALE,
    U32_MAX,
    BadInput,
    Failure,
    Standing,
    bounded,
    client_options,
    emit,
    frame_auth,
    id_ranges,
    link_url,
    read_standing,
    why_silent,
)


def add_parser(sub: Any) -> None:
    from ..host.commands import COMMANDS

    ctl = sub.add_parser(
        "ctl",
        help="send a command to a node, or to several",
        description=(
            "Send a command to a node and print its reply. NODE is a node id, or a selection: "
            "ids and ranges separated by commas (0-7, 1,3,5-9) or 'all' (every node online in the "
            "fleet, from the broker's retained state); a selection prints one result a node and "
            "exits 1 when any failed. Commands: " + "; ".join(f"{c.usage} ({c.help})" for c in COMMANDS.values())
        ),
    )
    ctl_options(ctl)
    ctl.add_argument("node", type=node_selection, metavar="NODE", help="a node id, ids and ranges (0-7,9), or all")
    ctl.add_argument("op", choices=sorted(COMMANDS), metavar="COMMAND", help="one of: " + ", ".join(sorted(COMMANDS)))
    ctl.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the command's arguments (see above)")
    ctl.set_defaults(func=cmd_ctl, prepare=options_after)


def ctl_options(p: argparse.ArgumentParser) -> None:
    client_options(p)
    p.add_argument(
        "--timeout", type=bounded(float, 0.01, 3600, "--timeout"), default=2.0, help="seconds to wait (default 2)"
    )
    p.add_argument(
        "--retries", type=bounded(int, 0, 100, "--retries"), default=2, help="sends again before giving up (default 2)"
    )


MAX_SELECTION = 100_000
PARALLEL = 64
"""Requests of a selection in flight at once."""


def node_selection(text: str) -> list[int] | None:
    """``3``, ``0-7``, ``1,3,5-9`` -> the ids in order; ``all`` -> None (resolved from the broker)."""
    if text == "all":
        return None
    ids: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"NODE {text!r}: give a node id, ids and ranges separated by commas (0-7,9), or all"
            ) from None
        if not sep and not 0 <= a <= U32_MAX:
            raise argparse.ArgumentTypeError(f"NODE must be within 0..{U32_MAX}, got {part}")
        if not (0 <= a <= U32_MAX and 0 <= b <= U32_MAX) or b < a:
            raise argparse.ArgumentTypeError(f"NODE {text!r}: {part!r} is not a range of node ids 0..{U32_MAX}")
        if len(ids) + b - a + 1 > MAX_SELECTION:
            raise argparse.ArgumentTypeError(f"NODE {text!r}: more than {MAX_SELECTION:,} nodes")
        ids.extend(range(a, b + 1))
    return list(dict.fromkeys(ids))


def options_after(args: argparse.Namespace) -> None:
    """Options given after NODE COMMAND (``ctl 3 status --json -v``), as tools such as git and
    kubectl take them: moved out of the command's arguments into ``args`` (run before the log is
    set up, so that a late ``-v`` counts)."""
    late = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    ctl_options(late)
    late.add_argument("-v", "--verbose", action="count", default=0)
    late.add_argument("-q", "--quiet", action="store_true")
    for action in late._actions:
        if action.dest not in ("verbose", "quiet"):
            action.default = argparse.SUPPRESS
    if "--json" in args.args:  # an error in the other late options is a JSON object too
        args.json = True
    try:
        found, rest = late.parse_known_args(list(args.args))
    except argparse.ArgumentError as e:
        raise BadInput(f"ctl: {e}") from None
    args.verbose += found.verbose
    args.quiet = args.quiet or found.quiet
    for key, value in vars(found).items():
        if key not in ("verbose", "quiet"):
            setattr(args, key, value)
    args.args = rest


async def cmd_ctl(args: argparse.Namespace) -> int:
    from ..host.commands import COMMANDS, UsageError
    from ..transport import TransportError

    spec = COMMANDS[args.op]
    try:
        cmd_args = spec.parse(list(args.args))
    except UsageError as e:
        raise BadInput(f"ctl {spec.name}: {e}") from None
    selected = args.node
    if selected is None and args.serial:
        raise BadInput("NODE all reads the fleet from a broker: on a serial line name the nodes")
    frame_auth(args, args.fleet)  # a key file that cannot be used: said before anything is read
    one = selected is not None and len(selected) == 1
    standing = None
    stale: list[int] = []
    if not args.serial:  # what the broker's retained state says, before anything is sent
        try:
            standing = await read_standing(args, selected[0] if one and selected else None)
        except TransportError as e:
            raise Failure(str(e)) from None
        if not standing.state.nodes and not (selected is not None and standing.empty_broker):
            hint = None
            if standing.empty_broker:
                hint = (
                    "the broker holds no state at all, just started or restarted? name the nodes (0-7) to wait for them"
                )
            raise Failure(standing.no_fleet(), hint=hint, status=NO_FLEET)
    if selected is None:  # all: the nodes the broker says are online, and that were heard live
        assert standing is not None
        selected = [n for n in sorted(standing.state.nodes) if standing.state.online(n)]
        if not selected:
            raise Failure(
                f"no node of fleet {args.fleet!r} is online on this broker (nodes seen, offline: "
                f"{id_ranges(sorted(standing.state.nodes))})"
            )
        stale = await _not_heard(args, selected)
    if one:
        args.node = selected[0]
        blocked = standing.blocked(args.node) if standing is not None else None
        if standing is not None and blocked is not None:
            raise Failure(standing.why(args.node) or "", status=blocked[0])
        return await _one(args, spec, cmd_args, standing)
    return await _many(args, spec, cmd_args, selected, standing, stale)


async def _not_heard(args: argparse.Namespace, nodes: list[int]) -> list[int]:
    """Which of ``nodes`` (online by their retained BIRTH) were not heard live within a listen of
    at most LISTEN_S (over as soon as every one was heard): a BIRTH the broker kept of a node that
    is gone (a persistent broker restores them) is no proof of life."""
    from ..host.discovery import LISTEN_S, listen
    from ..transport import TransportError, transport_factory

    try:
        live = await listen(
            transport_factory(link_url(args)),
            args.fleet,
            LISTEN_S,
            wanted=nodes,
            connect_timeout=args.timeout,
            auth=frame_auth(args, args.fleet),
        )
    except TransportError as e:
        raise Failure(str(e)) from None
    heard = live.heard()
    return [n for n in nodes if n not in heard]


async def _one(args: argparse.Namespace, spec: Any, cmd_args: Any, standing: Standing | None) -> int:
    from ..host.client import HostClient, HostError, NodeError, RequestTimeout
    from ..protocol import Status
    from ..transport import TransportError, transport_factory

    transport = transport_factory(link_url(args))(f"mcm-ctl-h{uuid.uuid4().hex[:10]}")
    try:
        async with HostClient(
            transport, fleet=args.fleet, timeout=args.timeout, retries=args.retries, auth=frame_auth(args, args.fleet)
        ) as host:
            t0 = time.perf_counter()
            try:
                resp = await host.request(args.node, spec.op, cmd_args)
            except NodeError as e:
                code = (
                    EXIT_USAGE
                    if e.response.status in (Status.BAD_ARGUMENT, Status.UNKNOWN_OP, Status.BAD_REQUEST)
                    else EXIT_FAILURE
                )
                out = {
                    "node": args.node,
                    "ok": False,
                    "status": e.response.status.name,
                    "message": e.response.message,
                    "error": str(e),
                    "exit_code": code,
                }
                if args.json:
                    print(json.dumps(out), flush=True)
                print(f"mcm-emu: error: {e}", file=sys.stderr, flush=True)
                return code
            rtt = time.perf_counter() - t0
            more = None
            if spec.follow is not None:
                try:
                    more = await host.request(args.node, spec.follow)
                except NodeError:
                    more = None  # firmware without the operation: the view goes without it
    except RequestTimeout as e:
        why = await why_silent(args, args.node) if not args.serial else None
        if why is not None and standing is not None and standing.reconnecting(args.node) and " not back " in why:
            raise Failure(why, status=NOT_BACK) from None  # waited for, as its fleet was coming back
        raise Failure(f"{e}: {why}" if why else str(e), status="NO_REPLY") from None
    except (TransportError, HostError) as e:
        raise Failure(str(e)) from None
    out = spec.show(args.node, resp, rtt, more)
    emit(args, out, text=spec.text(spec.name, out))
    return EXIT_OK


async def _many(
    args: argparse.Namespace,
    spec: Any,
    cmd_args: Any,
    nodes: list[int],
    standing: Standing | None,
    stale: list[int] | None = None,
) -> int:
    """The command to every node of a selection, at most :data:`PARALLEL` at once: one result a
    node (text: the node's own line, or why it failed; JSON: one object with every result). A node
    the retained state says will not answer (not in the fleet, offline), or that ``all`` did not
    hear live (``stale``: its BIRTH kept by the broker), is not sent it: its result says why at
    once. A node waited for while its fleet was coming back and not back in time is NOT_BACK."""
    import asyncio

    from ..host.client import BrokerTimeout, HostClient, HostError, NodeError, RequestTimeout
    from ..host.discovery import LISTEN_S
    from ..transport import TransportError, transport_factory

    transport = transport_factory(link_url(args))(f"mcm-ctl-h{uuid.uuid4().hex[:10]}")
    gate = asyncio.Semaphore(PARALLEL)

    silent = set(stale or ())

    async def one(host: HostClient, node: int) -> dict[str, Any]:
        if node in silent:
            why = f"stale: its BIRTH is kept by the broker, but nothing of it was heard within {LISTEN_S:g} s"
            return {"node": node, "ok": False, "status": STALE, "message": why}
        blocked = standing.blocked(node) if standing is not None else None
        if blocked is not None:
            return {"node": node, "ok": False, "status": blocked[0], "message": blocked[1]}
        async with gate:
            t0 = time.perf_counter()
            try:
                resp = await host.request(node, spec.op, cmd_args)
                more = None
                if spec.follow is not None:
                    with contextlib.suppress(NodeError):
                        more = await host.request(node, spec.follow)
            except NodeError as e:
                return {"node": node, "ok": False, "status": e.response.status.name, "message": e.response.message}
            except BrokerTimeout as e:  # the broker took no command of it in time
                return {"node": node, "ok": False, "status": "NO_ACK", "message": str(e)}
            except RequestTimeout as e:
                if standing is not None and standing.reconnecting(node):  # said once all are done
                    return {"node": node, "ok": False, "status": NOT_BACK, "message": str(e)}
                return {"node": node, "ok": False, "status": "NO_REPLY", "message": str(e)}
            except HostError as e:  # no answer, or the link went
                return {"node": node, "ok": False, "status": "NO_REPLY", "message": str(e)}
            out = spec.show(node, resp, time.perf_counter() - t0, more)
            return {"ok": True, **out}

    try:
        async with HostClient(
            transport, fleet=args.fleet, timeout=args.timeout, retries=args.retries, auth=frame_auth(args, args.fleet)
        ) as host:
            results = await asyncio.gather(*(one(host, n) for n in nodes))
    except TransportError as e:
        raise Failure(str(e)) from None
    waited = [r for r in results if not r["ok"] and r["status"] == NOT_BACK]
    if waited:  # what the broker holds now: the nodes back meanwhile
        with contextlib.suppress(TransportError):
            now = await read_standing(args)
            for r in waited:
                r["message"] = now.why(r["node"]) or (
                    now.not_back(r["node"], args.timeout)
                    if r["node"] not in now.state.nodes
                    else f"online by its BIRTH but did not answer: {r['message']}"
                )
    failed = [r for r in results if not r["ok"]]
    if args.json:
        print(
            json.dumps({"command": spec.name, "nodes": len(results), "failed": len(failed), "results": results}),
            flush=True,
        )
    else:
        for r in results:
            if r["ok"]:
                print(spec.text(spec.name, {k: v for k, v in r.items() if k != "ok"}), flush=True)
            elif r["status"] in (NOT_IN_FLEET, OFFLINE, NOT_BACK, STALE):
                print(f"node {r['node']}: {r['message']}", flush=True)
            else:
                print(f"node {r['node']}: {r['status']}: {r['message'] or '(no message)'}", flush=True)
        print(f"{spec.name}: {len(results) - len(failed)} of {len(results)} nodes ok", flush=True)
    return EXIT_FAILURE if failed else EXIT_OK
