"""Fault injection: the fault model, every kind applied and cleared over the wire (virtual time,
loopback), crash and reboot, link faults, and refusals that name what is wrong."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from mcm_firmware.faults import FaultError, FaultKind, make_fault, parse_clear, parse_fault
from mcm_firmware.hbm import Location
from mcm_firmware.host.client import RequestTimeout
from mcm_firmware.plant.sensors import SensorFault
from mcm_firmware.protocol import (
    Birth,
    ClearFaultArgs,
    ClockReason,
    Death,
    DeathReason,
    EventCode,
    InjectArgs,
    Op,
    Status,
)
from mcm_firmware.transport import Channel

# --- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (["pump-fail", "A"], "pump-fail A"),
        (["valve-stuck", "2"], "valve-stuck 2"),
        (["valve-stuck", "2", "30"], "valve-stuck 2 30"),
        (["sensor-stuck", "die:1", "95"], "sensor-stuck die:1 95"),
        (["hbm-flip", "0x1000", "2", "1"], "hbm-flip 0x1000 2 1"),
        (["hbm-flip", "4096"], "hbm-flip 4096 1 0"),
        (["vrm-overcurrent"], "vrm-overcurrent 1.5"),
        (["link-drop", "0.25"], "link-drop out 0.25"),
        (["link-drop", "in", "0.25"], "link-drop in 0.25"),
        (["link-delay", "both", "0.1"], "link-delay both 0.1"),
        (["crash", "5"], "crash 5"),
        (["reboot"], "reboot"),
    ],
)
def test_faults_parse(tokens, expected):
    assert str(parse_fault(tokens)) == expected


@pytest.mark.parametrize(
    "tokens, message",
    [
        ([], "needs a fault kind"),
        (["melt"], "unknown fault 'melt'"),
        (["pump-fail"], "pump-fail needs a pump"),
        (["sensor-stuck", "die:1"], "needs a value"),
        (["link-drop", "1.5"], "probability must be within 0..1"),
        (["link-drop", "lots"], "'lots' is neither a direction .* nor a probability"),
        (["link-drop", "sideways", "0.5"], "'sideways' is neither a direction"),
        (["inlet-step", "5", "6"], "too many arguments"),
        (["hbm-device", "3"], "needs a device"),
    ],
)
def test_bad_faults_are_refused_naming_the_problem(tokens, message):
    with pytest.raises(FaultError, match=message):
        parse_fault(tokens)


def test_clear_specs():
    assert parse_clear(["all"]).kind is None
    assert parse_clear(["pump-fail", "B"]).target == "B"
    with pytest.raises(FaultError, match="cannot be cleared"):
        parse_clear(["crash"])
    with pytest.raises(FaultError, match="takes no target"):
        parse_clear(["inlet-step", "3"])


def test_make_fault_checks_targets():
    with pytest.raises(FaultError, match="takes no target"):
        make_fault(FaultKind.POWER_BRAKE, "x")
    assert math.isnan(make_fault("valve-stuck", "1").value)


# --- applied to a node ----------------------------------------------------------------------------


async def inject(host, node, *tokens, check=True):
    f = parse_fault(list(tokens))
    return await host.request(
        node, Op.INJECT, InjectArgs(kind=int(f.kind), target=f.target, value=f.value, value2=f.value2), check=check
    )


async def clear(host, node, *tokens):
    c = parse_clear(list(tokens))
    return await host.request(
        node, Op.CLEAR_FAULT, ClearFaultArgs(kind=0 if c.kind is None else int(c.kind), target=c.target)
    )


def test_a_fault_the_module_does_not_have_is_refused(on_fleet):
    async def fn(fleet, host, rec):
        out = []
        for tokens in (
            ("pump-fail", "C"),
            ("valve-stuck", "4"),
            ("sensor-failed", "die:9"),
            ("sensor-failed", "gpu:1"),
            ("hbm-device", "8", "1"),
            ("hbm-device", "1", "20"),
            ("hbm-flip", "0xffffffffffff"),
        ):
            resp = await inject(host, 0, *tokens, check=False)
            out.append((resp.status, resp.message))
        return out, dict(fleet.nodes[0].faults)

    out, faults = on_fleet(fn, nodes=1, settle=10)
    assert all(status is Status.BAD_ARGUMENT for status, _ in out)
    messages = [m for _, m in out]
    assert messages[0] == "no pump C on this module (pumps: A, B)"
    assert messages[1] == "no valve 4 on this module (valves 0..3)"
    assert "no die sensor 9" in messages[2] and "BANK:N" in messages[3]
    assert "no HBM stack 8" in messages[4] and "no device 20" in messages[5]
    assert "outside this module's memory" in messages[6]
    assert faults == {}


def test_pump_fail_by_name_fails_over_and_clears(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        await inject(host, 0, "pump-fail", "A")
        await asyncio.sleep(1)
        during = (bool(shard.inputs.pump_failed[row, 0]), int(shard.cool.lead[row]))
        st = await host.status(0)
        await clear(host, 0, "pump-fail", "0")  # index or name
        return during, st.faults, bool(shard.inputs.pump_failed[row, 0]), rec

    during, faults, after, rec = on_fleet(fn, nodes=1, settle=10)
    assert during == (True, 1) and faults == ("pump-fail A",) and after is False
    codes = [e.code for e in rec.of(0, Channel.EVT)]
    assert EventCode.FAULT_INJECTED in codes and EventCode.PUMP_FAILOVER in codes
    assert EventCode.FAULT_CLEARED in codes


def test_each_hardware_fault_takes_effect_and_clears(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        seen = {}
        await inject(host, 0, "pump-overcurrent", "B")
        seen["overcurrent"] = bool(shard.inputs.pump_overcurrent[row, 1])
        await inject(host, 0, "valve-stuck", "1", "20")
        await asyncio.sleep(2)
        seen["valve"] = float(shard.plant.valve_pos[row, 1])
        await inject(host, 0, "sensor-stuck", "hbm:3", "99")
        await asyncio.sleep(0.5)
        seen["sensor"] = float(shard.s_hbm.value[row, 3])
        await inject(host, 0, "vrm-overcurrent", "3")
        await asyncio.sleep(0.5)
        seen["vrm"] = int(np.bitwise_or.reduce(shard.dvfs.reasons[row]))
        await inject(host, 0, "inlet-step", "12")
        await asyncio.sleep(1)
        seen["inlet"] = float(shard.plant.t_inlet[row])
        await inject(host, 0, "power-brake")
        await asyncio.sleep(0.2)
        seen["brake"] = int(shard.dvfs.reasons[row, 0])
        seen["faults"] = len(fleet.nodes[0].faults)
        await clear(host, 0, "all")
        await asyncio.sleep(3)
        seen["after"] = (
            bool(shard.inputs.pump_overcurrent[row].any()),
            bool(shard.inputs.valve_stuck[row].any()),
            int(shard.s_hbm.fault[row].max()),
            float(shard.inputs.vrm_factor[row]),
            float(shard.inputs.inlet_offset_c[row]),
            bool(shard.dvfs.brake[row]),
            len(fleet.nodes[0].faults),
        )
        return seen

    seen = on_fleet(fn, nodes=1, settle=10)
    assert seen["overcurrent"] and seen["valve"] == pytest.approx(20.0)
    assert seen["sensor"] == 99.0
    assert seen["vrm"] & ClockReason.HW_SLOWDOWN
    assert seen["inlet"] == pytest.approx(42.0)
    assert seen["brake"] & ClockReason.HW_POWER_BRAKE_SLOWDOWN
    assert seen["faults"] == 6
    assert seen["after"] == (False, False, int(SensorFault.OK), 1.0, 0.0, False, 0)


def test_hbm_faults_reach_the_ras_firmware(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        ctl = shard.ras[row]
        addr = ctl.cfg.geometry.encode(Location(2, 3, 4, 5, 8))
        await inject(host, 0, "hbm-flip", hex(addr), "1", "1")  # a stuck cell
        await inject(host, 0, "hbm-device", "6", "4")
        await inject(host, 0, "ce-storm", "1", "20")
        await asyncio.sleep(20)
        ras = (await host.request(0, Op.RAS)).data
        await clear(host, 0, "ce-storm", "1")
        await clear(host, 0, "hbm-device", "6")
        return ras, shard.ce_storm_rate[row].copy(), dict(ctl.store.failed_devices), rec

    ras, storm, devices, rec = on_fleet(fn, nodes=1, settle=10)
    assert ras.stacks[1].ce and sum(ras.stacks[1].ce) > 100  # the storm
    assert sum(ras.stacks[6].ce) > 0 and ras.stacks[6].failed_devices == (4,)  # chipkill corrects the device
    assert ras.flags & 1 and any(p.stack == 2 for p in ras.pending)  # the stuck cell's row is pending
    assert not storm.any() and devices == {}
    codes = [e.code for e in rec.of(0, Channel.EVT)]
    assert EventCode.CE_STORM in codes and EventCode.REMAP_PENDING in codes


def test_crash_leaves_the_will_holds_the_hardware_and_reboots(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        await host.request(
            0, Op.SET_POWER_CAP, __import__("mcm_firmware.protocol", fromlist=["x"]).PowerCapArgs(watts=900.0)
        )
        await asyncio.sleep(5)
        await inject(host, 0, "crash", "6")
        await asyncio.sleep(1)
        node = fleet.nodes[0]
        down = (node.up, bool(shard.active[row]), shard.dvfs.pstate[row].copy())
        with pytest.raises(RequestTimeout):
            await host.ping(0, timeout=1.0)
        await asyncio.sleep(2)
        held = shard.dvfs.pstate[row].copy()
        await asyncio.sleep(6)
        st = await host.status(0)
        return down, held, st, rec

    (up, active, pstate), held, st, rec = on_fleet(fn, nodes=1, settle=10)
    assert not up and not active and (held == pstate).all()  # the clocks stay where they were
    assert st.boot_count == 2 and st.snapshot.power_cap_w == 1300.0  # firmware state starts afresh
    states = list(rec.of(0, Channel.STATE))
    kinds = [(type(m).__name__, getattr(m, "reason", None)) for m in states]
    assert ("Death", DeathReason.CONNECTION_LOST) in kinds
    births = [m for m in states if isinstance(m, Birth)]
    assert [b.boot_count for b in births] == [1, 2]


def test_clean_reboot(on_fleet):
    async def fn(fleet, host, rec):
        await inject(host, 0, "reboot")
        await asyncio.sleep(5)
        return await host.status(0), rec

    st, rec = on_fleet(fn, nodes=1, settle=10)
    assert st.boot_count == 2
    deaths = [m for m in rec.of(0, Channel.STATE) if isinstance(m, Death)]
    assert deaths[0].reason is DeathReason.REBOOT
    boots = [e for e in rec.of(0, Channel.EVT) if e.code == EventCode.BOOT]
    assert [e.value for e in boots] == [1.0, 2.0]


def test_link_faults_are_survived_by_retries_and_counted(on_fleet):
    async def fn(fleet, host, rec):
        host.retries = 6
        await inject(host, 0, "link-drop", "0.3")
        await inject(host, 0, "link-duplicate", "0.3")
        await inject(host, 0, "link-reorder", "0.05")
        await asyncio.sleep(0.5)  # link faults start just after their command is answered
        node = fleet.nodes[0]
        for _ in range(30):
            await host.ping(0, timeout=3.0)
        counts = dict(node.link_faults["out"].counts)
        await clear(host, 0, "all")
        await asyncio.sleep(1)
        return counts, node.link_faults, node.counters.rx_duplicates

    counts, faults_after, dups = on_fleet(fn, nodes=1, settle=10)
    assert counts["dropped"] > 0 and counts["duplicated"] > 0 and counts["delayed"] > 0
    assert faults_after == {} and dups > 0


def test_link_corrupt_gets_frames_rejected(on_fleet):
    async def fn(fleet, host, rec):
        await inject(host, 0, "link-corrupt", "1.0")
        await asyncio.sleep(2)
        node = fleet.nodes[0]

        await clear(host, 0, "link-corrupt")  # the fault control plane passes by the link's faults
        await asyncio.sleep(1)
        await host.ping(0)  # and the link is clean again
        return rec, dict(node.faults)

    rec, in_force = on_fleet(fn, nodes=1, settle=10)
    from mcm_firmware.protocol import FrameError

    bad = [m for a, m, _ in rec.frames if isinstance(m, FrameError)]
    assert len(bad) > 10 and in_force == {}  # every frame the node sent while corrupting


@pytest.mark.parametrize("direction", ["in", "out", "both"])
def test_a_link_fault_acts_in_the_direction_it_names_and_can_always_be_cleared(on_fleet, direction):
    async def fn(fleet, host, rec):
        node = fleet.nodes[0]
        await inject(host, 0, "link-drop", direction, "1.0")
        await asyncio.sleep(0.5)  # from just after the answer
        rx0 = node.counters.rx_frames
        with pytest.raises(RequestTimeout):
            await host.ping(0, timeout=0.5)
        faults = await host.request(0, Op.GET_FAULTS)  # the control plane reaches the node both ways
        counts = {way: dict(hook.counts) for way, hook in node.link_faults.items()}
        rx = node.counters.rx_frames - rx0
        await clear(host, 0, "link-drop")
        await asyncio.sleep(0.5)
        await host.ping(0)
        return faults.data.faults, counts, rx, node.link_faults

    faults, counts, rx, after = on_fleet(fn, nodes=1, settle=5)
    assert [(f.kind, f.target) for f in faults] == [(FaultKind.LINK_DROP, direction)]
    ways = {"in": {"in"}, "out": {"out"}, "both": {"in", "out"}}[direction]
    assert set(counts) == ways and all(c["dropped"] > 0 for c in counts.values())
    if direction == "out":  # the pings reached the node; their answers were lost
        assert rx >= 2 and counts["out"]["dropped"] >= 2
    else:  # the pings never reached the node; only the control plane's GET_FAULTS did
        assert rx == 1 and counts["in"]["dropped"] >= 2
    assert after == {}
