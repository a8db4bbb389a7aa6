"""Clocks: virtual time jumps, deadlines never drift, scaled time runs faster."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from mcm_firmware.clock import Deadlines, LoopClock, ScaledClock, VirtualTimeLoop, run_virtual


def test_virtual_loop_jumps_to_the_next_timer():
    async def main():
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        t0 = loop.time()
        await asyncio.sleep(3600)
        return loop.time() - t0

    assert run_virtual(main) == pytest.approx(3600.0)


def test_virtual_timeouts_fire_in_virtual_time():
    async def main():
        clock = LoopClock()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.sleep(100), 7.5)
        return clock.now()

    assert run_virtual(main) == pytest.approx(7.5)


def test_virtual_order_is_deterministic():
    async def main():
        order = []

        async def worker(name, period):
            d = Deadlines(LoopClock(), period)
            for _ in range(5):
                await d.wait()
                order.append((name, round(d.deadline, 6)))

        await asyncio.gather(worker("a", 0.3), worker("b", 0.2), worker("c", 0.5))
        return order

    assert run_virtual(main) == run_virtual(main)


def test_deadlines_do_not_drift():
    async def main():
        clock = LoopClock()
        d = Deadlines(clock, 0.1)
        due = None
        for _ in range(100_000):
            due = await d.wait()
            await asyncio.sleep(0.0123)  # work inside the period does not shift the next deadline
        return due, d.overruns

    due, overruns = run_virtual(main)
    assert due == pytest.approx(9999.9, abs=1e-6)
    assert overruns == 0


def test_deadlines_skip_and_count_missed_periods():
    async def main():
        loop = asyncio.get_running_loop()
        d = Deadlines(LoopClock(), 1.0)
        await d.wait()
        loop.advance(5.5)  # the process stalled for 5.5 s
        await d.wait()
        due = await d.wait()
        return due, d.overruns

    due, overruns = run_virtual(main)
    assert overruns == 4  # deadlines 2, 3, 4 and 5 passed during the stall
    assert due == pytest.approx(6.0)


def test_deadlines_catch_up_a_short_lag():
    async def main():
        loop = asyncio.get_running_loop()
        d = Deadlines(LoopClock(), 0.1)
        await d.wait()
        loop.advance(0.25)  # a slow tick: two periods late, under the skip threshold
        dues = [await d.wait() for _ in range(4)]
        return dues, d.overruns

    dues, overruns = run_virtual(main)
    assert overruns == 0
    assert dues == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_deadline_phase_staggers_loops():
    async def main():
        a = Deadlines(LoopClock(), 1.0, phase=0.25)
        return await a.wait()

    assert run_virtual(main) == pytest.approx(0.25)


async def test_scaled_clock_runs_faster_than_real_time():
    clock = ScaledClock(200.0)
    t0, r0 = clock.now(), time.monotonic()
    await clock.sleep_until(t0 + 2.0)
    real = time.monotonic() - r0
    assert clock.now() - t0 >= 2.0
    assert real < 1.0  # 2 clock seconds at 200x are 10 ms of real time


def test_scaled_clock_refuses_a_bad_speed():
    with pytest.raises(ValueError):
        ScaledClock(0)


async def _loop_on_wait_for(futures: list) -> None:
    loop = asyncio.get_running_loop()
    while True:
        fut = loop.create_future()
        futures.append(fut)
        await asyncio.wait_for(fut, 10)


async def test_cancel_and_wait_ends_a_task_whose_cancel_wait_for_swallowed():
    # the race of CPython gh-86296 on 3.11: the awaited future completes in the loop iteration
    # in which the task is cancelled; wait_for returns the result and the task loops on
    from mcm_firmware.tasks import cancel_and_wait

    futures: list = []
    task = asyncio.create_task(_loop_on_wait_for(futures))
    await asyncio.sleep(0.01)
    futures[-1].set_result(1)
    task.cancel()
    await asyncio.sleep(0.01)
    if sys.version_info < (3, 12):
        assert not task.done()  # the cancel was lost: a plain gather would wait forever
    await asyncio.wait_for(cancel_and_wait([task]), 2)
    assert task.cancelled()
