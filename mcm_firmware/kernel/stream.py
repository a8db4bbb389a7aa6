"""The telemetry counter's walk over an MQTT stream, compiled, and the CRCs of a block of frames
(:func:`crc_rows`, for the fleet's telemetry path). The independent subscriber of
``mcm-emu bench`` (:mod:`mcm_firmware.host.tlm_count`) counts every PUBLISH a broker delivers, per
node, and checks each frame's CRC, at the broker's full rate. In Python that costs about 2.5 µs a
message, a quarter of a core at 100,000 messages/s on the machine the broker and the emulator
share; compiled, a fraction of it.

:func:`walk` is plain Python (the reference, which the tests compare with the compiled one on
random streams); :func:`compiled` gives the numba-compiled walk, or ``None`` when numba is not
there or fails: the counter then reads a message at a time in Python. Like the tick's kernels,
numba is imported lazily.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

PUBLISH = 0x30
HEADER, CRC = 23, 4  # a frame's header and trailer (docs/protocol.md)
MAX_NODE = 10_000_000  # ids above this are counted as "other" topics, not in the per-node array

# walk() returns (offset, packets, status); status:
DONE = 0  # the buffer ends (or its last packet is incomplete) at offset
CONTROL = 1  # a packet that is not a PUBLISH starts at offset: the caller reads it
GROW = 2  # the packet at offset has a node id beyond the counts array, in ``extra[2]``: grow it

_POLY = 0xEDB88320
_i64: Any = np.int64  # every byte and table entry is widened to a signed 64-bit integer before use: mixing
# numba's unsigned and signed integers would give floats


def crc_table() -> np.ndarray:
    """The tables of CRC-32 (IEEE 802.3, reflected; what ``zlib.crc32`` computes) for eight bytes
    at a step ("slicing-by-8"): row 0 is the byte table, row k that of a byte k places earlier."""
    table = np.zeros((8, 256), np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[0, i] = c
    for k in range(1, 8):
        for i in range(256):
            prev = int(table[k - 1, i])
            table[k, i] = (prev >> 8) ^ int(table[0, prev & 0xFF])
    return table


def crc32(buf: np.ndarray, start: int, stop: int, table: np.ndarray) -> int:
    """CRC-32 of ``buf[start:stop]``, eight bytes at a step, then byte by byte."""
    c = _i64(0xFFFFFFFF)
    k = start
    while k + 8 <= stop:
        one = c ^ (_i64(buf[k]) | (_i64(buf[k + 1]) << 8) | (_i64(buf[k + 2]) << 16) | (_i64(buf[k + 3]) << 24))
        c = (
            _i64(table[7, one & 0xFF])
            ^ _i64(table[6, (one >> 8) & 0xFF])
            ^ _i64(table[5, (one >> 16) & 0xFF])
            ^ _i64(table[4, one >> 24])
            ^ _i64(table[3, buf[k + 4]])
            ^ _i64(table[2, buf[k + 5]])
            ^ _i64(table[1, buf[k + 6]])
            ^ _i64(table[0, buf[k + 7]])
        )
        k += 8
    while k < stop:
        c = _i64(table[0, (c ^ _i64(buf[k])) & 0xFF]) ^ (c >> 8)
        k += 1
    return c ^ 0xFFFFFFFF


def walk(
    buf: np.ndarray,
    start: int,
    prefix: np.ndarray,
    counts: np.ndarray,
    extra: np.ndarray,
    table: np.ndarray,
) -> tuple[int, int, int]:
    """Count the complete PUBLISH packets of ``buf[start:]`` (a uint8 array) up to the first
    packet that is not one, or an incomplete one: per node in ``counts[node]`` when the topic is
    ``prefix`` + decimal node id + ``/``..., else ``extra[0]`` ("other" topics); ``extra[1]``
    counts the payloads that are too short for a frame or whose CRC is wrong. Returns (offset
    reached, PUBLISH packets counted, status: :data:`DONE`, :data:`CONTROL` or :data:`GROW`; for
    GROW, ``extra[2]`` is the node id that needs a longer ``counts``, and nothing of the packet
    at the offset was counted)."""
    n = buf.shape[0]
    i = start
    packets = 0
    plen = prefix.shape[0]
    while i + 2 <= n:
        first = buf[i]
        if first & 0xF0 != PUBLISH:
            return i, packets, CONTROL
        # the remaining length, a varint of up to 4 bytes
        j = i + 1
        length = 0
        shift = 0
        complete = False
        while j < n and j < i + 5:
            digit = _i64(buf[j])
            j += 1
            length |= (digit & 0x7F) << shift
            if digit < 0x80:
                complete = True
                break
            shift += 7
        if not complete:
            return i, packets, DONE
        end = j + length
        if end > n:
            return i, packets, DONE
        t_len = (_i64(buf[j]) << 8) | _i64(buf[j + 1]) if length >= 2 else end
        t0 = j + 2
        t_end = t0 + t_len
        p0 = t_end + (2 if first & 0x06 else 0)  # QoS 1 or 2: a packet id follows the topic
        if p0 > end:  # not a PUBLISH a broker sends: counted as a damaged "other"
            extra[0] += 1
            extra[1] += 1
            packets += 1
            i = end
            continue
        # the node id: the topic level after the prefix
        node = -1
        if t_len > plen:
            same = True
            for k in range(plen):
                if buf[t0 + k] != prefix[k]:
                    same = False
                    break
            if same:
                value = 0
                digits = 0
                k = t0 + plen
                while k < t_end and 48 <= buf[k] <= 57 and digits < 8:
                    value = value * 10 + (_i64(buf[k]) - 48)
                    digits += 1
                    k += 1
                if digits > 0 and (k == t_end or buf[k] == 47) and value <= MAX_NODE:
                    node = value
        if node >= counts.shape[0]:
            extra[2] = node
            return i, packets, GROW
        if node >= 0:
            counts[node] += 1
        else:
            extra[0] += 1
        # the frame's CRC: over all of it but its last 4 bytes, which hold it (little-endian)
        if end - p0 < HEADER + CRC:
            extra[1] += 1
        else:
            want = (
                _i64(buf[end - 4]) | (_i64(buf[end - 3]) << 8) | (_i64(buf[end - 2]) << 16) | (_i64(buf[end - 1]) << 24)
            )
            c = crc32(buf, p0, end - CRC, table)
            if c != want:
                extra[1] += 1
        packets += 1
        i = end
    return i, packets, DONE


def crc_rows(raw: np.ndarray, stop: int, table: np.ndarray, out: np.ndarray) -> None:
    """``out[i]`` = CRC-32 of ``raw[i, :stop]`` for every row of the 2-D uint8 array ``raw``: the
    CRCs of a block of frames (:func:`mcm_firmware.protocol.codec.frame_block`)."""
    for i in range(raw.shape[0]):
        out[i] = crc32(raw[i], 0, stop, table)


_lock = threading.Lock()
_compiled: list[Callable[..., tuple[int, int, int]] | None] = []
_compiled_rows: list[Callable[[np.ndarray, int], np.ndarray] | None] = []


def compiled() -> Callable[..., tuple[int, int, int]] | None:
    """:func:`walk` compiled by numba (loaded from its cache after the first time), or ``None``
    when numba is missing or fails: then the caller runs the reference."""
    with _lock:
        if not _compiled:
            try:
                import numba  # lazily, as the tick's kernels

                _jit_crc32(numba)
                fn: Any = numba.njit(cache=True, nogil=True)(walk)
                probe = np.frombuffer(b"\x30\x00\x30\x02\x00\x00", np.uint8)
                fn(probe, 0, np.zeros(1, np.uint8), np.zeros(1, np.int64), np.zeros(3, np.int64), crc_table())
                _compiled.append(fn)
            except Exception:  # noqa: BLE001 -- any failure of numba means the reference runs
                _compiled.append(None)
        return _compiled[0]


def _jit_crc32(numba: Any) -> None:
    """Compile :func:`crc32` once: :func:`walk` and :func:`crc_rows` call it through the globals."""
    global crc32
    if not hasattr(crc32, "py_func"):
        crc32 = numba.njit(cache=True, nogil=True)(crc32)


def compiled_crc_rows() -> Callable[[np.ndarray, int], np.ndarray] | None:
    """A function ``(raw, stop) -> CRCs`` of :func:`crc_rows` compiled (what ``zlib.crc32`` gives
    row by row, without a Python call per row), or ``None`` when numba is missing or fails."""
    with _lock:
        if not _compiled_rows:
            try:
                import numba

                _jit_crc32(numba)
                fn: Any = numba.njit(cache=True, nogil=True)(crc_rows)
                table = crc_table()

                def rows(raw: np.ndarray, stop: int) -> np.ndarray:
                    out = np.empty(raw.shape[0], np.uint32)
                    fn(raw, stop, table, out)
                    return out

                probe = np.frombuffer(b"123456789abc", np.uint8).reshape(1, 12)
                if int(rows(probe, 9)[0]) != 0xCBF43926:  # the CRC-32 check value of "123456789"
                    raise ValueError("compiled CRC-32 gives a wrong check value")
                _compiled_rows.append(rows)
            except Exception:  # noqa: BLE001 -- any failure of numba means zlib runs
                _compiled_rows.append(None)
        return _compiled_rows[0]
