"""``mcm-emu profiles``: list, show and validate hardware profiles."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .common import EXIT_OK, EXIT_USAGE, BadInput


def add_parser(sub: Any) -> None:
    prof = sub.add_parser("profiles", help="list, show or validate hardware profiles")
    psub = prof.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    psub.add_parser("list", help="the profiles found")
    show = psub.add_parser("show", help="one profile, validated, as JSON")
    show.add_argument("name")
    val = psub.add_parser(
        "validate",
        help="check profile files (hardware or rig profiles)",
        description="Check profile files; every problem is named by file, line and key. A file in a"
        " rigs/ directory, or one with rig-only keys ([[sensor]], [[actuator]], poll_hz, ...) and no"
        " [die], is checked as a rig profile, any other as a hardware profile.",
    )
    val.add_argument("paths", nargs="+", metavar="PATH")
    val.add_argument(
        "--kind",
        choices=("auto", "hardware", "rig"),
        default="auto",
        help="check every PATH as this kind of profile (default: auto, decided per file)",
    )
    prof.set_defaults(func=cmd_profiles)


def cmd_profiles(args: argparse.Namespace) -> int:
    from ..profile import ProfileError, list_profiles, load_profile, load_profile_file

    if args.profiles_command == "list":
        for name, path in list_profiles().items():
            try:
                prof = load_profile_file(path)
                print(f"{name:<20} {prof.description}")
            except ProfileError as e:
                print(f"{name:<20} INVALID: {e}")
        return EXIT_OK
    if args.profiles_command == "show":
        try:
            prof = load_profile(args.name)
        except ProfileError as e:
            raise BadInput(str(e)) from None
        print(json.dumps(prof.model_dump(), indent=2))
        return EXIT_OK
    bad = 0
    for path in args.paths:
        try:
            kind, name = _validate(path, args.kind)
            print(f"{path}: ok ({kind + ' ' if kind == 'rig' else ''}{name})")
        except ProfileError as e:
            for line in e.lines():
                print(line, file=sys.stderr)
            bad += 1
    return EXIT_USAGE if bad else EXIT_OK


def _validate(path: str, kind: str) -> tuple[str, str]:
    """The kind of the profile file at ``path`` and its name; ProfileError when it is not valid."""
    from ..profile import load_profile_file
    from ..profile.loader import read_toml
    from ..profile.rig import is_rig_profile, load_rig_profile_file

    if kind == "auto":
        kind = "rig" if is_rig_profile(path, read_toml(path)) else "hardware"
    if kind == "rig":
        return kind, load_rig_profile_file(path).name
    return kind, load_profile_file(path).name
