"""Give freed memory back to the system after an oversize input (glibc's ``malloc_trim``).

A frame is at most 65,562 bytes, but a broker without a packet size limit delivers whatever it is
sent: a payload of megabytes is received whole, rejected, and freed. glibc keeps freed heap memory
below its trim threshold (which grows, with its mmap threshold, to tens of MB after large blocks),
so without this the process keeps what one flood made it take. Elsewhere than glibc: nothing."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import time

_libc: ctypes.CDLL | None = None
_tried = False
_last = 0.0
_pending: asyncio.Handle | None = None
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


def release(*, force: bool = False) -> None:
    """Return the heap's free pages to the system (at most every half second unless forced)."""
    global _last, trims
    now = time.monotonic()
    if not force and now - _last < TRIM_AT_MOST_EVERY_S:
        return
    _last = now
    _malloc_trim()
    trims += 1


def release_soon(loop: asyncio.AbstractEventLoop) -> None:
    """Trim once the input now being refused is freed: on the next turn of the loop, or, within
    half a second of the last trim, at the end of that half second (one trim for a burst; the last
    oversize input of a burst is given back too)."""
    global _pending
    if _pending is not None:
        return
    wait = max(0.0, TRIM_AT_MOST_EVERY_S - (time.monotonic() - _last))

    def run() -> None:
        global _pending
        _pending = None
        release(force=True)

    _pending = loop.call_later(wait, run) if wait > 0 else loop.call_soon(run)
