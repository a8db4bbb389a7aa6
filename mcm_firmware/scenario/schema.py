"""Scenario files (TOML): a fleet, timed faults and commands, and expectations on the trace.

::

    name = "pump-a-fails"
    description = "..."
    seed = 1
    duration_s = 120

    [fleet]
    nodes = 4
    profile = "colossus-mcm"
    workload = "steady"          # idle | steady | training | inference | mixed
    load = 1.0                   # demand scale

    [[fleet.group]]              # overrides for some nodes
    nodes = "2-3"
    profile = "h100-sxm-class"

    [rates]                      # optional: every profile's rates, e.g. a coarse tick for soaks
    tick_hz = 1.0

    [[fault]]
    at = 30.0
    nodes = "3"
    fault = "pump-fail A"        # the syntax of `mcm-emu ctl NODE inject`
    clear_at = 90.0              # optional

    [[command]]
    at = 20.0
    nodes = "all"
    command = "set-power-cap 800"   # the syntax of `mcm-emu ctl NODE ...`

    [random_faults]              # optional: faults drawn from the seed
    per_node_per_hour = 0.5
    faults = ["pump-fail A", "inlet-step 10"]
    hold_s = [60.0, 600.0]

    [[expect]]
    name = "pump B takes over within 1 s"
    type = "within"              # see expect.py for every type and its keys
    ...

Unknown keys and malformed values are errors naming the file, the line and the key.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from ..faults import FaultError, parse_fault
from ..profile.lines import locate as _locate


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names file, line and key where known.

    ``problems`` holds every problem found (this one alone, unless it stands for several: see
    :meth:`of`); :meth:`lines` gives one line per problem."""

    def __init__(self, path: str, message: str, *, line: int | None = None, key: str | None = None) -> None:
        where = path + (f":{line}" if line else "")
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.key, self.message = path, line, key, message
        self.problems: list[ScenarioError] = [self]

    @classmethod
    def of(cls, problems: list[ScenarioError]) -> ScenarioError:
        """One error for several problems, ordered by line: the first one's message, saying how
        many more there are."""
        problems = sorted((p for e in problems for p in e.problems), key=lambda p: p.line or 0)
        first = problems[0]
        if len(problems) == 1:
            return first
        more = len(problems) - 1
        error = cls(
            first.path,
            f"{first.message} (and {more} more problem{'s' if more > 1 else ''}; 'mcm-emu scenario validate' lists all)",
            line=first.line,
            key=first.key,
        )
        error.problems = problems
        return error

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_SELECTOR = re.compile(r"^(all|\d+(-\d+)?(,\d+(-\d+)?)*)$")


def parse_selector(text: str, ids: list[int]) -> list[int]:
    """``all``, ``3``, ``0-7`` or ``0,2,5-6``: the node ids selected (that exist)."""
    text = text.replace(" ", "")
    if not _SELECTOR.match(text):
        raise ValueError(f"node selector {text!r}: use all, N, A-B or a comma list of them")
    if text == "all":
        return list(ids)
    chosen: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"node selector {text!r}: range {part} runs backwards")
        chosen.update(range(a, b + 1))
    missing = sorted(chosen - set(ids))
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"node selector {text!r} names nodes that do not exist: {missing[:5]}{more}")
    return sorted(chosen)


class Group(_Model):
    nodes: str
    profile: str | None = None
    workload: Literal["idle", "steady", "training", "inference", "mixed"] | None = None
    load: Annotated[float, Field(gt=0, le=2)] | None = None


class FleetSpec(_Model):
    nodes: Annotated[int, Field(ge=1, le=100_000)]
    profile: str = "colossus-mcm"
    workload: Literal["idle", "steady", "training", "inference", "mixed"] = "steady"
    load: Annotated[float, Field(gt=0, le=2)] = 1.0
    first_id: Annotated[int, Field(ge=0, lt=2**32)] = 0
    name: str = "scenario"
    group: list[Group] = []


class Rates(_Model):
    tick_hz: Annotated[float, Field(gt=0, le=10_000)] | None = None
    telemetry_hz: Annotated[float, Field(gt=0, le=10_000)] | None = None
    dvfs_hz: Annotated[float, Field(gt=0, le=10_000)] | None = None
    thermal_hz: Annotated[float, Field(gt=0, le=10_000)] | None = None
    valve_hz: Annotated[float, Field(gt=0, le=10_000)] | None = None


class FaultStep(_Model):
    at: Annotated[float, Field(ge=0)]
    nodes: str
    fault: str
    clear_at: Annotated[float, Field(gt=0)] | None = None

    @field_validator("fault")
    @classmethod
    def _fault(cls, text: str) -> str:
        try:
            parse_fault(text.split())
        except FaultError as e:
            raise ValueError(str(e)) from None
        return text

    @model_validator(mode="after")
    def _order(self) -> FaultStep:
        if self.clear_at is not None and self.clear_at <= self.at:
            raise ValueError("clear_at must come after at")
        return self


class CommandStep(_Model):
    at: Annotated[float, Field(ge=0)]
    nodes: str
    command: str

    @field_validator("command")
    @classmethod
    def _command(cls, text: str) -> str:
        from ..host.commands import COMMANDS, UsageError

        words = text.split()
        if not words or words[0] not in COMMANDS:
            raise ValueError(f"unknown command {text!r} (known: {', '.join(sorted(COMMANDS))})")
        try:
            COMMANDS[words[0]].parse(words[1:])
        except UsageError as e:
            raise ValueError(str(e)) from None
        return text


class RandomFaults(_Model):
    per_node_per_hour: Annotated[float, Field(ge=0, le=3600)]
    faults: Annotated[list[str], Field(min_length=1)]
    hold_s: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]] = (60.0, 600.0)
    start_s: Annotated[float, Field(ge=0)] = 60.0

    @field_validator("faults")
    @classmethod
    def _faults(cls, items: list[str]) -> list[str]:
        for text in items:
            try:
                parse_fault(text.split())
            except FaultError as e:
                raise ValueError(str(e)) from None
        return items


class Scenario(_Model):
    name: Annotated[str, Field(min_length=1, max_length=80)]
    description: str = ""
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    duration_s: Annotated[float, Field(gt=0, le=366 * 86_400)]
    fleet: FleetSpec
    rates: Rates | None = None
    fault: list[FaultStep] = []
    command: list[CommandStep] = []
    random_faults: RandomFaults | None = None
    expect: list[dict[str, Any]] = []
    _source: str = PrivateAttr(default="")  # the TOML text, to name lines in later errors
    _path: str = PrivateAttr(default="<scenario>")

    def error(self, message: str, *loc: str | int) -> ScenarioError:
        """An error about the item at ``loc`` (e.g. ``"fault", 2, "nodes"``), naming its line."""
        key = ".".join(str(p) for p in loc) or None
        return ScenarioError(self._path, message, line=_locate(self._source, loc) if loc else None, key=key)


# --- loading, with line numbers --------------------------------------------------------------------


def load_scenario_text(text: str, path: str = "<scenario>") -> Scenario:
    """The scenario in ``text``; a ScenarioError names its first problem and stands for all of
    them (``problems``)."""
    scenario, problems = scenario_and_problems(text, path)
    if problems or scenario is None:
        raise ScenarioError.of(problems)
    return scenario


def scenario_and_problems(text: str, path: str = "<scenario>") -> tuple[Scenario | None, list[ScenarioError]]:
    """The scenario in ``text`` (None when it does not fit the schema) and every problem found:
    all the schema's, else all the timing and expectation problems."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        line = int(m.group(1)) if m else (len(text.splitlines()) or 1) if "end of document" in str(e) else None
        return None, [ScenarioError(path, f"TOML syntax error: {e}", line=line)]
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(err["loc"])
            key = ".".join(str(p) for p in loc)
            msg = (
                "unknown key"
                if err["type"] == "extra_forbidden"
                else ("missing key" if err["type"] == "missing" else err["msg"].removeprefix("Value error, "))
            )
            problems.append(ScenarioError(path, msg, line=_locate(text, loc), key=key or None))
        return None, problems
    scenario._source, scenario._path = text, path
    problems = []
    for section in ("fault", "command"):
        for i, step in enumerate(getattr(scenario, section)):
            if step.at > scenario.duration_s:
                problems.append(
                    scenario.error(f"at {step.at:g} s is after the end ({scenario.duration_s:g} s)", section, i, "at")
                )
    from .expect import expectation_errors

    for bad in expectation_errors(scenario.expect):
        loc = ("expect", bad.index, bad.key) if bad.key else ("expect", bad.index)
        key = f"expect.{bad.index}" + (f".{bad.key}" if bad.key else "")
        problems.append(ScenarioError(path, str(bad), line=_locate(text, loc), key=key))
    return scenario, problems


def read_scenario(path: str | Path) -> str:
    """The text of a scenario file; ScenarioError when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ScenarioError(str(path), f"cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ScenarioError(str(path), "not UTF-8 text") from None


def load_scenario(path: str | Path) -> Scenario:
    return load_scenario_text(read_scenario(path), str(path))


LIBRARY = Path(__file__).resolve().parent / "library"


def list_scenarios() -> dict[str, Path]:
    return {p.stem: p for p in sorted(LIBRARY.glob("*.toml"))}


def find_scenario(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        return p
    found = list_scenarios()
    if name_or_path not in found:
        raise ScenarioError(name_or_path, f"no such scenario (shipped: {', '.join(found)})")
    return found[name_or_path]
