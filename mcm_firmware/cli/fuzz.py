"""``mcm-emu fuzz``: fuzz campaigns against a live node."""

from __future__ import annotations

import argparse
import json
import uuid
from typing import Any

from .common import EXIT_FAILURE, EXIT_OK, U32_MAX, Failure, bounded, frame_keys_option, key_ring


def add_parser(sub: Any) -> None:
    fz = sub.add_parser(
        "fuzz",
        help="fuzz a live node over its transport",
        description=(
            "Send generated valid and malformed frames to a node, judge every answer, shrink each "
            "failure to a minimal frame sequence. Exit 1 when a failure is found."
        ),
    )
    fz.add_argument(
        "--target",
        type=fuzz_target,
        default="emulated",
        metavar="URL",
        help="emulated (an in-process node), mqtt://HOST:PORT/NODE[?fleet=F], serial://PORT?node=N "
        "(default %(default)s)",
    )
    fz.add_argument(
        "--duration",
        type=bounded(float, 0.1, 7 * 86400, "--duration"),
        default=60.0,
        help="seconds to fuzz (default 60)",
    )
    fz.add_argument(
        "--batches",
        type=bounded(int, 1, 10**9, "--batches"),
        default=None,
        help="stop after this many batches of 25 cases (a budget of work; with --duration, whichever ends first)",
    )
    fz.add_argument(
        "--seed", type=bounded(int, 0, U32_MAX, "--seed"), default=0, help="the campaign's seed (default %(default)s)"
    )
    fz.add_argument(
        "--report",
        metavar="DIR",
        default=None,
        help="write summary.json, coverage.png and per failure its frames and a pytest file",
    )
    fz.add_argument(
        "--timeout",
        type=bounded(float, 0.05, 600, "--timeout"),
        default=2.0,
        help="seconds to wait for the node's answers to a case (default %(default)g)",
    )
    fz.add_argument("--json", action="store_true", help="print the summary as JSON")
    frame_keys_option(fz)
    fz.set_defaults(func=cmd_fuzz)


def fuzz_target(text: str) -> str:
    from ..target import EMULATED, parse_target

    if text != EMULATED:
        try:
            parse_target(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e).replace("--mcm-target", "--target")) from None
    return text


async def cmd_fuzz(args: argparse.Namespace) -> int:
    from ..fuzz import run_campaign
    from ..fuzz.report import summary, write_report
    from ..protocol.auth import FrameAuth
    from ..target import EMULATED, emulated_target, parse_target
    from ..transport import TransportError, transport_factory

    last = [0.0]
    ring = key_ring(args)  # with --target emulated, the node seals with the same keys

    def progress(r: Any) -> None:
        if r.duration_s - last[0] >= 5 and not args.json:
            last[0] = r.duration_s
            print(
                f"t={r.duration_s:7.1f}s cases={r.cases} executions={r.executions} "
                f"({r.executions_per_s:.0f}/s) coverage={r.cells} failures={len(r.findings)}",
                flush=True,
            )

    async def campaign(target: Any) -> Any:
        tr = transport_factory(target.transport_url)(f"mcm-fuzz-h{uuid.uuid4().hex[:8]}")
        return await run_campaign(
            tr,
            fleet=target.fleet,
            node=target.node,
            target=args.target,
            duration=args.duration,
            max_batches=args.batches,
            seed_value=args.seed,
            timeout=args.timeout,
            progress=progress,
            auth=None if ring is None else FrameAuth(target.fleet, ring.secret, ring.current),
        )

    try:
        if args.target == EMULATED:
            async with emulated_target(frame_keys=ring) as target:
                result = await campaign(target)
        else:
            target = parse_target(args.target)
            result = await campaign(target)
    except TransportError as e:
        raise Failure(str(e)) from None
    if args.report:
        try:
            write_report(result, args.report, node=target.node)
        except OSError as e:
            raise Failure(f"--report {args.report}: {e.strerror or e}") from None
    if args.json:
        print(json.dumps(summary(result)), flush=True)
    else:
        print(
            f"{result.executions} executions in {result.duration_s:.1f} s "
            f"({result.executions_per_s:.0f}/s), {result.cases} cases, {result.cells} coverage cells "
            f"(probe kind x outcome), {len(result.findings)} failure(s)",
            flush=True,
        )
        for f in result.findings:
            print(f"FAIL {f.kind}: {f.detail}", flush=True)
            for p in f.frames:
                print(f"  {p.label} {p.frame.hex()}", flush=True)
        if args.report:
            print(f"report: {args.report}/summary.json", flush=True)
    return EXIT_FAILURE if result.findings else EXIT_OK
