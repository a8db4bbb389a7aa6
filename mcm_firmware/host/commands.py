"""The commands ``mcm-emu ctl`` knows: how to parse their arguments and show their replies.

Adding a command means one entry here (and its handler in the node runtime).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import Op, Response, StatusResult
from ..faults import FaultError, parse_clear, parse_fault
from ..protocol import ClearFaultArgs, InjectArgs, LockClocksArgs, PowerCapArgs, RasResult, SetValveArgs
from .client import HostClient
from .views import ras_json, status_json


class UsageError(ValueError):
    """Bad command arguments; the CLI exits 2 with this message."""


@dataclass(frozen=True)
class CtlCommand:
    name: str
    op: Op
    usage: str
    help: str
    parse: Callable[[list[str]], Any]
    show: Callable[[int, Response, float], dict[str, Any]]
    run: Callable[[HostClient, int, Any, float | None], Awaitable[tuple[Response, float]]] | None = None


def _no_args(name: str) -> Callable[[list[str]], None]:
    def parse(args: list[str]) -> None:
        if args:
            raise UsageError(f"{name} takes no arguments (got {' '.join(args)!r})")
        return None

    return parse


def _show_ok(node: int, resp: Response, rtt: float) -> dict[str, Any]:
    return {"node": node, "ok": True, "rtt_ms": round(rtt * 1e3, 3)}


def _show_status(node: int, resp: Response, rtt: float) -> dict[str, Any]:
    assert isinstance(resp.data, StatusResult)
    return status_json(node, resp.data)


COMMANDS: dict[str, CtlCommand] = {}


def register(cmd: CtlCommand) -> CtlCommand:
    COMMANDS[cmd.name] = cmd
    return cmd


register(CtlCommand("ping", Op.PING, "ping", "round trip to the node", _no_args("ping"), _show_ok))
register(CtlCommand("status", Op.STATUS, "status", "the node's state, sensors and actuators",
                    _no_args("status"), _show_status))
register(CtlCommand("rebirth", Op.REBIRTH, "rebirth", "ask the node to publish its BIRTH again",
                    _no_args("rebirth"), _show_ok))


def _one_arg(name: str, args: list[str], what: str) -> str:
    if len(args) != 1:
        raise UsageError(f"{name} takes one argument, {what} (got {len(args)})")
    return args[0]


def _parse_cap(args: list[str]) -> PowerCapArgs:
    return PowerCapArgs(watts=parse_float(_one_arg("set-power-cap", args, "W"), "power cap W"))


def _parse_lock(args: list[str]) -> LockClocksArgs:
    return LockClocksArgs(mhz=parse_int(_one_arg("lock-clocks", args, "MHZ"), "clock MHZ", 0, 0xFFFF))


def _parse_valve(args: list[str]) -> SetValveArgs:
    if len(args) != 2:
        raise UsageError(f"set-valve takes two arguments, N and PCT|auto (got {len(args)})")
    valve = parse_int(args[0], "valve N", 0, 255)
    if args[1].lower() == "auto":
        return SetValveArgs(valve=valve, auto=1, pct=0.0)
    return SetValveArgs(valve=valve, auto=0, pct=parse_float(args[1], "valve position PCT"))


def _show_ras(node: int, resp: Response, rtt: float) -> dict[str, Any]:
    assert isinstance(resp.data, RasResult)
    return ras_json(node, resp.data)


register(CtlCommand("set-power-cap", Op.SET_POWER_CAP, "set-power-cap W",
                    "software power cap of the module, within the profile's range", _parse_cap, _show_ok))
register(CtlCommand("lock-clocks", Op.LOCK_CLOCKS, "lock-clocks MHZ",
                    "lock the dice's application clocks (the P-state at or below MHZ)", _parse_lock, _show_ok))
register(CtlCommand("reset-clocks", Op.RESET_CLOCKS, "reset-clocks", "release locked clocks",
                    _no_args("reset-clocks"), _show_ok))
register(CtlCommand("set-valve", Op.SET_VALVE, "set-valve N PCT|auto",
                    "hold valve N at PCT %, or give it back to the controller", _parse_valve, _show_ok))
register(CtlCommand("ras", Op.RAS, "ras", "HBM error counters, remap state, recovery action",
                    _no_args("ras"), _show_ras))
register(CtlCommand("clear-ras", Op.CLEAR_RAS, "clear-ras", "clear the HBM error counters",
                    _no_args("clear-ras"), _show_ok))
register(CtlCommand("reset", Op.RESET, "reset", "module reset: applies pending row remaps",
                    _no_args("reset"), _show_ok))


def _parse_inject(args: list[str]) -> InjectArgs:
    try:
        f = parse_fault(args)
    except FaultError as e:
        raise UsageError(str(e)) from None
    return InjectArgs(kind=int(f.kind), target=f.target, value=f.value, value2=f.value2)


def _parse_clear(args: list[str]) -> ClearFaultArgs:
    try:
        c = parse_clear(args)
    except FaultError as e:
        raise UsageError(str(e)) from None
    return ClearFaultArgs(kind=0 if c.kind is None else int(c.kind), target=c.target)


register(CtlCommand("inject", Op.INJECT, "inject FAULT [TARGET] [VALUE] [VALUE2]",
                    "inject a fault (see docs/faults.md)", _parse_inject, _show_ok))
register(CtlCommand("clear-fault", Op.CLEAR_FAULT, "clear-fault FAULT [TARGET]|all",
                    "clear injected faults", _parse_clear, _show_ok))


def parse_float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
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
