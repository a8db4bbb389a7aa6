"""Shell completion (argcomplete) and -q, as a shell and a user meet them: real subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys

from ..conftest import ROOT, cli_env, run_cli


def complete(line: str, tmp_path) -> list[str]:
    out = tmp_path / "completions"
    env = {
        **cli_env(),
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(out),
        "_ARGCOMPLETE_IFS": "\n",
    }
    r = subprocess.run([sys.executable, "-m", "mcm_firmware"], env=env, cwd=ROOT, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return out.read_text().split("\n") if out.exists() else []


def test_the_shell_completes_commands_options_and_choices(tmp_path):
    assert "ctl" in [c.strip() for c in complete("mcm-emu ct", tmp_path)]
    assert "--connection" in [c.strip() for c in complete("mcm-emu run --conn", tmp_path)]
    assert {"auto", "node", "carrier"} <= {c.strip() for c in complete("mcm-emu run --connection ", tmp_path)}
    assert "ping" in [c.strip() for c in complete("mcm-emu ctl 3 pi", tmp_path)]


def test_completion_prints_the_shell_code():
    r = run_cli("completion", "bash")
    assert r.returncode == 0 and "mcm-emu" in r.stdout and "complete" in r.stdout
    r = run_cli("completion", "cmd.exe")
    assert r.returncode == 2 and "SHELL" in r.stderr


def test_quiet_and_verbose_exclude_each_other_and_quiet_goes_anywhere():
    r = run_cli("-q", "-v", "profiles", "list")
    assert r.returncode == 2 and "-q and -v" in r.stderr
    r = run_cli("profiles", "list", "-q")
    assert r.returncode == 0 and "colossus-mcm" in r.stdout
    assert os.environ.get("_ARGCOMPLETE") is None


WORDS = {"mcm-emu bench --parts": "all"}
"""Defaults that --help says in a word rather than as the value."""


def test_every_option_and_argument_says_what_it_is():
    """Every option and argument has a help text, and one whose default is not None shows it."""
    import argparse

    from mcm_firmware.cli import build_parser

    missing, no_default = [], []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        for a in parser._actions:
            name = f"{path} {'/'.join(a.option_strings) or a.dest}"
            if isinstance(a, argparse._SubParsersAction):
                for sub_name, sub in a.choices.items():
                    walk(sub, f"{path} {sub_name}")
            elif a.help is None:
                missing.append(name)
            elif not any(a.default is x for x in (None, False, argparse.SUPPRESS)) and a.help != argparse.SUPPRESS:
                # an option with a default says it in --help: the default itself, as help prints it
                shown = a.help % {"default": a.default, "prog": parser.prog} if "%(" in a.help else a.help
                default = a.default.name if hasattr(a.default, "name") else a.default
                forms = {str(default), repr(default), WORDS.get(name, "?")}
                if isinstance(default, float):
                    forms.add(f"{default:g}")
                said = shown.replace("(default: ", "(default ")
                if not isinstance(default, (list, tuple)) and not any(f"default {f}" in said for f in forms):
                    no_default.append(f"{name} (default {a.default!r}): {a.help}")

    walk(build_parser(), "mcm-emu")
    assert not missing, f"without a help text: {missing}"
    assert not no_default, "options whose help does not show the default:\n" + "\n".join(no_default)
