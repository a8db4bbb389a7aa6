"""``mcm-emu replay``: publish a recording again."""

from __future__ import annotations

import argparse
import uuid
from typing import Any

from .common import DEFAULT_BROKER, EXIT_OK, BadInput, Failure, bounded, broker_url, fleet_name


def add_parser(sub: Any) -> None:
    rep = sub.add_parser("replay", help="publish a recording again")
    rep.add_argument("file", metavar="FILE", help="a recording of run --record (.jsonl.gz)")
    rep.add_argument(
        "--broker",
        type=broker_url,
        default=DEFAULT_BROKER,
        help="the broker: mqtt://HOST[:PORT] or mqtts:// (default %(default)s)",
    )
    rep.add_argument(
        "--speed",
        type=bounded(float, 0.01, 1e6, "--speed"),
        default=1.0,
        help="replay this many times faster than recorded (default %(default)s)",
    )
    rep.add_argument("--fleet", type=fleet_name, default=None, help="publish under this fleet name instead")
    rep.set_defaults(func=cmd_replay)


async def cmd_replay(args: argparse.Namespace) -> int:
    from ..host.record import RecordError, read_record, replay
    from ..transport import TransportError, transport_factory

    try:  # the whole file is checked before the first frame goes out
        header, frames = read_record(args.file)
        total = sum(1 for _ in frames)
    except RecordError as e:
        raise BadInput(str(e)) from None
    tr = transport_factory(args.broker)(f"mcm-replay-h{uuid.uuid4().hex[:8]}")
    try:
        await tr.connect()
        try:
            sent = await replay(args.file, tr, speed=args.speed, fleet=args.fleet)
        finally:
            await tr.close()
    except RecordError as e:
        raise BadInput(str(e)) from None
    except TransportError as e:
        raise Failure(str(e)) from None
    print(f"replayed {sent} frames of fleet {args.fleet or header.get('fleet')!r} to {args.broker}", flush=True)
    if sent != total:
        raise Failure(f"{args.file}: {total - sent} of {total} frames were not replayed")
    return EXIT_OK
