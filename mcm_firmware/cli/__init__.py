# PYTHON_ARGCOMPLETE_OK
"""``mcm-emu``: run emulated nodes, talk to them, watch them, check profiles.

One module per command group; each adds its parser and names the function that runs it.
Exit codes: 0 success; 2 bad usage or bad input (the message names what is wrong); 1 a runtime
failure such as a timeout or an unreachable broker (one line, no traceback).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, cast

from .. import __version__
from . import (
    bench,
    broker_config,
    completion,
    ctl,
    fuzz,
    keys,
    monitor,
    nodes,
    profiles,
    redfish,
    replay,
    rigsim,
    run,
    scenario,
    wireshark,
)
from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, BadInput, Failure, connect_hint

GROUPS = (
    run,
    ctl,
    nodes,
    monitor,
    redfish,
    scenario,
    replay,
    wireshark,
    fuzz,
    bench,
    profiles,
    rigsim,
    broker_config,
    keys,
    completion,
)


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
    """Usage errors in one line and a hint, as ``mcm-emu: error: ...`` (not a usage block); every
    command and sub-command takes the global options (``-v``, ``-q``) before or after its name."""

    common: argparse.ArgumentParser | None = None

    def error(self, message: str) -> NoReturn:
        # a command's ARGS are optional (argparse lists an empty REMAINDER among the required)
        message = message.replace("required: COMMAND, ARGS", "required: COMMAND")
        if "--json" in sys.argv[1:]:  # a program reading stdout gets its one JSON object, usage errors too
            print(json.dumps({"ok": False, "error": message, "exit_code": EXIT_USAGE}), flush=True)
        self.exit(EXIT_USAGE, f"mcm-emu: error: {message}\n  (see '{self.prog} --help')\n")

    def add_subparsers(self, **kw: Any) -> Any:
        kw.setdefault("parser_class", _Parser)
        action = super().add_subparsers(**kw)
        real_add = action.add_parser

        def add_parser(name: str, **kw2: Any) -> argparse.ArgumentParser:
            parents = kw2.pop("parents", [])
            if _Parser.common is not None:
                parents = [_Parser.common, *parents]
            return real_add(name, parents=parents, **kw2)

        cast(Any, action).add_parser = add_parser
        return action


def build_parser() -> argparse.ArgumentParser:
    # the global options' actions are shared by every parser they are given to: their defaults stay
    # SUPPRESS (a default set on one would overwrite, in a sub-command, what was given before it)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more log output (repeatable)"
    )
    common.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="errors only: no warnings in the log; run prints no periodic summary",
    )
    p = _Parser(prog="mcm-emu", description="Emulated MCM management controllers.", parents=[common])
    p.add_argument("--version", action="version", version=f"mcm-emu {__version__}")
    _Parser.common = common
    try:
        sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
        for group in GROUPS:
            group.add_parser(sub)
    finally:
        _Parser.common = None
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:  # shell completion (argcomplete): answers and exits when the shell asks, else nothing
        import argcomplete

        argcomplete.autocomplete(parser)
    except ImportError:
        pass
    args = parser.parse_args(argv)
    args.verbose = getattr(args, "verbose", 0) or 0
    args.quiet = getattr(args, "quiet", False)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for worker processes
    prepare = getattr(args, "prepare", None)  # a command's own late options (ctl 3 status --json -v)
    if prepare is not None:
        try:
            prepare(args)
        except BadInput as e:
            return _usage_error(args, str(e))
    if args.quiet and args.verbose:
        parser.error("-q and -v contradict each other: give one")
    logging.basicConfig(
        level=logging.ERROR if args.quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
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
        return _usage_error(args, str(e))
    except Failure as e:
        print(f"mcm-emu: error: {e}", file=sys.stderr)
        hint = e.hint or connect_hint(args, str(e))
        if hint:
            print(f"  ({hint})", file=sys.stderr)
        _json_error(args, str(e), EXIT_FAILURE, e.fields)
        return EXIT_FAILURE
    except (KeyboardInterrupt, BrokenPipeError):
        return EXIT_OK


def _usage_error(args: argparse.Namespace, message: str) -> int:
    print(f"mcm-emu: error: {message}", file=sys.stderr)
    _json_error(args, message, EXIT_USAGE)
    return EXIT_USAGE


def _json_error(args: argparse.Namespace, message: str, code: int, fields: dict[str, Any] | None = None) -> None:
    """With ``--json`` an error is a JSON object on stdout too, so that a program reading it always
    gets one (the line on stderr is for people)."""
    if getattr(args, "json", False):
        node = getattr(args, "node", None)
        if isinstance(node, list) and len(node) == 1:
            node = node[0]
        obj = {"ok": False, "error": message, "exit_code": code, **(fields or {})}
        if isinstance(node, int):
            obj = {"node": node, **obj}
        print(json.dumps(obj), flush=True)


__all__ = ["build_parser", "main"]
