"""The memory controller's ECC engines: what the hardware computes, bit for bit.

**SEC-DED Hamming (39,32).** A 32-bit word is stored with 7 check bits: 6 Hamming parity bits
and one overall parity bit. In the extended-Hamming numbering, codeword positions 1..38 hold the
Hamming code (parity bits at positions 1, 2, 4, 8, 16 and 32, the 32 data bits in the other
positions, in order) and the overall parity covers all 38. Decoding computes the syndrome (XOR of
the positions of all set bits) and the overall parity:

===============  ==============  ============================================
syndrome         overall parity  meaning
===============  ==============  ============================================
0                even            no error
s (1..38)        odd             one bit flipped at position s: corrected (CE)
0                odd             the overall parity bit itself flipped (CE)
s != 0           even            two bits flipped: detected, not correctable (UE)
s > 38           odd             three or more bits: detected (UE)
===============  ==============  ============================================

Bits are numbered for fault injection as the stored word is laid out: 0..31 data bits, 32..37 the
Hamming parity bits p1, p2, p4, p8, p16, p32, 38 the overall parity.

**Chipkill, Reed-Solomon RS(20,16) over GF(2^8)** (``reedsolo``). A 16-byte line is stored as 20
byte symbols, symbol ``i`` on memory device ``i``, so a whole failed device corrupts one symbol of
every codeword. The decoder corrects one symbol (single-device correction) and reports two or
more as uncorrectable (double-device detection, SSC-DSD); with minimum distance 5, any two-symbol
error is detected.
"""

from __future__ import annotations

from functools import lru_cache

import reedsolo

from ..hbm import EccStatus

DATA_BITS = 32
CHECK_BITS = 7
CODEWORD_BITS = DATA_BITS + CHECK_BITS  # 39
HAMMING_POSITIONS = 38
_PARITY_POS = (1, 2, 4, 8, 16, 32)
_DATA_POS = tuple(p for p in range(1, HAMMING_POSITIONS + 1) if p & (p - 1))  # not a power of two
assert len(_DATA_POS) == DATA_BITS

# For each Hamming parity bit, the mask of data bits it covers.
_COVER = tuple(sum(1 << i for i, pos in enumerate(_DATA_POS) if pos & parity) for parity in _PARITY_POS)
# For each data bit, its codeword position (for the syndrome).
_POS_OF_DATA = _DATA_POS


def secded_check(data: int) -> int:
    """The 7 check bits of a 32-bit word: bit k (0..5) is Hamming parity p(2^k), bit 6 overall."""
    check = 0
    for k, mask in enumerate(_COVER):
        check |= ((data & mask).bit_count() & 1) << k
    overall = (data.bit_count() + check.bit_count()) & 1
    return check | (overall << 6)


def secded_syndrome(data: int, check: int) -> tuple[int, int]:
    """(syndrome, overall parity) of a stored word; (0, 0) means no error."""
    syndrome = 0
    for k, mask in enumerate(_COVER):
        if ((data & mask).bit_count() + (check >> k)) & 1:
            syndrome |= _PARITY_POS[k]
    overall = (data.bit_count() + (check & 0x7F).bit_count()) & 1
    return syndrome, overall


_POSITION_TO_BIT = {pos: i for i, pos in enumerate(_DATA_POS)}
_POSITION_TO_BIT.update({p: DATA_BITS + k for k, p in enumerate(_PARITY_POS)})


def secded_decode(data: int, check: int) -> tuple[EccStatus, int, int, int]:
    """Decode a stored word: (status, corrected data, corrected check bits, flipped bit or -1)."""
    syndrome, overall = secded_syndrome(data, check)
    if syndrome == 0 and overall == 0:
        return EccStatus.OK, data, check, -1
    if overall == 1:
        if syndrome == 0:
            return EccStatus.CORRECTED, data, check ^ 0x40, DATA_BITS + 6
        bit = _POSITION_TO_BIT.get(syndrome)
        if bit is None:  # points outside the codeword: three or more errors
            return EccStatus.UNCORRECTABLE, data, check, -1
        if bit < DATA_BITS:
            return EccStatus.CORRECTED, data ^ (1 << bit), check, bit
        return EccStatus.CORRECTED, data, check ^ (1 << (bit - DATA_BITS)), bit
    return EccStatus.UNCORRECTABLE, data, check, -1


def flip(data: int, check: int, bit: int) -> tuple[int, int]:
    """Flip stored bit ``bit`` (0..38) of a SEC-DED word."""
    if not 0 <= bit < CODEWORD_BITS:
        raise ValueError(f"bit {bit} outside the 39-bit codeword")
    if bit < DATA_BITS:
        return data ^ (1 << bit), check
    return data, check ^ (1 << (bit - DATA_BITS))


# --- chipkill -----------------------------------------------------------------------------------

LINE_BYTES = 16
CHECK_SYMBOLS = 4
DEVICES = LINE_BYTES + CHECK_SYMBOLS  # 20 symbols, one per device
_RS = reedsolo.RSCodec(CHECK_SYMBOLS)


def chipkill_encode(line: bytes) -> bytes:
    """The 20 stored symbols of a 16-byte line."""
    if len(line) != LINE_BYTES:
        raise ValueError(f"a chipkill line has {LINE_BYTES} bytes, got {len(line)}")
    return bytes(_RS.encode(line))


def chipkill_decode(stored: bytes) -> tuple[EccStatus, bytes, list[int]]:
    """Decode 20 stored symbols: (status, the 16 data bytes, the devices found in error).

    One symbol in error is corrected; two or more are reported uncorrectable (the data returned
    is then what was stored, unrepaired).
    """
    if len(stored) != DEVICES:
        raise ValueError(f"a chipkill codeword has {DEVICES} symbols, got {len(stored)}")
    status, data, devices = _chipkill_decode(bytes(stored))
    return status, data, list(devices)


@lru_cache(maxsize=8192)
def _chipkill_decode(stored: bytes) -> tuple[EccStatus, bytes, tuple[int, ...]]:
    """The decoder proper: a pure function of the stored bytes, so memoised (a stuck cell is read
    over and over with the same bytes)."""
    try:
        data, _, errata = _RS.decode(bytearray(stored))
    except reedsolo.ReedSolomonError:
        return EccStatus.UNCORRECTABLE, bytes(stored[:LINE_BYTES]), ()
    devices = tuple(sorted(int(p) for p in errata))
    if not devices:
        return EccStatus.OK, bytes(data), ()
    if len(devices) == 1:
        return EccStatus.CORRECTED, bytes(data), devices
    return EccStatus.UNCORRECTABLE, bytes(stored[:LINE_BYTES]), devices
