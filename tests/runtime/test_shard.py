"""A shard that ticks late integrates over the time that really passed (the modules keep
wall-clock time) and runs each controller once per period that came round."""

from __future__ import annotations

import numpy as np
import pytest

from mcm_firmware.plant.workload import Workload
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.shard import Shard


def _shard() -> Shard:
    sh = Shard(load_profile("colossus-mcm"), 4, seed=3, start_t=0.0)
    for row in range(4):
        sh.set_workload(row, Workload.STEADY)
    return sh


def test_one_late_tick_of_n_periods_keeps_time_and_tracks_n_single_ticks():
    fine, coarse = _shard(), _shard()
    for _ in range(400):  # 20 s at the profile's 20 Hz
        fine.tick()
    for _ in range(100):  # the same 20 s in late ticks of four periods each
        coarse.tick(4)
    assert coarse.t == pytest.approx(fine.t) and coarse.k == fine.k
    # the plant lived the same 20 s: energy and temperatures agree to within the coarser steps
    assert coarse._energy.sum() == pytest.approx(fine._energy.sum(), rel=0.03)
    assert np.allclose(coarse.plant.t_die, fine.plant.t_die, atol=3.0)
    assert np.allclose(coarse.plant.p_total, fine.plant.p_total, rtol=0.08)


def test_controllers_run_once_per_period_that_came_round():
    sh = _shard()
    runs: list[tuple[int, float]] = []
    real = sh._cooling_thermal

    def spy(t: float, ts: float) -> None:
        runs.append((sh.k, ts))
        real(t, ts)

    sh._cooling_thermal = spy  # type: ignore[method-assign]
    div = sh.div_thermal
    sh.tick()  # tick 0: a thermal period starts
    sh.tick(3 * div)  # ticks 1 .. 3*div: three more thermal periods came round, run once
    assert runs == [(1, sh.dt * div), (1 + 3 * div, sh.dt * div * 3)]
    with pytest.raises(ValueError, match="at least 1"):
        sh.tick(0)


# --- batched samples -----------------------------------------------------------------------------


def test_samples_are_the_readings_at_the_sample_rate_with_power_averaged_over_each_interval():
    prof = load_profile("colossus-mcm-batched")  # ticks at 20 Hz, a sample every 2 ticks, 10 a frame
    sh = Shard(prof, 3, seed=5, start_t=0.0)
    for row in range(3):
        sh.set_workload(row, Workload.TRAINING)
    power, die_t = [], []  # after each tick: the true module power, the sensed die temperatures
    for _ in range(41):
        sh.tick()
        power.append(sh.plant.p_total.copy())
        die_t.append(sh.s_die.value.copy())
    mtype, rec = sh.telemetry_records(np.array([2, 0]))
    assert mtype.name == "SAMPLES" and len(rec) == 2
    assert (rec["layout"] == 1).all() and (rec["n_samples"] == 10).all() and (rec["period_us"] == 100_000).all()
    # samples are taken on ticks 0, 2, 4 ... (k counted from 0): the last ten are those of ticks 22..40
    ticks = list(range(22, 41, 2))
    for i, row in enumerate((2, 0)):
        s = rec[i]["samples"]
        assert (s["n_dies"] == prof.die.count).all()
        for j, k in enumerate(ticks):
            assert np.allclose(s[j]["dies"]["temp_c"], die_t[k][row].astype(np.float32))
            # the power of a sample is the mean over the ticks since the previous sample
            assert s[j]["power_w"] == pytest.approx(np.mean([power[m][row] for m in (k - 1, k)]), rel=1e-5)
        # the snapshot is the TELEMETRY record of the same row
        assert rec[i]["snapshot"]["n_dies"] == prof.die.count
        assert rec[i]["snapshot"]["dies"]["temp_c"] == pytest.approx(die_t[40][row].astype(np.float32))


def test_a_late_tick_fills_every_sample_it_covered():
    sh = Shard(load_profile("colossus-mcm-batched"), 2, seed=1, start_t=0.0)
    sh.tick()
    sh.tick(7)  # ticks 1..7: samples due on 2, 4, 6
    assert sh._smp_k == 4
    _, rec = sh.telemetry_records(np.array([0]))
    newest = rec[0]["samples"][-3:]
    assert np.allclose(newest["power_w"], newest["power_w"][0])  # one reading for the three
    assert rec[0]["samples"][-4]["power_w"] != newest["power_w"][0]


def test_telemetry_profiles_without_batching_send_telemetry_records():
    sh = Shard(load_profile("colossus-mcm"), 2, seed=1, start_t=0.0)
    sh.tick()
    mtype, rec = sh.telemetry_records(np.array([1]))
    assert mtype.name == "TELEMETRY" and rec.dtype == sh._dtype
