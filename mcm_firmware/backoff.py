"""Reconnect delays: exponential backoff with jitter."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``initial * factor^k`` capped at ``maximum``, each drawn uniformly from its upper
    half ("equal jitter"), so that a fleet that lost its broker does not return in lockstep."""

    def __init__(
        self, *, initial: float = 0.2, maximum: float = 10.0, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if not (0 < initial <= maximum and factor >= 1):
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


class RateLimiter:
    """A token bucket on a caller-supplied clock: ``allow(now)`` spends a token if there is one."""

    def __init__(self, *, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
