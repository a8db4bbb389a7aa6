"""What every ``mcm-emu`` command shares: exit codes, errors, argument types, output."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
U32_MAX = 2**32 - 1


class Failure(Exception):
    """A runtime failure: printed as one line, exit 1."""


class BadInput(Exception):
    """Bad input found after argument parsing: printed as one line, exit 2."""


def broker_url(text: str) -> str:
    from ..transport.mqtt import parse_broker_url

    try:
        parse_broker_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def serial_port(text: str) -> str:
    from ..transport.serial import parse_port_url

    try:
        parse_port_url(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def fleet_name(text: str) -> str:
    from ..transport import check_fleet_name

    try:
        return check_fleet_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def bounded(kind: Callable[[str], Any], lo: float, hi: float, what: str) -> Callable[[str], Any]:
    """An argument type: ``kind(text)`` within ``lo..hi``; the error names ``what``."""

    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            noun = "whole number" if kind is int else "number"
            raise argparse.ArgumentTypeError(f"{what} must be a {noun}, got {text!r}") from None
        if not (lo <= value <= hi) or (isinstance(value, float) and math.isnan(value)):
            span = f"{int(lo)}..{int(hi)}" if kind is int else f"{lo:g}..{hi:g}"
            raise argparse.ArgumentTypeError(f"{what} must be within {span}, got {text}")
        return value

    return convert


def security_options(p: argparse.ArgumentParser, *, nodes: bool = False) -> None:
    """Credentials and TLS for the broker (docs/security.md); they become the broker URL's query
    parameters (:mod:`mcm_firmware.transport.security`)."""
    g = p.add_argument_group("broker security (docs/security.md)")
    g.add_argument("--username", default=None, help="MQTT user name (a host's role, e.g. fleet-host)")
    g.add_argument("--password-file", default=None, metavar="FILE", help="file whose first line is the password")
    if nodes:
        g.add_argument(
            "--node-secret",
            default=None,
            metavar="FILE",
            help="the fleet's node secret: every node connects as its own client id with a password "
            "derived from it (mcm-emu broker-config writes the broker's side)",
        )
    g.add_argument("--cafile", default=None, metavar="FILE", help="CA the broker's certificate must chain to (TLS)")
    g.add_argument(
        "--cert",
        default=None,
        metavar="FILE",
        help="this client's certificate (TLS); '{client_id}' in it and in --key: each connection its own "
        "(a node's its client id's, a host's its --username's)",
    )
    g.add_argument("--key", default=None, metavar="FILE", help="this client's private key (TLS)")


def secured(url: str, args: argparse.Namespace) -> str:
    """``url`` with the command's security options; BadInput names what does not fit."""
    from ..transport.security import security_of, with_security

    given = {
        "username": getattr(args, "username", None),
        "password_file": getattr(args, "password_file", None),
        "node_secret": getattr(args, "node_secret", None),
        "cafile": getattr(args, "cafile", None),
        "cert": getattr(args, "cert", None),
        "key": getattr(args, "key", None),
    }
    out = with_security(url, **given)
    try:
        security_of(out)
    except ValueError as e:
        raise BadInput(str(e).replace("broker URL", "broker").replace("password_file", "--password-file")) from None
    return out


def client_options(p: argparse.ArgumentParser) -> None:
    """``--broker`` or ``--serial``, ``--fleet``, ``--json``: how a host reaches a fleet."""
    link = p.add_mutually_exclusive_group()
    link.add_argument(
        "--broker",
        type=broker_url,
        default=DEFAULT_BROKER,
        help="the broker: mqtt://HOST[:PORT] or mqtts:// (default %(default)s)",
    )
    link.add_argument(
        "--serial",
        type=serial_port,
        default=None,
        metavar="PORT",
        help="talk to the node(s) on a serial port instead: a device path, the path "
        "printed by run --serial pty, socket://HOST:PORT, rfc2217://HOST:PORT; "
        "options ?baud=N&mtu=N",
    )
    p.add_argument(
        "--fleet", type=fleet_name, default="default", help="the fleet (a topic level) (default %(default)s)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    security_options(p)
    frame_keys_option(p)


def frame_keys_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--frame-keys",
        default=None,
        metavar="FILE",
        help="the fleet's frame keys: frames are sealed with an HMAC tag and verified, replays refused "
        "(mcm-emu frame-keys new FILE makes one; docs/security.md)",
    )


def key_ring(args: argparse.Namespace) -> Any:
    """The KeyRing of ``--frame-keys``, None without it; BadInput for a file that cannot be used."""
    from ..keyring import KeyFileError, KeyRing

    path = getattr(args, "frame_keys", None)
    if path is None:
        return None
    try:
        return KeyRing(path)
    except KeyFileError as e:
        raise BadInput(f"--frame-keys: {e}") from None


def frame_auth(args: argparse.Namespace, fleet: str) -> Any:
    """The FrameAuth of a host command (``--frame-keys``), None without it."""
    from ..protocol.auth import FrameAuth

    ring = key_ring(args)
    return None if ring is None else FrameAuth(fleet, ring.secret, ring.current)


def link_url(args: argparse.Namespace) -> str:
    """The transport URL of a host command's ``--broker`` (with its security options) / ``--serial``."""
    return f"serial://{args.serial}" if args.serial else secured(str(args.broker), args)


def emit(args: argparse.Namespace, obj: dict[str, Any], *, text: str, stream: Any = None) -> None:
    """``obj`` as one JSON line with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(obj), flush=True)
    else:
        print(text, file=stream or sys.stdout, flush=True)


async def why_silent(args: argparse.Namespace, node: int) -> str | None:
    """What the broker's retained state says of a node that did not answer: never seen in this
    fleet (a wrong id or --fleet), offline since its DEATH, or a BIRTH without an answer (crashed,
    or a BIRTH the broker kept of a node that is gone)."""
    from ..host.discovery import read_state
    from ..protocol import Birth, Death, FrameFlags
    from ..transport import TransportError, transport_factory

    try:
        state = await read_state(transport_factory(link_url(args)), args.fleet, settle=0.3)
    except TransportError:
        return None
    if not state.nodes:
        return f"no node of fleet {args.fleet!r} is known to this broker (is --fleet right?)"
    last = state.nodes.get(node)
    if last is None:
        ids = sorted(state.nodes)
        seen = f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ", ".join(map(str, ids[:10]))
        return f"node {node} has never been seen in fleet {args.fleet!r} (nodes seen: {seen})"
    if isinstance(last, Death):
        return f"node {node} is offline: its last state is a DEATH ({last.reason.name}, bdseq {last.bdseq})"
    if isinstance(last, Birth) and not state.online(node):
        return f"node {node} is offline: its carrier link is down"
    if last.flags & FrameFlags.AUTH and getattr(args, "frame_keys", None) is None:
        return (
            f"node {node} is up, and its fleet authenticates its frames (its BIRTH is sealed): pass --frame-keys FILE"
        )
    return f"node {node} has a BIRTH (bdseq {last.bdseq}) but does not answer: crashed, hung, or gone"
