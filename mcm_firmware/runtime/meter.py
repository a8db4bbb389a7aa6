"""The run measures itself: is it keeping its rates?

A :class:`RunMeter` belongs to a fleet. Its schedulers record how late each control tick woke
(lateness in real seconds, and how many late periods a tick had to integrate at once), the
telemetry due and what became of it, the event loop's lag (a probe task that sleeps a fixed period
and measures how much longer it took) and the time the garbage collector held the loop. Reports are
windows (since the previous report) plus totals since start; :meth:`RunMeter.verdict` says in one
line whether the run keeps up and, if not, how far behind it is.

Plain Python and numpy; the probe task is the only asyncio here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from dataclasses import dataclass, field

import numpy as np

from ..tasks import cancel_and_wait

LAG_PROBE_S = 0.1
"""The lag probe's period."""
TICK_LATE_LIMIT_S = 0.010
"""Tick lateness p99 above this (or a tick period, whichever is longer) means the run is behind."""
TELEMETRY_LIMIT = 0.999
"""Less than this share of due telemetry handed to the link means the run is behind."""

DUE, SENT, DROPPED, DECIMATED = range(4)
"""Rows of a telemetry counter array ``[4, nodes]``: frames due, handed to the link, dropped (the
link was down or refused them), decimated (replaced by a newer one before they could leave)."""


def telemetry_counters(nodes: int) -> np.ndarray:
    return np.zeros((4, nodes), np.int64)


class Samples:
    """Float samples, the newest ``size`` of them kept for exact percentiles, and their maximum."""

    def __init__(self, size: int = 65_536) -> None:
        self._buf = np.zeros(size)
        self._n = 0  # samples recorded since start
        self.max_total = 0.0

    def record(self, x: float) -> None:
        self._buf[self._n % len(self._buf)] = x
        self._n += 1
        if x > self.max_total:
            self.max_total = x

    @property
    def count(self) -> int:
        return self._n

    def since(self, count: int) -> np.ndarray:
        """The samples recorded after the first ``count`` (the newest ``size`` of them)."""
        return self.recent(self._n - count)

    def recent(self, n: int) -> np.ndarray:
        """The newest ``n`` samples (fewer if fewer were recorded)."""
        k = min(n, self._n, len(self._buf))
        end = self._n % len(self._buf)
        start = end - k
        return np.concatenate((self._buf[start:], self._buf[:end])) if start < 0 else self._buf[start:end].copy()


@dataclass(frozen=True)
class Quantiles:
    n: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: np.ndarray) -> Quantiles:
        if len(values) == 0:
            return cls(0, 0.0, 0.0, 0.0)
        p50, p99 = np.percentile(values, (50, 99))
        return cls(len(values), float(p50), float(p99), float(values.max()))


@dataclass
class Window:
    """What happened in one report window (or since start, for the totals)."""

    seconds: float
    tick_late: Quantiles
    ticks: int
    periods_merged: int
    loop_lag: Quantiles
    gc_s: float
    gc_max_s: float
    tlm_due: int
    tlm_sent: int
    tlm_dropped: int
    tlm_decimated: int

    def as_json(self) -> dict[str, object]:
        """Plain data: seconds, counts, and lateness, lag and GC in milliseconds."""

        def ms(q: Quantiles) -> dict[str, float]:
            return {"n": q.n, "p50": round(q.p50 * 1e3, 3), "p99": round(q.p99 * 1e3, 3), "max": round(q.max * 1e3, 3)}

        return {
            "seconds": round(self.seconds, 3),
            "ticks": self.ticks,
            "periods_late": self.periods_merged,
            "tick_late_ms": ms(self.tick_late),
            "loop_lag_ms": ms(self.loop_lag),
            "gc_ms": round(self.gc_s * 1e3, 3),
            "gc_max_pause_ms": round(self.gc_max_s * 1e3, 3),
            "telemetry": {
                "due": self.tlm_due,
                "sent": self.tlm_sent,
                "dropped": self.tlm_dropped,
                "decimated": self.tlm_decimated,
            },
        }

    @property
    def tlm_share(self) -> float:
        """Share of due telemetry handed to the link (1 when none was due)."""
        return self.tlm_sent / self.tlm_due if self.tlm_due else 1.0


@dataclass
class _Counts:
    ticks: int = 0
    periods_merged: int = 0
    gc_s: float = 0.0
    gc_max_s: float = 0.0

    def minus(self, other: _Counts) -> _Counts:
        return _Counts(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in dataclasses.fields(self)})


@dataclass(frozen=True)
class Mark:
    t: float
    totals: _Counts
    tlm: np.ndarray
    ticks: dict[str, int]
    lag: int
    gc: int


@dataclass
class RunMeter:
    """Self-measurement of one fleet (see the module docstring)."""

    tick_period_s: float = 0.05
    tick_late: dict[str, Samples] = field(default_factory=dict)  # by shard
    loop_lag: Samples = field(default_factory=Samples)
    totals: _Counts = field(default_factory=_Counts)
    tlm: list[np.ndarray] = field(default_factory=list)
    """The telemetry counter arrays of the fleet's shards (:func:`telemetry_counters`)."""

    def __post_init__(self) -> None:
        self._t0 = time.monotonic()
        self._gc_started = 0.0
        self._probe: asyncio.Task[None] | None = None
        self.gc_pauses = Samples()
        self._start = self.mark()
        self._window = self._start

    # --- what the schedulers and nodes record --------------------------------------------------

    def tick(self, shard: str, late_s: float, periods: int) -> None:
        samples = self.tick_late.get(shard)
        if samples is None:
            samples = self.tick_late[shard] = Samples()
        samples.record(max(0.0, late_s))
        self.totals.ticks += 1
        self.totals.periods_merged += periods - 1

    def recent_tick_late(self, shard: str, n: int = 1200) -> Quantiles:
        """Lateness of the newest ``n`` ticks of a shard (a minute at 20 Hz)."""
        samples = self.tick_late.get(shard)
        return Quantiles.of(samples.recent(n) if samples is not None else np.zeros(0))

    def tlm_totals(self) -> np.ndarray:
        """Due, sent, dropped, decimated telemetry frames of the whole fleet since start."""
        return sum((a.sum(axis=1) for a in self.tlm), np.zeros(4, np.int64))

    # --- the event loop and the garbage collector ------------------------------------------------

    def start(self, *, probe: bool = True) -> None:
        """Start the GC timer and (``probe``: on real time only) the lag probe on the running loop."""
        if self._gc_hook not in gc.callbacks:
            gc.callbacks.append(self._gc_hook)
        if probe and self._probe is None:
            self._probe = asyncio.get_running_loop().create_task(self._lag_probe(), name="fleet-lag-probe")

    async def stop(self) -> None:
        if self._gc_hook in gc.callbacks:
            gc.callbacks.remove(self._gc_hook)
        if self._probe is not None:
            await cancel_and_wait([self._probe])
            self._probe = None

    def _gc_hook(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            pause = time.perf_counter() - self._gc_started
            self._gc_started = 0.0
            self.totals.gc_s += pause
            self.totals.gc_max_s = max(self.totals.gc_max_s, pause)
            self.gc_pauses.record(pause)

    async def _lag_probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(LAG_PROBE_S)
            self.loop_lag.record(max(0.0, loop.time() - t0 - LAG_PROBE_S))

    # --- reports -----------------------------------------------------------------------------------

    def _window_of(
        self, counts: _Counts, tlm: np.ndarray, seconds: float, late: np.ndarray, lag: np.ndarray, gc_max: float
    ) -> Window:
        return Window(
            seconds=seconds,
            tick_late=Quantiles.of(late),
            ticks=counts.ticks,
            periods_merged=counts.periods_merged,
            loop_lag=Quantiles.of(lag),
            gc_s=counts.gc_s,
            gc_max_s=gc_max,
            tlm_due=int(tlm[DUE]),
            tlm_sent=int(tlm[SENT]),
            tlm_dropped=int(tlm[DROPPED]),
            tlm_decimated=int(tlm[DECIMATED]),
        )

    def mark(self) -> Mark:
        """A point to measure from (:meth:`since`)."""
        return Mark(
            t=time.monotonic(),
            totals=dataclasses.replace(self.totals),
            tlm=self.tlm_totals(),
            ticks={name: samples.count for name, samples in self.tick_late.items()},
            lag=self.loop_lag.count,
            gc=self.gc_pauses.count,
        )

    def since(self, mark: Mark) -> Window:
        """What happened since ``mark`` (lateness and lag of the newest samples kept)."""
        late = [samples.since(mark.ticks.get(name, 0)) for name, samples in self.tick_late.items()]
        gc_pauses = self.gc_pauses.since(mark.gc)
        return self._window_of(
            self.totals.minus(mark.totals),
            self.tlm_totals() - mark.tlm,
            time.monotonic() - mark.t,
            np.concatenate(late) if late else np.zeros(0),
            self.loop_lag.since(mark.lag),
            float(gc_pauses.max()) if len(gc_pauses) else 0.0,
        )

    def window(self) -> Window:
        """The window so far (since the last :meth:`next_window`)."""
        return self.since(self._window)

    def since_start(self) -> Window:
        return self.since(self._start)

    def next_window(self) -> Window:
        """Close the window: its report; the next one starts now."""
        w = self.window()
        self._window = self.mark()
        return w

    def closing(self, settled: Mark | None) -> str | None:
        """The run's last word on its rates: None when it kept them from start to end;
        ``start-up: ...`` when only the start-up (until ``settled``) fell behind and every window
        after it kept them; else ``this run did not keep its rates: ...``."""
        verdict = self.verdict(self.since_start())
        if verdict is None:
            return None
        if settled is not None:
            after = self.since(settled)
            if after.ticks and self.verdict(after) is None:
                return f"start-up: {verdict}; the rates were kept after it ({after.seconds:.0f} s)"
        return f"this run did not keep its rates: {verdict}"

    def verdict(self, w: Window) -> str | None:
        """None when ``w`` kept the rates; else one line saying what fell behind and by how much."""
        limit = max(TICK_LATE_LIMIT_S, self.tick_period_s)
        why = []
        if w.tick_late.n and w.tick_late.p99 > limit:
            why.append(
                f"control ticks late by {w.tick_late.p99 * 1e3:.0f} ms at p99 "
                f"(max {w.tick_late.max * 1e3:.0f} ms, limit {limit * 1e3:.0f} ms)"
            )
        if w.periods_merged:
            why.append(f"{w.periods_merged} tick period{'s' if w.periods_merged != 1 else ''} integrated late")
        if w.tlm_due and w.tlm_share < TELEMETRY_LIMIT:
            why.append(f"telemetry {w.tlm_sent}/{w.tlm_due} sent ({w.tlm_share:.1%})")
        return "; ".join(why) if why else None
