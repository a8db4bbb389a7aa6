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
