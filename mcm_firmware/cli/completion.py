"""``mcm-emu completion SHELL``: the shell code that completes mcm-emu's commands and options."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import EXIT_OK, Failure

SHELLS = ("bash", "zsh", "fish", "tcsh", "powershell")


def add_parser(sub: Any) -> None:
    c = sub.add_parser(
        "completion",
        help="print the shell code for tab completion (bash, zsh, fish, tcsh, powershell)",
        description="Print the code that makes SHELL complete mcm-emu's commands, options and choices "
        '(argcomplete). Bash: eval "$(mcm-emu completion bash)" in ~/.bashrc; zsh: the same in ~/.zshrc.',
    )
    c.add_argument("shell", choices=SHELLS, metavar="SHELL", help=f"one of {', '.join(SHELLS)}")
    c.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    try:
        import argcomplete
    except ImportError:
        raise Failure("shell completion needs argcomplete (pip install argcomplete)") from None
    sys.stdout.write(argcomplete.shellcode(["mcm-emu"], shell=args.shell))
    return EXIT_OK
