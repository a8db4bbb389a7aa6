"""The compiled fill of the telemetry records (``Shard.records``, the fleet's telemetry path) gives
the numpy reference's bytes, and leaves the power averages as it does, on Hypothesis-generated
states: NaN and out-of-range readings, counters past 2^32, failsafe and natural-convection
cooling, locked clocks, manual and external valves, shut-down modules, power intervals that are
empty or ran backwards, any subset of rows in any order, telemetry or a status snapshot.

No exp or log is involved (the state is set, not ticked), so the comparison is bit for bit on
every machine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from mcm_firmware import kernel
from mcm_firmware.kernel import calls
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol.codec import snapshot_dtype
from mcm_firmware.runtime.shard import Shard

_MUTATED = ("_energy", "_die_energy", "_energy_since")


@pytest.fixture(scope="module")
def k() -> kernel.Kernels:
    ks = kernel.load()
    if ks is None:
        pytest.skip(f"compiled kernels not in use: {kernel.active()}")
    return ks


def _scramble(sh: Shard, rng: np.random.Generator) -> None:
    """Every array the record reads, set to values a module may hold, and some it should not."""
    n, p = sh.n, sh.params
    st_, pl, cool = sh.dvfs, sh.plant, sh.cool

    def mask(shape: tuple[int, ...], prob: float) -> np.ndarray:
        return rng.random(shape) < prob

    def floats(shape: tuple[int, ...], lo: float, hi: float, nan_p: float = 0.0) -> np.ndarray:
        x = rng.uniform(lo, hi, shape)
        return np.where(mask(shape, nan_p), np.nan, x)

    def counts(shape: tuple[int, ...]) -> np.ndarray:
        return rng.choice([0, 1, 7, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 2**40, 2**62], shape).astype(np.int64)

    sh.t = float(rng.choice([0.0, 0.05, 1234.5, 1_767_225_600.25]))
    sh.boot_t[:] = sh.t - rng.choice([0.0, 0.05, 3600.0, -2.0], n)  # a boot after t: uptime 0
    st_.shutdown[:] = mask((n,), 0.3)
    cool.failsafe[:] = mask(cool.failsafe.shape, 0.2)
    cool.natural[:] = mask((n,), 0.2)
    st_.lock_mhz[:] = rng.choice([0.0, 0.0, 1410.0, np.nan], n)
    sh.ras_flags[:] = rng.integers(0, 2**16, n, dtype=np.uint16)
    sh._energy_since[:] = sh.t - rng.choice([0.0, 0.1, 0.05, 7.0, -0.5], n)  # empty or backwards: the reading
    sh._energy[:] = floats((n,), 0.0, 500.0)
    sh._die_energy[:] = floats((n, p.dies), 0.0, 150.0)
    pl.p_total = floats((n,), 0.0, 1500.0)
    pl.p_die = floats((n, p.dies), 0.0, 400.0, 0.05)
    st_.cap_w[:] = floats((n,), 100.0, 1500.0)
    pl.t_inlet, pl.t_outlet = floats((n,), 15.0, 60.0), floats((n,), 20.0, 90.0, 0.1)
    pl.flow_total, pl.vrm_current = floats((n,), 0.0, 12.0), floats((n,), 0.0, 900.0)
    sh.rx_rejected[:] = rng.integers(0, 2**32, n, dtype=np.uint32)
    sh.ras_action[:] = rng.integers(0, 256, n, dtype=np.uint8)
    sh.energy_j[:] = rng.choice([0.0, 0.0004, 0.0005, 0.0015, 2.5e6, 3.3e12], n)  # halves round to even
    sh.violation_s[:] = rng.choice([0.0, 0.0049, 1.5, 4_294_967.296, 5e6, 9e9], (n, 4))  # past 2^32 ms: wraps
    st_.cap_source[:] = rng.integers(0, 256, n, dtype=np.uint8)
    sh.ras_remapped[:], sh.ras_aggregate[:] = counts((n, 2)), counts((n, 2))
    sh.pcie.counts[:] = counts(sh.pcie.counts.shape)
    sh.s_die.value[:] = floats((n, p.dies), 20.0, 120.0, 0.2)
    st_.mhz[:] = rng.choice([0.0, 300.0, 1410.0, 2100.0, 1999.9], (n, p.dies))
    st_.mv[:] = rng.choice([0.0, 650.0, 749.99, 900.0], (n, p.dies))
    st_.reasons[:] = rng.integers(0, 2**32, (n, p.dies), dtype=np.uint32)
    st_.pstate[:] = rng.integers(-1, 300, (n, p.dies)).astype(np.int16)  # past a byte: its low byte
    sh.util[:] = rng.choice([0.0, 0.005, 0.015, 0.125, 0.5, 0.994, 0.995, 1.0], (n, p.dies))
    if p.hbm:
        sh.s_hbm.value[:] = floats((n, p.hbm), 20.0, 110.0, 0.2)
        sh.ras_ce[:], sh.ras_ue[:] = counts((n, p.hbm)), counts((n, p.hbm))
    sh.s_rpm.value[:] = rng.choice([np.nan, -5.0, 0.0, 3000.5, 65535.9, 70000.0, np.inf, -np.inf], (n, p.pumps))
    cool.lead[:] = rng.integers(-1, p.pumps + 1, n).astype(cool.lead.dtype)
    cool.pump_on[:], cool.pump_fault[:] = mask((n, p.pumps), 0.5), mask((n, p.pumps), 0.3)
    pl.valve_pos = floats((n, p.valves), 0.0, 100.0, 0.1)
    cool.manual[:] = np.where(mask((n, p.valves), 0.3), 40.0, np.nan)
    cool.external[:] = np.where(mask((n, p.valves), 0.3), 60.0, np.nan)


def _both(sh: Shard, rows: np.ndarray, telemetry: bool) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """The records of ``rows`` compiled and from the reference, from the same state, and the arrays
    each left behind."""
    before = {a: getattr(sh, a).copy() for a in _MUTATED}
    got = sh.records(rows, telemetry=telemetry)
    got_after = {a: getattr(sh, a).copy() for a in _MUTATED}
    for a, v in before.items():
        getattr(sh, a)[...] = v
    kernels, sh.kernels = sh.kernels, None
    try:
        want = sh.records(rows, telemetry=telemetry)
    finally:
        sh.kernels = kernels
    want_after = {a: getattr(sh, a).copy() for a in _MUTATED}
    return got, want, got_after, want_after


@settings(max_examples=150)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 40),
    profile=st.sampled_from(["colossus-mcm", "colossus-mcm-batched"]),
    telemetry=st.booleans(),
)
def test_the_compiled_records_are_the_references_bytes(k, seed, n, profile, telemetry):
    rng = np.random.default_rng(seed)
    sh = Shard(load_profile(profile), n, seed=seed % 1000)
    assert sh._fill_at is not None  # the shipped layout is the one the kernel writes
    _scramble(sh, rng)
    rows = rng.permutation(n)[: int(rng.integers(1, n + 1))]
    got, want, got_after, want_after = _both(sh, rows, telemetry)
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.tobytes() != want.tobytes():
        differ = [f for f in want.dtype.names if got[f].tobytes() != want[f].tobytes()]
        pytest.fail(f"fields that differ: {differ}")
    for a in _MUTATED:
        assert np.array_equal(got_after[a], want_after[a]), a
    if telemetry:
        assert (sh._energy_since[rows] == sh.t).all()  # the power average restarted


def test_the_kernel_writes_every_field_of_the_record():
    """The offsets cover the record: no byte of it is left unwritten (each field the kernel writes
    is in SNAPSHOT_FIELDS, and those fields with the arrays' items fill the record exactly)."""
    from mcm_firmware.kernel.loops import SNAPSHOT_FIELDS

    dt = snapshot_dtype(4, 8, 2, 4)
    at = calls.snapshot_offsets(dt)
    assert at is not None
    covered = np.zeros(dt.itemsize, int)
    items = {name: dt.fields[name] for name in ("dies", "hbm", "pumps", "valves")}
    for (path, kind), off in zip(SNAPSHOT_FIELDS, at, strict=False):
        size = np.dtype(kind).itemsize
        outer, _, _ = path.rpartition(".")
        if not outer:
            covered[off : off + size] += 1
            continue
        atype, base = items[outer]
        for j in range(atype.shape[0]):
            start = base + j * atype.base.itemsize + off
            covered[start : start + size] += 1
    assert (covered == 1).all(), np.nonzero(covered != 1)[0]


def test_a_changed_layout_runs_the_reference():
    """A record whose fields the kernel does not know (renamed, retyped, missing) gets no offsets:
    the shard then fills it with numpy."""
    dt = snapshot_dtype(4, 8, 2, 4)
    assert calls.snapshot_offsets(dt) is not None
    retyped = np.dtype([(n, "<f8" if n == "power_w" else dt.fields[n][0]) for n in dt.names])
    assert calls.snapshot_offsets(retyped) is None
    missing = np.dtype([(n, dt.fields[n][0]) for n in dt.names if n != "flags"])
    assert calls.snapshot_offsets(missing) is None
    assert calls.snapshot_offsets(np.dtype("<u8")) is None


def test_the_kernel_gives_the_same_as_plain_python(k, monkeypatch):
    """The loop nest runs uncompiled (its helpers too) to the reference's bytes: the source numba
    compiles is the arithmetic the test above proves."""
    from mcm_firmware.kernel import loops

    for name in ("put_int", "put_f32", "fmin", "fmax"):
        fn = getattr(loops, name)
        monkeypatch.setattr(loops, name, getattr(fn, "py_func", fn))
    fill = getattr(loops.telemetry_fill, "py_func", loops.telemetry_fill)
    for seed in range(3):
        rng = np.random.default_rng(seed)
        sh = Shard(load_profile("colossus-mcm"), 5, seed=seed)
        _scramble(sh, rng)
        rows = rng.permutation(5)[:4]
        got = np.empty(len(rows), sh._dtype)
        fill(*sh.fill_args(got, rows, False))
        sh.kernels = None
        want = sh.records(rows, telemetry=False)
        assert got.tobytes() == want.tobytes()
