"""The commands ``mcm-emu ctl`` knows: how to parse their arguments and show their replies.

Adding a command means one entry here (and its handler in the node runtime).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..protocol import Op, Response, StatusResult
from .client import HostClient
from .views import status_json


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
