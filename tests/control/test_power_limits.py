"""Several power-limit sources, the lowest enforced and reported (NVML's enforced power limit): the
board's default, the host's in-band limit, the BMC's out-of-band limit."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

from mcm_firmware.control import dvfs
from mcm_firmware.host.client import NodeError
from mcm_firmware.profile import load_profile
from mcm_firmware.protocol import EventCode, Op, PowerCapArgs, PowerLimitArgs, PowerLimitSource, Status
from mcm_firmware.transport import Channel

from ..helpers import on_fleet

IN, OOB, DEFAULT = PowerLimitSource.IN_BAND, PowerLimitSource.OUT_OF_BAND, PowerLimitSource.DEFAULT


def _state(in_band: float, oob: float) -> tuple[float, PowerLimitSource]:
    prof = load_profile("colossus-mcm")  # default 1300 W, range 500..1400 W
    cfg = dvfs.DvfsConfig.from_profile(prof)
    st = dvfs.DvfsState(cfg, 1, prof.die.count, prof.power.default_cap_w)
    st.limit_in_band[0], st.limit_out_of_band[0] = in_band, oob
    dvfs.enforce_limits(cfg, st)
    return float(st.cap_w[0]), PowerLimitSource(int(st.cap_source[0]))


@pytest.mark.parametrize(
    ("in_band", "oob", "enforced", "source"),
    [
        (math.nan, math.nan, 1300.0, DEFAULT),  # nothing set: the board's default
        (900.0, math.nan, 900.0, IN),
        (1400.0, math.nan, 1400.0, IN),  # the host's limit replaces the default, up to max_cap_w
        (math.nan, 800.0, 800.0, OOB),
        (math.nan, 1350.0, 1300.0, DEFAULT),  # an out-of-band limit above the default does not bind
        (900.0, 800.0, 800.0, OOB),
        (700.0, 800.0, 700.0, IN),
        (800.0, 800.0, 800.0, OOB),  # a tie names the one clearing the in-band limit would not lift
    ],
)
def test_the_lowest_limit_set_is_enforced_and_named(in_band, oob, enforced, source):
    assert _state(in_band, oob) == (enforced, source)


def test_a_node_enforces_the_lowest_source_reports_it_and_refuses_bad_limits():
    async def scenario(fleet, host, rec):
        shard, row = fleet.shard_of(0)
        seen = {}
        seen["boot"] = (await host.status(0)).snapshot.power_limit_source
        await host.request(0, Op.SET_POWER_LIMIT, PowerLimitArgs(source=int(OOB), watts=900.0))
        await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=1000.0))
        await asyncio.sleep(10)
        st = await host.status(0)
        seen["both"] = (st.snapshot.power_cap_w, st.snapshot.power_limit_source, st.power_limits)
        seen["power"] = float(shard.dvfs.avg_short[row])
        errors = []
        for source, watts in ((0, 900.0), (3, 900.0), (int(OOB), 100.0), (int(IN), 5000.0), (int(OOB), math.inf)):
            with pytest.raises(NodeError) as info:
                await host.request(0, Op.SET_POWER_LIMIT, PowerLimitArgs(source=source, watts=watts))
            errors.append(info.value.response)
        with pytest.raises(NodeError) as info:  # SET_POWER_CAP cannot clear: NaN is no limit
            await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=math.nan))
        errors.append(info.value.response)
        seen["after_errors"] = float(shard.dvfs.cap_w[row])
        seen["bad_arguments"] = (await host.request(0, Op.STATS)).data.cmd_bad_argument
        await host.request(0, Op.SET_POWER_LIMIT, PowerLimitArgs(source=int(OOB), watts=math.nan))
        st = await host.status(0)
        seen["oob_cleared"] = (st.snapshot.power_cap_w, st.snapshot.power_limit_source)
        await host.request(0, Op.SET_POWER_LIMIT, PowerLimitArgs(source=int(OOB), watts=1100.0))
        await host.request(0, Op.SET_POWER_LIMIT, PowerLimitArgs(source=int(IN), watts=math.nan))
        st = await host.status(0)
        seen["in_cleared"] = (st.snapshot.power_cap_w, st.snapshot.power_limit_source)
        await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=1050.0))
        fleet.nodes[0].reboot()
        await asyncio.sleep(15)
        st = await host.status(0)
        seen["rebooted"] = (st.snapshot.power_cap_w, st.snapshot.power_limit_source, st.power_limits)
        seen["events"] = [(e.value, e.text) for e in rec.of(0, Channel.EVT) if e.code == EventCode.POWER_CAP_SET]
        return seen, errors

    seen, errors = on_fleet(scenario, nodes=1, settle=5)
    assert seen["boot"] == DEFAULT
    cap, source, limits = seen["both"]
    assert (cap, source) == (900.0, OOB)
    assert (limits.default_w, limits.in_band_w, limits.out_of_band_w) == (1300.0, 1000.0, 900.0)
    assert (limits.min_w, limits.max_w) == (500.0, 1400.0)
    assert seen["power"] <= 900.0 * 1.01  # the clocks follow the limit enforced, not the host's
    assert all(e.status is Status.BAD_ARGUMENT for e in errors)
    messages = [e.message for e in errors]
    assert "power limit source 0" in messages[0] and "power limit source 3" in messages[1]
    assert messages[2] == "out-of-band power limit 100 W outside 500..1400 W"
    assert messages[3] == "in-band power limit 5000 W outside 500..1400 W"
    assert "inf W outside" in messages[4] and messages[5] == "power cap nan W outside 500..1400 W"
    assert seen["after_errors"] == 900.0  # refused: nothing changed
    assert seen["bad_arguments"] == 6  # and counted
    assert seen["oob_cleared"] == (1000.0, IN)
    assert seen["in_cleared"] == (1100.0, OOB)  # the default (1300 W) is above the BMC's 1100 W
    cap, source, limits = seen["rebooted"]  # the host's limit went with the boot, the BMC's stays
    assert (cap, source) == (1100.0, OOB) and math.isnan(limits.in_band_w) and limits.out_of_band_w == 1100.0
    assert [v for v, _ in seen["events"]] == [900.0, 900.0, 1000.0, 1000.0, 1100.0, 1050.0]
    assert seen["events"][2][1] == "out-of-band power limit cleared; 1000 W enforced (in-band)"


def test_metrics_name_the_source_of_the_limit():
    from mcm_firmware.runtime.metrics import module_values

    async def scenario(fleet, host):
        await host.request(1, Op.SET_POWER_LIMIT, PowerLimitArgs(source=int(OOB), watts=700.0))
        await host.request(0, Op.SET_POWER_CAP, PowerCapArgs(watts=800.0))
        shard, _ = fleet.shard_of(0)
        return module_values(shard)

    values = on_fleet(scenario, nodes=3, settle=1)
    assert np.array_equal(values["MCM_FI_DEV_POWER_LIMIT_SOURCE"], [int(IN), int(OOB), int(DEFAULT)])
    assert np.array_equal(values["MCM_FI_DEV_POWER_MGMT_LIMIT"], [800.0, 700.0, 1300.0])
