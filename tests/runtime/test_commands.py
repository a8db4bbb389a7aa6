"""The operator commands: set-power-cap, lock-clocks, reset-clocks, set-valve, ras, clear-ras, reset
(virtual time over loopback, then the CLI against Mosquitto)."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from mcm_firmware.faults import parse_fault
from mcm_firmware.hbm import Location
from mcm_firmware.host.client import NodeError
from mcm_firmware.host.views import status_json
from mcm_firmware.protocol import (
    ClearFaultArgs,
    ClockReason,
    EventCode,
    FaultKind,
    InjectArgs,
    LockClocksArgs,
    Op,
    PowerCapArgs,
    RasResult,
    SetValveArgs,
    Status,
)
from mcm_firmware.transport import Channel

from ..conftest import run_cli


def test_set_power_cap_applies_and_bad_values_change_nothing(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=800.0))
        applied = float(shard.dvfs.cap_w[row])
        errors = []
        for bad in (100.0, 5000.0, math.nan, math.inf):
            with pytest.raises(NodeError) as info:
                await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=bad))
            errors.append(info.value.response)
        await asyncio.sleep(15)
        return applied, float(shard.dvfs.cap_w[row]), errors, shard.dvfs.reasons[row].copy(), rec

    applied, after, errors, reasons, rec = on_fleet(fn, settle=5)
    assert applied == after == 800.0
    assert all(e.status is Status.BAD_ARGUMENT and "outside 500..1400 W" in e.message for e in errors)
    assert (reasons & ClockReason.SW_POWER_CAP).all()
    caps = [e for e in rec.of(0, Channel.EVT) if e.code == EventCode.POWER_CAP_SET]
    assert [e.value for e in caps] == [800.0]


def test_lock_and_reset_clocks(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(1)
        await host.request(1, Op.LOCK_CLOCKS, LockClocksArgs(mhz=1100))
        await asyncio.sleep(1)
        locked = shard.dvfs.mhz[row].copy()
        st = status_json(1, await host.status(1))
        with pytest.raises(NodeError, match=r"outside 350\.\.2000 MHz"):
            await host.request(1, Op.LOCK_CLOCKS, LockClocksArgs(mhz=3000))
        await host.request(1, Op.RESET_CLOCKS)
        await asyncio.sleep(1)
        return locked, st, shard.dvfs.mhz[row].copy()

    locked, st, released = on_fleet(fn, settle=5)
    assert (locked == 1100).all() and (released == 2000).all()
    assert st["clocks_locked"] is True and st["pstate"] == 5
    assert all("APPLICATIONS_CLOCKS_SETTING" in d["reason_names"] for d in st["dies"])


def test_set_valve_manual_and_auto(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        await host.request(0, Op.SET_VALVE, SetValveArgs(valve=3, auto=0, pct=25.0))
        await asyncio.sleep(10)
        held = float(shard.plant.valve_pos[row, 3])
        st = status_json(0, await host.status(0))
        bad = []
        for args in (SetValveArgs(valve=9, auto=0, pct=10.0), SetValveArgs(valve=1, auto=0, pct=120.0)):
            with pytest.raises(NodeError) as info:
                await host.request(0, Op.SET_VALVE, args)
            bad.append(info.value.response.message)
        await host.request(0, Op.SET_VALVE, SetValveArgs(valve=3, auto=1, pct=0.0))
        return held, st, bad, bool(np.isnan(shard.cool.manual[row]).all())

    held, st, bad, all_auto = on_fleet(fn, settle=5)
    assert held == pytest.approx(25.0, abs=0.5)
    assert st["valves"][3]["manual"] is True and st["valves"][0]["manual"] is False
    assert bad == ["no valve 9 (valves 0..3)", "valve position 120 % outside 0..100 %"]
    assert all_auto


def test_ras_remap_reset_and_clear_through_commands(on_fleet):
    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        ctl = shard.ras[row]
        addr = ctl.cfg.geometry.encode(Location(3, 4, 5, 678, 8))
        ctl.inject(addr, [9], stuck=True)  # a weak cell: CEs at every read
        await asyncio.sleep(5)
        before = (await host.request(0, Op.RAS)).data
        st = status_json(0, await host.status(0))
        await host.request(0, Op.RESET)
        await asyncio.sleep(1)
        after = (await host.request(0, Op.RAS)).data
        await host.request(0, Op.CLEAR_RAS)
        cleared = (await host.request(0, Op.RAS)).data
        return before, st, after, cleared, rec

    before, st, after, cleared, rec = on_fleet(fn, settle=5)
    assert isinstance(before, RasResult)
    # a CE-caused remap, pending: NVML counts it, and asks for no recovery action (applied at a reset)
    assert before.ce >= 2 and before.flags & 1 and before.recovery_action == 0
    assert (before.remapped_correctable, before.remapped_uncorrectable, before.last_xid) == (1, 0, 63)
    banks = 8 * 16 * 16  # colossus-mcm: 8 stacks x 16 channels x 16 banks, 4 spare rows each
    hist = (before.banks_max, before.banks_high, before.banks_partial, before.banks_low, before.banks_none)
    assert hist == (banks - 1, 1, 0, 0, 0)
    assert [(p.stack, p.channel, p.bank, p.row) for p in before.pending] == [(3, 4, 5, 678)]
    assert before.stacks[3].ce[4] == before.ce
    assert st["ras"]["remap_pending"] is True and st["ras"]["recovery_action"] == "NONE"
    assert st["ras"]["ce"] == before.ce and st["hbm"][3]["ce"] == before.ce
    assert after.pending == () and after.remapped_rows == 1 and after.recovery_action == 0
    assert after.remapped_correctable == 1 and after.banks_high == 1  # recorded remaps stay counted
    assert cleared.ce == 0 and cleared.remapped_rows == 1
    events = rec.of(0, Channel.EVT)
    codes = [e.code for e in events]
    for code in (EventCode.REMAP_PENDING, EventCode.ROW_REMAPPED, EventCode.RESET_DONE, EventCode.RAS_CLEARED):
        assert code in codes, code.name
    assert [e.value for e in events if e.code == EventCode.XID] == [63.0]


def test_the_patrol_scrubber_counts_from_boot_with_nothing_stored(on_fleet):
    """No error anywhere: the scrubber still walks the memory from the boot (it counted nothing
    until a first stored word, and then from that read)."""

    async def fn(fleet, host):
        shard, row = fleet.shard_of(0)
        return (await host.request(0, Op.RAS)).data, shard.ras[row].cfg, float(shard.t - shard.boot_t[row])

    r, cfg, up = on_fleet(fn, settle=30)
    assert up >= 30 and r.scrub_passes == 0  # 24 h a pass
    expected = cfg.geometry.words * up / cfg.scrub_interval_s
    assert r.scrubbed_words > 0 and abs(r.scrubbed_words - expected) <= 0.01 * expected


def test_an_uncontained_ue_through_commands_xids_counts_metrics_and_a_reboot(on_fleet):
    """inject hbm-flip of two bits in row 0 (memory every context shares): XIDs 48, 63, 95,
    NODE_REBOOT; a reset applies the remap and leaves the reboot asked for; a reboot clears it."""
    from mcm_firmware.runtime.metrics import module_values

    async def fn(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        addr = shard.ras[row].cfg.geometry.encode(Location(1, 2, 3, 0, 4))
        await host.request(0, Op.INJECT, InjectArgs(kind=FaultKind.HBM_FLIP, target=hex(addr), value=2, value2=1))
        await asyncio.sleep(5)
        seen = (await host.request(0, Op.RAS)).data
        metrics = {k: float(v[row]) for k, v in module_values(shard).items()}
        await host.request(0, Op.RESET)
        await asyncio.sleep(1)
        reset = (await host.request(0, Op.RAS)).data
        await host.request(0, Op.INJECT, InjectArgs(kind=FaultKind.REBOOT, target="", value=math.nan, value2=math.nan))
        await asyncio.sleep(8)
        rebooted = (await host.request(0, Op.RAS)).data
        return seen, metrics, reset, rebooted, rec

    seen, metrics, reset, rebooted, rec = on_fleet(fn, settle=2, profile="h100-sxm-class")
    assert seen.ue == 1 and seen.recovery_action == 2 and seen.last_xid == 95  # NODE_REBOOT
    assert (seen.remapped_correctable, seen.remapped_uncorrectable) == (0, 1) and seen.flags & 1
    assert metrics["MCM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS"] == 1 and metrics["MCM_FI_DEV_ROW_REMAP_PENDING"] == 1
    assert metrics["MCM_FI_DEV_ROW_REMAP_FAILURE"] == 0 and metrics["MCM_FI_DEV_XID_ERRORS"] == 95
    assert metrics["MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_HIGH"] == 1
    assert metrics["MCM_FI_DEV_BANKS_REMAP_ROWS_AVAIL_MAX"] == 5 * 16 * 16 - 1
    assert reset.pending == () and reset.remapped_rows == 1 and reset.recovery_action == 2  # not a reboot
    assert rebooted.recovery_action == 0 and rebooted.last_xid == 0 and rebooted.remapped_uncorrectable == 1
    xids = [(e.value, e.subject, e.severity.name) for e in rec.of(0, Channel.EVT) if e.code == EventCode.XID]
    assert xids == [(48.0, 1, "ERROR"), (63.0, 1, "NOTICE"), (95.0, 1, "CRITICAL")]


def test_status_carries_mode_pstate_and_ras(on_fleet):
    async def fn(fleet, host, rec):
        return status_json(0, await host.status(0))

    st = on_fleet(fn, settle=5)
    assert st["mode"] == "NORMAL" and st["pstate"] == 0
    assert st["ras"] == {
        "ce": 0,
        "ue": 0,
        "remap_pending": False,
        "remap_failed": False,
        "ce_storm": False,
        "recovery_action": "NONE",
        "remapped_correctable": 0,
        "remapped_uncorrectable": 0,
        "ce_aggregate": 0,
        "ue_aggregate": 0,
    }
    assert st["vrm_current_a"] > 100


async def test_ctl_cli_commands_against_mosquitto(mosquitto):
    from mcm_firmware.clock import RealClock
    from mcm_firmware.profile import load_profile
    from mcm_firmware.runtime.fleet import Fleet
    from mcm_firmware.transport import transport_factory

    fleet = Fleet.uniform(
        nodes=1,
        profile=load_profile("h100-sxm-class"),
        fleet="default",
        transport_factory=transport_factory(mosquitto.url),
        clock=RealClock(),
    )
    await fleet.start()
    await fleet.wait_connected(10)

    def ctl(*args):
        return run_cli("ctl", "--broker", mosquitto.url, "--json", "0", *args)

    try:
        ok = await asyncio.to_thread(ctl, "set-power-cap", "450")
        bad = await asyncio.to_thread(ctl, "set-power-cap", "900")
        usage = await asyncio.to_thread(ctl, "set-power-cap")
        valve = await asyncio.to_thread(ctl, "set-valve", "0", "auto")
        ras = await asyncio.to_thread(ctl, "ras")
        status = await asyncio.to_thread(ctl, "status")
    finally:
        await fleet.stop()
    assert ok.returncode == 0 and json.loads(ok.stdout)["ok"] is True
    assert bad.returncode == 2
    err = json.loads(bad.stdout)
    assert {k: err[k] for k in ("node", "ok", "status", "message", "exit_code")} == {
        "node": 0,
        "ok": False,
        "status": "BAD_ARGUMENT",
        "message": "power cap 900 W outside 200..700 W",
        "exit_code": 2,
    }
    assert err["error"] == "node 0 answered BAD_ARGUMENT: power cap 900 W outside 200..700 W"
    assert usage.returncode == 2 and "set-power-cap takes one argument" in usage.stderr
    assert valve.returncode == 0
    assert ras.returncode == 0 and json.loads(ras.stdout)["ecc"] == "SECDED"
    st = json.loads(status.stdout)
    assert st["power_cap_w"] == 450.0 and st["profile"] == "h100-sxm-class"


def test_get_faults_lists_the_faults_in_force(on_fleet):
    async def fn(host):
        empty = await host.request(0, Op.GET_FAULTS)
        for f in (parse_fault(["pump-fail", "1"]), parse_fault(["inlet-step", "5"])):
            args = InjectArgs(kind=int(f.kind), target=f.target, value=f.value, value2=f.value2)
            await host.request(0, Op.INJECT, args)
        listed = await host.request(0, Op.GET_FAULTS)
        await host.request(0, Op.CLEAR_FAULT, ClearFaultArgs(kind=int(FaultKind.PUMP_FAIL), target="B"))
        return empty.data, listed.data, (await host.request(0, Op.GET_FAULTS)).data

    empty, listed, after = on_fleet(fn, settle=5)
    assert empty.faults == ()
    assert [(f.kind, f.target, f.value) for f in listed.faults] == [
        (FaultKind.PUMP_FAIL, "B", pytest.approx(math.nan, nan_ok=True)),  # pump 1 is B on this module
        (FaultKind.INLET_STEP, "", 5.0),
    ]
    assert [f.kind for f in after.faults] == [FaultKind.INLET_STEP]


def test_clearing_a_fault_not_in_force_is_refused_naming_those_in_force(on_fleet):
    async def fn(fleet, host, rec):
        f = parse_fault(["pump-fail", "B"])
        await host.request(0, Op.INJECT, InjectArgs(kind=int(f.kind), target=f.target, value=f.value, value2=f.value2))
        answers = [
            await host.request(0, Op.CLEAR_FAULT, ClearFaultArgs(kind=int(kind), target=target), check=False)
            for kind, target in ((FaultKind.PUMP_FAIL, "0"), (FaultKind.INLET_STEP, ""))
        ]
        await asyncio.sleep(1)
        in_force = dict(fleet.nodes[0].faults)
        cleared = await host.request(0, Op.CLEAR_FAULT, ClearFaultArgs(kind=0, target="all"))
        again = await host.request(0, Op.CLEAR_FAULT, ClearFaultArgs(kind=0, target="all"))
        return answers, in_force, cleared, again

    answers, in_force, cleared, again = on_fleet(fn, settle=5)
    assert [(a.status, a.message) for a in answers] == [
        (Status.BAD_ARGUMENT, "no fault 'pump-fail A' in force (in force: pump-fail B)"),  # pump 0 is A
        (Status.BAD_ARGUMENT, "no fault 'inlet-step' in force (in force: pump-fail B)"),
    ]
    assert [f"{f}" for f in in_force.values()] == ["pump-fail B"]  # a refusal changes nothing
    assert cleared.status is again.status is Status.OK  # `all` clears whatever is in force, even nothing


def test_ctl_get_faults_shows_them_by_name(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "1", "--fleet", "gf")
    run.wait_line("running 1 nodes")
    base = ("--broker", mosquitto.url, "--fleet", "gf")
    assert run_cli("ctl", *base, "0", "inject", "inlet-step", "5").returncode == 0
    out = run_cli("ctl", *base, "--json", "0", "get-faults")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["faults"] == [{"kind": "INLET_STEP", "target": "", "value": 5.0, "value2": None}]
    text = run_cli("ctl", *base, "0", "get-faults").stdout
    assert text.startswith("node 0: get-faults") and "INLET_STEP" in text
    out = run_cli("ctl", *base, "0", "clear-fault", "pump-fail", "A")
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        == "mcm-emu: error: node 0 answered BAD_ARGUMENT: no fault 'pump-fail A' in force (in force: inlet-step 5)"
    )
    out = run_cli("ctl", *base, "--json", "0", "clear-fault", "inlet-step")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True
