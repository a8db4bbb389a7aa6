"""Rig profiles: how a hardware-in-the-loop rig's channels map onto a node's sensors and actuators.

A rig is a device on a serial port (a bench thermocouple and valve, or a controller board running
real firmware against the emulated plant). Its
profile (``hw_profiles/rigs/*.toml``) lists channels with units, scaling and a timeout, and is
validated like hardware profiles: unknown, missing or out-of-range keys are errors naming the file
and the key. A reading ``raw`` of a sensor channel becomes ``raw * scale + offset`` in the node's
unit; an actuator command ``value`` is sent as ``(value - offset) / scale`` (and the other way
round in ``controller`` mode).
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .loader import ENV_PATH, ProfileError, parse_model, read_toml

SENSOR_KINDS = {"die": "°C", "hbm": "°C", "flow": "L/min"}
ACTUATOR_KINDS = {"valve": "%"}
_TARGET = re.compile(r"^([a-z]+):(\d+)$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _target(text: str, kinds: dict[str, str]) -> str:
    m = _TARGET.match(text)
    if not m or m.group(1) not in kinds:
        raise ValueError(f"target must be one of {', '.join(k + ':N' for k in kinds)}")
    return text


class Channel(_Section):
    channel: Annotated[int, Field(ge=0, le=255)]
    """The rig's channel number."""
    target: str
    """die:N, hbm:N, flow:N (sensors) or valve:N (actuators), N counting from 0."""
    unit: Annotated[str, Field(min_length=1, max_length=16)]
    """The rig's raw unit, for people (e.g. "mV", "0.1 degC", "counts")."""
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0 or v != v:
            raise ValueError("scale must be a non-zero number")
        return v

    @property
    def kind(self) -> str:
        return self.target.split(":")[0]

    @property
    def index(self) -> int:
        return int(self.target.split(":")[1])


class SensorChannel(Channel):
    @field_validator("target")
    @classmethod
    def _check(cls, v: str) -> str:
        return _target(v, SENSOR_KINDS)


class ActuatorChannel(Channel):
    @field_validator("target")
    @classmethod
    def _check(cls, v: str) -> str:
        return _target(v, ACTUATOR_KINDS)


class RigProfile(_Section):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    mode: Literal["io", "controller"] = "io"
    """``io``: the rig provides the sensors and carries out the actuator commands (a bench
    thermocouple and valve). ``controller``: plant in the loop, the rig runs controller firmware:
    it is sent the node's sensor readings and its actuator commands drive the emulated plant."""
    description: str = ""
    source: str = ""
    baud: Annotated[int, Field(ge=300, le=10_000_000)] = 115200
    poll_hz: Annotated[float, Field(gt=0, le=1000)] = 10.0
    """How often every channel is read (sensors) or written (actuators)."""
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """No answer for this long: the rig is lost (RIG_LOST), its sensors go stale."""
    sensor: tuple[SensorChannel, ...] = ()
    actuator: tuple[ActuatorChannel, ...] = ()

    @model_validator(mode="after")
    def _channels(self) -> RigProfile:
        if not self.sensor and not self.actuator:
            raise ValueError("a rig provides at least one sensor or actuator")
        for group in (self.sensor, self.actuator):
            seen = [c.channel for c in group]
            if len(set(seen)) != len(seen):
                raise ValueError(f"channel numbers repeat: {seen}")
        targets = [c.target for c in (*self.sensor, *self.actuator)]
        if len(set(targets)) != len(targets):
            raise ValueError(f"targets repeat: {targets}")
        if self.poll_hz * self.timeout_s < 2:
            raise ValueError("timeout_s must cover at least two polls (poll_hz × timeout_s ≥ 2)")
        return self

    def check_against(self, dies: int, hbm: int, valves: int) -> None:
        """ValueError naming the channel whose target the module does not have."""
        sizes = {"die": dies, "hbm": hbm, "flow": valves, "valve": valves}
        for c in (*self.sensor, *self.actuator):
            if c.index >= sizes[c.kind]:
                have = f" ({c.kind}:0..{sizes[c.kind] - 1})" if sizes[c.kind] else ""
                raise ValueError(
                    f"rig {self.name}: channel {c.channel} targets {c.target}, but the module has {sizes[c.kind]}{have}"
                )


def rig_search_path() -> list[Path]:
    dirs = [Path(p) / "rigs" for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "hw_profiles" / "rigs")
    dirs.append(Path(sys.prefix) / "share" / "mcm-emu" / "hw_profiles" / "rigs")
    return [d for d in dirs if d.is_dir()]


def list_rig_profiles() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in rig_search_path():
        for f in sorted(d.glob("*.toml")):
            found.setdefault(f.stem, f)
    return found


def load_rig_profile_file(path: str | Path) -> RigProfile:
    return parse_model(RigProfile, read_toml(path), path)


def load_rig_profile(name_or_path: str | Path) -> RigProfile:
    text = str(name_or_path)
    if text.endswith(".toml") or os.sep in text:
        return load_rig_profile_file(text)
    rigs = list_rig_profiles()
    if text not in rigs:
        raise ProfileError(text, f"no such rig profile (known: {', '.join(sorted(rigs)) or 'none found'})")
    return load_rig_profile_file(rigs[text])


RIG_ONLY_KEYS = frozenset({"sensor", "actuator", "poll_hz", "timeout_s", "baud", "mode"})


def is_rig_profile(path: str | Path, data: dict) -> bool:
    """Whether a profile file is a rig profile: it lies in a ``rigs/`` directory, or it has a key
    only rig profiles have (``[[sensor]]``, ``[[actuator]]``, ``poll_hz``, ...) and no ``[die]``."""
    if Path(path).resolve().parent.name == "rigs":
        return True
    return "die" not in data and bool(RIG_ONLY_KEYS & data.keys())
