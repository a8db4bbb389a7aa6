"""Emulated HBM of one module: a sparse store of ECC-protected words.

Only words that were written, or that an error hit, are stored; any other word reads as if it held
fresh data. Each word is kept exactly as the memory holds it, check bits included, so errors are
real bit flips and the hardware ECC engine of :mod:`.ecc` finds (or misses) them.

The address map is :class:`~mcm_firmware.hbm.HbmGeometry`'s. In chipkill mode four aligned words form one
16-byte line, coded as 20 byte symbols on 20 devices of its stack (see :mod:`.ecc`); in SEC-DED
mode the 39 bits of a word sit on ten x4 devices (device ``d`` holds codeword bits ``4d..4d+3``).

A failed device returns garbage for its bits or symbol on every read of its stack.
"""

from __future__ import annotations

import bisect
import random

from ..hbm import EccStatus, HbmGeometry, ReadResult
from ..protocol.vocabulary import EccMode
from . import ecc

SECDED_DEVICES = 10  # x4 devices carrying the 39 bits of a word


class HbmStore:
    def __init__(self, geometry: HbmGeometry, mode: EccMode, rng: random.Random) -> None:
        self.geometry = geometry
        self.mode = mode
        self._rng = rng
        self._words: dict[int, list[int]] = {}  # SEC-DED: addr -> [data, check]
        self._lines: dict[int, bytearray] = {}  # chipkill: line addr -> 20 stored symbols
        self.failed_devices: dict[int, set[int]] = {}  # stack -> failed device numbers
        self._stuck: dict[int, set[int]] = {}  # codeword key -> bits that always read inverted
        self._sorted: list[int] = []  # the stored word addresses (a line's first word), kept sorted
        self._suspect: set[int] = set()  # codewords that may hold errors (all others are clean)
        self._true: dict[int, bytes] = {}  # chipkill: the error-free codeword of each suspect line
        self._pool: list[bytes] = []  # chipkill: encoded random lines for memory nobody wrote

    @property
    def devices(self) -> int:
        return ecc.DEVICES if self.mode is EccMode.CHIPKILL else SECDED_DEVICES

    @property
    def bits_per_word_codeword(self) -> int:
        """Bit positions usable with :meth:`flip`: 39 per word, or 160 per chipkill line."""
        return ecc.CODEWORD_BITS if self.mode is EccMode.SECDED else ecc.DEVICES * 8

    def __len__(self) -> int:
        return len(self._words) if self.mode is EccMode.SECDED else len(self._lines)

    def addresses(self) -> list[int]:
        """Stored word addresses (for chipkill, the first word of each line), sorted."""
        return self._sorted

    def _new(self, key: int) -> None:
        """A codeword is stored for the first time: keep the address list sorted."""
        bisect.insort(self._sorted, key if self.mode is EccMode.SECDED else key << 2)

    def _check(self, addr: int) -> None:
        if not self.geometry.valid(addr):
            raise ValueError(f"address {addr:#x} is outside the module's HBM")

    # --- storage ------------------------------------------------------------------------------

    def _key(self, addr: int) -> int:
        """The codeword an address belongs to: the word (SEC-DED) or its 4-word line (chipkill)."""
        return addr if self.mode is EccMode.SECDED else addr >> 2

    def stuck_bits(self, addr: int) -> set[int]:
        return set(self._stuck.get(self._key(addr), ()))

    def _store_clean(self, key: int, data: int | bytes) -> None:
        """Store freshly encoded data; stuck cells still read inverted."""
        if key in self._stuck:
            self._suspect.add(key)
        else:
            self._suspect.discard(key)
        if self.mode is EccMode.SECDED:
            assert isinstance(data, int)
            word = [data, ecc.secded_check(data)]
            for bit in self._stuck.get(key, ()):
                word[0], word[1] = ecc.flip(word[0], word[1], bit)
            if key not in self._words:
                self._new(key)
            self._words[key] = word
        else:
            assert isinstance(data, bytes)
            true = self._true.get(key)
            encoded = true if true is not None and true[: ecc.LINE_BYTES] == data else ecc.chipkill_encode(data)
            line = bytearray(encoded)
            for bit in self._stuck.get(key, ()):
                line[bit // 8] ^= 1 << (bit % 8)
            if key not in self._lines:
                self._new(key)
            self._lines[key] = line
            if key in self._suspect:
                self._true[key] = encoded
            else:
                self._true.pop(key, None)

    def write(self, addr: int, value: int) -> None:
        self._check(addr)
        value &= 0xFFFFFFFF
        if self.mode is EccMode.SECDED:
            self._store_clean(addr, value)
            return
        line = self._line_data(addr >> 2)
        off = (addr & 3) * 4
        line[off : off + 4] = value.to_bytes(4, "little")
        self._store_clean(addr >> 2, bytes(line))

    def _line_data(self, line: int) -> bytearray:
        stored = self._lines.get(line)
        if stored is None:
            return bytearray(self._rng.randbytes(ecc.LINE_BYTES))
        _status, data, _ = ecc.chipkill_decode(bytes(stored))
        return bytearray(data)

    def _materialise(self, addr: int) -> None:
        if self.mode is EccMode.SECDED:
            if addr not in self._words:
                value = self._rng.getrandbits(32)
                self._new(addr)
                self._words[addr] = [value, ecc.secded_check(value)]
        elif addr >> 2 not in self._lines:
            # memory nobody wrote holds arbitrary data: one of a pool of encoded random lines
            if not self._pool:
                self._pool = [ecc.chipkill_encode(self._rng.randbytes(ecc.LINE_BYTES)) for _ in range(64)]
            self._new(addr >> 2)
            self._lines[addr >> 2] = bytearray(self._pool[self._rng.randrange(len(self._pool))])

    def flip(self, addr: int, bits: list[int], *, stuck: bool = False) -> None:
        """Flip stored bits of the codeword holding ``addr``: 0..38 of the word (SEC-DED) or
        0..159 of the line, symbol ``bit // 8`` (chipkill). A ``stuck`` flip is a hard fault: the
        cell reads inverted again after every write, until its row is remapped."""
        self._check(addr)
        self._materialise(addr)
        limit = self.bits_per_word_codeword
        for bit in bits:
            if not 0 <= bit < limit:
                raise ValueError(f"bit {bit} outside the {limit}-bit codeword")
        if stuck:
            self._stuck.setdefault(self._key(addr), set()).symmetric_difference_update(bits)
        key = self._key(addr)
        if self.mode is EccMode.CHIPKILL and key not in self._suspect:
            self._true[key] = bytes(self._lines[key])  # clean until now: this is its true codeword
        self._suspect.add(key)
        if self.mode is EccMode.SECDED:
            word = self._words[addr]
            for bit in bits:
                word[0], word[1] = ecc.flip(word[0], word[1], bit)
        else:
            line = self._lines[addr >> 2]
            for bit in bits:
                line[bit // 8] ^= 1 << (bit % 8)

    def fail_device(self, stack: int, device: int) -> None:
        if not 0 <= stack < self.geometry.stacks:
            raise ValueError(f"no HBM stack {stack}")
        if not 0 <= device < self.devices:
            raise ValueError(f"device {device} outside 0..{self.devices - 1}")
        self.failed_devices.setdefault(stack, set()).add(device)

    def repair_device(self, stack: int, device: int) -> None:
        self.failed_devices.get(stack, set()).discard(device)
        if not self.failed_devices.get(stack, True):
            del self.failed_devices[stack]

    def unstick(self, addr: int) -> None:
        """The cells of the codeword at ``addr`` are no longer stuck (they read right once
        rewritten)."""
        self._stuck.pop(self._key(addr), None)

    # --- the read path through the ECC engine ----------------------------------------------------

    def _garbage(self, addr: int, device: int) -> int:
        """A failed device's output for a codeword: fixed per address, never the true value."""
        return (hash((addr, device)) & 0xFF) | 1

    def read(self, addr: int, *, write_back: bool = False) -> ReadResult:
        """Read one word through ECC. ``write_back`` stores the corrected codeword (scrubbing)."""
        self._check(addr)
        self._materialise(addr)
        stack = self.geometry.decode(addr).stack
        failed = self.failed_devices.get(stack, ())
        key = self._key(addr)
        if not failed and key not in self._suspect:
            # a codeword nothing has touched since it was encoded: the decoder would find no error
            # (both codes are systematic: the data bits are stored as they are)
            if self.mode is EccMode.SECDED:
                return ReadResult(addr, EccStatus.OK, self._words[addr][0])
            off = (addr & 3) * 4
            return ReadResult(addr, EccStatus.OK, int.from_bytes(self._lines[key][off : off + 4], "little"))
        if self.mode is EccMode.SECDED:
            data, check = self._words[addr]
            for dev in failed:
                garbage = self._garbage(addr, dev) & 0xF
                for k in range(4):
                    bit = dev * 4 + k
                    if bit < ecc.CODEWORD_BITS and garbage >> k & 1:
                        data, check = ecc.flip(data, check, bit)
            status, fixed, _fixed_check, bit = ecc.secded_decode(data, check)
            if write_back and status is EccStatus.CORRECTED:
                self._store_clean(addr, fixed)
            return ReadResult(addr, status, fixed, (bit,) if bit >= 0 else ())
        stored = bytearray(self._lines[addr >> 2])
        for dev in failed:
            stored[dev] ^= self._garbage(addr >> 2, dev)
        status, line, devices = self._chipkill(key, bytes(stored))
        if write_back and status is EccStatus.CORRECTED:
            self._store_clean(addr >> 2, line)
        off = (addr & 3) * 4
        return ReadResult(addr, status, int.from_bytes(line[off : off + 4], "little"), tuple(devices))

    def _chipkill(self, key: int, stored: bytes) -> tuple[EccStatus, bytes, list[int]]:
        """What the RS(20,16) decoder returns for ``stored``. With minimum distance 5 it corrects
        every single-symbol error and detects every double one; knowing the line's true codeword,
        those cases are computed directly. Three or more symbols go through the decoder itself
        (they may be miscorrected, as in hardware)."""
        true = self._true.get(key)
        if true is not None:
            bad = [i for i in range(ecc.DEVICES) if stored[i] != true[i]]
            if not bad:
                return EccStatus.OK, true[: ecc.LINE_BYTES], []
            if len(bad) == 1:
                return EccStatus.CORRECTED, true[: ecc.LINE_BYTES], bad
            if len(bad) == 2:
                return EccStatus.UNCORRECTABLE, stored[: ecc.LINE_BYTES], bad
        return ecc.chipkill_decode(stored)

    def rewrite_row(self, stack: int, channel: int, bank: int, row: int) -> int:
        """A spare row takes the row's place: every stored word is re-encoded clean from its
        best-known data (the corrected value, or what was stored if uncorrectable) and the row's
        stuck cells are gone. Returns the number of codewords moved."""
        moved = 0
        for addr in self.addresses():
            loc = self.geometry.decode(addr)
            if (loc.stack, loc.channel, loc.bank, loc.row) != (stack, channel, bank, row):
                continue
            key = self._key(addr)
            self._stuck.pop(key, None)
            if self.mode is EccMode.SECDED:
                data, check = self._words[addr]
                _, fixed, _, _ = ecc.secded_decode(data, check)
                self._store_clean(key, fixed)
            else:
                _status, fixed_line, _ = self._chipkill(key, bytes(self._lines[key]))
                self._store_clean(key, fixed_line)
            moved += 1
        return moved
