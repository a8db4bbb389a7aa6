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
            raise argparse.ArgumentTypeError(f"{what} must be within {lo:g}..{hi:g}, got {text}")
        return value

    return convert


def client_options(p: argparse.ArgumentParser) -> None:
    """``--broker`` or ``--serial``, ``--fleet``, ``--json``: how a host reaches a fleet."""
    link = p.add_mutually_exclusive_group()
    link.add_argument("--broker", type=broker_url, default=DEFAULT_BROKER)
    link.add_argument(
        "--serial",
        type=serial_port,
        default=None,
        metavar="PORT",
        help="talk to the node(s) on a serial port instead: a device path, the path "
        "printed by run --serial pty, socket://HOST:PORT, rfc2217://HOST:PORT; "
        "options ?baud=N&mtu=N",
    )
    p.add_argument("--fleet", type=fleet_name, default="default")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def link_url(args: argparse.Namespace) -> str:
    """The transport URL of a host command's ``--broker`` / ``--serial``."""
    return f"serial://{args.serial}" if args.serial else str(args.broker)


def emit(args: argparse.Namespace, obj: dict[str, Any], *, text: str, stream: Any = None) -> None:
    """``obj`` as one JSON line with ``--json``, else ``text``."""
    if args.json:
        print(json.dumps(obj), flush=True)
    else:
        print(text, file=stream or sys.stdout, flush=True)
