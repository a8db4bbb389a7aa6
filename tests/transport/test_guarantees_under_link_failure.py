"""The firmware keeps its guarantees on a half-open link and through a reconnect storm, as it does
through a broker outage (``test_guarantees_under_outage.py``): with faults in force (a failed pump,
a failed die sensor, coolant 45 °C hotter) the pump fails over, the zone without its sensor goes
failsafe, the hot module slows down or shuts down before any die passes its shutdown threshold,
the control ticks stay on time and nothing waiting to be reported is dropped. Judged on the nodes'
own state (their STATUS and STATS, read in the process that runs them), while the link is down and
after it is back. A fleet in this process on a real Mosquitto, real time; a keep-alive of 2 s
keeps the half-open case short."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from mcm_firmware.backoff import Backoff
from mcm_firmware.clock import RealClock
from mcm_firmware.faults import parse_fault
from mcm_firmware.host.views import status_json
from mcm_firmware.profile import load_profile
from mcm_firmware.runtime.fleet import Fleet
from mcm_firmware.runtime.injection import apply_fault
from mcm_firmware.transport.mqtt import MqttTransport

from .test_reconnect import StallingProxy

PROFILE = load_profile("colossus-mcm")
FAULTS = {0: ["pump-fail", "A"], 1: ["sensor-failed", "die:1"], 2: ["inlet-step", "45"]}
TICK_LATE_MAX_S = 1.0
"""A control loop that stops shows as seconds late; a busy 2-core machine stays well below this."""


def make_fleet(n: int, port: int, *, keepalive: int = 10) -> Fleet:
    return Fleet(
        members=[(i, PROFILE) for i in range(n)],
        fleet="gl",
        transport_factory=lambda cid: MqttTransport(port=port, client_id=cid, keepalive=keepalive),
        clock=RealClock(),
    )


def inject_faults(fleet: Fleet) -> None:
    for node, tokens in FAULTS.items():
        apply_fault(fleet.nodes[node], parse_fault(tokens))


def state(fleet: Fleet, node: int) -> dict[str, Any]:
    n = fleet.nodes[node]
    return status_json(node, n.status(), n.stats())


def tick_marks(fleet: Fleet) -> dict[str, int]:
    """How many ticks each shard has measured so far: lateness is judged on those after (not on
    the start, where the compiled kernels may still be loading)."""
    return {name: samples.count for name, samples in fleet.meter.tick_late.items()}


def assert_guarantees(fleet: Fleet, when: str, marks: dict[str, int]) -> float:
    """The firmware's guarantees on the faulty nodes; returns the worst tick lateness (s) since
    ``marks``."""
    pumps = {p["name"]: p for p in state(fleet, 0)["pumps"]}
    assert pumps["A"]["fault"] and not pumps["A"]["lead"] and pumps["B"]["lead"] and pumps["B"]["running"], when
    assert state(fleet, 0)["flow_lpm"] > 0 and state(fleet, 0)["state"] == "RUNNING", when
    failsafe = state(fleet, 1)
    assert failsafe["failsafe"] and failsafe["mode"] == "FAILSAFE", (when, failsafe["mode"])
    hot = state(fleet, 2)
    assert hot_acted(fleet), (when, hot["state"], [d["reason_names"] for d in hot["dies"]])
    shutdown_c = PROFILE.thermal.shutdown_c
    assert all(d["temp_c"] is None or d["temp_c"] < shutdown_c + 2.0 for d in hot["dies"]), (when, hot["dies"])
    late = max(float(samples.since(marks[name]).max()) for name, samples in fleet.meter.tick_late.items())
    assert late < TICK_LATE_MAX_S, (when, late)
    return late


def hot_acted(fleet: Fleet) -> bool:
    hot = state(fleet, 2)
    return hot["state"] == "SHUTDOWN" or any(
        {"SW_THERMAL_SLOWDOWN", "HW_THERMAL_SLOWDOWN"} & set(d["reason_names"]) for d in hot["dies"]
    )


def assert_nothing_dropped(fleet: Fleet) -> None:
    for node in fleet.nodes.values():
        assert node.counters.rsp_dropped == 0 and node.counters.evt_dropped == 0, node.node_id


async def wait_for(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


@pytest.mark.slow
async def test_guarantees_hold_on_a_half_open_link(mosquitto):
    keepalive = 2
    proxy = StallingProxy(mosquitto.port)
    port = await proxy.start()
    fleet = make_fleet(4, port, keepalive=keepalive)
    await fleet.start()
    try:
        await fleet.wait_connected(60)  # the first fleet of a session may compile its kernels first
        await asyncio.sleep(1.0)
        marks = tick_marks(fleet)
        uptime0, t0 = state(fleet, 3)["uptime_s"], time.monotonic()
        inject_faults(fleet)
        proxy.stalled = True  # packets stop both ways, nothing closes
        noticed = await wait_for(
            lambda: not any(n.link_up for n in fleet.nodes.values()), 1.5 * keepalive + 1.5, "the stall noticed"
        )
        await asyncio.sleep(1.5 * keepalive + 1.0 - noticed)  # stalled > 1.5 keep-alives in all
        acted = await wait_for(lambda: hot_acted(fleet), 30.0, "the hot module slowed down")  # during the stall
        late_down = assert_guarantees(fleet, "link half-open", marks)
        proxy.stalled = False
        # an attempt made during the stall waits out its connect timeout, then the backoff's cap
        limit = MqttTransport().connect_timeout + Backoff().maximum + 2.0
        back = await wait_for(lambda: all(n.link_up for n in fleet.nodes.values()), limit, "every node back")
        late_up = assert_guarantees(fleet, "link healed", marks)
        assert all(n.counters.reconnects >= 1 for n in fleet.nodes.values())
        assert_nothing_dropped(fleet)
        # control never stopped: the plant's time kept up with the wall
        assert state(fleet, 3)["uptime_s"] - uptime0 >= time.monotonic() - t0 - 0.5
        print(
            f"half-open link (keep-alive {keepalive} s): every node noticed within {noticed:.1f} s, stalled "
            f"{1.5 * keepalive + 1.0 + acted:.1f} s, back {back:.1f} s "
            f"after the heal; tick lateness max {late_down * 1e3:.1f} ms up to the heal, {late_up * 1e3:.1f} ms to the end"
        )
    finally:
        proxy.stalled = False
        await fleet.stop()
        assert proxy.server is not None
        proxy.server.close()
        await asyncio.sleep(0.5)  # the proxy's pipes end as their connections close


@pytest.mark.slow
async def test_guarantees_hold_through_a_reconnect_storm(mosquitto):
    n = 100  # a connection each: all retry at once when the broker is back
    fleet = make_fleet(n, mosquitto.port)
    await fleet.start()
    try:
        await fleet.wait_connected(60)
        await asyncio.sleep(1.0)
        marks = tick_marks(fleet)
        uptime0, t0 = state(fleet, 3)["uptime_s"], time.monotonic()
        inject_faults(fleet)
        t_stop = time.monotonic()
        await asyncio.to_thread(mosquitto.stop)  # the loop (and the control ticks) run on meanwhile
        await wait_for(lambda: not any(n.link_up for n in fleet.nodes.values()), 5.0, "the loss noticed")
        await wait_for(lambda: hot_acted(fleet), 30.0, "the hot module slowed down")  # while there is no broker
        late_down = assert_guarantees(fleet, "broker down", marks)
        outage = time.monotonic() - t_stop
        await asyncio.to_thread(mosquitto.start)
        back = await wait_for(
            lambda: all(n.link_up for n in fleet.nodes.values()), Backoff().maximum + 5.0, "every node back"
        )
        late_up = assert_guarantees(fleet, f"{n} nodes reconnected", marks)
        assert all(node.counters.reconnects >= 1 for node in fleet.nodes.values())
        assert_nothing_dropped(fleet)
        assert state(fleet, 3)["uptime_s"] - uptime0 >= time.monotonic() - t0 - 0.5
        print(
            f"reconnect storm ({n} nodes, broker down {outage:.1f} s): all back {back:.1f} s after the broker; "
            f"tick lateness max {late_down * 1e3:.1f} ms up to the restart, {late_up * 1e3:.1f} ms to the end"
        )
    finally:
        await fleet.stop()
