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

from .. import __version__
from . import bench, broker_config, ctl, fuzz, monitor, profiles, replay, run, scenario
from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, BadInput, Failure

GROUPS = (run, ctl, monitor, scenario, replay, fuzz, bench, profiles, broker_config)


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mcm-emu", description="Emulated MCM management controllers.")
    p.add_argument("--version", action="version", version=f"mcm-emu {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
