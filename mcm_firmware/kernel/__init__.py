"""The tick's hot work compiled: numba loop nests proven equal to the numpy reference.

:func:`load` gives the compiled kernels (:class:`Kernels`), or ``None`` when the numpy reference
is to run: ``MCM_EMU_KERNEL=numpy`` asks for it, and a missing or failing numba falls back to it,
saying so once in the log. numba is imported here, lazily, when the first shard is built: the
commands that build no shard (``ctl``, ``monitor``, ``nodes``) never import it.

Beside the tick, :mod:`.stream` compiles the bench counter's walk over an MQTT stream and the
CRCs of the fleet's telemetry blocks.

The kernels are compiled with ``cache=True``: the machine code lands in ``__pycache__`` beside
:mod:`.loops` (or ``NUMBA_CACHE_DIR``) and later processes load it from there.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

ENV = "MCM_EMU_KERNEL"  # "numpy": the reference; "numba" or unset: compiled when numba works

KERNEL_NAMES = (
    "plant_step",
    "sensor_sample",
    "sensor_sample_faulty",
    "update_power_average",
    "hw_protect",
    "apply_hw_limits",
    "learn_trim",
    "dvfs_step",
    "tick_inputs",
    "tick_counters",
    "tick_demand",
    "cooling_fast",
    "cooling_thermal",
    "telemetry_fill",
)


@dataclass(frozen=True)
class Kernels:
    """The compiled functions of :mod:`.loops` (same names, same arguments)."""

    plant_step: Callable[..., None]
    sensor_sample: Callable[..., None]
    sensor_sample_faulty: Callable[..., None]
    update_power_average: Callable[..., None]
    hw_protect: Callable[..., None]
    apply_hw_limits: Callable[..., None]
    learn_trim: Callable[..., None]
    dvfs_step: Callable[..., None]
    tick_inputs: Callable[..., None]
    tick_counters: Callable[..., None]
    tick_demand: Callable[..., None]
    cooling_fast: Callable[..., int]
    cooling_thermal: Callable[..., int]
    telemetry_fill: Callable[..., None]
    load_s: float  # what importing numba and compiling (or loading from the cache) took


_lock = threading.Lock()
_loaded = False
_kernels: Kernels | None = None
_why = ""


def wanted() -> str:
    """The kernel asked for: ``numpy`` or ``numba``."""
    v = os.environ.get(ENV, "").strip().lower()
    if v in ("", "numba", "compiled", "auto"):
        return "numba"
    if v in ("numpy", "reference"):
        return "numpy"
    raise ValueError(f"{ENV}={v!r}: expected numpy or numba")


def load() -> Kernels | None:
    """The compiled kernels, or ``None`` for the numpy reference (once per process)."""
    global _loaded, _kernels, _why
    with _lock:
        if _loaded:
            return _kernels
        want = wanted()
        _loaded = True
        if want == "numpy":
            _why = f"{ENV}=numpy"
            return None
        t0 = time.perf_counter()
        try:
            _kernels = _compile(t0)
        except Exception as e:  # noqa: BLE001 -- any failure of numba (missing, LLVM, typing) means the reference runs
            _why = f"numba unavailable ({type(e).__name__}: {e})"
            log.warning("mcm-emu: compiled tick kernel unavailable, running the numpy reference: %s", _why)
            _kernels = None
        return _kernels


def active() -> str:
    """What the shards of this process run: ``numba`` or ``numpy (why)``; loads if needed."""
    k = load()
    return "numba" if k is not None else f"numpy ({_why})"


def _compile(t0: float) -> Kernels:
    import numba  # lazily: only a process that builds a shard pays for it

    from . import loops

    jit: Callable[[Any], Any] = numba.njit(cache=True, nogil=True, error_model="numpy")
    helpers = (
        "psum", "fmin", "fmax", "interp", "grid_floor", "grid_ceil", "pstate_at_least", "pstate_at_most", "npmod",
        "pid_step", "zone_max", "put_int", "put_f32",
    )  # fmt: skip
    for name in helpers:  # the kernels call the compiled helpers through the module's globals
        setattr(loops, name, jit(getattr(loops, name)))
    fns = {name: jit(getattr(loops, name)) for name in KERNEL_NAMES}
    _warm_up(fns)
    return Kernels(**fns, load_s=time.perf_counter() - t0)


def _warm_up(k: dict[str, Any]) -> None:
    """Compile (or load from the cache) every kernel for the types the shard passes, so that a
    failure shows here and not in a tick."""
    import numpy as np

    f2, f1, b2, b1 = np.zeros((1, 2)), np.zeros(1), np.zeros((1, 2), bool), np.zeros(1, bool)
    i1 = np.zeros(2, np.int64)
    k["plant_step"](
        f2, f2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, i1, np.ones(2), 1.0, 1.0, 1.0, i1, np.ones(2), True,
        np.ones(2), np.ones(2), 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        f2, f2, b1, f2, f2, f2, b2, b2, b2, f1, f1,
        f2.copy(), f2.copy(), f2, f2, f2,
        f2.copy(), f2.copy(), f2.copy(), f1.copy(), f2.copy(), f2.copy(), f1.copy(), f1.copy(), f2.copy(),
        f1.copy(), f1.copy(), 0.05, 1.0,
    )  # fmt: skip
    k["sensor_sample"](f2, f2, 1.0, 1.0, f2.copy(), 0.0, f2.copy())
    i2 = np.zeros((1, 2), np.int8)
    k["sensor_sample_faulty"](
        f2, f2, 1.0, 1.0, 0.0, 0.05, i2, f2, f2.copy(), f2, f2, True, True, f2, f2, f2.copy(), f2.copy(), b2.copy()
    )
    k["update_power_average"](f1.copy(), f1.copy(), f1, 0.1, 0.1)
    k["hw_protect"](
        1.0,
        1.0,
        1.0,
        0.9,
        1.0,
        1.0,
        1.0,
        0.0,
        f2,
        f1,
        f2,
        b1,
        b2,
        f1,
        b1,
        b1,
        b2.copy(),
        f1.copy(),
        b1.copy(),
        b1.copy(),
    )
    k["apply_hw_limits"](
        np.ones(2), np.ones(2), np.ones(2), 1.0, 1.0, 15.0, 1, 1, 1, 1,
        np.zeros((1, 2), np.int16), f2, b2, b1, b1, b2, b1, f2, np.zeros((1, 2), np.uint32),
        f2.copy(), f2.copy(), np.zeros((1, 2), np.uint32), b2.copy(),
    )  # fmt: skip
    k["learn_trim"](
        1.0, 1.0, 1.0, 0.97, 0.1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.6, 1.4, 0.1, 0.1,
        b1, f2, f2, f1, f2, f2, np.ones(1), f1.copy(),
    )  # fmt: skip
    k["tick_inputs"](f2, f2, b1, 2.0, 0.1, i1, f2.copy(), f2.copy(), f2.copy())
    u2 = np.zeros((1, 2), np.uint32)
    k["tick_counters"](
        f1, f2, b1, u2, b1, 0.05, 1, 2, 4, True, f1.copy(), f2.copy(), f1.copy(), np.zeros((1, 4)), f1.copy(), f2.copy()
    )
    i8 = np.zeros(1, np.int8)
    k["tick_demand"](
        i8, f1, np.ones(1), f2.copy(), f2, 1.0, 0.5, 0.1, 1, 2, 3, 0.85, 2.0, 1.5, 0.15, 0.5, f2, b1, 2.0,
        f2.copy(), f2.copy(),
    )  # fmt: skip
    k["cooling_fast"](
        1.0, 2.0, 0.6, 1.0, 3.0, 600.0, 3600.0, np.ones(2), np.ones(2),
        f2, b2, f2, f2, b2, b2, f2.copy(), b2.copy(), b2.copy(), f2.copy(), np.zeros(1, np.int16), f1.copy(),
        b1, f2.copy(), f2.copy(), b1.copy(), b2.copy(), b2.copy(), b1.copy(), b1.copy(), b1.copy(),
        1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, False, 1.0, 1.0, False, 30.0,
        f2, f2, f2, f2, b2, f2, f2, f2.copy(), f2.copy(), f2.copy(),
    )  # fmt: skip
    z1 = np.zeros(2, np.int64)
    k["cooling_thermal"](
        1.0, 1.0, 60.0, 80.0, 5.0, z1, z1, f2, f2, b2, f2, f2, b2, b2, f2, f2, f2, f2, u2, u2.copy(), f2, u2.copy(),
        b2.copy(), f2.copy(), f2.copy(), f2.copy(), f2.copy(), f2.copy(), u2.copy(), f2.copy(), b2.copy(), u2.copy(),
        1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, False, 0.0, 0.0, True,
    )  # fmt: skip
    b22, u22, i22 = np.zeros((2, 2), bool), np.zeros((2, 2), np.uint32), np.zeros((2, 2), np.int64)
    f22, f21, i21 = np.zeros((2, 2)), np.zeros(2), np.zeros(2, np.int64)
    k["telemetry_fill"](
        np.zeros((2, 300), np.uint8), np.zeros(51, np.int64), i21, 1.0, True, 2, 2, 2, 2, 1, 2, 1, 2, 1, 2, 1, 2, 4, 1, 2,
        f21, b22[0], b22, b22[0], f21, np.zeros(2, np.uint16), f21.copy(), f21.copy(), f21, f22.copy(), f22, f21, f21,
        f21, f21, f21, u22[0], np.zeros(2, np.uint8), f21, f22, np.zeros(2, np.uint8), i22, i22, i22, f22, f22, f22,
        u22, np.zeros((2, 2), np.int16), f22, f22, i22, i22, f22, np.zeros(2, np.int16), b22, b22, f22, f22, f22,
    )  # fmt: skip
    t = np.arange(1.0, 3.0)
    k["dvfs_step"](
        t, t, t, t, t, t, 2.0, 1.0, 15.0, 1.25, 0.02, 0.97, 1.1, 0.1, 90.0, 5.0, 95.0, 1.0, 1.0, 1.0, 1.0, 1.0,
        0.04, 0.1, 1, 2, 4, 8, 0.05, True,
        f2, f2, f2, f2, f1, np.ones(1), np.ones(1), b1, f2, f1, f2, f1.copy(), f1.copy(), f1.copy(),
        f2.copy(), f1.copy(), f2.copy(), f2.copy(), b1.copy(), np.zeros((1, 2), np.int16), np.zeros((1, 2), np.uint32),
    )  # fmt: skip
