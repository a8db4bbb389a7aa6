"""The host link's error counters, as the module's PCIe endpoint keeps them.

A PCIe link recovers a TLP that arrives corrupted in its data link layer: the receiver's LCRC
check fails, it sends a NAK, and the transmitter replays the TLP from its replay buffer (PCIe Base
Specification, "Data Integrity" and "Retry Buffer"). Each such error is one replay
(``nvmlDeviceGetPcieReplayCounter``, DCGM's ``DCGM_FI_DEV_PCIE_REPLAY_COUNTER``) and one AER
*correctable* error (Bad TLP); a replayed TLP that is corrupted again is replayed again, and the
fourth replay of one TLP rolls the REPLAY_NUM counter over (another correctable error, after which
the link retrains). An error the data link layer cannot recover (a malformed TLP, a poisoned one,
a completion timeout) is an AER *uncorrectable* error, non-fatal here: the transaction is lost, the
link stays up.

A healthy link counts nothing (real links run far below the specification's bit-error bound of
1e-12). The ``pcie-errors`` fault sets the rates: corrupted TLPs per second, each replayed, and
uncorrectable errors per second. The replays of one error are drawn geometrically: a replay is
corrupted again with the probability that another error falls within its round trip
(``REPLAY_WINDOW_S``), which matters only at storm rates.

Pure numpy over one row per module; no asyncio.
"""

from __future__ import annotations

import numpy as np

REPLAY_WINDOW_S = 1e-6  # a TLP's replay round trip: the time in which another error hits the replay too
REPLAY_NUM_ROLLOVER = 4  # replays of one TLP after which REPLAY_NUM rolls over (a correctable error)
REPLAYS, AER_CORRECTABLE, AER_UNCORRECTABLE = 0, 1, 2


class PcieCounters:
    """Error counts since the controller booted (``counts[:, REPLAYS | AER_CORRECTABLE |
    AER_UNCORRECTABLE]``) and the injected rates (``rate[:, 0]`` corrupted TLPs per second,
    ``rate[:, 1]`` uncorrectable errors per second)."""

    def __init__(self, n: int) -> None:
        self.counts = np.zeros((n, 3), np.int64)
        self.rate = np.zeros((n, 2))

    @property
    def active(self) -> bool:
        return bool(self.rate.any())

    def step(self, rng: np.random.Generator, dt: float, live: np.ndarray) -> None:
        """Count the errors of ``dt`` seconds on the links of the ``live`` rows."""
        errors = rng.poisson(self.rate[:, 0] * dt * live)
        uncorrectable = rng.poisson(self.rate[:, 1] * dt * live)
        again = np.minimum(self.rate[:, 0] * REPLAY_WINDOW_S, 0.999)  # a replay is corrupted again
        replays = np.zeros_like(errors)
        rollovers = np.zeros_like(errors)
        for row in np.flatnonzero(errors):
            # each error is replayed until a replay arrives clean: a geometric number of replays
            tries = rng.geometric(1.0 - again[row], size=int(errors[row]))
            replays[row] = tries.sum()
            rollovers[row] = (tries >= REPLAY_NUM_ROLLOVER).sum()
        self.counts[:, REPLAYS] += replays
        self.counts[:, AER_CORRECTABLE] += errors + rollovers
        self.counts[:, AER_UNCORRECTABLE] += uncorrectable

    def reboot(self, row: int) -> None:
        """The counters of a controller that boots again start from zero (the fault stays)."""
        self.counts[row] = 0
