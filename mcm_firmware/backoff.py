"""Reconnect delays: exponential backoff with full jitter; a token bucket."""

from __future__ import annotations

import random


class Backoff:
    """Delays drawn uniformly from ``[0, min(maximum, initial * factor^k)]`` for the k-th retry
    ("full jitter"): a fleet that lost its broker all at once comes back spread over the whole
    first window instead of in lockstep. With the defaults the first retries of a fleet spread
    evenly over 4 s (2.5 % of them in any 100 ms, so that even a fleet of a thousand stays under
    5 % in every window), later ones over 8 s and then ``maximum``; a retry comes at most
    ``maximum`` after the previous one failed."""

    def __init__(
        self, *, initial: float = 4.0, maximum: float = 10.0, factor: float = 2.0, rng: random.Random | None = None
    ) -> None:
        if not (0 < initial <= maximum and factor >= 1):
            raise ValueError("need 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The longest the next delay can be."""
        return min(self.maximum, self.initial * self.factor ** min(self.attempt, 64))

    def next(self) -> float:
        delay = self._rng.uniform(0, self.ceiling())
        self.attempt += 1
        return delay

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
