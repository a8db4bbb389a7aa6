"""``mcm-emu monitor``: every frame of a fleet (or one node), decoded."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from typing import Any

from .common import EXIT_OK, U32_MAX, Failure, bounded, client_options, frame_auth, link_url, read_standing


def add_parser(sub: Any) -> None:
    mon = sub.add_parser("monitor", help="print every frame of a fleet, decoded")
    client_options(mon)
    mon.add_argument(
        "--node", type=bounded(int, 0, U32_MAX, "--node"), default=None, help="only this node (default: all)"
    )
    mon.add_argument(
        "--count",
        type=bounded(int, 1, 2**63, "--count"),
        default=None,
        help="exit after this many frames (default: never)",
    )
    mon.add_argument(
        "--duration",
        type=bounded(float, 0.001, 1e9, "--duration"),
        default=None,
        help="exit after this many seconds (default: never)",
    )
    mon.add_argument(
        "--exit-on-loss",
        action="store_true",
        help="exit (1) when the link to the broker is lost, instead of connecting again",
    )
    mon.add_argument(
        "--keepalive",
        type=bounded(int, 1, 65535, "--keepalive"),
        default=10,
        metavar="S",
        help="MQTT keep-alive, seconds: a lost broker is noticed within it (default %(default)s)",
    )
    mon.set_defaults(func=cmd_monitor)


async def cmd_monitor(args: argparse.Namespace) -> int:
    from ..backoff import Backoff
    from ..host.views import message_json, message_line
    from ..protocol import FrameError, decode
    from ..protocol.auth import AuthError, trailer
    from ..tasks import cancel_and_wait
    from ..transport import Channel, Subscription, Transport, TransportError, transport_factory
    from ..transport.mqtt_probe import probe_of
    from ..transport.topics import topic

    factory = transport_factory(link_url(args))
    auth = frame_auth(args, args.fleet)
    seen = 0

    async def consume(transport: Transport) -> None:
        nonlocal seen
        while args.count is None or seen < args.count:
            d = await transport.receive()
            seen += 1
            try:
                if auth is not None:
                    # retained frames are legitimately old, and so is a LINK frame: a carrier's LOST
                    # is its will, published by the broker long after its connection was made, and
                    # a carrier's numbering restarts with each connection: their tag only
                    auth.open(d.payload, time.time_ns(), window=not (d.retained or d.address.channel is Channel.LINK))
                msg = decode(d.payload)
            except (FrameError, AuthError) as e:
                obj = {
                    "topic": topic(d.address),
                    "node": d.address.node,
                    "error": e.reason.name,
                    "detail": e.detail if isinstance(e, FrameError) else str(e),
                    "hex": d.payload[:64].hex(),
                }
                print(json.dumps(obj) if args.json else f"{d.address.node:>5} REJECTED  {e}", flush=True)
                continue
            if args.json:
                obj = message_json(d.address, msg)
                obj["retained"] = d.retained
                t = trailer(d.payload)
                if t is not None:  # sealed: verified with --frame-keys, else shown as it came
                    obj["auth"] = {"key_id": t[0], "sender": t[1], "verified": auth is not None}
                print(json.dumps(obj), flush=True)
            else:
                print(message_line(d.address, msg), flush=True)

    async def watched(transport: Transport) -> None:
        """:func:`consume`, with a probe that notices a lost broker within the keep-alive (a
        monitor sends nothing, so only a ping of its own can tell a silent link from a dead one)."""
        probe = probe_of(transport)
        if probe is None:
            await consume(transport)
            return
        watch = asyncio.create_task(probe.run(), name="monitor-broker-probe")
        try:
            await consume(transport)
        except TransportError as e:
            if probe.unanswered():
                raise TransportError(f"no answer from the broker within {args.keepalive} s ({e})") from None
            raise
        finally:
            await cancel_and_wait([watch])

    async def follow() -> None:
        """Connect, subscribe and print; after a lost link, connect again (with backoff) unless
        --exit-on-loss. A broker unreachable at the start is an error at once."""
        backoff = Backoff(initial=0.5, maximum=5.0)
        connected_once = False
        while True:
            transport = factory(f"mcm-mon-h{uuid.uuid4().hex[:10]}")
            if isinstance(getattr(transport, "keepalive", None), int):  # MQTT's
                transport.keepalive = args.keepalive  # type: ignore[attr-defined]
            try:
                await transport.connect()
                await transport.subscribe(Subscription(args.fleet, args.node, None))
                if connected_once:
                    print("monitor: reconnected", file=sys.stderr, flush=True)
                connected_once = True
                backoff.reset()
                await watched(transport)
                return
            except TransportError as e:
                if not connected_once or args.exit_on_loss:
                    raise Failure(str(e)) from None
                delay = backoff.next()
                print(f"monitor: link lost ({e}); connecting again in {delay:.1f} s", file=sys.stderr, flush=True)
                await asyncio.sleep(delay)
            finally:
                await transport.close()

    if args.node is not None and not args.serial:
        with contextlib.suppress(TransportError):  # said by the connect that follows
            why = (await read_standing(args, args.node)).why(args.node)
            if why is not None:  # a node that is up is no news
                print(f"monitor: {why}; waiting for it", file=sys.stderr, flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(follow(), args.duration)
    return EXIT_OK
