"""Counters as NVML reports them: monotonic energy (total energy consumption, mJ) and violation
times per limit (power, thermal, HBM temperature, hardware slowdown), and the memory's own thermal
slowdown (virtual time, the whole node: plant, firmware, telemetry)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from mcm_firmware.faults import make_fault, parse_clear, parse_fault
from mcm_firmware.protocol import ClockReason, Op, PowerCapArgs, Telemetry
from mcm_firmware.runtime.injection import apply_fault, clear_faults
from mcm_firmware.transport import Channel

from ..helpers import on_fleet


def test_energy_is_monotonic_and_equals_the_power_reported():
    async def scenario(rec, host):
        await asyncio.sleep(20)
        return [m for m in rec.of(0, Channel.TLM) if isinstance(m, Telemetry)]

    frames = on_fleet(scenario, nodes=1, settle=2)
    energy = [f.snapshot.energy_mj for f in frames]
    assert energy == sorted(energy) and energy[-1] > 0
    # each frame's power is the mean since the previous one: power x time adds up to the energy
    for a, b in itertools.pairwise(frames[5:]):
        dt = (b.snapshot.uptime_ns - a.snapshot.uptime_ns) / 1e9
        assert b.snapshot.energy_mj - a.snapshot.energy_mj == pytest.approx(b.snapshot.power_w * dt * 1e3, rel=0.01)


def test_violation_times_count_what_held_the_clocks():
    async def scenario(fleet, host):
        first = (await host.status(0)).snapshot
        await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=600.0))
        await asyncio.sleep(10)
        capped = (await host.status(0)).snapshot
        apply_fault(fleet.nodes[0], make_fault("power-brake"))
        await asyncio.sleep(5)
        braked = (await host.status(0)).snapshot
        return first, capped, braked

    first, capped, braked = on_fleet(scenario, nodes=1, settle=5)
    assert first.viol_power_ms == 0
    assert 9_000 <= capped.viol_power_ms - first.viol_power_ms <= 10_500  # held by the cap all along
    assert capped.viol_hw_slowdown_ms == 0 and capped.viol_hbm_thermal_ms == 0
    assert 4_500 <= braked.viol_hw_slowdown_ms <= 5_500


def test_memory_over_its_limit_slows_the_module_down_and_is_counted():
    """An HBM stack read above hbm_max_c (a sensor stuck at 99 C here) slows every die down
    (SW_THERMAL_SLOWDOWN, as NVML reports memory over its limit) and counts HBM violation time;
    the clocks come back once it reads cool again."""

    async def scenario(fleet, host):
        before = (await host.status(0)).snapshot
        apply_fault(fleet.nodes[0], parse_fault(["sensor-stuck", "hbm:0", "99"]))
        await asyncio.sleep(15)
        hot = (await host.status(0)).snapshot
        clear_faults(fleet.nodes[0], parse_clear(["all"]))
        await asyncio.sleep(30)
        cool = (await host.status(0)).snapshot
        return before, hot, cool

    before, hot, cool = on_fleet(scenario, nodes=1, settle=5)
    assert all(d.temp_c < 90 for d in hot.dies)  # the dice are not what is hot
    assert all(d.reasons & ClockReason.SW_THERMAL_SLOWDOWN for d in hot.dies)
    assert max(d.clock_mhz for d in hot.dies) < max(d.clock_mhz for d in before.dies)
    assert hot.viol_hbm_thermal_ms >= 5_000 and before.viol_hbm_thermal_ms == 0
    assert not any(d.reasons & ClockReason.SW_THERMAL_SLOWDOWN for d in cool.dies)
    assert cool.viol_hbm_thermal_ms >= hot.viol_hbm_thermal_ms  # monotonic
