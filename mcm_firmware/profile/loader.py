"""Finding, reading and validating hardware profiles (``hw_profiles/*.toml``)."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from .schema import Profile

ENV_PATH = "MCM_EMU_PROFILES"
M = TypeVar("M", bound=BaseModel)


class ProfileError(ValueError):
    """A profile that cannot be used; the message names the file and, where known, the key."""

    def __init__(self, path: str | Path, message: str, *, key: str | None = None) -> None:
        self.path = str(path)
        self.key = key
        where = f"{self.path}: key '{key}'" if key else self.path
        super().__init__(f"{where}: {message}")


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
    """Validate already-read TOML data; ProfileError names the first bad key (all are listed)."""
    return parse_model(Profile, data, path)


def parse_model(model: type[M], data: dict, path: str | Path) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        errors = [_describe(err) for err in e.errors()]
        key, msg = errors[0]
        if len(errors) > 1:
            more = "; ".join(f"key '{k}': {m}" for k, m in errors[1:])
            msg = f"{msg}; also {more}"
        raise ProfileError(path, msg, key=key or None) from None


def load_profile_file(path: str | Path) -> Profile:
    return parse_profile(read_toml(path), path)


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
