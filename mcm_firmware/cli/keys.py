"""``mcm-emu frame-keys``: key files for frame authentication (docs/security.md)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK, BadInput


def add_parser(sub: Any) -> None:
    fk = sub.add_parser(
        "frame-keys",
        help="make and rotate the key file of frame authentication",
        description="A key file holds one fleet secret a line: 'KEY_ID SECRET_HEX [next]'. Frames are "
        "sealed with the last key not marked next; every key listed is accepted. Nodes and hosts read "
        "the file again within a second of a change. Rotation: 'new FILE --next', then remove 'next' "
        "from that line, then remove the old line (docs/security.md).",
    )
    fsub = fk.add_subparsers(dest="keys_command", required=True, metavar="SUBCOMMAND")
    new = fsub.add_parser("new", help="append a new random key (the file is made, mode 0600, when missing)")
    new.add_argument("file", metavar="FILE", help="the key file (made, mode 0600, when missing)")
    new.add_argument("--next", action="store_true", help="accepted everywhere, not yet used for sealing")
    new.set_defaults(func=cmd_new)
    show = fsub.add_parser("show", help="the key ids of a file and the one frames are sealed with (no secrets)")
    show.add_argument("file", metavar="FILE", help="the key file")
    show.set_defaults(func=cmd_show)


def cmd_new(args: argparse.Namespace) -> int:
    from ..keyring import KeyFileError, new_key_line

    try:
        key_id = new_key_line(args.file, mark_next=args.next)
    except KeyFileError as e:
        raise BadInput(str(e)) from None
    except OSError as e:
        raise BadInput(f"{args.file}: {e.strerror or e}") from None
    role = (
        "accepted, not yet sealing (remove 'next' from its line to seal with it)" if args.next else "seals from now on"
    )
    print(f"{args.file}: key {key_id} added; {role}", flush=True)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from ..keyring import KeyFileError, KeyRing

    try:
        ring = KeyRing(args.file)
    except KeyFileError as e:
        raise BadInput(str(e)) from None
    print(f"{args.file}: keys {', '.join(map(str, ring.key_ids))}; sealing with key {ring.current()}", flush=True)
    return EXIT_OK
