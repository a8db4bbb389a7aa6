"""A clock-event-reason change is evented only after it has held for 5 s (a change that does not
hold produces no event), while the violation-time counters count every moment a limit held the
clocks (virtual time, the whole node)."""

from __future__ import annotations

import asyncio

from mcm_firmware.faults import make_fault, parse_clear
from mcm_firmware.protocol import ClockReason, EventCode
from mcm_firmware.runtime.injection import apply_fault, clear_faults
from mcm_firmware.runtime.shard import REASON_HOLD_S
from mcm_firmware.transport import Channel

from ..helpers import on_fleet

HW = int(ClockReason.HW_SLOWDOWN | ClockReason.HW_POWER_BRAKE_SLOWDOWN)


def test_a_reason_change_is_evented_once_it_has_held_for_5_s():
    async def scenario(fleet, host, rec):
        node, clock = fleet.nodes[0], fleet.clock
        marks = {}
        before = (await host.status(0)).snapshot.viol_hw_slowdown_ms
        # a brake of 3 s: shorter than the hold, so no event, but 3 s of hardware slowdown counted
        marks["short"] = clock.now()
        apply_fault(node, make_fault("power-brake"))
        await asyncio.sleep(3)
        clear_faults(node, parse_clear(["power-brake"]))
        await asyncio.sleep(10)
        short = (await host.status(0)).snapshot.viol_hw_slowdown_ms - before
        # a brake of 12 s: evented 5 s after it began, and its end 5 s after it ended
        marks["long"] = clock.now()
        apply_fault(node, make_fault("power-brake"))
        await asyncio.sleep(12)
        marks["released"] = clock.now()
        clear_faults(node, parse_clear(["power-brake"]))
        await asyncio.sleep(10)
        evts = [e for e in rec.of(0, Channel.EVT) if e.code == EventCode.CLOCK_REASONS]
        return marks, short, [(e.timestamp_ns / 1e9, int(e.value), e.subject) for e in evts]

    marks, short, reasons = on_fleet(scenario, nodes=1, settle=20)
    dies = 4
    assert 2_900 <= short <= 3_100  # the counters count what did not hold
    braked = [(t, die) for t, mask, die in reasons if mask & HW]
    assert not [t for t, _ in braked if marks["short"] <= t < marks["long"]]  # 3 s: no event
    # the long brake: one event a die, once the new mask had held 5 s (sampled at the thermal rate)
    assert sorted(die for _, die in braked) == list(range(dies))
    assert all(marks["long"] + REASON_HOLD_S <= t <= marks["long"] + REASON_HOLD_S + 1.0 for t, _ in braked)
    # its end: every die's next event drops the hardware bits, 5 s after the release
    after = [(t, mask, die) for t, mask, die in reasons if t > marks["released"]]
    assert sorted(die for _, mask, die in after if not mask & HW) == list(range(dies))
    assert all(t >= marks["released"] + REASON_HOLD_S for t, _, _ in after)
