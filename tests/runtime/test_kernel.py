"""The compiled tick kernels equal their numpy references: the plant step, the sensors'
sampling, the power averages, the hardware comparators, the hardware limits and the trim, on
Hypothesis-generated states and inputs (faults, shutdown rows, NaN readings, stuck valves, failed
pumps, locked clocks, hardware slowdown, natural convection).

Equal means bit for bit (NaN where the reference has NaN), with numpy's float64 exp and log the
C library's as numba's are. On x86 with AVX-512 numpy dispatches SIMD versions of its own, whose
results differ by a few ulps (and, over several ticks, a comparison may then go the other way):
``tools/test.sh`` turns that dispatch off (``NPY_DISABLE_CPU_FEATURES``); without it this module
is skipped, saying why (docs/performance.md, "Compiled tick")."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from mcm_firmware import kernel
from mcm_firmware.control import dvfs
from mcm_firmware.kernel import calls
from mcm_firmware.plant import model
from mcm_firmware.plant.sensors import SensorBank, SensorFault
from mcm_firmware.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
PROFILES = ("colossus-mcm",)


SIMD_MATH = ("X86_V4", "AVX512_SKX", "AVX512_ICL", "AVX512_SPR")
"""numpy's dispatch targets under which its float64 exp and log are SIMD versions of their own."""


def _simd_math() -> list[str]:
    from numpy._core._multiarray_umath import __cpu_features__  # type: ignore[import-not-found]

    return [f for f in SIMD_MATH if __cpu_features__.get(f)]


if _simd_math():
    pytest.skip(
        f"numpy dispatches {', '.join(_simd_math())} versions of exp and log, which differ from the C library's "
        "(and numba's) by a few ulps: run with NPY_DISABLE_CPU_FEATURES='X86_V4 AVX512_ICL AVX512_SPR', as "
        "tools/test.sh does",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def k() -> kernel.Kernels:
    ks = kernel.load()
    if ks is None:
        pytest.skip(f"compiled kernels not in use: {kernel.active()}")
    return ks


def assert_same(a: object, b: object, what: str) -> None:
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), f"{what}: {a} != {b}"


def assert_same_fields(a: object, b: object, names: list[str], what: str) -> None:
    for name in names:
        assert_same(getattr(a, name), getattr(b, name), f"{what}.{name}")


seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 40)
dts = st.sampled_from([0.05, 0.1, 0.25, 1.0, 5.0, 0.001])


def _rng_states(prof_name: str, n: int, seed: int) -> tuple[object, ...]:
    prof = load_profile(prof_name)
    rng = np.random.default_rng(seed)
    p = model.PlantParams.from_profile(prof, n, rng)
    s = model.PlantState.initial(p, prof)
    u = model.PlantInputs.idle(p, prof)
    return prof, rng, p, s, u


def _mask(rng: np.random.Generator, shape: tuple[int, ...], prob: float) -> np.ndarray:
    return rng.random(shape) < prob


@settings(max_examples=150)
@given(seed=seeds, n=sizes, dt=dts, fault_p=st.sampled_from([0.0, 0.2, 0.7, 1.0]))
def test_plant_step_equals_the_reference(k, seed, n, dt, fault_p):
    prof, rng, p, s, u = _rng_states("colossus-mcm", n, seed)
    pst = prof.die.pstates
    u.mhz = rng.choice([float(x.mhz) for x in pst] + [0.0, 1234.5], u.mhz.shape)
    u.mv = rng.choice([float(x.mv) for x in pst] + [0.0, 50.0], u.mv.shape)
    u.powered = ~_mask(rng, (n,), fault_p / 2)  # shutdown rows
    u.activity = rng.uniform(0, 1, u.activity.shape)
    u.hbm_util = rng.uniform(0, 1, u.hbm_util.shape)
    u.valve_cmd = rng.uniform(-20, 120, u.valve_cmd.shape)
    u.pump_on = _mask(rng, u.pump_on.shape, 0.6)
    u.pump_failed = _mask(rng, u.pump_failed.shape, fault_p / 2)
    u.valve_stuck = _mask(rng, u.valve_stuck.shape, fault_p / 2)
    u.inlet_offset_c = rng.normal(0, 10, n) * _mask(rng, (n,), fault_p)
    u.vrm_factor = np.where(_mask(rng, (n,), fault_p / 3), rng.uniform(1, 3, n), 1.0)
    s.t_die = rng.uniform(10, 130, s.t_die.shape)
    s.t_plate = rng.uniform(10, 90, s.t_plate.shape)
    s.t_hbm = rng.uniform(10, 110, s.t_hbm.shape)
    s.valve_pos = rng.choice([0.0, 0.3, 0.5, 0.6, 50.0, 100.0], s.valve_pos.shape) + rng.uniform(
        0, 1, s.valve_pos.shape
    ) * _mask(rng, s.valve_pos.shape, 0.5)
    s.pump_rpm = rng.uniform(0, 1.3, s.pump_rpm.shape) * p.pump_rpm_nom
    ref, got = copy.deepcopy(s), copy.deepcopy(s)
    inlet = prof.cooling.inlet_c
    for _ in range(3):  # a few steps: the state each produces feeds the next
        model.step(p, ref, u, dt, inlet)
        calls.plant_step(k, p, got, u, dt, inlet)
        assert_same_fields(ref, got, list(model.PlantState.__dataclass_fields__), "plant")


@settings(max_examples=100)
@given(
    seed=seeds,
    n=sizes,
    sd=st.sampled_from([0.0, 0.15, 5.0]),
    q=st.sampled_from([0.0, 0.0625, 0.01, 1.0]),
    fault_p=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_sensor_sampling_equals_the_reference(k, seed, n, sd, q, fault_p):
    """Fault-free banks, and banks with sensors stuck, drifting, noisy, dropping out, failed (and
    set back to OK): the readings, their times, the failure flags, the drift and the random draws
    the reference makes."""
    rng = np.random.default_rng(seed)
    shape = (n, int(rng.integers(1, 9)))
    init = rng.uniform(-50, 3000, shape)
    ref = SensorBank(shape, noise_sd=sd, quantum=q, initial=init)
    got = copy.deepcopy(ref)
    faults = [(int(rng.integers(0, n)), int(rng.integers(0, shape[1])), int(rng.integers(0, 6))) for _ in range(4 * n)]
    for tick in range(6):
        t = 0.05 * (tick + 1)
        if tick >= 2:
            for row, col, kind in faults[(tick - 2) * n : (tick - 1) * n]:
                if rng.random() < fault_p:
                    param = float(rng.choice([0.0, 0.3, 2.0, 45.0]))
                    for bank in (ref, got):
                        bank.set_fault(row, col, SensorFault(kind), param)
        true = rng.uniform(-50, 3000, shape)
        true[_mask(rng, shape, 0.1)] = np.nan  # a plant value the sensor cannot read (NaN passes through)
        noise = rng.standard_normal(shape)
        draws_ref, draws_got = np.random.default_rng(tick), np.random.default_rng(tick)
        ref.sample(true, t, 0.05, draws_ref, noise)
        assert calls.sensor_sample(k, got, true, t, noise, 0.05, draws_got)
        assert_same_fields(ref, got, ["value", "read_at", "_pending", "failed", "_drift"], f"sensor tick {tick}")
        assert draws_ref.random() == draws_got.random()  # the same draws were taken
    got.attach_external(0, 0)  # a bank with a rig's sensor is left to the reference
    assert not calls.sensor_sample(k, got, true, 0.5, noise, 0.05, np.random.default_rng(0))


def _dvfs(n: int, rng: np.random.Generator, fault_p: float) -> tuple[dvfs.DvfsConfig, dvfs.DvfsState]:
    prof = load_profile("colossus-mcm")
    cfg = dvfs.DvfsConfig.from_profile(prof)
    dies = prof.die.count
    s = dvfs.DvfsState(cfg, n, dies, prof.power.default_cap_w)
    S = len(cfg.mhz)
    s.pstate = rng.integers(0, S, (n, dies)).astype(np.int16)
    s.f_cap = np.where(_mask(rng, (n, dies), 0.5), rng.uniform(cfg.f_min - 100, cfg.f_max + 100, (n, dies)), cfg.f_max)
    s.mhz = rng.choice([0.0, cfg.f_min, cfg.f_max, 777.0, 1e-3], (n, dies)) * ~_mask(rng, (n, dies), fault_p / 4)
    s.mv = rng.choice(cfg.mv, (n, dies))
    s.reasons = rng.integers(0, 2**12, (n, dies)).astype(np.uint32)
    s.hw_therm = _mask(rng, (n, dies), fault_p / 2)
    s.hw_ocp = _mask(rng, (n,), fault_p / 3)
    s.brake = _mask(rng, (n,), fault_p / 3)
    s.hw_slow = _mask(rng, (n, dies), fault_p / 2)
    s.shutdown = _mask(rng, (n,), fault_p / 3)
    s.forced_min = _mask(rng, (n,), fault_p / 3)
    s.lock_mhz = np.where(_mask(rng, (n,), fault_p / 2), rng.choice(cfg.mhz, n), 0.0)  # locked clocks
    s.ocp_until = np.where(_mask(rng, (n,), 0.5), rng.uniform(0, 20, n), -np.inf)
    s.trim = rng.uniform(0.6, 1.4, n)
    s.avg_long = rng.uniform(0, 1500, n)
    s.avg_short = rng.uniform(0, 1500, n)
    return cfg, s


def _sensed(rng: np.random.Generator, shape: tuple[int, int], nan_p: float) -> np.ndarray:
    x = rng.uniform(20, 120, shape)
    x[_mask(rng, shape, nan_p)] = np.nan
    return x


DVFS_FIELDS = [
    "mhz", "mv", "reasons", "hw_slow", "hw_therm", "hw_ocp", "ocp_until", "shutdown", "trim", "avg_long", "avg_short",
]  # fmt: skip


@settings(max_examples=150)
@given(seed=seeds, n=sizes, dt=dts, fault_p=st.sampled_from([0.0, 0.2, 0.7, 1.0]), t=st.floats(0, 30))
def test_dvfs_every_tick_work_equals_the_reference(k, seed, n, dt, fault_p, t):
    """update_power_average, hw_protect, apply_hw_limits, then learn_trim, as a tick runs them."""
    rng = np.random.default_rng(seed)
    cfg, ref = _dvfs(n, rng, fault_p)
    got = copy.deepcopy(ref)
    dies = ref.mhz.shape[1]
    power = rng.uniform(0, 2000, n)
    t_true = rng.uniform(20, 130, (n, dies))
    vrm = rng.uniform(0, cfg.vrm_limit_a * 1.3, n)
    sensed = _sensed(rng, (n, dies), fault_p / 2)
    util = np.clip(rng.uniform(-0.1, 1.2, (n, dies)), 0, 1)

    dvfs.update_power_average(cfg, ref, power, dt)
    calls.update_power_average(k, cfg, got, power, dt)
    assert_same_fields(ref, got, DVFS_FIELDS, "update_power_average")
    dvfs.hw_protect(cfg, ref, t, t_true, vrm, sensed)
    calls.hw_protect(k, cfg, got, t, t_true, vrm, sensed)
    assert_same_fields(ref, got, DVFS_FIELDS, "hw_protect")
    dvfs.apply_hw_limits(cfg, ref)
    calls.apply_hw_limits(k, cfg, got)
    assert_same_fields(ref, got, DVFS_FIELDS, "apply_hw_limits")
    dvfs.learn_trim(cfg, ref, power, util, sensed, dt)
    calls.learn_trim(k, cfg, got, power, util, sensed, dt)
    assert_same_fields(ref, got, DVFS_FIELDS, "learn_trim")


def _soak_slice(tmp_path: Path, seconds: int) -> Path:
    """soak-24h cut to its first ``seconds`` (the random faults start at 600 s)."""
    text = (ROOT / "mcm_firmware/scenario/library/soak-24h.toml").read_text()
    text = text.replace("duration_s = 86400", f"duration_s = {seconds}").replace("start_s = 600.0", "start_s = 60.0")
    path = tmp_path / "soak-slice.toml"
    path.write_text(text)
    return path


def _digest(path: Path, kernel_env: str) -> str:
    env = {**os.environ, kernel.ENV: kernel_env}
    out = subprocess.run(
        [sys.executable, "-m", "mcm_firmware", "scenario", "run", str(path), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    (digest,) = [line for line in out.stdout.splitlines() if line.startswith("digest ")]
    return digest


def test_a_soak_runs_to_the_same_digest_compiled_and_on_the_numpy_reference(tmp_path):
    """Faults drawn from the seed (pumps, valves, sensors, VRM, brake, crashes...) over 40 minutes
    of the soak: the trace is the same bit for bit whichever path ran the tick."""
    path = _soak_slice(tmp_path, 2400)
    assert _digest(path, "numba") == _digest(path, "numpy")


def test_the_numpy_reference_can_be_forced_and_a_missing_numba_is_said(monkeypatch, caplog):
    monkeypatch.setattr(kernel, "_loaded", False)
    monkeypatch.setattr(kernel, "_kernels", None)
    monkeypatch.setenv(kernel.ENV, "numpy")
    assert kernel.load() is None and kernel.active() == f"numpy ({kernel.ENV}=numpy)"
    monkeypatch.setattr(kernel, "_loaded", False)
    monkeypatch.setenv(kernel.ENV, "numba")
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba fails
    with caplog.at_level("WARNING"):
        assert kernel.load() is None
        assert kernel.load() is None
    said = [r for r in caplog.records if "numpy reference" in r.getMessage()]
    assert len(said) == 1 and "numba unavailable" in said[0].getMessage()
    monkeypatch.setattr(kernel, "_loaded", False)
    monkeypatch.setenv(kernel.ENV, "fortran")
    with pytest.raises(ValueError, match="numpy or numba"):
        kernel.load()


DVFS_STEP_FIELDS = [
    "f_therm", "f_therm_hbm", "dither", "f_cap", "hbm_slow", "pstate", "reasons", "avg_long", "avg_short", "cap_seen",
]  # fmt: skip


@settings(max_examples=200)
@given(
    seed=seeds,
    n=sizes,
    dt=dts,
    fault_p=st.sampled_from([0.0, 0.2, 0.7, 1.0]),
    hbm=st.sampled_from(["sensed", "none", "empty"]),
)
def test_dvfs_step_equals_the_reference(k, seed, n, dt, fault_p, hbm):
    """The governor, locked clocks, the power cap through the estimator (a new limit, payback),
    software thermal slowdown on NaN-ridden readings, the memory's ceiling, natural convection,
    the dithered clock grid: over a few periods, each feeding the next."""
    rng = np.random.default_rng(seed)
    cfg, ref = _dvfs(n, rng, fault_p)
    dies = ref.mhz.shape[1]
    ref.cap_w = rng.uniform(cfg.min_cap_w, cfg.max_cap_w, n)
    ref.cap_seen = np.where(_mask(rng, (n,), 0.5), ref.cap_w, rng.uniform(cfg.min_cap_w, cfg.max_cap_w, n))
    ref.f_therm = rng.uniform(cfg.f_min - 50, cfg.f_max, (n, dies))
    ref.f_therm_hbm = rng.uniform(cfg.f_min, cfg.f_max, n)
    ref.dither = rng.uniform(0, 1, (n, dies)) * _mask(rng, (n, dies), 0.5)
    got = copy.deepcopy(ref)
    for _ in range(3):
        util = np.clip(rng.uniform(-0.2, 1.3, (n, dies)), 0, 1)
        sensed = _sensed(rng, (n, dies), fault_p / 2) + rng.uniform(0, 20) * _mask(rng, (n, dies), 0.3)
        t_hbm = None if hbm == "none" else _sensed(rng, (n, 8 if hbm == "sensed" else 0), fault_p / 2)
        dvfs.dvfs_step(cfg, ref, util, sensed, dt, t_hbm)
        calls.dvfs_step(k, cfg, got, util, sensed, dt, t_hbm)
        assert_same_fields(ref, got, DVFS_STEP_FIELDS, "dvfs_step")
        ref.mhz = got.mhz = np.where(_mask(rng, (n, dies), 0.5), cfg.mhz[ref.pstate], ref.mhz)


def _arrays(obj: object, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{k}": v for k, v in vars(obj).items() if isinstance(v, np.ndarray)}


def _shard_arrays(sh: object) -> dict[str, np.ndarray]:
    out = _arrays(sh, "shard")
    for name in ("plant", "inputs", "dvfs", "cool", "s_die", "s_hbm", "s_flow", "s_rpm", "workload"):
        out.update(_arrays(getattr(sh, name), name))
    return out


@settings(max_examples=12)
@given(seed=seeds, n=st.integers(1, 24), periods=st.sampled_from([1, 1, 3]))
def test_a_shard_ticks_the_same_compiled_and_on_the_reference(k, seed, n, periods):
    """Whole shards, one on the kernels and one on the numpy reference, under a storm of faults
    (failed pumps, stuck valves, a sensor failed and one drifting, locked clocks, a power brake, a
    VRM fault, a hot inlet, a controller down, new power limits, every workload): every array of
    the shard, its plant, DVFS, coolant and sensors equal to the bit, and laid out alike."""
    from mcm_firmware.plant.workload import Workload
    from mcm_firmware.runtime.shard import Shard

    prof = load_profile("colossus-mcm")
    shards = [Shard(prof, n, seed=seed % 1000), Shard(prof, n, seed=seed % 1000)]
    shards[1].kernels = None
    rng = np.random.default_rng(seed)
    plan = [(int(rng.integers(0, 400)), int(rng.integers(0, n)), int(rng.integers(0, 10))) for _ in range(3 * n)]
    for tick in range(400 // periods):
        for when, row, what in plan:
            if when // periods != tick:
                continue
            for sh in shards:
                u, d = sh.inputs, sh.dvfs
                if what == 0:
                    u.pump_failed[row, 0] = True
                elif what == 1:
                    u.valve_stuck[row, 0] = True
                elif what == 2:
                    sh.set_sensor_fault("die", row, 1, SensorFault.FAILED)
                elif what == 3:
                    sh.set_sensor_fault("hbm", row, 0, SensorFault.DRIFT, 0.5)
                elif what == 4:
                    d.lock_mhz[row] = float(prof.die.pstates[2].mhz)
                elif what == 5:
                    d.brake[row] = not d.brake[row]
                elif what == 6:
                    u.vrm_factor[row] = 1.6
                elif what == 7:
                    u.inlet_offset_c[row] = 25.0
                elif what == 8:
                    sh.active[row] = not sh.active[row]
                else:
                    d.limit_in_band[row] = 300.0 + 50.0 * row
                    dvfs.enforce_limits(sh.dvfs_cfg, d, row)
                sh.set_workload(row, list(Workload)[(row + what) % 4])
        for sh in shards:
            sh.tick(periods)
    assert shards[0].inputs.hbm_util.flags.c_contiguous  # the compiled step's inputs: no fall back to numpy
    got, ref = (_shard_arrays(sh) for sh in shards)
    assert got.keys() == ref.keys()
    for name in ref:
        assert_same(ref[name], got[name], name)
        assert ref[name].flags.c_contiguous == got[name].flags.c_contiguous, name
    assert [e.code for e in shards[0].take_events()] == [e.code for e in shards[1].take_events()]


@settings(max_examples=100)
@given(
    seed=seeds,
    n=sizes,
    dt=dts,
    t=st.sampled_from([0.0, 0.05, 1.5, 3.999, 1_767_225_600.0, 1_767_312_000.5]),
)
def test_the_workload_and_the_utilisation_the_firmware_sees_equal_the_reference(k, seed, n, dt, t):
    """Every workload (idle, steady, training, inference) at any scale, at clocks that run, stop
    (0 MHz) or read NaN, on running and shut-down modules: the demand, the utilisation, the
    inference's fluctuation and the draws it takes."""
    _check_demand(k, seed, n, dt, t)


def _check_demand(k: kernel.Kernels, seed: int, n: int, dt: float, t: float) -> None:
    from mcm_firmware.plant.workload import Workload, WorkloadModel, utilisation

    rng = np.random.default_rng(seed)
    dies = int(rng.integers(1, 9))
    ref = WorkloadModel(n, dies, np.random.default_rng(seed))
    for row in range(n):
        ref.set(row, Workload(int(rng.integers(0, 4))), float(rng.choice([1.0, 0.5, 0.0, 1.3])))
    ref.phase = rng.uniform(-3.0, 3.0, n)  # any phase: the remainder follows numpy's sign rule
    got = copy.deepcopy(ref)
    got._rng = copy.deepcopy(ref._rng)
    for tick in range(4):
        now = t + tick * dt
        mhz = rng.choice([0.0, 300.0, 1410.0, 2100.0, np.nan], (n, dies))
        shut = _mask(rng, (n,), 0.3)
        want = ref.demand(now, dt)
        want_util = utilisation(want, mhz, 2100.0) * ~shut[:, None]
        out = calls.tick_demand(k, got, now, dt, mhz, shut, 2100.0)
        assert out is not None
        assert_same(want, out[0], f"demand tick {tick}")
        assert_same(want_util, out[1], f"utilisation tick {tick}")
        assert_same(ref._ou, got._ou, f"fluctuation tick {tick}")
    assert ref._rng.random() == got._rng.random()  # the same draws were taken
    assert calls.tick_demand(k, got, t, dt, np.asfortranarray(np.zeros((n, 2))), shut, 2100.0) is None or n == 1


@settings(max_examples=150)
@given(seed=seeds, n=sizes, pumps=st.integers(1, 3), ts=st.sampled_from([0.1, 0.5, 2.0]), fault_p=st.floats(0, 1))
def test_the_valve_period_equals_the_reference(k, seed, n, pumps, ts, fault_p):
    """The pump drivers' current, the pump supervision (faults latched and retried, failover,
    alternation, a stopped module restarted, natural convection entered and left) and the valve
    loop (failsafe, external and manual commands, NaN flow readings, slew and windup limits)."""
    _check_valve_period(k, seed, n, pumps, ts, fault_p)


def _check_valve_period(k: kernel.Kernels, seed: int, n: int, pumps: int, ts: float, fault_p: float) -> None:
    import dataclasses

    from mcm_firmware.control import coolant

    prof = load_profile("colossus-mcm")
    rng = np.random.default_rng(seed)
    base = coolant.CoolantConfig.from_profile(prof)
    nom = rng.uniform(2000, 4000, pumps)
    cfg = dataclasses.replace(base, pumps=pumps, pump_rpm_nom=nom, alternate_s=float(rng.choice([600.0, 3600.0])))
    t = 10_000.0
    ref = coolant.CoolantState(cfg, n, t - 5000.0)
    v = cfg.valves
    ref.pump_on = _mask(rng, (n, pumps), 0.5)
    ref.pump_fault = _mask(rng, (n, pumps), fault_p / 2)
    ref.fault_t = t - rng.choice([0.0, 300.0, 599.5, 600.0, 600.5, 1200.0], (n, pumps))
    ref.pump_started = t - rng.choice([0.5, 1.0, 3.0, 100.0], (n, pumps))
    ref.last_alternate = t - rng.uniform(0, 4000, n)
    ref.lead = rng.integers(0, pumps, n).astype(np.int16)
    ref.natural = _mask(rng, (n,), fault_p / 2)
    ref.failsafe = _mask(rng, (n, v), fault_p / 2)
    ref.external = np.where(_mask(rng, (n, v), fault_p / 3), rng.uniform(0, 100, (n, v)), np.nan)
    ref.manual = np.where(_mask(rng, (n, v), fault_p / 3), rng.uniform(0, 100, (n, v)), np.nan)
    ref.flow_setpoint = rng.uniform(0, cfg.q_max, (n, v))
    ref.valve_pid.integral = rng.uniform(-10, 120, (n, v))
    ref.valve_pid.last = rng.uniform(0, 100, (n, v))
    got = copy.deepcopy(ref)
    rpm = SensorBank((n, pumps), noise_sd=5.0, quantum=1.0, initial=rng.uniform(0, 1.2, (n, pumps)) * nom)
    rpm.read_at = t - rng.choice([0.0, 0.5, 5.0, np.inf], (n, pumps))
    rpm.failed = _mask(rng, (n, pumps), fault_p / 3)
    rpm.value = np.where(rpm.failed, np.nan, rpm.value)
    plant_nom = nom * rng.choice([1.0, 1.1])
    rpm_true = rng.uniform(0, 1.3, (n, pumps)) * plant_nom
    overcurrent = _mask(rng, (n, pumps), fault_p / 3)
    driver_fault = _mask(rng, (n, pumps), fault_p / 3)
    flow = np.where(_mask(rng, (n, v), fault_p / 3), np.nan, rng.uniform(0, cfg.q_max, (n, v)))

    was_natural = ref.natural.copy()
    speed = rpm_true / plant_nom
    current = 1.5 * speed * speed * np.where(overcurrent, 3.0, 1.0)
    tr = coolant.pump_step(cfg, ref, t, rpm.value, rpm.age(t), rpm.failed, driver_fault, current, ts)
    coolant.valve_step(cfg, ref, flow, ts)
    out = calls.cooling_fast(k, cfg, got, t, plant_nom, rpm_true, overcurrent, rpm, driver_fault, flow, ts)
    assert out is not None
    got_current, got_tr, changes = out
    assert_same(current, got_current, "pump current")
    for name in ("faulted", "retried", "failed_over", "alternated", "natural"):
        assert_same(getattr(tr, name), getattr(got_tr, name), f"transitions.{name}")
    restored = was_natural & ~ref.natural
    want = sum(int(np.count_nonzero(getattr(tr, f))) for f in PumpFields) + int(np.count_nonzero(restored))
    assert changes == want
    arrays = _arrays(ref, "cool") | _arrays(ref.valve_pid, "valve_pid")
    got_arrays = _arrays(got, "cool") | _arrays(got.valve_pid, "valve_pid")
    assert arrays.keys() == got_arrays.keys()
    for name in arrays:
        assert_same(arrays[name], got_arrays[name], name)


PumpFields = ("faulted", "retried", "failed_over", "alternated", "natural")


@settings(max_examples=150)
@given(
    seed=seeds,
    n=sizes,
    dies=st.integers(1, 8),
    valves=st.integers(1, 5),
    hbm=st.integers(0, 8),
    ts=st.sampled_from([0.5, 4.0]),
    fault_p=st.floats(0, 1),
)
def test_the_thermal_period_equals_the_reference(k, seed, n, dies, valves, hbm, ts, fault_p):
    """Zones of one die or several (and valves that cool none), readings stale, failed or NaN, HBM
    or none, the two thermal PIDs, and the clock reasons that have held long enough to report."""
    _check_thermal_period(k, seed, n, dies, valves, hbm, ts, fault_p)


def _check_thermal_period(
    k: kernel.Kernels, seed: int, n: int, dies: int, valves: int, hbm: int, ts: float, fault_p: float
) -> None:
    import dataclasses

    from mcm_firmware.control import coolant
    from mcm_firmware.runtime.shard import REASON_HOLD_S

    prof = load_profile("colossus-mcm")
    rng = np.random.default_rng(seed)
    die_valve = np.arange(dies) % valves
    region = (np.arange(hbm) * dies) // max(hbm, 1)
    base = coolant.CoolantConfig.from_profile(prof)
    cfg = dataclasses.replace(
        base,
        valves=valves,
        die_valve=die_valve,
        die_zones=coolant.Zones(die_valve, valves),
        hbm_zones=coolant.Zones(die_valve[region], valves),
    )
    t = 1000.0
    ref = coolant.CoolantState(cfg, n, 0.0)
    ref.failsafe = _mask(rng, (n, valves), 0.5)
    for pid in (ref.die_pid, ref.hbm_pid):
        pid.integral = rng.uniform(-1, cfg.q_max * 1.2, (n, valves))
        pid.last = rng.uniform(0, cfg.q_max, (n, valves))
    got = copy.deepcopy(ref)

    def bank(m: int, lo: float, hi: float) -> SensorBank:
        b = SensorBank((n, m), noise_sd=0.1, quantum=0.0625, initial=rng.uniform(lo, hi, (n, m)))
        b.read_at = t - rng.choice([0.0, 0.5, 1.0, 30.0, np.inf], (n, m), p=[0.5, 0.2, 0.1, 0.1, 0.1])
        b.failed = _mask(rng, (n, m), fault_p / 3)
        b.value = np.where(b.failed | _mask(rng, (n, m), fault_p / 4), np.nan, b.value)
        return b

    die, hbm_b, flow = bank(dies, 20, 110), bank(hbm, 20, 100), bank(valves, 0, cfg.q_max)
    reasons = rng.choice(np.array([0, 1, 4, 8, 0x20], np.uint32), (n, dies))
    seen = np.where(_mask(rng, (n, dies), 0.7), reasons, np.uint32(0))
    since = t - rng.choice([0.0, 2.0, 5.0, 9.0], (n, dies))
    reported = np.where(_mask(rng, (n, dies), 0.5), reasons, np.uint32(0))

    before = coolant.thermal_step(
        cfg, ref, t, die.value, die.age(t), die.failed, hbm_b.value, flow.age(t), flow.failed, ts
    )
    fresh = reasons != seen
    want_since = np.where(fresh, t, since)
    want_due = (reasons != reported) & (t - want_since >= REASON_HOLD_S)
    want_reported = np.where(want_due, reasons, reported)
    out = calls.cooling_thermal(k, cfg, got, t, die, hbm_b, flow, reasons, seen, since, reported, REASON_HOLD_S, ts)
    g_before, g_seen, g_since, g_due, g_reported, changes = out
    assert_same(before, g_before, "failsafe before")
    assert_same(reasons, g_seen, "seen")
    assert g_seen is not reasons
    assert_same(want_since, g_since, "since")
    assert_same(want_due, g_due, "due")
    assert_same(want_reported, g_reported, "reported")
    assert changes == int(np.count_nonzero(before != ref.failsafe)) + int(np.count_nonzero(want_due))
    for name in ("failsafe", "flow_setpoint"):
        assert_same(getattr(ref, name), getattr(got, name), name)
    for pid in ("die_pid", "hbm_pid"):
        assert_same_fields(getattr(ref, pid), getattr(got, pid), ["integral", "last"], pid)


def test_the_new_kernels_give_the_same_as_plain_python(k, monkeypatch):
    """The loop nests of the workload, the valve period and the thermal period run uncompiled
    (their helpers too) to the reference's results: the source numba compiles is the arithmetic
    the tests above prove, line by line."""
    from mcm_firmware.kernel import loops

    def plain(name: str) -> object:
        fn = getattr(loops, name)
        return getattr(fn, "py_func", fn)

    for name in ("npmod", "pid_step", "zone_max", "fmin", "fmax"):
        monkeypatch.setattr(loops, name, plain(name))
    names = {f: getattr(k, f) for f in kernel.KERNEL_NAMES}
    names.update({f: plain(f) for f in ("tick_demand", "cooling_fast", "cooling_thermal")})
    py = kernel.Kernels(**names, load_s=0.0)
    for a, b in ((-1.0, 2.0), (4.0, 2.0), (-4.0, 2.0), (1.0, -2.0), (-0.5, 2.0), (0.0, -2.0)):
        want = np.float64(a) % np.float64(b)
        assert loops.npmod(a, b) == want and np.signbit(loops.npmod(a, b)) == np.signbit(want), (a, b)
    for seed in range(4):
        _check_demand(py, seed, 6, 0.5, 1_767_225_600.0 + seed)
        _check_demand(py, seed, 12, 0.5, 0.0)  # phases before 0: the remainder takes the divisor's sign
        _check_valve_period(py, seed, 6, 1 + seed % 3, 2.0, 0.5)
        _check_thermal_period(py, seed, 5, 4, 1 + seed, seed % 3 * 2, 4.0, 0.6)


_NO_NEW_VARIANT = """
import sys
import numpy as np
from mcm_firmware import kernel
from mcm_firmware.plant.sensors import SensorFault
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.shard import Shard

k = kernel.load()
assert k is not None, kernel.active()
warm = {name: len(getattr(k, name).signatures) for name in kernel.KERNEL_NAMES}
for name in sys.argv[1:]:
    sh = Shard(load_profile(name), 8, seed=1)
    for tick in range(60):
        if tick == 20:
            sh.set_sensor_fault("die", 1, 0, SensorFault.NOISE, 2.0)
            sh.inputs.pump_failed[2, 0] = True
        sh.tick(2 if tick % 7 == 0 else 1)
        if tick % 10 == 0:  # the telemetry records, and a status snapshot
            sh.telemetry_records(np.arange(0, 8, 2))
            sh.records(np.array([3]), telemetry=False)
print(" ".join(f"{n}+{len(getattr(k, n).signatures) - c}" for n, c in warm.items() if len(getattr(k, n).signatures) > c))
"""


def test_the_ticks_of_every_profile_call_only_the_variants_compiled_at_load(k):
    """The warm-up at load gives every kernel the argument types (and array layouts) the shard
    passes: a tick that needed another variant would load or compile it in the middle of the run
    (a reversed view of the P-state table once cost the first tick of a 1,000-node run 20-80 ms)."""
    names = sorted(p.stem for p in (Path(__file__).parents[2] / "hw_profiles").glob("*.toml"))
    assert "colossus-mcm" in names
    out = subprocess.run(
        [sys.executable, "-c", _NO_NEW_VARIANT, *names], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"kernels that needed another variant in a tick: {out.stdout.strip()}"
