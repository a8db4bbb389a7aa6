"""Sensors: what the firmware reads instead of the truth.

A :class:`SensorBank` holds like sensors, one row per module. Each reading is the true value one
tick late (conversion latency), plus Gaussian noise, quantised to the sensor's resolution. Faults
per sensor: stuck at a value, drifting by a rate, extra noise, dropping readings with a
probability (the value goes stale), or failed (reads NaN and reports failure).

A sensor can also be *external*: a hardware-in-the-loop rig provides it. Its value and the time
of its reading are then whatever the rig last delivered (:meth:`SensorBank.set_external`); a rig
that stops answering leaves the reading to age like a dropped-out sensor.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np


class SensorFault(IntEnum):
    OK = 0
    STUCK = 1  # param: the value it is stuck at
    DRIFT = 2  # param: drift rate, units per second
    NOISE = 3  # param: extra noise standard deviation
    DROPOUT = 4  # param: probability that a reading is lost
    FAILED = 5


class SensorBank:
    def __init__(self, shape: tuple[int, int], *, noise_sd: float, quantum: float, initial: float | np.ndarray) -> None:
        self.noise_sd = noise_sd
        self.quantum = quantum
        self.value = np.broadcast_to(np.asarray(initial, float), shape).copy()
        self.read_at = np.zeros(shape)  # time of the last successful reading
        self.failed = np.zeros(shape, bool)
        self.fault = np.zeros(shape, np.int8)
        self.param = np.zeros(shape)
        self._drift = np.zeros(shape)
        self._pending = self.value.copy()
        self._any_fault = False
        self.external = np.zeros(shape, bool)
        self._any_external = False
        self._ext_value = np.full(shape, np.nan)
        self._ext_read_at = np.full(shape, -np.inf)

    def attach_external(self, row: int, col: int) -> None:
        """The sensor is provided from outside from now on; stale until the first reading."""
        self.external[row, col] = True
        self._any_external = True
        self._ext_value[row, col] = np.nan
        self._ext_read_at[row, col] = -np.inf

    def detach_external(self, row: int, col: int) -> None:
        self.external[row, col] = False
        self._any_external = bool(self.external.any())

    def set_external(self, row: int, col: int, value: float, t: float) -> None:
        """A reading from outside, taken at time ``t``."""
        self._ext_value[row, col] = value
        self._ext_read_at[row, col] = t

    def _apply_external(self) -> None:
        ext = self.external
        self.value = np.where(ext, self._ext_value, self.value)
        self.read_at = np.where(ext, self._ext_read_at, self.read_at)

    def set_fault(self, row: int, col: int, fault: SensorFault, param: float = 0.0) -> None:
        self.fault[row, col] = int(fault)
        self.param[row, col] = param
        self._drift[row, col] = 0.0
        if fault is SensorFault.OK:
            self.failed = self.failed.copy()
            self.failed[row, col] = False
        self._any_fault = bool(self.fault.any())

    def sample(
        self, true: np.ndarray, t: float, dt: float, rng: np.random.Generator, noise: np.ndarray | None = None
    ) -> None:
        """Take one reading of every sensor from the true values of this tick. ``noise`` (standard
        normal, the bank's shape) may be drawn by the caller for several banks at once."""
        raw = self._pending
        self._pending = np.array(true, float, copy=True)
        if self.noise_sd:
            reading = raw + (rng.standard_normal(raw.shape) if noise is None else noise) * self.noise_sd
        else:
            reading = raw
        if not self._any_fault:  # the common case, kept short
            self.value = np.round(reading / self.quantum) * self.quantum if self.quantum else reading
            self.read_at.fill(t)
            if self._any_external:
                self._apply_external()
            return
        ok = np.ones(raw.shape, bool)
        f = self.fault
        reading = np.where(f == SensorFault.STUCK, self.param, reading)
        self._drift += np.where(f == SensorFault.DRIFT, self.param * dt, 0.0)
        reading = reading + self._drift
        noisy = f == SensorFault.NOISE
        if noisy.any():
            reading = reading + np.where(noisy, rng.standard_normal(raw.shape) * self.param, 0.0)
        drop = f == SensorFault.DROPOUT
        if drop.any():
            ok &= ~(drop & (rng.random(raw.shape) < self.param))
        self.failed = f == SensorFault.FAILED
        ok &= ~self.failed
        if self.quantum:
            reading = np.round(reading / self.quantum) * self.quantum
        self.value = np.where(ok, reading, np.where(self.failed, np.nan, self.value))
        self.read_at = np.where(ok, t, self.read_at)
        if self._any_external:
            self._apply_external()

    @property
    def faulty(self) -> bool:
        """Whether any sensor of the bank has a fault set."""
        return self._any_fault

    def age(self, t: float) -> np.ndarray:
        return t - self.read_at
