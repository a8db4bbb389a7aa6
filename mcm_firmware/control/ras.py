"""RAS firmware for the module's HBM: error counting, patrol scrub, row remapping, storms.

Every read that goes through the ECC engine (a demand read by the workload, or the patrol
scrubber) is reported to :meth:`RasController.observe`:

* **Counters** (Linux EDAC style): corrected (CE) and uncorrected (UE) errors per stack and
  channel, since boot or the last ``clear``.
* **Row remapping** (NVIDIA's "GPU Memory Error Management", Ampere and later): a UE, or a second
  CE at the same address, records the word's row for remapping (*pending*, XID 63); pending rows
  move onto the bank's spare rows at the next reset. Each remap is counted by its cause, CE or UE,
  pending ones included (``nvmlDeviceGetRemappedRows``), and every bank falls in one bucket of the
  availability histogram (``nvmlDeviceGetRowRemapperHistogram``: max, high, partial, low, none).
  A bank out of spare rows gives a CE-caused remap to a UE that needs it; a CE finding no spare
  is not remapped. A UE that finds no spare (none left, none held for a CE), a UE on a row remapped
  already, or the 513th UE remap sets the sticky *remap failure* flag (XID 64): the RMA criterion
  of NVIDIA's RMA policy.
* **XIDs and recovery actions**: every UE is an XID 48; a UE the workload reads is *contained*
  (XID 94: the application that read it ends, others run on, recovery action ``NONE``) unless it
  lies in memory every context shares (row 0 of a bank: page tables, driver state), where it is
  *uncontained* (XID 95, ``NODE_REBOOT``: the module has no partitions to drain). A remap failure
  asks for ``GPU_RESET`` (the XID catalog's bucket for XID 64). A pending remap alone asks for
  nothing: NVML says a pending remapping "won't affect future work on the GPU"; it takes effect at
  the next reset, whenever that comes. The table is :data:`RECOVERY_TABLE`, and docs/firmware.md
  gives its sources.
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
    XID = 7  # an XID as NVIDIA's driver logs one; the number in RasEvent.xid


@dataclass(frozen=True)
class RasEvent:
    kind: RasEventKind
    stack: int
    addr: int = -1
    text: str = ""
    xid: int = 0  # kind XID: the XID number


RowKey = tuple[int, int, int, int]  # stack, channel, bank, row


class RemapCause(IntEnum):
    """Why a row was recorded for remapping (NVML counts remaps by cause)."""

    CE = 1
    UE = 2


# XIDs of NVIDIA's XID catalog that the RAS firmware logs
XID_DBE = 48  # ROBUST_CHANNEL_GPU_ECC_DBE: an uncorrectable (double bit) ECC error
XID_ROW_REMAP = 63  # INFOROM_DRAM_RETIREMENT_EVENT: a row recorded for remapping
XID_ROW_REMAP_FAILURE = 64  # INFOROM_DRAM_RETIREMENT_FAILURE: a row that could not be
XID_CONTAINED = 94  # ROBUST_CHANNEL_CONTAINED_ERROR: a UE contained to the application that read it
XID_UNCONTAINED = 95  # ROBUST_CHANNEL_UNCONTAINED_ERROR: a UE containment could not hold
MAX_UE_REMAPS = 512  # NVIDIA's RMA policy: the row-remap failure flag after 512 UE remaps
SHARED_ROWS = 1  # rows 0.. of every bank hold state every context shares: a UE read there is uncontained

RECOVERY_TABLE: tuple[tuple[str, str, RecoveryAction, str], ...] = (
    # situation, XIDs, recovery action asked for, until
    ("CE corrected (a second one at an address records its row, pending)", "63", RecoveryAction.NONE, "-"),
    ("UE found by the patrol scrubber (no one read it; row pending)", "48, 63", RecoveryAction.NONE, "-"),
    ("UE read by the workload, contained (row pending)", "48, 63, 94", RecoveryAction.NONE, "-"),
    ("UE read by the workload in shared memory, uncontained", "48, 63, 95", RecoveryAction.NODE_REBOOT, "reboot"),
    ("remap failed (no spare row, row remapped already, 512 UE remaps)", "64", RecoveryAction.GPU_RESET, "reset"),
)
"""What the firmware asks of the operator, by situation (docs/firmware.md cites the sources). The
highest action outstanding is reported; a pending remap is applied at any reset or reboot."""

HISTOGRAM = ("max", "high", "partial", "low", "none")
"""NVML's ``nvmlRowRemapperHistogramValues_t`` buckets, in its order."""


def availability_bucket(used: int, spare: int) -> int:
    """The histogram bucket (index into :data:`HISTOGRAM`) of a bank with ``used`` of its ``spare``
    rows taken, after NVIDIA's driver (``RUSD_MEM_ROW_REMAP_INFO``: max, no spare row used; high,
    one used; partial, more than one used; low, one available; none, all used). With few spare
    rows the buckets overlap; the scarcer reading wins (none, then low)."""
    avail = spare - used
    if used <= 0:
        return 0
    if avail <= 0:
        return 4
    if avail == 1:
        return 3
    return 1 if used == 1 else 2


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
        # the module's lifetime counts (NVML's aggregate ECC counts, kept in the InfoROM): neither
        # CLEAR_RAS nor a reboot clears them, where ce and ue are the volatile counts since either
        self.ce_aggregate = 0
        self.ue_aggregate = 0
        self.ce_by_addr: Counter[int] = Counter()
        self.pending: dict[RowKey, str] = {}
        self.remapped: set[RowKey] = set()
        self.cause: dict[RowKey, RemapCause] = {}  # every row pending or remapped, by cause
        self.spares_used: Counter[tuple[int, int, int]] = Counter()
        self.remap_failed = False  # sticky: recorded, as NVML's "failure occurred in the past"
        self.failed_rows: set[RowKey] = set()
        self.reset_needed = False  # a fault asks for a GPU reset (a remap failure)
        self.reboot_needed = False  # a fault asks for a node reboot (an uncontained UE)
        self.last_xid = 0  # the last XID logged since boot (dcgm's DCGM_FI_DEV_XID_ERRORS)
        self.booted_at: float | None = None  # when the controller booted (None: at its first scrub)
        self.poisoned: set[int] = set()
        self._latent: dict[int, set[int]] = {}  # per stack: errors no read has found yet
        self._np = np.random.default_rng(self.rng.getrandbits(64))
        self.storm = False
        self._ce_times: deque[float] = deque()
        self._scrubbed_to: float | None = None  # the time up to which the patrol scrub has run
        self.scrub_passes = 0  # whole patrol passes since boot, as of the last scrub (passes_at: any time)
        self.scrubbed = 0
        self.on_work: Callable[[], None] | None = None  # told when errors arrive (the runtime's hook)
        self.dirty = True  # counters or flags changed since the runtime last looked

    # --- state --------------------------------------------------------------------------------

    @property
    def remap_pending(self) -> bool:
        return bool(self.pending)

    @property
    def recovery_action(self) -> RecoveryAction:
        """The highest action of :data:`RECOVERY_TABLE` outstanding."""
        if self.reboot_needed:
            return RecoveryAction.NODE_REBOOT
        if self.reset_needed:
            return RecoveryAction.GPU_RESET
        return RecoveryAction.NONE

    def remapped_rows_by_cause(self) -> tuple[int, int]:
        """Rows remapped for correctable and for uncorrectable errors, pending ones included, as
        ``nvmlDeviceGetRemappedRows`` counts them (the entries recorded, not only those applied)."""
        ue = sum(1 for c in self.cause.values() if c is RemapCause.UE)
        return len(self.cause) - ue, ue

    def histogram(self) -> tuple[int, int, int, int, int]:
        """Banks per remap-availability bucket (:data:`HISTOGRAM`); rows pending count as used."""
        g = self.cfg.geometry
        used = Counter(k[:3] for k in self.cause)
        out = [0] * 5
        out[0] = g.stacks * g.channels * g.banks - len(used)
        for n in used.values():
            out[availability_bucket(n, self.cfg.spare_rows_per_bank)] += 1
        return (out[0], out[1], out[2], out[3], out[4])

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

    def read(self, addr: int, t: float, *, demand: bool = True) -> tuple[ReadResult, list[RasEvent]]:
        """A read through the ECC engine, by the workload (``demand``) or the patrol scrubber;
        corrected data is written back, so a transient upset is counted once and a stuck cell at
        every read."""
        res = self.store.read(addr, write_back=True)
        if res.status is EccStatus.OK or not self.store.stuck_bits(addr):
            self._forget(addr)
        return res, self.observe(res, t, demand=demand)

    def observe(self, res: ReadResult, t: float, *, demand: bool = True) -> list[RasEvent]:
        """Account one ECC result: counters, remap recording, XIDs, storm detection. A UE the
        workload read (``demand``) is contained to the reader, or not (:data:`SHARED_ROWS`)."""
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
            self.ue_aggregate += 1
            where = f"{res.addr:#x} ({_where(loc)})"
            events.append(RasEvent(RasEventKind.UE, loc.stack, res.addr, f"uncorrectable error at {where}"))
            events.append(self._xid(XID_DBE, loc.stack, res.addr, f"DBE (double bit error) ECC error at {where}"))
            events += self._mark(key, RemapCause.UE, "UE")
            if demand and loc.row < SHARED_ROWS:
                self.reboot_needed = True
                events.append(
                    self._xid(
                        XID_UNCONTAINED,
                        loc.stack,
                        res.addr,
                        f"Uncontained: FB DED at {where}, memory every context shares; reboot the node",
                    )
                )
            elif demand:
                events.append(
                    self._xid(
                        XID_CONTAINED,
                        loc.stack,
                        res.addr,
                        f"Contained: FB DED at {where}; the application that read it ends, others run on",
                    )
                )
            return events
        self.ce[loc.stack, loc.channel] += 1
        self.ce_aggregate += 1
        self.ce_by_addr[res.addr] += 1
        if self.ce_by_addr[res.addr] >= self.cfg.ce_repeat_threshold and key not in self.pending:
            events += self._mark(key, RemapCause.CE, f"{self.ce_by_addr[res.addr]} CEs at {res.addr:#x}")
        events += self._storm_check(t, loc.stack)
        return events

    def _xid(self, xid: int, stack: int, addr: int, text: str) -> RasEvent:
        self.last_xid = xid
        return RasEvent(RasEventKind.XID, stack, addr, f"Xid {xid}: {text}", xid=xid)

    def _mark(self, key: RowKey, cause: RemapCause, why: str) -> list[RasEvent]:
        """Record ``key`` for remapping (pending until a reset), after NVIDIA's row-remapper policy."""
        if key in self.pending:
            if cause is RemapCause.UE and self.cause[key] is RemapCause.CE:
                self.cause[key] = RemapCause.UE  # the row's remap now counts as an uncorrectable one
            return []
        if key in self.failed_rows:
            return []
        stack, ch, bank, row = key
        where = f"stack {stack} channel {ch} bank {bank} row {row}"
        if key in self.remapped:
            if cause is RemapCause.CE:
                return []  # a spare row is not remapped again for correctable errors
            return self._fail(key, f"{where} was remapped already ({why})")
        if cause is RemapCause.UE and self.remapped_rows_by_cause()[1] >= MAX_UE_REMAPS:
            return self._fail(key, f"{MAX_UE_REMAPS} uncorrectable-error remaps already, none for {where} ({why})")
        in_bank = sorted(k for k in self.cause if k[:3] == key[:3])
        if len(in_bank) >= self.cfg.spare_rows_per_bank:
            if cause is RemapCause.CE:
                return []  # no spare row for a correctable error: the row stays as it is
            victim = next((k for k in in_bank if self.cause[k] is RemapCause.CE), None)
            if victim is None:
                return self._fail(key, f"no spare row left for {where} ({why})")
            self._unmap(victim)  # a CE remap gives its spare row to the UE
        self.pending[key] = why
        self.cause[key] = cause
        # the row is offlined until the remap: the workload no longer reads it
        for addr in [a for a in self._latent.get(stack, ()) if self._row(a) == key]:
            self._forget(addr)
        return [
            RasEvent(RasEventKind.REMAP_PENDING, stack, text=f"{where} pending remap ({why})"),
            self._xid(
                XID_ROW_REMAP,
                stack,
                -1,
                f"Row Remapper: New row ({where}) marked for remapping, reset GPU to activate ({cause.name})",
            ),
        ]

    def _fail(self, key: RowKey, text: str) -> list[RasEvent]:
        self.failed_rows.add(key)
        self.remap_failed = True
        self.reset_needed = True
        return [
            RasEvent(RasEventKind.REMAP_FAILED, key[0], text=text),
            self._xid(XID_ROW_REMAP_FAILURE, key[0], -1, f"Row Remapper: Failed to remap row: {text}"),
        ]

    def _unmap(self, key: RowKey) -> None:
        """Take back the spare row of a CE-caused remap (pending or applied)."""
        if self.pending.pop(key, None) is None:
            self.remapped.discard(key)
            self.spares_used[key[:3]] -= 1
        del self.cause[key]

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

    def passes_at(self, t: float) -> int:
        """Whole patrol-scrub passes since the controller booted, at ``t`` (the scrubber never
        stops, whether or not there is a stored word for it to read)."""
        if self.cfg.scrub_interval_s <= 0 or self.booted_at is None:
            return 0
        return max(0, math.floor((t - self.booted_at) / self.cfg.scrub_interval_s))

    def scrubbed_at(self, t: float) -> int:
        """Words the patrol scrubber has passed since the controller booted, at ``t``."""
        if self.cfg.scrub_interval_s <= 0 or self.booted_at is None:
            return 0
        return max(0, int(self.cfg.geometry.words * (t - self.booted_at) / self.cfg.scrub_interval_s))

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
        if self.booted_at is None:
            self.booted_at = start * self.cfg.scrub_interval_s
        self.scrub_passes = self.passes_at(t)
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
                events += self.read(addr, t, demand=False)[1]
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
        """A GPU reset: pending rows move onto spare rows (their stored words re-encoded clean);
        a GPU reset asked for is done (a node reboot asked for is not)."""
        events = []
        self.dirty = True
        self.reset_needed = False
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

    def reboot(self, t: float | None = None) -> list[RasEvent]:
        """The controller boots again (at ``t``): pending remaps are applied (as by a reset), the
        recovery actions asked for are done, and the volatile counters start from zero."""
        events = self.reset()
        self.clear()
        self.reboot_needed = False
        self.last_xid = 0
        self.scrub_passes = self.scrubbed = 0
        self.booted_at = t
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
