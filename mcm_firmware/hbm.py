"""What the module's HBM and its RAS firmware share: the address map, word locations and the
result of a read through the ECC engine.

The memory itself (:mod:`mcm_firmware.plant.memory`) and the firmware that counts, scrubs and
remaps (:mod:`mcm_firmware.control.ras`) both speak these; neither imports the other.

Address map of a word address (32-bit words), low bits first::

    | col | bank | row | channel | stack |

with each field as wide as the geometry needs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import IntEnum


class EccStatus(IntEnum):
    OK = 0
    CORRECTED = 1  # a correctable error was found and corrected (CE)
    UNCORRECTABLE = 2  # detected but not correctable (UE)


@dataclass(frozen=True)
class Location:
    stack: int
    channel: int
    bank: int
    row: int
    col: int


@dataclass(frozen=True)
class HbmGeometry:
    stacks: int
    channels: int
    banks: int
    rows: int
    cols: int  # 32-bit words per row

    def __post_init__(self) -> None:
        widths = tuple(
            max(1, (n - 1).bit_length()) for n in (self.cols, self.banks, self.rows, self.channels, self.stacks)
        )
        object.__setattr__(self, "widths", widths)
        object.__setattr__(self, "_total_bits", sum(widths))

    widths: tuple[int, int, int, int, int] = field(init=False, repr=False, compare=False)
    _total_bits: int = field(init=False, repr=False, compare=False)

    @property
    def address_space(self) -> int:
        """Word addresses the map can express (valid ones are a subset)."""
        return 1 << self._total_bits

    @property
    def words(self) -> int:
        return self.stacks * self.channels * self.banks * self.rows * self.cols

    def decode(self, addr: int) -> Location:
        w_col, w_bank, w_row, w_ch, w_stack = self.widths
        col = addr & ((1 << w_col) - 1)
        addr >>= w_col
        bank = addr & ((1 << w_bank) - 1)
        addr >>= w_bank
        row = addr & ((1 << w_row) - 1)
        addr >>= w_row
        ch = addr & ((1 << w_ch) - 1)
        addr >>= w_ch
        stack = addr & ((1 << w_stack) - 1)
        return Location(stack, ch, bank, row, col)

    def encode(self, loc: Location) -> int:
        w_col, w_bank, w_row, w_ch, _ = self.widths
        addr = loc.stack
        addr = (addr << w_ch) | loc.channel
        addr = (addr << w_row) | loc.row
        addr = (addr << w_bank) | loc.bank
        return (addr << w_col) | loc.col

    def valid(self, addr: int) -> bool:
        if addr < 0 or addr >> self._total_bits:
            return False
        loc = self.decode(addr)
        return (
            loc.stack < self.stacks
            and loc.channel < self.channels
            and loc.bank < self.banks
            and loc.row < self.rows
            and loc.col < self.cols
        )

    def random_address(self, rng: random.Random, stack: int) -> int:
        return self.encode(
            Location(
                stack,
                rng.randrange(self.channels),
                rng.randrange(self.banks),
                rng.randrange(self.rows),
                rng.randrange(self.cols),
            )
        )


@dataclass(frozen=True)
class ReadResult:
    addr: int
    status: EccStatus
    data: int  # the 32-bit word as returned (corrected where possible)
    detail: tuple[int, ...] = ()  # SEC-DED: the corrected bit; chipkill: the devices in error
