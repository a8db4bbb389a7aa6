"""``mcm-emu profiles``: list, show and validate hardware and rig profiles."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK, EXIT_USAGE, BadInput

SEARCH_PATH = (
    "Profiles are found by name in the directories of $MCM_EMU_PROFILES (separated by"
    f" '{os.pathsep}'; rig profiles in their rigs/ subdirectory), then in the source tree's"
    " hw_profiles/, then in <prefix>/share/mcm-emu/hw_profiles/; the first NAME.toml found wins."
    " A path to a .toml file works wherever a name does."
)


def add_parser(sub: Any) -> None:
    prof = sub.add_parser("profiles", help="list, show or validate hardware and rig profiles", epilog=SEARCH_PATH)
    psub = prof.add_subparsers(dest="profiles_command", required=True, metavar="ACTION")
    psub.add_parser(
        "list",
        help="the profiles found: name, kind (hardware or rig), file, description",
        description="The profiles found by name, hardware profiles then rig profiles, each with its file.",
        epilog=SEARCH_PATH,
    )
    show = psub.add_parser("show", help="one profile (hardware, else rig), validated, as JSON", epilog=SEARCH_PATH)
    show.add_argument("name", help="a profile name (profiles list) or a .toml path")
    val = psub.add_parser(
        "validate",
        help="check profile files (hardware or rig profiles)",
        description="Check profile files; every problem is named by file, line and key. A file in a"
        " rigs/ directory, or one with rig-only keys ([[sensor]], [[actuator]], poll_hz, ...) and no"
        " [die], is checked as a rig profile, any other as a hardware profile.",
    )
    val.add_argument("paths", nargs="+", metavar="PATH", help="profile files: hardware or rig")
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
        from ..profile.rig import list_rig_profiles, load_rig_profile_file

        rows = []
        for kind, found, load in (
            ("hardware", list_profiles(), load_profile_file),
            ("rig", list_rig_profiles(), load_rig_profile_file),
        ):
            for name, path in found.items():
                try:
                    about = load(path).description
                except ProfileError as e:
                    about = f"INVALID: {e}"
                rows.append((name, kind, _shown(path), about))
        width = max((len(r[2]) for r in rows), default=4)
        print(f"{'NAME':<20} {'KIND':<8} {'FILE':<{width}}  DESCRIPTION")
        for name, kind, shown, about in rows:
            print(f"{name:<20} {kind:<8} {shown:<{width}}  {about}")
        return EXIT_OK
    if args.profiles_command == "show":
        from ..profile.rig import list_rig_profiles, load_rig_profile

        try:
            if args.name not in list_profiles() and args.name in list_rig_profiles():
                print(json.dumps(load_rig_profile(args.name).model_dump(), indent=2))
                return EXIT_OK
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


def _shown(path: Path) -> str:
    """A profile's file relative to the working directory when it lies below it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


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
