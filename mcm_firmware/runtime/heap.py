"""Give freed memory back to the system after an oversize input (glibc's ``malloc_trim``).

A frame is at most 65,562 bytes, but a broker without a packet size limit delivers whatever it is
sent: a payload of megabytes is received whole, rejected, and freed. glibc keeps freed heap memory
below its trim threshold (which grows, with its mmap threshold, to tens of MB after large blocks),
so without this the process keeps what one flood made it take. Elsewhere than glibc: nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import time

_libc: ctypes.CDLL | None = None
_tried = False
_last = 0.0
TRIM_AT_MOST_EVERY_S = 0.5

trims = 0
"""Trims done in this process (for tests and the curious)."""


def _malloc_trim() -> bool:
    global _libc, _tried
    if not _tried:
        _tried = True
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _libc = lib if lib is not None and hasattr(lib, "malloc_trim") else None
        except OSError:
            _libc = None
    if _libc is None:
        return False
    return bool(_libc.malloc_trim(0))


def release() -> None:
    """Return the heap's free pages to the system (at most every half second)."""
    global _last, trims
    now = time.monotonic()
    if now - _last < TRIM_AT_MOST_EVERY_S:
        return
    _last = now
    _malloc_trim()
    trims += 1
