"""The live view of ``mcm-emu run``: a table on a terminal, summary lines otherwise."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from ..protocol import CoolingMode


class Display:
    """A live table on a terminal; plain summary lines otherwise."""

    def __init__(self, fleet: Any, *, interval: float) -> None:
        self.fleet = fleet
        self.interval = interval
        self.tty = sys.stdout.isatty()
        self._live: Any = None
        self._t0 = time.monotonic()

    def _rows(self) -> list[dict[str, Any]]:
        return list(self.fleet.summary())

    def _table(self) -> Any:
        from rich.table import Table

        rows = self._rows()
        table = Table(
            title=f"fleet {self.fleet.name}: {len(rows)} nodes, {time.monotonic() - self._t0:.0f} s", expand=False
        )
        for col in ("node", "state", "mode", "link", "Tmax °C", "power W", "clock MHz"):
            table.add_column(col, justify="right")
        for r in rows[:200]:
            table.add_row(
                str(r["node"]),
                r["state"],
                _mode(r["mode"]),
                r["link"],
                f"{r['temp_c']:.1f}",
                f"{r['power_w']:.0f}",
                f"{r['clock_mhz']:.0f}",
            )
        if len(rows) > 200:
            table.caption = f"... and {len(rows) - 200} more"
        return table

    async def run(self) -> None:
        if self.tty:
            from rich.live import Live

            self._live = Live(self._table(), refresh_per_second=2, transient=False)
            self._live.start()
            while True:
                await asyncio.sleep(0.5)
                self._live.update(self._table())
        while True:
            await asyncio.sleep(self.interval)
            rows = self._rows()
            stamp = f"t={time.monotonic() - self._t0:7.1f}s"
            if len(rows) <= 16:
                for r in rows:
                    print(
                        f"{stamp} node={r['node']} state={r['state']} mode={_mode(r['mode'])} link={r['link']} "
                        f"Tmax={r['temp_c']:.1f}C power={r['power_w']:.0f}W clock={r['clock_mhz']:.0f}MHz",
                        flush=True,
                    )
            else:
                up = sum(r["link"] == "up" for r in rows)
                hot = max(r["temp_c"] for r in rows)
                kw = sum(r["power_w"] for r in rows) / 1e3
                print(f"{stamp} nodes={len(rows)} up={up} Tmax={hot:.1f}C power={kw:.1f}kW", flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def _mode(value: int) -> str:
    return CoolingMode(int(value)).name
