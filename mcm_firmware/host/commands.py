"""The commands ``mcm-emu ctl`` (and scenario files) know, one per operation of
:data:`mcm_firmware.protocol.OPS`: how to parse their arguments and how to show their answers.

Every entry is derived from the operation's spec: plain arguments (numbers and text, one word
each, in declaration order) are parsed from the declaration itself, an answer without data shows
as ``ok`` and its round trip, an answer with data as its fields. An operation whose words or views
need more says so in :data:`OVERRIDES`; a test fails when an operation has no entry.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import construct as c

from ..faults import FaultError, parse_clear, parse_fault
from ..protocol import (
    OPS,
    ClearFaultArgs,
    InjectArgs,
    Op,
    OpSpec,
    PowerLimitArgs,
    PowerLimitSource,
    RasResult,
    Response,
    SetValveArgs,
    StatusResult,
)
from ..protocol.ops import StatsResult
from .views import ras_json, ras_text, status_json, status_text, typed_json


class UsageError(ValueError):
    """Bad command arguments; the CLI exits 2 with this message."""


Parse = Callable[[list[str]], Any]
Show = Callable[[int, Response, float, Response | None], dict[str, Any]]
"""node, the answer, its round trip, the answer to the entry's ``follow`` operation (if any)."""
Text = Callable[[str, dict[str, Any]], str]


@dataclass(frozen=True)
class CtlCommand:
    name: str
    op: Op
    usage: str
    help: str
    parse: Parse
    show: Show
    text: Text
    follow: Op | None = None
    """An operation asked right after, whose answer the view shows too (None when the node
    does not run it)."""


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"{what} must be a finite number, got {text!r}")
    return value


def parse_int(text: str, what: str, lo: int, hi: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise UsageError(f"{what} must be a whole number, got {text!r}") from None
    if not lo <= value <= hi:
        raise UsageError(f"{what} must be within {lo}..{hi}, got {value}")
    return value


# --- derived from the declaration ------------------------------------------------------------------


def _word_parser(name: str, subcon: c.Construct) -> Callable[[str], Any] | None:
    """How one word becomes the value of a plain field; None for a field that is not plain."""
    if isinstance(subcon, c.FormatField):
        code = subcon.fmtstr[-1]
        if code in "fde":
            return lambda word: parse_float(word, name)
        if code in "BHILQ":
            hi = 2 ** (8 * subcon.sizeof()) - 1
            return lambda word: parse_int(word, name, 0, hi)
        return None
    if isinstance(subcon, c.StringEncoded):
        return lambda word: word
    return None


def derived_parse(spec: OpSpec) -> Parse | None:
    """A parser of ``spec``'s arguments, one word per field; None when a field is not plain."""
    if spec.args is None:

        def no_args(words: list[str]) -> None:
            if words:
                raise UsageError(f"{spec.name} takes no arguments (got {' '.join(words)!r})")

        return no_args
    fields = dataclasses.fields(spec.args)
    words_of = spec.usage.split()
    names = words_of if len(words_of) == len(fields) else [fld.name for fld in fields]
    converters = [
        (fld.name, _word_parser(f"{spec.name} {shown}", fld.metadata["wire"]))
        for fld, shown in zip(fields, names, strict=True)
    ]
    if any(conv is None for _, conv in converters):
        return None
    cls = spec.args
    count = {1: "one argument", 2: "two arguments", 3: "three arguments"}.get(len(fields), f"{len(fields)} arguments")

    def parse(words: list[str]) -> Any:
        if len(words) != len(converters):
            raise UsageError(f"{spec.name} takes {count}, {spec.usage} (got {len(words)})")
        return cls(
            **{name: conv(word) for (name, conv), word in zip(converters, words, strict=True) if conv is not None}
        )

    return parse


def show_ok(node: int, resp: Response, rtt: float, more: Response | None = None) -> dict[str, Any]:
    return {"node": node, "ok": True, "rtt_ms": round(rtt * 1e3, 3)}


def show_data(node: int, resp: Response, rtt: float, more: Response | None = None) -> dict[str, Any]:
    return {"node": node, **typed_json(resp.data)}


def text_ok(name: str, obj: dict[str, Any]) -> str:
    return f"node {obj['node']}: ok ({name}) in {obj['rtt_ms']:.2f} ms"


def text_fields(name: str, obj: dict[str, Any]) -> str:
    """``node N:`` and one ``key=value`` per scalar; list items one per line."""
    head = [f"{k}={v}" for k, v in obj.items() if k != "node" and not isinstance(v, (list, dict))]
    lines = [f"node {obj['node']}: {name}" + (" " + " ".join(head) if head else "")]
    for key, value in obj.items():
        if isinstance(value, list):
            lines += [
                f"  {key}: " + (json.dumps(item) if isinstance(item, (dict, list)) else str(item)) for item in value
            ] or [f"  {key}: none"]
    return "\n".join(lines)


# --- where the declaration is not enough --------------------------------------------------------------


def _parse_valve(words: list[str]) -> SetValveArgs:
    if len(words) != 2:
        raise UsageError(f"set-valve takes two arguments, N and PCT|auto (got {len(words)})")
    valve = parse_int(words[0], "valve N", 0, 255)
    if words[1].lower() == "auto":
        return SetValveArgs(valve=valve, auto=1, pct=0.0)
    return SetValveArgs(valve=valve, auto=0, pct=parse_float(words[1], "valve position PCT"))


SETTABLE_SOURCES = (PowerLimitSource.IN_BAND, PowerLimitSource.OUT_OF_BAND)


def _parse_limit(words: list[str]) -> PowerLimitArgs:
    if len(words) != 2:
        raise UsageError(f"set-power-limit takes two arguments, SOURCE and W|clear (got {len(words)})")
    known = {s.label: s for s in SETTABLE_SOURCES}
    source = known.get(words[0].lower())
    if source is None:
        raise UsageError(f"unknown power limit source {words[0]!r} (sources: {', '.join(known)})")
    if words[1].lower() == "clear":
        return PowerLimitArgs(source=int(source), watts=math.nan)
    return PowerLimitArgs(source=int(source), watts=parse_float(words[1], "set-power-limit W"))


def _parse_inject(words: list[str]) -> InjectArgs:
    try:
        f = parse_fault(words)
    except FaultError as e:
        raise UsageError(str(e)) from None
    return InjectArgs(kind=int(f.kind), target=f.target, value=f.value, value2=f.value2)


def _parse_clear(words: list[str]) -> ClearFaultArgs:
    try:
        cs = parse_clear(words)
    except FaultError as e:
        raise UsageError(str(e)) from None
    return ClearFaultArgs(kind=0 if cs.kind is None else int(cs.kind), target=cs.target)


def _show_status(node: int, resp: Response, rtt: float, more: Response | None = None) -> dict[str, Any]:
    assert isinstance(resp.data, StatusResult)
    stats = more.data if more is not None and isinstance(more.data, StatsResult) else None
    return status_json(node, resp.data, stats)


def _show_ras(node: int, resp: Response, rtt: float, more: Response | None = None) -> dict[str, Any]:
    assert isinstance(resp.data, RasResult)
    return ras_json(node, resp.data)


@dataclass(frozen=True)
class Override:
    parse: Parse | None = None
    show: Show | None = None
    text: Text | None = None
    follow: Op | None = None


OVERRIDES: dict[Op, Override] = {
    Op.SET_VALVE: Override(parse=_parse_valve),
    Op.SET_POWER_LIMIT: Override(parse=_parse_limit),
    Op.INJECT: Override(parse=_parse_inject),
    Op.CLEAR_FAULT: Override(parse=_parse_clear),
    Op.STATUS: Override(show=_show_status, text=lambda name, obj: status_text(obj), follow=Op.STATS),
    Op.RAS: Override(show=_show_ras, text=lambda name, obj: ras_text(obj)),
}


def _entry(spec: OpSpec) -> CtlCommand | None:
    o = OVERRIDES.get(spec.op, Override())
    parse = o.parse or derived_parse(spec)
    if parse is None:
        return None
    show = o.show or (show_ok if spec.result is None else show_data)
    text = o.text or (text_ok if spec.result is None else text_fields)
    usage = f"{spec.name} {spec.usage}".strip()
    return CtlCommand(spec.name, spec.op, usage, spec.help, parse, show, text, follow=o.follow)


COMMANDS: dict[str, CtlCommand] = {e.name: e for e in (_entry(s) for s in OPS.values()) if e is not None}
"""By ctl name; an operation missing here has arguments the declaration cannot parse and no override."""
