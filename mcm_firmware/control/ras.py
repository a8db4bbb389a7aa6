"""RAS firmware for the module's HBM: error counting, patrol scrub, row remapping, storms.

Every read that goes through the ECC engine (a demand read by the workload, or the patrol
scrubber) is reported to :meth:`RasController.observe`:

* **Counters** (Linux EDAC style): corrected (CE) and uncorrected (UE) errors per stack and
  channel, since boot or the last ``clear``.
* **Row remapping** (after NVIDIA's A100+ policy): a UE, or a second CE at the same address, marks
  the word's row *pending*; pending rows are remapped onto the bank's spare rows at the next reset.
  Each bank has a finite pool of spare rows; a row that cannot get one sets the *remap failure*
  flag. Recovery action: ``GPU_RESET`` while remaps are pending, ``NODE_REBOOT`` once remapping has
  failed (the module must be drained and serviced), else ``NONE``.
* **Poisoning and offlining**: a word found uncorrectable is poisoned and is not counted again
  until its row is remapped; a row pending remap is offlined (the workload no longer reads it;
  the patrol scrubber still does), as drivers stop handing out a page that waits for a remap.
* **CE storm**: more than ``storm_threshold`` CEs within ``storm_window_s`` starts a storm (an
  event); it ends when the count over the window falls below half the threshold.
* **Patrol scrub**: the scrubber walks the whole address space, one pass every
  ``scrub_interval_s``, reading each word through the ECC engine and writing corrected codewords
  back, so single-bit upsets do not accumulate into double-bit ones. Only the stored words can
  hold errors, so only they are read as the scrub cursor passes them.

Plain Python over one module's sparse store (errors are rare events); randomness from the
generator the caller passes. Returns :class:`RasEvent` records; the runtime publishes them.
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

import numpy as np

from ..hbm import EccStatus, HbmGeometry, Location, ReadResult
from ..profile import Profile
from ..protocol.vocabulary import EccMode, RecoveryAction


class EccMemory(Protocol):
    """The module's HBM as the RAS firmware reaches it: reads through the ECC engine, and what the
    memory controller lets firmware do (the plant's :class:`~mcm_firmware.plant.memory.HbmStore`)."""

    failed_devices: dict[int, set[int]]

    @property
    def devices(self) -> int: ...
    @property
    def bits_per_word_codeword(self) -> int: ...
    def read(self, addr: int, *, write_back: bool = False) -> ReadResult: ...
    def flip(self, addr: int, bits: list[int], *, stuck: bool = False) -> None: ...
    def fail_device(self, stack: int, device: int) -> None: ...
    def stuck_bits(self, addr: int) -> set[int]: ...
    def addresses(self) -> list[int]: ...
    def rewrite_row(self, stack: int, channel: int, bank: int, row: int) -> int: ...
    def __len__(self) -> int: ...


class RasEventKind(IntEnum):
    UE = 1
    REMAP_PENDING = 2
    REMAP_FAILED = 3
    CE_STORM = 4
    CE_STORM_END = 5
    REMAPPED = 6


@dataclass(frozen=True)
class RasEvent:
    kind: RasEventKind
    stack: int
    addr: int = -1
    text: str = ""


RowKey = tuple[int, int, int, int]  # stack, channel, bank, row


@dataclass(frozen=True)
class RasConfig:
    geometry: HbmGeometry
    mode: EccMode
    spare_rows_per_bank: int
    ce_repeat_threshold: int
    storm_threshold: int
    storm_window_s: float
    sbe_rate_per_s: float
    dbe_rate_per_s: float
    rate_ref_c: float
    rate_doubling_c: float
    scrub_interval_s: float
    access_rate_hz: float

    @classmethod
    def from_profile(cls, p: Profile) -> RasConfig:
        r = p.ras
        geo = HbmGeometry(
            stacks=p.hbm.count, channels=p.hbm.channels, banks=r.banks, rows=r.rows_per_bank, cols=r.words_per_row
        )
        return cls(
            geometry=geo,
            mode=EccMode[r.ecc.upper()],
            spare_rows_per_bank=r.spare_rows_per_bank,
            ce_repeat_threshold=2,
            storm_threshold=r.ce_storm_threshold,
            storm_window_s=r.ce_storm_window_s,
            sbe_rate_per_s=r.sbe_rate_per_s,
            dbe_rate_per_s=r.dbe_rate_per_s,
            rate_ref_c=r.rate_ref_c,
            rate_doubling_c=r.rate_doubling_c,
            scrub_interval_s=r.scrub_interval_s,
            access_rate_hz=r.access_rate_hz,
        )

    def error_rate_factor(self, temp_c: np.ndarray) -> np.ndarray:
        """Error rates grow with temperature: x2 every ``rate_doubling_c`` above the reference."""
        t = np.where(np.isnan(temp_c), self.rate_ref_c, temp_c)
        return np.exp2((t - self.rate_ref_c) / self.rate_doubling_c)


@dataclass
class RasController:
    cfg: RasConfig
    rng: random.Random
    store: EccMemory
    ce: np.ndarray = field(init=False)  # [stack, channel]
    ue: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        g = self.cfg.geometry
        self.ce = np.zeros((g.stacks, g.channels), np.int64)
        self.ue = np.zeros((g.stacks, g.channels), np.int64)
        self.ce_by_addr: Counter[int] = Counter()
        self.pending: dict[RowKey, str] = {}
        self.remapped: set[RowKey] = set()
        self.spares_used: Counter[tuple[int, int, int]] = Counter()
        self.remap_failed = False
        self.failed_rows: set[RowKey] = set()
        self.poisoned: set[int] = set()
        self._latent: dict[int, set[int]] = {}  # per stack: errors no read has found yet
        self._np = np.random.default_rng(self.rng.getrandbits(64))
        self.storm = False
        self._ce_times: deque[float] = deque()
        self._scrubbed_to: float | None = None  # the time up to which the patrol scrub has run
        self.scrub_passes = 0
        self._scrub_origin: float | None = None  # where the cursor was when this controller began
        self.scrubbed = 0
        self.on_work: Callable[[], None] | None = None  # told when errors arrive (the runtime's hook)
        self.dirty = True  # counters or flags changed since the runtime last looked

    # --- state --------------------------------------------------------------------------------

    @property
    def remap_pending(self) -> bool:
        return bool(self.pending)

    @property
    def recovery_action(self) -> RecoveryAction:
        if self.remap_failed:
            return RecoveryAction.NODE_REBOOT
        if self.pending:
            return RecoveryAction.GPU_RESET
        return RecoveryAction.NONE

    @property
    def spare_rows_free(self) -> int:
        g = self.cfg.geometry
        return g.stacks * g.channels * g.banks * self.cfg.spare_rows_per_bank - sum(self.spares_used.values())

    # --- errors arriving ------------------------------------------------------------------------

    def inject(self, addr: int, bits: list[int], *, stuck: bool = False) -> None:
        """Flip stored bits at an address: a transient upset (a particle strike), or with
        ``stuck`` a hard fault (a weak or stuck cell) that comes back after every write."""
        self.store.flip(addr, bits, stuck=stuck)
        if self._row(addr) not in self.pending:  # an offlined row is read by the scrubber only
            self._latent.setdefault(self.cfg.geometry.decode(addr).stack, set()).add(addr)
        if self.on_work is not None:
            self.on_work()

    def inject_random(self, stack: int, nbits: int) -> int:
        """An upset of ``nbits`` distinct bits in one codeword at a random address of a stack."""
        addr = self.cfg.geometry.random_address(self.rng, stack)
        if self.cfg.mode is EccMode.CHIPKILL:
            addr &= ~3
            # a multi-bit upset of one codeword: bits of one symbol (one device) for chipkill
            symbol = self.rng.randrange(self.store.devices)
            bits = [symbol * 8 + b for b in self.rng.sample(range(8), min(nbits, 8))]
        else:
            bits = self.rng.sample(range(self.store.bits_per_word_codeword), nbits)
        self.inject(addr, bits)
        return addr

    def fail_device(self, stack: int, device: int) -> None:
        self.store.fail_device(stack, device)
        if self.on_work is not None:
            self.on_work()

    # --- reads through the ECC engine -------------------------------------------------------------

    def read(self, addr: int, t: float) -> tuple[ReadResult, list[RasEvent]]:
        """A read through the ECC engine; corrected data is written back (demand or patrol
        scrub), so a transient upset is counted once and a stuck cell at every read."""
        res = self.store.read(addr, write_back=True)
        if res.status is EccStatus.OK or not self.store.stuck_bits(addr):
            self._forget(addr)
        return res, self.observe(res, t)

    def observe(self, res: ReadResult, t: float) -> list[RasEvent]:
        """Account one ECC result: counters, remap marking, storm detection."""
        if res.status is EccStatus.OK:
            return []
        self.dirty = True
        loc = self.cfg.geometry.decode(res.addr)
        key = (loc.stack, loc.channel, loc.bank, loc.row)
        events: list[RasEvent] = []
        if res.status is EccStatus.UNCORRECTABLE:
            if res.addr in self.poisoned:
                return []
            self.poisoned.add(res.addr)
            self._forget(res.addr)
            self.ue[loc.stack, loc.channel] += 1
            events.append(
                RasEvent(RasEventKind.UE, loc.stack, res.addr, f"uncorrectable error at {res.addr:#x} ({_where(loc)})")
            )
            events += self._mark(key, "UE")
            return events
        self.ce[loc.stack, loc.channel] += 1
        self.ce_by_addr[res.addr] += 1
        if self.ce_by_addr[res.addr] >= self.cfg.ce_repeat_threshold and key not in self.pending:
            events += self._mark(key, f"{self.ce_by_addr[res.addr]} CEs at {res.addr:#x}")
        events += self._storm_check(t, loc.stack)
        return events

    def _mark(self, key: RowKey, why: str) -> list[RasEvent]:
        if key in self.pending or key in self.failed_rows:
            return []
        stack, ch, bank, row = key
        where = f"stack {stack} channel {ch} bank {bank} row {row}"
        used = self.spares_used[(stack, ch, bank)] + sum(1 for k in self.pending if k[:3] == (stack, ch, bank))
        if used >= self.cfg.spare_rows_per_bank:
            self.failed_rows.add(key)
            self.remap_failed = True
            return [RasEvent(RasEventKind.REMAP_FAILED, stack, text=f"no spare row left for {where} ({why})")]
        self.pending[key] = why
        # the row is offlined until the remap: the workload no longer reads it
        for addr in [a for a in self._latent.get(stack, ()) if self._row(a) == key]:
            self._forget(addr)
        return [RasEvent(RasEventKind.REMAP_PENDING, stack, text=f"{where} pending remap ({why})")]

    def _storm_check(self, t: float, stack: int) -> list[RasEvent]:
        times = self._ce_times
        times.append(t)
        while times and times[0] < t - self.cfg.storm_window_s:
            times.popleft()
        if not self.storm and len(times) > self.cfg.storm_threshold:
            self.storm = True
            return [
                RasEvent(RasEventKind.CE_STORM, stack, text=f"{len(times)} CEs within {self.cfg.storm_window_s:g} s")
            ]
        return []

    # --- periodic work ----------------------------------------------------------------------------

    def step(self, t: float, dt: float, util_by_stack: np.ndarray) -> list[RasEvent]:
        """Demand reads find latent errors; the scrubber walks a slice; storms end."""
        events: list[RasEvent] = []
        rate = self.cfg.access_rate_hz
        for stack in sorted(self._latent):
            # each latent error is read with probability p; draw how many, then which
            p = -math.expm1(-rate * float(util_by_stack[stack]) * dt)
            if p <= 0:
                continue  # nothing reads this stack now
            pool = list(self._latent[stack])
            k = int(self._np.binomial(len(pool), p)) if 0 < p < 1 else (len(pool) if p >= 1 else 0)
            if not k:
                continue
            chosen = sorted(pool[i] for i in self._np.choice(len(pool), size=k, replace=False))
            for addr in chosen:
                events += self.read(addr, t)[1]
        for stack in sorted(self.store.failed_devices):
            # every access to a stack with a failed device meets it
            lam = rate * float(util_by_stack[stack]) * dt
            for _ in range(_poisson(self.rng, lam)):
                addr = self.cfg.geometry.random_address(self.rng, stack)
                events += self.read(addr & ~3 if self.cfg.mode is EccMode.CHIPKILL else addr, t)[1]
        events += self.scrub(t, dt)
        self._next_scrub = self.scrub_due(t)
        if self.storm:
            times = self._ce_times
            while times and times[0] < t - self.cfg.storm_window_s:
                times.popleft()
            if len(times) < self.cfg.storm_threshold / 2:
                self.storm = False
                self.dirty = True
                events.append(RasEvent(RasEventKind.CE_STORM_END, -1, text="CE rate back to normal"))
        return events

    def _scrub_pos(self, t: float) -> float:
        """Where the patrol scrubber is at time ``t``, in passes (it never stops)."""
        return t / self.cfg.scrub_interval_s

    def scrub_due(self, t: float) -> float:
        """When the scrubber next reaches a stored word (inf: never, or no scrubbing)."""
        addrs = self.store.addresses()
        if self.cfg.scrub_interval_s <= 0 or not addrs:
            return math.inf
        space = self.cfg.geometry.address_space
        pos = self._scrub_pos(t)
        frac = pos % 1.0
        i = bisect.bisect_left(addrs, int(frac * space) + 1)
        nxt = addrs[i] / space if i < len(addrs) else 1.0 + addrs[0] / space
        return (math.floor(pos) + nxt) * self.cfg.scrub_interval_s

    def scrub(self, t: float, dt: float) -> list[RasEvent]:
        """Patrol scrub up to time ``t``: read (and correct) the stored words the cursor passed
        since the last call (or in the last ``dt`` on the first)."""
        if self.cfg.scrub_interval_s <= 0:
            return []
        start = self._scrub_pos(t - dt if self._scrubbed_to is None else self._scrubbed_to)
        end = self._scrub_pos(t)
        self._scrubbed_to = t
        self.scrubbed += int(self.cfg.geometry.words * (end - start))
        if self._scrub_origin is None:
            self._scrub_origin = start
        self.scrub_passes = math.floor(end - self._scrub_origin)  # whole passes since the controller booted
        addrs = self.store.addresses()
        if not addrs or end <= start:
            return []
        space = self.cfg.geometry.address_space
        events: list[RasEvent] = []
        k0, k1 = math.floor(start), math.floor(end)
        for k in range(k0, k1 + 1):
            lo = int((max(start, k) - k) * space)
            hi = int((min(end, k + 1) - k) * space)
            for addr in list(addrs[bisect.bisect_left(addrs, lo) : bisect.bisect_left(addrs, hi)]):
                events += self.read(addr, t)[1]
        return events

    @property
    def errors_at_large(self) -> bool:
        """Latent errors, failed devices or a storm: work for every step."""
        return bool(self._latent or self.store.failed_devices or self.storm)

    def needs_step(self, t: float) -> bool:
        """Whether :meth:`step` has anything to do at ``t``."""
        return self.errors_at_large or t >= self._next_scrub

    _next_scrub: float = -math.inf

    # --- operator actions -------------------------------------------------------------------------

    def reset(self) -> list[RasEvent]:
        """A GPU reset: pending rows move onto spare rows (their stored words re-encoded clean)."""
        events = []
        self.dirty = True
        for key in sorted(self.pending):
            stack, ch, bank, row = key
            self.spares_used[(stack, ch, bank)] += 1
            self.remapped.add(key)
            self.store.rewrite_row(stack, ch, bank, row)
            self.poisoned = {a for a in self.poisoned if self._row(a) != key}
            for addr in [a for a in self.latent if self._row(a) == key]:
                self._forget(addr)
            for a in [a for a in self.ce_by_addr if self._row(a) == key]:
                del self.ce_by_addr[a]
            events.append(
                RasEvent(
                    RasEventKind.REMAPPED, stack, text=f"stack {stack} channel {ch} bank {bank} row {row} remapped"
                )
            )
        self.pending.clear()
        return events

    def reboot(self) -> list[RasEvent]:
        """The controller boots again: pending remaps are applied (as by a reset) and the volatile
        counters start from zero."""
        events = self.reset()
        self.clear()
        self.scrub_passes = self.scrubbed = 0
        self._scrub_origin = None
        for addr in [a for a in self.latent if not self.store.stuck_bits(a)]:
            self._forget(addr)
        return events

    def clear(self) -> None:
        """Clear the error counters (remap state and poisoned words stay)."""
        self.dirty = True
        self.ce[:] = 0
        self.ue[:] = 0
        self.ce_by_addr.clear()
        self._ce_times.clear()
        self.storm = False

    @property
    def latent(self) -> set[int]:
        """Errors injected and not yet found by any read."""
        return set().union(*self._latent.values()) if self._latent else set()

    def _forget(self, addr: int) -> None:
        stack = self.cfg.geometry.decode(addr).stack
        pool = self._latent.get(stack)
        if pool is not None:
            pool.discard(addr)
            if not pool:
                del self._latent[stack]

    def _row(self, addr: int) -> RowKey:
        loc: Location = self.cfg.geometry.decode(addr)
        return (loc.stack, loc.channel, loc.bank, loc.row)


def _where(loc: Location) -> str:
    return f"stack {loc.stack} channel {loc.channel} bank {loc.bank} row {loc.row} col {loc.col}"


def _poisson(rng: random.Random, lam: float) -> int:
    """A Poisson draw (Knuth's method; lam is small here)."""
    if lam <= 0:
        return 0
    if lam > 30:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
