"""Expectations: what must hold in a scenario's trace.

Every ``[[expect]]`` table has a ``type``, optionally a ``name`` (else one is made up), ``nodes``
(a selector, default ``all``), and a time window ``after`` / ``before`` in seconds from the start
(default: the whole run). Thresholds are numbers or expressions over the node's profile:
``slowdown_c``, ``hw_slowdown_c``, ``shutdown_c``, ``target_c``, ``hbm_max_c``,
``default_cap_w``, ``min_cap_w``, ``max_cap_w``, or ``cap`` (the power cap in force at each
sample), optionally ``* k`` and ``+ c`` / ``- c``: ``cap * 1.02``, ``slowdown_c - 1``.

========  ===========================================================================================
type      keys and meaning
========  ===========================================================================================
event     ``code`` (an event name), ``subject`` (optional), ``text`` (optional substring),
          ``count`` or ``min`` / ``max`` (default ``min = 1``): events of that code in the window,
          per node, or summed over the selected nodes with ``total = true``
max       ``signal``, ``below``: the signal never exceeds the threshold in the window
min       ``signal``, ``above``: the signal never falls under the threshold in the window
average   ``signal``, ``window_s``, ``below``: every sliding mean over ``window_s`` that lies in
          the window stays at or under the threshold (power: ``below = "cap * 1.02"``)
delta     ``signal``, ``from``, ``to`` (seconds), ``equals`` or ``min`` / ``max``: the change of
          the signal between the last samples at or before those times
within    ``at`` (seconds), ``within_s``, ``signal`` and ``equals``, ``below`` or ``above``: the
          condition holds at some sample in ``(at, at + within_s]``
final     ``signal`` and ``equals``, ``below`` or ``above``: at the last sample in the window
online    the node's last BIRTH/DEATH in the window is a BIRTH (``equals = false``: a DEATH)
telemetry ``min`` / ``max``: how many telemetry frames of the node reached the recorder in the
          window (what a lossy or corrupting link leaves of them)
========  ===========================================================================================

Signals (``name`` or ``name:ARG``): ``die_temp``, ``clock``, ``die_power``, ``util``, ``pstate``
(``:N`` a die, else the hottest / mean / sum / mean / fastest), ``hbm_temp``, ``ce``, ``ue``
(``:N`` a stack, else hottest / totals), ``power``, ``cap``, ``vrm_current``, ``inlet``,
``outlet``, ``flow``, ``valve:N``, ``pump_running:P``, ``pump_lead:P``, ``pump_fault:P``,
``pump_rpm:P`` (P a pump name or index), ``reason:NAME`` (an NVML reason set on any die),
``failsafe``, ``remap_pending``, ``remap_failed``, ``ce_storm``, ``recovery_action``, ``state``,
``shutdown``, ``mode``, ``natural_convection``, ``rx_rejected``, ``pcie_replays``,
``pcie_aer_correctable``, ``pcie_aer_uncorrectable``, ``limit_source`` (who set the cap: 0 the
board default, 1 in band, 2 out of band). Booleans compare as 0 and 1.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..profile import Profile
from ..protocol import ClockReason, EventCode
from .trace import SIGNAL_ARGS, SIGNALS, Trace

COMMON = {"name", "type", "nodes", "after", "before"}
TYPES: dict[str, tuple[set[str], set[str]]] = {  # required, optional keys
    "event": ({"code"}, {"subject", "text", "count", "min", "max", "total"}),
    "max": ({"signal", "below"}, set()),
    "min": ({"signal", "above"}, set()),
    "average": ({"signal", "window_s", "below"}, set()),
    "delta": ({"signal", "from", "to"}, {"equals", "min", "max"}),
    "within": ({"at", "within_s", "signal"}, {"equals", "below", "above"}),
    "final": ({"signal"}, {"equals", "below", "above"}),
    "online": (set(), {"equals"}),
    "telemetry": (set(), {"min", "max"}),
}
PROFILE_NAMES = {
    "slowdown_c": lambda p: p.thermal.slowdown_c,
    "hw_slowdown_c": lambda p: p.thermal.hw_slowdown_c,
    "shutdown_c": lambda p: p.thermal.shutdown_c,
    "target_c": lambda p: p.thermal.target_c,
    "hbm_max_c": lambda p: p.thermal.hbm_max_c,
    "default_cap_w": lambda p: p.power.default_cap_w,
    "min_cap_w": lambda p: p.power.min_cap_w,
    "max_cap_w": lambda p: p.power.max_cap_w,
}
_EXPR = re.compile(r"^\s*(?P<name>[a-z_]+)\s*(?:\*\s*(?P<mul>[0-9.]+))?\s*(?:(?P<sign>[+-])\s*(?P<add>[0-9.]+))?\s*$")


class ExpectationError(ValueError):
    def __init__(self, index: int, key: str | None, message: str) -> None:
        super().__init__(message)
        self.index = index
        self.key = key


@dataclass(frozen=True)
class Threshold:
    name: str | None  # a profile name, "cap", or None for a plain number
    mul: float = 1.0
    add: float = 0.0

    def values(self, profile: Profile, cap: np.ndarray) -> np.ndarray | float:
        if self.name is None:
            return self.add
        base = cap if self.name == "cap" else PROFILE_NAMES[self.name](profile)
        return base * self.mul + self.add

    def __str__(self) -> str:
        if self.name is None:
            return f"{self.add:g}"
        s = self.name + (f" * {self.mul:g}" if self.mul != 1 else "")
        return s + (f" {'+' if self.add > 0 else '-'} {abs(self.add):g}" if self.add else "")


def parse_threshold(value: Any) -> Threshold:
    if isinstance(value, bool):
        return Threshold(None, add=float(value))
    if isinstance(value, (int, float)):
        return Threshold(None, add=float(value))
    if isinstance(value, str):
        m = _EXPR.match(value)
        if m and (m.group("name") in PROFILE_NAMES or m.group("name") == "cap"):
            add = float(m.group("add") or 0) * (-1 if m.group("sign") == "-" else 1)
            return Threshold(m.group("name"), float(m.group("mul") or 1), add)
    names = ", ".join(sorted([*PROFILE_NAMES, "cap"]))
    raise ValueError(f"threshold {value!r} is neither a number nor NAME [* k] [+ c] with NAME one of {names}")


def check_signal(name: str) -> str:
    base, sep, arg = name.partition(":")
    if base not in SIGNALS:
        raise ValueError(f"unknown signal {name!r} (known: {', '.join(sorted(SIGNALS))})")
    what = SIGNAL_ARGS.get(base)
    if sep and what is None:
        raise ValueError(f"signal {base!r} takes no ':' argument")
    if base in ("valve",) and not sep:
        raise ValueError(f"signal {base!r} needs ':N'")
    if what == "pump" and not sep:
        raise ValueError(f"signal {base!r} needs ':PUMP' (a pump name or index)")
    if what == "reason":
        if not sep or arg.upper() not in ClockReason.__members__:
            raise ValueError(f"signal reason needs ':NAME', one of {', '.join(ClockReason.__members__)}")
    elif sep and what in ("die", "stack", "valve") and not arg.isdigit():
        raise ValueError(f"signal {name!r}: the {what} must be a number")
    return name


@dataclass(frozen=True)
class Expectation:
    index: int
    type: str
    name: str
    nodes: str
    after: float
    before: float | None
    args: dict[str, Any] = field(default_factory=dict)


def _keyed(index: int, key: str, fn: Any, value: Any) -> Any:
    """``fn(value)``, its ValueError reported against ``key`` of expectation ``index``."""
    try:
        return fn(value)
    except ExpectationError:
        raise
    except ValueError as e:
        raise ExpectationError(index, key, str(e)) from None


def parse_expectations(items: list[dict[str, Any]]) -> list[Expectation]:
    """The expectations of a scenario; ExpectationError for the first bad one."""
    return [parse_expectation(i, raw) for i, raw in enumerate(items)]


def expectation_errors(items: list[dict[str, Any]]) -> list[ExpectationError]:
    """Every bad expectation's error (the first of each), none when all are good."""
    errors = []
    for i, raw in enumerate(items):
        try:
            parse_expectation(i, raw)
        except ExpectationError as e:
            errors.append(e)
    return errors


def parse_expectation(i: int, raw: Any) -> Expectation:
    if not isinstance(raw, dict):
        raise ExpectationError(i, None, "an [[expect]] entry must be a table")
    kind = raw.get("type")
    if kind not in TYPES:
        raise ExpectationError(i, "type", f"type must be one of {', '.join(TYPES)} (got {kind!r})")
    required, optional = TYPES[kind]
    for key in raw:
        if key not in COMMON | required | optional:
            raise ExpectationError(i, key, f"unknown key for a {kind} expectation")
    for key in required:
        if key not in raw:
            raise ExpectationError(i, key, f"a {kind} expectation needs {key!r}")
    args = {k: v for k, v in raw.items() if k not in COMMON}
    try:
        for num in ("after", "before"):
            if num in raw and not isinstance(raw[num], (int, float)):
                raise ExpectationError(i, num, f"{num} must be a number of seconds")
        if "signal" in args:
            _keyed(i, "signal", check_signal, args["signal"])
        for key in ("below", "above"):
            if key in args:
                args[key] = _keyed(i, key, parse_threshold, args[key])
        if "equals" in args and kind not in ("online",):
            args["equals"] = _keyed(i, "equals", parse_threshold, args["equals"])
        for key in ("min", "max", "count"):
            if key in args and (not isinstance(args[key], (int, float)) or isinstance(args[key], bool)):
                raise ExpectationError(i, key, f"{key} must be a number")
        if kind == "event" and args["code"] not in EventCode.__members__:
            raise ExpectationError(i, "code", f"unknown event code {args['code']!r}")
        for key in ("window_s", "within_s", "at", "from", "to"):
            if key in args and (not isinstance(args[key], (int, float)) or args[key] < 0):
                raise ExpectationError(i, key, f"{key} must be a non-negative number")
        for group in (("equals", "below", "above"),):
            given = [k for k in group if k in args]
            if kind in ("within", "final") and len(given) != 1:
                raise ExpectationError(i, None, f"a {kind} expectation needs exactly one of equals, below, above")
        if kind == "delta" and not {"equals", "min", "max"} & set(args):
            raise ExpectationError(i, None, "a delta expectation needs equals, min or max")
    except ValueError as e:
        if isinstance(e, ExpectationError):
            raise
        bad_key = next((k for k in ("signal", "below", "above", "equals") if k in raw), None)
        raise ExpectationError(i, bad_key, str(e)) from None
    name = raw.get("name") or _auto_name(kind, raw)
    return Expectation(
        i,
        kind,
        str(name),
        str(raw.get("nodes", "all")),
        float(raw.get("after", 0.0)),
        None if "before" not in raw else float(raw["before"]),
        args,
    )


def _auto_name(kind: str, raw: dict[str, Any]) -> str:
    parts = [kind] + [f"{k}={raw[k]}" for k in sorted(raw) if k not in ("type", "name")]
    return " ".join(parts)


@dataclass
class Outcome:
    name: str
    passed: bool
    detail: str
    nodes: list[int]


def _window(t: np.ndarray, e: Expectation, end: float) -> np.ndarray:
    before = end if e.before is None else e.before
    return (t >= e.after) & (t <= before)


def _cmp(values: np.ndarray, th: np.ndarray | float, how: str) -> np.ndarray:
    if how == "below":
        return values <= th
    if how == "above":
        return values >= th
    return np.isclose(values, th)


def evaluate(
    exps: list[Expectation], trace: Trace, profiles: dict[int, Profile], end: float, select: Any
) -> list[Outcome]:
    """Check every expectation on the trace. ``select(selector)`` gives the node ids."""
    return [_evaluate(e, trace, profiles, end, select(e.nodes)) for e in exps]


def _evaluate(e: Expectation, trace: Trace, profiles: dict[int, Profile], end: float, nodes: list[int]) -> Outcome:
    fails: list[str] = []
    a = e.args
    if e.type == "event" and a.get("total"):
        code = int(EventCode[a["code"]])
        before = end if e.before is None else e.before
        k = sum(
            1
            for n in nodes
            for ev in trace.node(n).events
            if ev.code == code
            and e.after <= ev.t <= before
            and ("subject" not in a or ev.subject == a["subject"])
            and ("text" not in a or a["text"] in ev.text)
        )
        lo = a.get("count", a.get("min", 1 if "max" not in a else 0))
        hi = a.get("count", a.get("max", math.inf))
        ok = lo <= k <= hi
        return Outcome(
            e.name,
            ok,
            f"{k} {a['code']} event(s) over {len(nodes)} node(s)"
            + ("" if ok else f", expected {lo}..{hi if hi != math.inf else 'any'}"),
            nodes,
        )
    for n in nodes:
        prof = profiles[n]
        if e.type == "event":
            code = int(EventCode[a["code"]])
            before = end if e.before is None else e.before
            evs = [
                ev
                for ev in trace.node(n).events
                if ev.code == code
                and e.after <= ev.t <= before
                and ("subject" not in a or ev.subject == a["subject"])
                and ("text" not in a or a["text"] in ev.text)
            ]
            k = len(evs)
            lo = a.get("count", a.get("min", 1 if "max" not in a else 0))
            hi = a.get("count", a.get("max", math.inf))
            if not lo <= k <= hi:
                want = f"exactly {lo}" if "count" in a else f"{lo}..{hi if hi != math.inf else 'any'}"
                fails.append(f"node {n}: {k} {a['code']} event(s), expected {want}")
            continue
        if e.type == "online":
            before = end if e.before is None else e.before
            # the scenario's own clean stop at the end is not a node going offline
            states = [
                s
                for s in trace.node(n).states
                if e.after <= s[0] <= before and not (s[1] == "DEATH" and s[2] == 0 and s[0] >= end - 1e-6)
            ]
            online = bool(states) and states[-1][1] == "BIRTH"
            if online != bool(a.get("equals", True)):
                fails.append(f"node {n}: {'online' if online else 'offline'} at the end of the window")
            continue
        if e.type == "telemetry":
            before = end if e.before is None else e.before
            times = np.asarray(trace.node(n).times)
            k = int(((times >= e.after) & (times <= before)).sum())
            lo, hi = a.get("min", 0), a.get("max", math.inf)
            if not lo <= k <= hi:
                fails.append(f"node {n}: {k} telemetry frames, expected {lo}..{hi if hi != math.inf else 'any'}")
            continue
        t, v = trace.signal(n, a["signal"])
        _, cap = trace.signal(n, "cap")
        win = _window(t, e, end)
        if not win.any():
            fails.append(f"node {n}: no telemetry in {e.after:g}..{end if e.before is None else e.before:g} s")
            continue
        sig = a["signal"]
        if e.type in ("max", "min"):
            how = "below" if e.type == "max" else "above"
            th = a[how].values(prof, cap)
            ok = _cmp(v, th, how) | ~win | np.isnan(v)
            if not ok.all():
                k = int(np.argmin(ok))
                limit = th[k] if isinstance(th, np.ndarray) else th
                fails.append(
                    f"node {n}: {sig} = {v[k]:.4g} at t={t[k]:.2f} s, "
                    f"{'over' if how == 'below' else 'under'} {a[how]} ({limit:.4g})"
                )
        elif e.type == "average":
            span = float(a["window_s"])
            th = a["below"].values(prof, cap)
            tt, vv = t[win], v[win]
            thv = th[win] if isinstance(th, np.ndarray) else np.full(len(vv), th)
            worst = None
            c = np.concatenate([[0.0], np.cumsum(vv)])
            j = 0
            for i in range(len(vv)):
                while tt[i] - tt[j] > span:
                    j += 1
                if tt[i] - tt[0] + 1e-9 < span:
                    continue  # the first full window ends here at the earliest
                mean = (c[i + 1] - c[j]) / (i + 1 - j)
                if mean > thv[i] and (worst is None or mean - thv[i] > worst[0]):
                    worst = (mean - thv[i], mean, tt[i], thv[i])
            if worst is not None:
                fails.append(
                    f"node {n}: mean {sig} over {span:g} s reached {worst[1]:.4g} at t={worst[2]:.2f} s, "
                    f"over {a['below']} ({worst[3]:.4g})"
                )
        elif e.type == "delta":

            def at(time: float, t: np.ndarray = t, v: np.ndarray = v) -> float | None:
                idx = np.nonzero(t <= time)[0]
                return float(v[idx[-1]]) if len(idx) else None

            v0, v1 = at(float(a["from"])), at(float(a["to"]))
            if v0 is None or v1 is None:
                fails.append(f"node {n}: no {sig} sample at or before {a['from']} / {a['to']} s")
                continue
            d = v1 - v0
            if "equals" in a:
                expected = a["equals"].values(prof, cap[-1:])
                expected = float(expected[0]) if isinstance(expected, np.ndarray) else expected
                if not math.isclose(d, expected, abs_tol=1e-9):
                    fails.append(
                        f"node {n}: {sig} changed by {d:g} from {a['from']} to {a['to']} s, expected {expected:g}"
                    )
            if ("min" in a and d < a["min"]) or ("max" in a and d > a["max"]):
                fails.append(
                    f"node {n}: {sig} changed by {d:g}, expected {a.get('min', '-inf')}..{a.get('max', 'inf')}"
                )
        elif e.type in ("within", "final"):
            how = next(k for k in ("equals", "below", "above") if k in a)
            th = a[how].values(prof, cap)
            good = _cmp(v, th, how)
            if e.type == "within":
                t0, t1 = float(a["at"]), float(a["at"]) + float(a["within_s"])
                inside = (t > t0) & (t <= t1)
                if not (good & inside).any():
                    last = v[inside][-1] if inside.any() else math.nan
                    fails.append(f"node {n}: {sig} {how} {a[how]} never held in {t0:g}..{t1:g} s (last {last:.4g})")
            else:
                k = int(np.nonzero(win)[0][-1])
                if not good[k]:
                    fails.append(f"node {n}: {sig} = {v[k]:.4g} at t={t[k]:.2f} s, expected {how} {a[how]}")
    detail = "; ".join(fails[:5]) + (f"; and {len(fails) - 5} more" if len(fails) > 5 else "")
    return Outcome(e.name, not fails, detail or f"holds on {len(nodes)} node(s)", nodes)
