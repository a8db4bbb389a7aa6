"""Finding, reading and validating hardware profiles (``hw_profiles/*.toml``)."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .lines import locate
from .schema import Profile

ENV_PATH = "MCM_EMU_PROFILES"
M = TypeVar("M", bound=BaseModel)


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and, where known, the line and
    the key. ``errors`` holds every problem found as (line, key, message), the first one being
    the one in the message's prefix."""

    def __init__(self, path: str | Path, message: str, *, key: str | None = None, line: int | None = None) -> None:
        self.path = str(path)
        self.key = key
        self.line = line
        self.errors: list[tuple[int | None, str | None, str]] = [(line, key, message)]
        super().__init__(f"{_where(self.path, line, key)}: {message}")

    def lines(self) -> list[str]:
        """One line per problem, each naming file, line and key: ``path:12: key 'k': message``."""
        return [f"{_where(self.path, line, key)}: {msg}" for line, key, msg in self.errors]


def _where(path: str, line: int | None, key: str | None) -> str:
    where = f"{path}:{line}" if line else path
    return f"{where}: key '{key}'" if key else where


def search_path() -> list[Path]:
    """Directories searched for profiles by name, first match wins.

    ``$MCM_EMU_PROFILES`` (os.pathsep-separated), the source tree's ``hw_profiles/``, then the
    copy installed with the package under ``<prefix>/share/mcm-emu/hw_profiles``.
    """
    dirs = [Path(p) for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "hw_profiles")
    dirs.append(Path(sys.prefix) / "share" / "mcm-emu" / "hw_profiles")
    return [d for d in dirs if d.is_dir()]


def list_profiles() -> dict[str, Path]:
    """Profile names (file stems) and their files."""
    found: dict[str, Path] = {}
    for d in search_path():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def _describe(err: ErrorDetails) -> tuple[str, str]:
    key = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        return key, "unknown key"
    if kind == "missing":
        return key, "missing key"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return key, f"{msg} (got {err['input']!r})" if kind != "value_error" else msg


def parse_profile(data: dict, path: str | Path) -> Profile:
    """Validate already-read TOML data; ProfileError names every bad key."""
    return parse_model(Profile, data, path)


def parse_model(model: type[M], data: dict, path: str | Path) -> M:
    """Validate ``data`` read from ``path``; a ProfileError lists every bad key, each with its
    line in the file where the file is there to read."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        details = e.errors()
    text = _source(path)
    errors: list[tuple[int | None, str | None, str]] = []
    for err in details:
        path_key, message = _describe(err)
        errors.append((locate(text, tuple(err["loc"])) if text and err["loc"] else None, path_key or None, message))
    line, key, msg = errors[0]
    if len(errors) > 1:
        more = "; ".join(f"key '{k}'{f' (line {n})' if n else ''}: {m}" for n, k, m in errors[1:])
        msg = f"{msg}; also {more}"
    error = ProfileError(path, msg, key=key, line=line)
    error.errors = errors
    raise error from None


def _source(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def load_profile_file(path: str | Path) -> Profile:
    return parse_profile(resolve_extends(read_toml(path), path), path)


EXTENDS_DEPTH = 8


def resolve_extends(data: dict, path: str | Path, _chain: tuple[str, ...] = ()) -> dict:
    """The profile data with its ``extends = "<name or path>"`` base merged under it: tables merge
    key by key (the file's own keys win), anything else (numbers, strings, arrays) is replaced
    whole. A base may extend another; a cycle or a chain deeper than 8 is an error."""
    base_ref = data.get("extends")
    if base_ref is None:
        return data
    if not isinstance(base_ref, str) or not base_ref:
        raise ProfileError(path, f"must name a profile or a .toml file (got {base_ref!r})", key="extends")
    here = str(Path(path).resolve())
    chain = (*_chain, here)
    if len(chain) > EXTENDS_DEPTH:
        raise ProfileError(path, f"profiles extend each other more than {EXTENDS_DEPTH} deep", key="extends")
    base_path = _find_base(base_ref, Path(path))
    if str(base_path.resolve()) in chain:
        raise ProfileError(path, f"'{base_ref}' extends this profile again (a cycle)", key="extends")
    base = resolve_extends(read_toml(base_path), base_path, chain)
    own = {k: v for k, v in data.items() if k != "extends"}
    return _merge(base, own)


def _find_base(ref: str, path: Path) -> Path:
    if ref.endswith(".toml") or "/" in ref or os.sep in ref:
        base = Path(ref) if Path(ref).is_absolute() else path.parent / ref
        if not base.is_file():
            raise ProfileError(path, f"base profile file {ref!r} not found", key="extends")
        return base
    sibling = path.parent / f"{ref}.toml"
    if sibling.is_file():
        return sibling
    profiles = list_profiles()
    if ref not in profiles:
        known = ", ".join(sorted(profiles)) or "none found"
        raise ProfileError(path, f"no base profile {ref!r} (known: {known})", key="extends")
    return profiles[ref]


def _merge(base: dict, own: dict) -> dict:
    out = dict(base)
    for key, value in own.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ProfileError(path, f"cannot read: {e.strerror or e}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ProfileError(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(path, f"TOML syntax error: {e}") from None
    return data


def load_profile(name_or_path: str | Path) -> Profile:
    """A profile by name (``colossus-mcm``) or by path to a TOML file."""
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text or Path(text).is_file():
        return load_profile_file(text)
    profiles = list_profiles()
    if text not in profiles:
        known = ", ".join(sorted(profiles)) or "none found"
        raise ProfileError(text, f"no such profile (known: {known})")
    return load_profile_file(profiles[text])
