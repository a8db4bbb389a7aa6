"""Link faults: what happens to a frame on a bad link, as a seeded fault hook.

Used by the loopback bus (a fault hook on the whole bus) and by a node's own link layer (the
``link-*`` faults of :mod:`mcm_firmware.faults`, on any transport). No I/O here.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypedDict

from .base import Channel, Delivery

FaultHook = Callable[[Delivery], Iterable[tuple[float, Delivery]]]
"""Given a frame on its way, return what arrives instead: (delay in seconds, delivery) pairs.
An empty result drops the frame; two results duplicate it."""

LinkFaultParam = Literal["drop", "corrupt", "duplicate", "delay", "jitter"]
"""A probability or delay of :class:`LinkFaults` that is set on its own."""


LINK_FAULT_KINDS = ("seen", "dropped", "corrupted", "duplicated", "delayed")
"""What :attr:`LinkFaults.counts` counts: frames seen, and what was done to them."""


class LinkFaultParams(TypedDict, total=False):
    """Those of :class:`LinkFaults`' probabilities and delays that are set (keyword arguments)."""

    drop: float
    corrupt: float
    duplicate: float
    delay: float
    jitter: float


@dataclass
class LinkFaults:
    """A seeded fault hook: each frame is dropped, corrupted, duplicated and/or delayed by chance.

    ``channels`` limits the faults to some channels (all when empty). Counters tell what happened
    (``counts``: a dict of its own, or one handed in that outlives the hook, as a node's does).
    """

    drop: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0
    """Fixed delay added to every affected frame, seconds."""
    jitter: float = 0.0
    """Extra uniform random delay in [0, jitter) seconds: frames overtake each other (reorder)."""
    channels: frozenset[Channel] = frozenset()
    seed: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LINK_FAULT_KINDS, 0))

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "duplicate"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} probability must be within [0, 1], got {p}")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must not be negative")
        self._rng = random.Random(self.seed)

    def __call__(self, d: Delivery) -> list[tuple[float, Delivery]]:
        if self.channels and d.address.channel not in self.channels:
            return [(0.0, d)]
        rng = self._rng
        self.counts["seen"] += 1
        if rng.random() < self.drop:
            self.counts["dropped"] += 1
            return []
        if d.payload and rng.random() < self.corrupt:
            data = bytearray(d.payload)
            bit = rng.randrange(len(data) * 8)
            data[bit // 8] ^= 1 << (bit % 8)
            d = Delivery(d.address, bytes(data), d.retained)
            self.counts["corrupted"] += 1
        copies = 2 if rng.random() < self.duplicate else 1
        if copies == 2:
            self.counts["duplicated"] += 1
        out = []
        for _ in range(copies):
            delay = self.delay + (rng.random() * self.jitter if self.jitter else 0.0)
            if delay > 0:
                self.counts["delayed"] += 1
            out.append((delay, d))
        return out
