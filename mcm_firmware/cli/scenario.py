"""``mcm-emu scenario``: list, validate and run fault scenarios in deterministic virtual time."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import textwrap
from typing import Any

from .common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, U32_MAX, BadInput, Failure, bounded, broker_url


def add_parser(sub: Any) -> None:
    sc = sub.add_parser("scenario", help="run fault scenarios in deterministic virtual time")
    ssub = sc.add_subparsers(dest="scenario_command", required=True, metavar="ACTION")
    ssub.add_parser(
        "list",
        help="the shipped scenarios",
        description="The shipped scenarios: name, nodes, duration and the first sentence of the description"
        " (wrapped to the terminal's width on a terminal, one line each otherwise).",
    )
    sval = ssub.add_parser(
        "validate",
        help="check scenario files without running them",
        description="Check scenario files as far as they can be without running them, naming the file,"
        " line and key of every problem, one a line: all of the schema's, else all of timing,"
        " expectations, profiles, faults and node selectors.",
    )
    sval.add_argument("paths", nargs="+", metavar="FILE|NAME", help="scenario files, or names of the library")
    srun = ssub.add_parser(
        "run",
        help="run a scenario and check its expectations",
        description=(
            "Run a scenario in virtual time (as fast as the CPU allows) and print a digest of the full "
            "trace; exit 1 naming every failed expectation. With --realtime it runs on real time over "
            "the MQTT broker given with --broker, so that fleet software can watch it."
        ),
    )
    srun.add_argument("scenario", metavar="FILE|NAME", help="a scenario file, or a name of the library (scenario list)")
    srun.add_argument(
        "--seed",
        type=bounded(int, 0, U32_MAX, "--seed"),
        default=None,
        help="the random seed (default: the scenario's own)",
    )
    srun.add_argument("--report", metavar="DIR", default=None, help="write summary.json, plots and index.html")
    srun.add_argument("--record", metavar="FILE", default=None, help="keep every frame in FILE (.jsonl.gz)")
    srun.add_argument("--realtime", action="store_true", help="run on real time over --broker")
    srun.add_argument(
        "--broker",
        type=broker_url,
        default=None,
        help="with --realtime (which needs it): the broker to run over",
    )
    srun.add_argument(
        "--speed",
        type=bounded(float, 0.01, 10_000, "--speed"),
        default=1.0,
        help="with --realtime: clock speed relative to real time (default %(default)g)",
    )
    srun.add_argument("--json", action="store_true", help="print the summary as JSON")
    sc.set_defaults(func=cmd_scenario)


def first_sentence(text: str) -> str:
    """The first sentence of a description, its lines joined (the whole text when it has one)."""
    flat = " ".join(text.split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z0-9])", flat)
    return flat[: m.start()] if m else flat


def cmd_scenario(args: argparse.Namespace) -> int:
    from ..scenario import ScenarioError, find_scenario, list_scenarios, load_scenario, run_scenario, validate_scenario

    if args.scenario_command == "list":
        rows = []
        for name, path in list_scenarios().items():
            try:
                sc = load_scenario(path)
                rows.append((name, f"{sc.fleet.nodes:>3} nodes {sc.duration_s:>8g} s", first_sentence(sc.description)))
            except ScenarioError as e:
                rows.append((name, "INVALID:", str(e)))
        width = shutil.get_terminal_size((0, 24)).columns if sys.stdout.isatty() else 0
        for name, size, about in rows:
            head = f"{name:<22} {size}  "
            if width and len(head) + len(about) > width and width - len(head) >= 30:
                lines = textwrap.wrap(about, width - len(head)) or [""]
                print(head + lines[0])
                for more in lines[1:]:
                    print(" " * len(head) + more)
            else:
                print(head + about)
        return EXIT_OK
    if args.scenario_command == "validate":
        bad = 0
        for item in args.paths:
            try:
                path = find_scenario(item)
                sc, actions = validate_scenario(path)
                print(
                    f"{item}: ok ({sc.name}: {sc.fleet.nodes} nodes, {sc.duration_s:g} s, "
                    f"{actions} timed actions, {len(sc.expect)} expectations)"
                )
            except ScenarioError as e:
                for line in e.lines():
                    print(line, file=sys.stderr)
                bad += 1
        return EXIT_USAGE if bad else EXIT_OK
    try:
        path = find_scenario(args.scenario)
        sc = load_scenario(path)
    except ScenarioError as e:
        raise BadInput(str(e)) from None
    if args.realtime and args.broker is None:
        raise BadInput("scenario run --realtime needs --broker URL")
    if args.broker is not None and not args.realtime:
        raise BadInput("--broker goes with --realtime (virtual-time runs use the in-process bus)")

    def progress(t: float) -> None:
        print(f"  t={t:9.1f} s", file=sys.stderr, flush=True)

    try:
        result = run_scenario(
            sc,
            seed=args.seed,
            path=str(path),
            record=args.record,
            realtime=args.realtime,
            broker=args.broker,
            speed=args.speed,
            progress=progress if (args.realtime and not args.json) else None,
        )
    except ScenarioError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise Failure(f"{e.filename or ''}: {e.strerror or e}") from None
    except Exception as e:
        from ..transport import TransportError

        if isinstance(e, TransportError):
            raise Failure(str(e)) from None
        raise
    index = None
    if args.report:
        from ..scenario.report import write_report

        try:
            index = write_report(result, args.report)
        except OSError as e:
            raise BadInput(f"--report {args.report}: {e.strerror or e}") from None
    if args.json:
        from ..scenario.report import summary

        out = summary(result)
        out.pop("figures", None)
        print(json.dumps(out))
    else:
        print(
            f"scenario {sc.name} (seed {result.seed}): {sc.fleet.nodes} nodes, {result.sim_s:g} s simulated "
            f"in {result.wall_s:.1f} s ({result.speedup:.0f}x), {result.frames} frames"
        )
        for o in result.outcomes:
            print(f"  {'PASS' if o.passed else 'FAIL'}  {o.name}: {o.detail}")
        print(f"digest sha256:{result.digest}")
        if index is not None:
            print(f"report: {index}")
        if args.record:
            print(f"recording: {args.record}")
    failed = [o.name for o in result.outcomes if not o.passed]
    if failed:
        print("mcm-emu: failed expectations: " + "; ".join(failed), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
