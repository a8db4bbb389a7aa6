"""``mcm-emu``: run emulated nodes, talk to them, watch them, check profiles.

One module per command group; each adds its parser and names the function that runs it.
Exit codes: 0 success; 2 bad usage or bad input (the message names what is wrong); 1 a runtime
failure such as a timeout or an unreachable broker (one line, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from .. import __version__
from . import bench, broker_config, ctl, fuzz, keys, monitor, nodes, profiles, replay, rigsim, run, scenario, wireshark
from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, BadInput, Failure

GROUPS = (run, ctl, nodes, monitor, scenario, replay, wireshark, fuzz, bench, profiles, rigsim, broker_config, keys)


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (a dependency on Linux and macOS) and not turned off with
    ``MCM_EMU_UVLOOP=0``: about twice as many wake-ups per second as asyncio's own loop."""
    if os.environ.get("MCM_EMU_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line and a hint, as ``mcm-emu: error: ...`` (not a usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"mcm-emu: error: {message}\n  (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (repeatable)"
    )
    p = _Parser(prog="mcm-emu", description="Emulated MCM management controllers.", parents=[common])
    p.add_argument("--version", action="version", version=f"mcm-emu {__version__}")
    p.set_defaults(verbose=0)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    real_add = sub.add_parser

    def add_parser(name: str, **kw: Any) -> argparse.ArgumentParser:  # -v before or after the command
        return real_add(name, parents=[common, *kw.pop("parents", [])], **kw)

    cast(Any, sub).add_parser = add_parser
    for group in GROUPS:
        group.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for worker processes
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        result = args.func(args)
        if not inspect.iscoroutine(result):
            return int(result)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            return runner.run(result)
    except BadInput as e:
        print(f"mcm-emu: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Failure as e:
        print(f"mcm-emu: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except (KeyboardInterrupt, BrokenPipeError):
        return EXIT_OK


__all__ = ["build_parser", "main"]
