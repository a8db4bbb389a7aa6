"""The live view of ``mcm-emu run``: a table on a terminal, summary lines otherwise, and the run's
own measurement of itself in both (a run that falls behind says so on stderr, in one line)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from ..protocol import CoolingMode
from ..runtime.meter import Window

TABLE_ROWS = 200


def meter_line(w: Window) -> str:
    """The self-measurement of a window in one line."""
    late, lag = w.tick_late, w.loop_lag
    parts = [
        f"tick late p50/p99/max {late.p50 * 1e3:.1f}/{late.p99 * 1e3:.1f}/{late.max * 1e3:.1f} ms",
        f"telemetry {w.tlm_sent}/{w.tlm_due} sent ({w.tlm_share:.2%})",
    ]
    if w.tlm_dropped or w.tlm_decimated:
        parts.append(f"dropped {w.tlm_dropped}, decimated {w.tlm_decimated}")
    if w.periods_merged:
        parts.append(f"{w.periods_merged} periods late")
    if lag.n:
        parts.append(f"loop lag p99 {lag.p99 * 1e3:.1f} ms")
    parts.append(f"gc {w.gc_s * 1e3:.0f} ms (max pause {w.gc_max_s * 1e3:.0f} ms)")
    return ", ".join(parts)


STARTUP_S = 30.0
"""Windows that hold the start-up (until every node has connected, at most this long) are reported as
the start-up's, not as the run falling behind."""


class Display:
    """A live table on a terminal; plain summary lines otherwise."""

    def __init__(self, fleet: Any, *, interval: float, stats: Any = None) -> None:
        self.fleet = fleet
        self.stats = stats
        self.interval = interval
        self.tty = sys.stdout.isatty()
        self._live: Any = None
        self._t0 = time.monotonic()
        self._last: Window | None = None
        self._behind_since: float | None = None
        self._up = False  # every node connected at the last check

    def _check(self) -> Window:
        """Close the meter's window; say on stderr when the run falls behind or catches up."""
        w = self.fleet.meter.next_window()
        self._last = w
        if self.stats is not None:
            self.stats.write("window", w)
        verdict = self.fleet.meter.verdict(w)
        now = time.monotonic()
        starting = not self._up and now - self._t0 < STARTUP_S
        self._up = all(n.connected_once.is_set() for n in self.fleet.nodes.values())
        if verdict is not None and starting and self._behind_since is None:
            # the window held the start-up (nodes connecting, the kernels' first calls): said as such
            print(f"mcm-emu: start-up: {verdict}", file=sys.stderr, flush=True)
        elif verdict is not None:
            if self._behind_since is None:
                self._behind_since = now
            behind = now - self._behind_since
            print(f"mcm-emu: falling behind (for {behind:.0f} s): {verdict}", file=sys.stderr, flush=True)
        elif self._behind_since is not None:
            print(f"mcm-emu: keeping up again after {now - self._behind_since:.0f} s", file=sys.stderr, flush=True)
            self._behind_since = None
        return w

    def _table(self) -> Any:
        from rich.table import Table

        rows = list(self.fleet.summary(limit=TABLE_ROWS))
        n = len(self.fleet.nodes)
        title = f"fleet {self.fleet.name}: {n} nodes, {time.monotonic() - self._t0:.0f} s; {self._lateness()}"
        table = Table(title=title, expand=False)
        for col in ("node", "state", "mode", "link", "Tmax °C", "power W", "cap W", "clock MHz", "pumps", "faults"):
            table.add_column(col, justify="left" if col in ("pumps", "faults") else "right")
        for r in rows:
            state = r["state"]
            table.add_row(
                str(r["node"]),
                f"[red]{state}[/red]" if state in ("DOWN", "SHUTDOWN") else state,
                _mode(r["mode"]),
                r["link"] if r["link"] == "up" else f"[yellow]{r['link']}[/yellow]",
                f"{r['temp_c']:.1f}",
                f"{r['power_w']:.0f}",
                f"{r['cap_w']:.0f}",
                f"{r['clock_mhz']:.0f}",
                r["pumps"],
                ", ".join(r["faults"]) or "-",
            )
        legend = "pumps: * lead, - stopped, ! faulty"
        caption = [legend] + ([f"... and {n - len(rows)} more"] if n > len(rows) else [])
        if self._last is not None:
            caption.append(meter_line(self._last))
        if self._behind_since is not None:
            caption.append(f"[red]FALLING BEHIND for {time.monotonic() - self._behind_since:.0f} s[/red]")
        table.caption = "\n".join(caption) or None
        return table

    def _lateness(self) -> str:
        """The control ticks' lateness over the newest ticks (about the last 10 s at 20 Hz), from
        the first tick on, before any window of the meter closes."""
        import numpy as np

        from ..runtime.meter import Quantiles

        recent = [samples.recent(200) for samples in self.fleet.meter.tick_late.values()]
        q = Quantiles.of(np.concatenate(recent) if recent else np.zeros(0))
        if not q.n:
            return "tick late: no tick yet"
        return f"tick late p99/max {q.p99 * 1e3:.1f}/{q.max * 1e3:.1f} ms"

    async def run(self) -> None:
        if self.tty:
            from rich.live import Live

            self._live = Live(self._table(), refresh_per_second=2, transient=False)
            self._live.start()
            next_check = time.monotonic() + self.interval
            while True:
                await asyncio.sleep(0.5)
                if time.monotonic() >= next_check:
                    self._check()
                    next_check += self.interval
                self._live.update(self._table())
        while True:
            await asyncio.sleep(self.interval)
            w = self._check()
            stamp = f"t={time.monotonic() - self._t0:7.1f}s"
            if len(self.fleet.nodes) <= 16:
                for r in self.fleet.summary():
                    faults = f" faults={','.join(x.replace(' ', ':') for x in r['faults'])}" if r["faults"] else ""
                    print(
                        f"{stamp} node={r['node']} state={r['state']} mode={_mode(r['mode'])} link={r['link']} "
                        f"Tmax={r['temp_c']:.1f}C power={r['power_w']:.0f}/{r['cap_w']:.0f}W "
                        f"clock={r['clock_mhz']:.0f}MHz pumps={r['pumps'].replace(' ', ',')}{faults}",
                        flush=True,
                    )
            else:
                t = self.fleet.totals()
                print(
                    f"{stamp} nodes={t['nodes']} up={t['up']} Tmax={t['temp_c']:.1f}C power={t['power_w'] / 1e3:.1f}kW",
                    flush=True,
                )
            print(f"{stamp} {meter_line(w)}", flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _mode(value: int) -> str:
    return CoolingMode(int(value)).name
