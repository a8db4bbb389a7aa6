"""Workloads: how busy each die wants to be, over time.

``demand`` is the work a die is asked to do per second, as a fraction of what it does at its
highest clock; at a lower clock the same work keeps it busy longer, so utilisation is
``min(1, demand * f_max / f)``. Seeded randomness only.
"""

from __future__ import annotations

import math
from enum import IntEnum

import numpy as np


class Workload(IntEnum):
    IDLE = 0
    STEADY = 1
    TRAINING = 2  # synchronous steps: compute, then a communication phase
    INFERENCE = 3  # request-driven, fluctuating


STEADY_DEMAND = 0.85
TRAIN_PERIOD_S = 2.0
TRAIN_COMPUTE_FRACTION = 0.75
TRAIN_COMM_DEMAND = 0.15
INFER_MEAN = 0.5
INFER_TAU_S = 0.5
INFER_SD = 0.25


class WorkloadModel:
    """Demand per die for a shard; the kind is per module and can change at any time."""

    def __init__(self, n: int, dies: int, rng: np.random.Generator) -> None:
        self._kind = np.full(n, int(Workload.STEADY), np.int8)
        self.scale = np.ones(n)  # multiplies the demand (0..1], e.g. a partial load
        self.phase = rng.uniform(0.0, TRAIN_PERIOD_S, n)
        self._ou = np.zeros((n, dies))
        self._rng = rng
        self._dies = dies
        self._masks: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def kind(self) -> np.ndarray:
        """The workload of each module (read-only: change it with :meth:`set`)."""
        view = self._kind.view()
        view.flags.writeable = False
        return view

    def set(self, row: int | slice, kind: Workload, scale: float | None = None) -> None:
        self._kind[row] = int(kind)
        if scale is not None:
            self.scale[row] = scale
        self._masks = None

    def _kinds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._masks is None:
            steady = np.where(self._kind == Workload.STEADY, STEADY_DEMAND, 0.0)[:, None] * np.ones(self._dies)
            self._masks = (
                steady,
                np.flatnonzero(self._kind == Workload.TRAINING),
                np.flatnonzero(self._kind == Workload.INFERENCE),
            )
        return self._masks

    def demand(self, t: float, dt: float) -> np.ndarray:
        steady, training, inference = self._kinds()
        d = steady.copy()
        if len(training):
            in_step = ((t + self.phase[training]) % TRAIN_PERIOD_S) < TRAIN_PERIOD_S * TRAIN_COMPUTE_FRACTION
            d[training] = np.where(in_step, 1.0, TRAIN_COMM_DEMAND)[:, None]
        if len(inference):
            # Ornstein-Uhlenbeck fluctuation around half load, for the inference modules only
            a = math.exp(-dt / INFER_TAU_S)
            ou = self._ou[inference] * a + self._rng.standard_normal((len(inference), self._dies)) * (
                INFER_SD * math.sqrt(1 - a * a)
            )
            self._ou[inference] = ou
            d[inference] = np.minimum(np.maximum(INFER_MEAN + ou, 0.05), 1.0)
        return d * self.scale[:, None]


def utilisation(demand: np.ndarray, mhz: np.ndarray, max_mhz: float) -> np.ndarray:
    """Fraction of time busy at clock ``mhz``: the same work takes longer at a lower clock."""
    return np.minimum(np.maximum(demand * max_mhz / np.maximum(mhz, 1.0), 0.0), 1.0)
