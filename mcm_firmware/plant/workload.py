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
        self.kind = np.full(n, int(Workload.STEADY), np.int8)
        self.scale = np.ones(n)  # multiplies the demand (0..1], e.g. a partial load
        self.phase = rng.uniform(0.0, TRAIN_PERIOD_S, n)
        self._ou = np.zeros((n, dies))
        self._rng = rng

    def demand(self, t: float, dt: float) -> np.ndarray:
        n, dies = self._ou.shape
        k = self.kind[:, None]
        d = np.where(k == Workload.STEADY, STEADY_DEMAND, 0.0) * np.ones(dies)
        training = k == Workload.TRAINING
        if training.any():
            in_step = ((t + self.phase) % TRAIN_PERIOD_S) < TRAIN_PERIOD_S * TRAIN_COMPUTE_FRACTION
            d = np.where(training, np.where(in_step, 1.0, TRAIN_COMM_DEMAND)[:, None], d)
        rows = np.flatnonzero(self.kind == Workload.INFERENCE)
        if len(rows):
            # Ornstein-Uhlenbeck fluctuation around half load, for the inference modules only
            a = math.exp(-dt / INFER_TAU_S)
            ou = self._ou[rows] * a + self._rng.standard_normal((len(rows), dies)) * (INFER_SD * math.sqrt(1 - a * a))
            self._ou[rows] = ou
            d[rows] = np.minimum(np.maximum(INFER_MEAN + ou, 0.05), 1.0)
        return d * self.scale[:, None]


def utilisation(demand: np.ndarray, mhz: np.ndarray, max_mhz: float) -> np.ndarray:
    """Fraction of time busy at clock ``mhz``: the same work takes longer at a lower clock."""
    return np.minimum(np.maximum(demand * max_mhz / np.maximum(mhz, 1.0), 0.0), 1.0)
