"""Clocks: real time, scaled real time and deterministic virtual time.

A node reads time only through a :class:`Clock`: ``now()`` in seconds on the node's clock,
``now_ns()`` for frame timestamps, and ``sleep_until(deadline)`` for loops that run on absolute
deadlines (``deadline += period``), so that periods never drift with processing time.

Virtual time is a property of the event loop: :class:`VirtualTimeLoop` is an asyncio loop whose
``time()`` only advances when every task is waiting, and then jumps straight to the next timer.
Everything scheduled on it (``asyncio.sleep``, ``wait_for`` timeouts, ``call_later``) runs in
virtual time, in a deterministic order, as fast as the CPU allows. Real I/O still works on it,
but then time no longer stands still while waiting for it.
"""

from __future__ import annotations

import asyncio
import selectors
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
NS = 1_000_000_000


class Clock(ABC):
    """The time base of a node; ``now()`` starts near ``epoch`` seconds."""

    @abstractmethod
    def now(self) -> float: ...

    def now_ns(self) -> int:
        return int(self.now() * NS)

    @abstractmethod
    async def sleep_until(self, deadline: float) -> None: ...

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + seconds)

    @property
    def speed(self) -> float:
        """Clock seconds per real second (1 for real time; virtual time has no such ratio)."""
        return 1.0

    @property
    def virtual(self) -> bool:
        """Time that stands still while the CPU works (nothing can be late in it)."""
        return False


class ScaledClock(Clock):
    """Real time multiplied by ``speed`` (``--speed X``); ``speed=1`` is plain real time.

    ``now()`` starts at the wall-clock time of creation, so timestamps read as dates.
    """

    def __init__(self, speed: float = 1.0, *, epoch: float | None = None) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self._speed = float(speed)
        self._epoch = time.time() if epoch is None else epoch
        self._mono0 = time.monotonic()

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        return self._epoch + (time.monotonic() - self._mono0) * self._speed

    async def sleep_until(self, deadline: float) -> None:
        delay = (deadline - self.now()) / self._speed
        await asyncio.sleep(delay if delay > 0 else 0)


class RealClock(ScaledClock):
    def __init__(self, *, epoch: float | None = None) -> None:
        super().__init__(1.0, epoch=epoch)


class LoopClock(Clock):
    """The running loop's clock plus ``epoch``: virtual time on a :class:`VirtualTimeLoop`."""

    def __init__(self, *, epoch: float = 0.0, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None  # bound to the loop running at the first reading
        self._loop = loop
        self._epoch = epoch
        self._base: float | None = loop.time() if loop is not None else None

    def _time(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        if self._base is None:
            self._base = loop.time()
        return loop.time() - self._base

    def now(self) -> float:
        return self._epoch + self._time()

    @property
    def virtual(self) -> bool:
        return True

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self.now()
        await asyncio.sleep(delay if delay > 0 else 0)


class _VirtualSelector(selectors.BaseSelector):
    """Polls the real selector without blocking; an idle wait advances the loop's virtual time."""

    def __init__(self, loop_ref: Callable[[], VirtualTimeLoop | None]) -> None:
        self._real = selectors.DefaultSelector()
        self._loop_ref = loop_ref

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = self._real.select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:  # no timers at all: only real I/O can wake the loop
            return self._real.select(None)
        loop = self._loop_ref()
        if loop is not None:
            loop.advance(timeout)
        return []

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Any:
        return self._real.get_map()


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop running in virtual time (see the module docstring)."""

    def __init__(self, *, start: float = 0.0) -> None:
        self._virtual_now = float(start)
        super().__init__(_VirtualSelector(lambda: self))

    def time(self) -> float:
        return self._virtual_now

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self._virtual_now += seconds


def run_virtual(main: Coroutine[Any, Any, T] | Callable[[], Coroutine[Any, Any, T]], *, start: float = 0.0) -> T:
    """Run a coroutine to completion on a fresh :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start=start)) as runner:
        coro = main() if callable(main) else main
        return runner.run(coro)


class Deadlines:
    """Absolute deadlines of a periodic loop: the k-th is ``start + k * period``, never drifting.

    A loop that wakes late runs its late periods back to back to catch up; one that has fallen more
    than ``skip_after`` seconds behind (the process was stalled) skips the deadlines already past,
    counting them in ``overruns``, and resumes at the first future one.
    """

    def __init__(self, clock: Clock, period: float, *, phase: float = 0.0, skip_after: float | None = None) -> None:
        if not period > 0:
            raise ValueError("period must be positive")
        self.clock = clock
        self.period = period
        self.skip_after = max(period, 0.5) if skip_after is None else skip_after
        self.start = clock.now() + phase
        self.k = 0
        self.overruns = 0

    @property
    def deadline(self) -> float:
        return self.start + self.k * self.period

    async def wait(self) -> float:
        """Sleep until the next deadline; returns it."""
        due = self.deadline
        await self.clock.sleep_until(due)
        self.k += 1
        behind = self.clock.now() - self.deadline
        if behind > self.skip_after:
            missed = int(behind // self.period) + 1
            self.k += missed
            self.overruns += missed
        return due
