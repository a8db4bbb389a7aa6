"""Fleet files (TOML) for ``mcm-emu run --fleet-file``: which nodes run which hardware profile,
workload and rig, on which broker or serial links (docs/fleet-file.md).

::

    fleet = "prod"
    seed = 7

    [broker]                         # or [serial]; neither: an embedded broker
    url = "mqtt://10.0.0.5:1883"
    username = "fleet-host"
    password_file = "host.pw"        # paths are relative to this file

    [[nodes]]
    ids = "0-99"
    profile = "colossus-mcm"
    workload = "training"

    [[nodes]]
    ids = "100"
    profile = "mi300x-class"
    rig = "bench-tc-valve@/dev/ttyUSB0"

Validated like hardware and rig profiles: unknown, missing and malformed keys, unknown profiles
and rigs, overlapping id ranges are all reported, each naming file, line and key. What only the
layers above know how to check (a broker URL, a serial port, a fleet name) comes in as
``checks``: functions that raise ValueError naming the problem.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .lines import locate
from .loader import ProfileError, _describe, _source, load_profile, read_toml
from .rig import RigProfile, load_rig_profile
from .schema import Profile

MAX_NODES = 100_000
U32_MAX = 2**32 - 1
Workload = Literal["idle", "steady", "training", "inference", "mixed"]
Check = Callable[[str], object]
_IDS = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
_PATH_KEYS = ("password_file", "node_secret", "cafile", "cert", "key")


def parse_ids(text: str) -> list[int]:
    """``"7"``, ``"0-99"`` or ``"0-3,8,10-11"``: the ids, ascending; ValueError names what is wrong."""
    text = text.replace(" ", "")
    if not _IDS.match(text):
        raise ValueError(f'ids {text!r}: use N, A-B or a comma list of them, e.g. "0-99" or "0-3,8"')
    chosen: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        a, b = int(lo), int(hi or lo)
        if b < a:
            raise ValueError(f"ids {text!r}: range {part} runs backwards")
        if b > U32_MAX:
            raise ValueError(f"ids {text!r}: node ids go up to {U32_MAX}")
        if b - a + 1 + len(chosen) > MAX_NODES:
            raise ValueError(f"ids {text!r}: more than {MAX_NODES} nodes")
        chosen.update(range(a, b + 1))
    return sorted(chosen)


def _ranges(ids: list[int]) -> str:
    """``[0, 1, 2, 5]`` as ``0-2,5``."""
    out: list[str] = []
    start = prev = ids[0]
    for n in [*ids[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ",".join(out)


@dataclass
class _Context:
    """What the validators share: where relative paths start, the checks of the layers above, and
    the profiles and rigs loaded so far (each loaded once)."""

    base: Path
    checks: Mapping[str, Check]
    profiles: dict[str, Profile] = field(default_factory=dict)
    rigs: dict[str, RigProfile] = field(default_factory=dict)

    def check(self, what: str, value: str) -> None:
        fn = self.checks.get(what)
        if fn is not None:
            fn(value)

    def path(self, text: str) -> str:
        p = Path(text).expanduser()
        return str(p if p.is_absolute() else self.base / p)

    def profile(self, ref: str) -> Profile:
        if ref not in self.profiles:
            local = self.path(ref)
            is_path = ref.endswith(".toml") or "/" in ref
            self.profiles[ref] = load_profile(local if is_path else ref)
        return self.profiles[ref]

    def rig(self, ref: str) -> RigProfile:
        if ref not in self.rigs:
            self.rigs[ref] = load_rig_profile(self.path(ref) if ref.endswith(".toml") or "/" in ref else ref)
        return self.rigs[ref]


def _ctx(info: ValidationInfo) -> _Context | None:
    return info.context if isinstance(info.context, _Context) else None


def _existing_file(v: str | None, info: ValidationInfo) -> str | None:
    """A path relative to the fleet file, made absolute; ValueError when no file is there."""
    ctx = _ctx(info)
    if v is None or ctx is None:
        return v
    path = ctx.path(v)
    if not Path(path).is_file():
        raise ValueError(f"no such file: {path}")
    return path


def _loaded(e: ProfileError, ref: str) -> str:
    """A profile or rig error as said from the fleet file: a name not found as ``'name': no such
    ...``; a file that does not load as ``'ref' does not load: <its file:line: key: message>``."""
    text = str(e)
    return f"{ref!r}: {text.removeprefix(f'{ref}: ')}" if e.path == ref else f"{ref!r} does not load: {text}"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeRange(_Section):
    """A ``[[nodes]]`` entry: some ids, what they run."""

    ids: tuple[int, ...]
    """``"0-99"``, ``"100"``, ``"0-3,8"`` or a single whole number."""
    profile: Annotated[str, Field(min_length=1)]
    """A hardware profile's name, or a path to its TOML file (relative to the fleet file)."""
    workload: Workload = "steady"
    """What the dice run; ``mixed``: the four in turn, node by node within the range."""
    load: Annotated[float, Field(gt=0, le=2)] = 1.0
    """Scales the workload's demand (1: as the workload has it)."""
    rig: str | None = None
    """``RIG[@PORT]``: a rig profile provides some of each node's sensors (``mcm-emu run --rig``);
    PORT defaults to ``pty`` (a new pseudo-terminal per node, its path printed)."""

    @field_validator("ids", mode="before")
    @staticmethod
    def _ids(v: Any) -> tuple[int, ...]:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError('ids must be a string such as "0-99" or "0-3,8", or a whole number')
        if isinstance(v, int):
            if not 0 <= v <= U32_MAX:
                raise ValueError(f"node ids are within 0..{U32_MAX}")
            return (v,)
        return tuple(parse_ids(v))

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str, info: ValidationInfo) -> str:
        ctx = _ctx(info)
        if ctx is not None:
            try:
                ctx.profile(v)
            except ProfileError as e:
                raise ValueError(_loaded(e, v)) from None
        return v

    @field_validator("rig")
    @classmethod
    def _rig(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        name, _, port = v.partition("@")
        if not name:
            raise ValueError(f'rig {v!r}: expected RIG[@PORT], e.g. "bench-tc-valve@pty"')
        ctx = _ctx(info)
        if ctx is not None:
            try:
                ctx.rig(name)
            except ProfileError as e:
                raise ValueError(_loaded(e, name)) from None
            if port:
                try:
                    ctx.check("serial_port", port)
                except ValueError as e:
                    raise ValueError(f"rig port {port!r}: {e}") from None
        return v

    @model_validator(mode="after")
    def _rig_fits(self, info: ValidationInfo) -> NodeRange:
        ctx = _ctx(info)
        if self.rig is None or ctx is None:
            return self
        name = self.rig.partition("@")[0]
        prof = ctx.profile(self.profile)
        ctx.rig(name).check_against(prof.die.count, prof.hbm.count, prof.cooling.valves)
        return self

    @property
    def rig_name(self) -> str | None:
        return None if self.rig is None else self.rig.partition("@")[0]

    @property
    def rig_port(self) -> str:
        return "pty" if self.rig is None else (self.rig.partition("@")[2] or "pty")


class BrokerSection(_Section):
    """``[broker]``: the MQTT broker the nodes use; without ``url``, the run embeds one."""

    url: str | None = None
    embedded_port: Annotated[int, Field(ge=1, le=65535)] | None = None
    username: Annotated[str, Field(min_length=1)] | None = None
    password_file: str | None = None
    node_secret: str | None = None
    cafile: str | None = None
    cert: str | None = None
    key: str | None = None
    connection: Literal["auto", "node", "carrier"] | None = None
    source_addresses: Annotated[str, Field(min_length=1)] | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None, info: ValidationInfo) -> str | None:
        ctx = _ctx(info)
        if v is not None and ctx is not None:
            ctx.check("broker_url", v)
        return v

    @field_validator(*_PATH_KEYS)
    @classmethod
    def _file(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(v, info)


class SerialSection(_Section):
    """``[serial]``: the nodes talk MCTP over serial links instead of MQTT (``run --serial``)."""

    port: str | Annotated[list[str], Field(min_length=1)]
    """``pty`` (a pseudo-terminal per node), a device or URL all nodes share (one EID each), or a
    list of them, one per node in id order; options ``?baud=N&mtu=N``."""
    mux: bool = False
    """With ``pty``: all nodes on one pseudo-terminal, told apart by EID (``--serial-mux``)."""

    @field_validator("port")
    @classmethod
    def _ports(cls, v: str | list[str], info: ValidationInfo) -> str | list[str]:
        ctx = _ctx(info)
        if ctx is not None:
            for p in [v] if isinstance(v, str) else v:
                ctx.check("serial_port", p)
        return v

    @property
    def ports(self) -> list[str]:
        return [self.port] if isinstance(self.port, str) else list(self.port)


class FleetFile(_Section):
    """A fleet file: its nodes and where they talk."""

    description: str = ""
    fleet: str | None = None
    """The fleet's name: topics ``mcm/v1/<fleet>/...`` (``--fleet``; default ``default``)."""
    seed: Annotated[int, Field(ge=0, le=U32_MAX)] | None = None
    frame_keys: str | None = None
    """The fleet's frame keys (``--frame-keys``), relative to the fleet file."""
    broker: BrokerSection | None = None
    serial: SerialSection | None = None
    nodes: Annotated[list[NodeRange], Field(min_length=1)]

    @field_validator("fleet")
    @classmethod
    def _fleet(cls, v: str | None, info: ValidationInfo) -> str | None:
        ctx = _ctx(info)
        if v is not None and ctx is not None:
            ctx.check("fleet_name", v)
        return v

    @field_validator("frame_keys")
    @classmethod
    def _keys(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _existing_file(v, info)

    @property
    def ids(self) -> list[int]:
        """Every node id, ascending."""
        return sorted(n for r in self.nodes for n in r.ids)


@dataclass(frozen=True)
class FleetLayout:
    """A fleet file read and checked: the schema's model, each node's profile and rig."""

    path: str
    spec: FleetFile
    profiles: dict[int, Profile]
    """Each node id's hardware profile."""
    rigs: dict[int, RigProfile]
    """The rig of each node that has one."""
    text: str = ""

    def line(self, *loc: str | int) -> int | None:
        """The line of a key path such as ``("broker", "url")`` or ``("nodes", 1, "rig")``."""
        return locate(self.text, loc) if self.text else None

    def where(self, *loc: str | int) -> str:
        """``path:line: key 'k'`` of a key, for messages about it."""
        n = self.line(*loc)
        return f"{self.path}{f':{n}' if n else ''}: key '{'.'.join(map(str, loc))}'"


def load_fleet_file(path: str | Path, checks: Mapping[str, Check] | None = None) -> FleetLayout:
    """Read and check a fleet file; a ProfileError lists every problem (``errors``, ``lines()``),
    each with file, line and key. ``checks`` (``broker_url``, ``serial_port``, ``fleet_name``)
    raise ValueError for a value they refuse."""
    path = str(path)
    data = read_toml_with_line(path)
    text = _source(path)
    ctx = _Context(base=Path(path).resolve().parent, checks=checks or {})
    errors: list[tuple[int | None, str | None, str]] = []

    def problem(message: str, *loc: str | int) -> None:
        errors.append((locate(text, loc) if text and loc else None, ".".join(map(str, loc)) or None, message))

    spec: FleetFile | None = None
    try:
        spec = FleetFile.model_validate(data, context=ctx)
    except ValidationError as e:
        for err in e.errors():
            key, message = _describe(err)
            loc = tuple(err["loc"])
            errors.append((locate(text, loc) if text and loc else None, key or None, message))
    # checks across entries, on every entry that is valid by itself
    if "broker" in data and "serial" in data:
        problem("[serial] replaces the MQTT link: a fleet file has [broker] or [serial], not both", "serial")
    broker = data.get("broker")
    if isinstance(broker, dict):  # checked here, so that they are said beside the table's other problems
        if "url" in broker and "embedded_port" in broker:
            problem("is for the embedded broker: it does not go with url", "broker", "embedded_port")
        for k in ("username", *_PATH_KEYS):
            if "url" not in broker and k in broker:
                problem("is for a broker url: the embedded broker is open", "broker", k)
    raw = data.get("nodes")
    entries = [(i, e) for i, e in enumerate(raw if isinstance(raw, list) else []) if isinstance(e, dict)]
    owner: dict[int, int] = {}
    ports: dict[str, int] = {}
    for i, entry in entries:
        try:
            ids = NodeRange._ids(entry.get("ids"))
        except ValueError:
            continue  # reported above
        rig = entry.get("rig")
        port = rig.partition("@")[2] if isinstance(rig, str) else ""
        if port not in ("", "pty"):
            if len(ids) > 1:
                problem(
                    f"rig port {port!r} serves one node, and ids names {len(ids)}: give each node its own "
                    "[[nodes]] entry and port, or use pty (a pseudo-terminal per node)",
                    "nodes",
                    i,
                    "rig",
                )
            elif port in ports:
                problem(f"rig port {port!r} is already the rig port of nodes.{ports[port]}", "nodes", i, "rig")
            ports.setdefault(port, i)
        clash = sorted(n for n in ids if n in owner)
        if clash:
            firsts = sorted({owner[n] for n in clash})
            others = ", ".join(f"nodes.{j} (line {locate(text, ('nodes', j, 'ids'))})" for j in firsts)
            problem(f"ids {_ranges(clash)} are already in {others}", "nodes", i, "ids")
        for n in ids:
            owner.setdefault(n, i)
    if len(owner) > MAX_NODES:
        problem(f"{len(owner)} nodes: a run takes at most {MAX_NODES}", "nodes")
    named: dict[str, tuple[int, Profile]] = {}
    for i, entry in entries:
        ref = entry.get("profile")
        prof = ctx.profiles.get(ref) if isinstance(ref, str) else None
        if prof is None:
            continue
        seen = named.get(prof.name)
        if seen is not None and seen[1] != prof:
            problem(
                f"profile {ref!r} is named {prof.name!r}, as nodes.{seen[0]}'s is, but differs from it: "
                "a fleet's profiles need different names",
                "nodes",
                i,
                "profile",
            )
        named.setdefault(prof.name, (i, prof))
    if spec is not None and spec.serial is not None and len(spec.serial.ports) not in (1, len(owner)):
        problem(
            f"{len(spec.serial.ports)} ports for {len(owner)} nodes: give one (shared, or pty) or one per node",
            "serial",
            "port",
        )
    if errors or spec is None:
        errors.sort(key=lambda e: e[0] or 0)
        first_line, first_key, msg = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        error = ProfileError(path, msg + more, key=first_key, line=first_line)
        error.errors = errors
        raise error
    profiles = {n: ctx.profiles[r.profile] for r in spec.nodes for n in r.ids}
    rigs = {n: ctx.rigs[r.rig_name] for r in spec.nodes if r.rig_name for n in r.ids}
    return FleetLayout(path=path, spec=spec, profiles=profiles, rigs=rigs, text=text)


def read_toml_with_line(path: str | Path) -> dict[str, Any]:
    """The file's TOML data; a syntax error names its line as ``path:N``."""
    try:
        return read_toml(path)
    except ProfileError as e:
        m = re.search(r"\(at line (\d+)", str(e))
        if m and e.line is None:
            raise ProfileError(path, str(e).removeprefix(f"{path}: "), line=int(m.group(1))) from None
        raise
