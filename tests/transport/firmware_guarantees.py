"""The firmware's guarantees while the infrastructure is misused, checked on a run that a test
drives for another reason (a command flood behind a slow consumer, hostile input): three nodes of
it get a fault each before the trouble starts, and once it is over their own STATUS and STATS say
that the pump failed over, the zone without its sensor went failsafe, the module fed hot coolant
slowed down or shut down with no die past its shutdown threshold, and none of them dropped an
answer or an event (as ``test_guarantees_under_outage.py`` checks across a broker outage)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mcm_firmware.profile import load_profile

FAULTS = {1: ("pump-fail", "A"), 2: ("sensor-failed", "die:1"), 3: ("inlet-step", "45")}
"""Node, and the fault injected into it: a failed pump, a failed die sensor, coolant 45 °C hotter."""

Ctl = Callable[..., dict]
"""``ctl(node, *argv)``: the JSON answer of ``mcm-emu ctl`` to the node (exit 0 asserted)."""


async def inject(ctl: Ctl) -> None:
    await asyncio.gather(*(asyncio.to_thread(ctl, node, "inject", *fault) for node, fault in FAULTS.items()))


async def check(ctl: Ctl) -> str:
    """Assert the guarantees on the nodes' own STATUS and STATS; a line that says what they showed."""
    statuses = await asyncio.gather(*(asyncio.to_thread(ctl, node, "status") for node in FAULTS))
    stats = await asyncio.gather(*(asyncio.to_thread(ctl, node, "stats") for node in FAULTS))
    pumped, sensorless, hot = statuses
    # the failed pump: the other one leads, the module keeps its flow and runs on
    pumps = {p["name"]: p for p in pumped["pumps"]}
    assert pumps["A"]["fault"] and not pumps["A"]["lead"] and pumps["B"]["lead"] and pumps["B"]["running"], pumps
    assert pumped["flow_lpm"] > 0 and pumped["state"] == "RUNNING", (pumped["flow_lpm"], pumped["state"])
    # the failed sensor: its zone in failsafe
    assert sensorless["failsafe"] and sensorless["mode"] == "FAILSAFE", sensorless["mode"]
    # hot coolant: slowed down or shut down, and no die reading past the shutdown threshold
    shutdown_c = load_profile("colossus-mcm").thermal.shutdown_c
    reasons = {r for d in hot["dies"] for r in d["reason_names"]}
    assert hot["state"] == "SHUTDOWN" or reasons & {"SW_THERMAL_SLOWDOWN", "HW_THERMAL_SLOWDOWN"}, (
        hot["state"],
        reasons,
    )
    hottest = max((d["temp_c"] for d in hot["dies"] if d["temp_c"] is not None), default=float("nan"))
    assert all(d["temp_c"] is None or d["temp_c"] < shutdown_c + 2.0 for d in hot["dies"]), hot["dies"]
    # what happened meanwhile is reported, not lost
    assert all(s["rsp_dropped"] == 0 and s["evt_dropped"] == 0 for s in stats), stats
    # their control ticks went on on time
    late = max(s["tick_late_max_us"] for s in stats)
    assert late < 1_000_000, late
    return (
        f"firmware: pump B leads, zone failsafe, hot module {hot['state']} ({', '.join(sorted(reasons)) or '-'}, "
        f"hottest die {hottest:.1f} °C < {shutdown_c:g} + 2), nothing dropped, tick lateness max {late / 1000:.1f} ms"
    )
