"""``mcm-emu ctl``: one command to one node, its reply shown."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from .common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    U32_MAX,
    BadInput,
    Failure,
    bounded,
    client_options,
    emit,
    frame_auth,
    link_url,
    why_silent,
)


def add_parser(sub: Any) -> None:
    from ..host.commands import COMMANDS

    ctl = sub.add_parser(
        "ctl",
        help="send a command to a node",
        description=(
            "Send a command to one node and print its reply. Commands: "
            + "; ".join(f"{c.usage} ({c.help})" for c in COMMANDS.values())
        ),
    )
    ctl_options(ctl)
    ctl.add_argument("node", type=bounded(int, 0, U32_MAX, "NODE"), metavar="NODE")
    ctl.add_argument("op", choices=sorted(COMMANDS), metavar="COMMAND")
    ctl.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")
    ctl.set_defaults(func=cmd_ctl)


def ctl_options(p: argparse.ArgumentParser) -> None:
    client_options(p)
    p.add_argument(
        "--timeout", type=bounded(float, 0.01, 3600, "--timeout"), default=2.0, help="seconds to wait (default 2)"
    )
    p.add_argument(
        "--retries", type=bounded(int, 0, 100, "--retries"), default=2, help="sends again before giving up (default 2)"
    )


def options_after(args: argparse.Namespace) -> None:
    """Options given after NODE COMMAND (``ctl 3 status --json``), as tools such as git and kubectl
    take them: moved out of the command's arguments into ``args``."""
    late = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    ctl_options(late)
    for action in late._actions:
        action.default = argparse.SUPPRESS
    try:
        found, rest = late.parse_known_args(list(args.args))
    except argparse.ArgumentError as e:
        raise BadInput(str(e)) from None
    for key, value in vars(found).items():
        setattr(args, key, value)
    args.args = rest


async def cmd_ctl(args: argparse.Namespace) -> int:
    from ..host.client import HostClient, HostError, NodeError, RequestTimeout
    from ..host.commands import COMMANDS, UsageError
    from ..protocol import Status
    from ..transport import TransportError, transport_factory

    spec = COMMANDS[args.op]
    options_after(args)
    try:
        cmd_args = spec.parse(list(args.args))
    except UsageError as e:
        raise BadInput(f"ctl {spec.name}: {e}") from None
    transport = transport_factory(link_url(args))(f"mcm-ctl-{uuid.uuid4().hex[:10]}")
    try:
        async with HostClient(
            transport, fleet=args.fleet, timeout=args.timeout, retries=args.retries, auth=frame_auth(args, args.fleet)
        ) as host:
            t0 = time.perf_counter()
            try:
                resp = await host.request(args.node, spec.op, cmd_args)
            except NodeError as e:
                out = {"node": args.node, "ok": False, "status": e.response.status.name, "message": e.response.message}
                emit(args, out, text=str(e), stream=sys.stderr)
                return (
                    EXIT_USAGE
                    if e.response.status in (Status.BAD_ARGUMENT, Status.UNKNOWN_OP, Status.BAD_REQUEST)
                    else EXIT_FAILURE
                )
            rtt = time.perf_counter() - t0
            more = None
            if spec.follow is not None:
                try:
                    more = await host.request(args.node, spec.follow)
                except NodeError:
                    more = None  # firmware without the operation: the view goes without it
    except RequestTimeout as e:
        why = await why_silent(args, args.node) if not args.serial else None
        raise Failure(f"{e}: {why}" if why else str(e)) from None
    except (TransportError, HostError) as e:
        raise Failure(str(e)) from None
    out = spec.show(args.node, resp, rtt, more)
    emit(args, out, text=spec.text(spec.name, out))
    return EXIT_OK
