"""Counts fleet software reads from every snapshot (STATUS and TELEMETRY) and the metrics: the
row remapper's counts, ECC counts volatile and aggregate, and the PCIe link's replays and AER
errors, which rise with an injected link fault (virtual time, the whole node)."""

from __future__ import annotations

import asyncio

import pytest

from mcm_firmware.control import pcie
from mcm_firmware.faults import FaultError, make_fault, parse_clear, parse_fault
from mcm_firmware.protocol import FaultKind, InjectArgs, Op, Telemetry
from mcm_firmware.runtime.injection import apply_fault, clear_faults
from mcm_firmware.runtime.metrics import module_values
from mcm_firmware.transport import Channel

from ..helpers import on_fleet


def test_remap_and_ecc_counts_in_status_volatile_and_aggregate():
    """A UE and a CE on an h100-sxm-class node (SEC-DED): the snapshot counts the UE's remap
    (pending) and both errors; CLEAR_RAS and a reboot clear the volatile counts, not the
    aggregate ones, nor the recorded remaps."""

    async def scenario(fleet, host):
        node = fleet.nodes[0]
        apply_fault(node, parse_fault(["hbm-flip", "0x944d2310", "2"]))  # a UE: its row recorded
        apply_fault(node, parse_fault(["hbm-flip", "0x1000", "1"]))  # a CE
        await asyncio.sleep(5)
        erred = (await host.status(0)).snapshot
        await host.request(0, Op.CLEAR_RAS)
        cleared = (await host.status(0)).snapshot
        node.reboot()
        await asyncio.sleep(10)
        rebooted = (await host.status(0)).snapshot
        shard, row = fleet.shard_of(0)
        return erred, cleared, rebooted, {k: float(v[row]) for k, v in module_values(shard).items()}

    erred, cleared, rebooted, metrics = on_fleet(scenario, nodes=1, settle=2, profile="h100-sxm-class")
    assert sum(h.ue for h in erred.hbm) == 1 and sum(h.ce for h in erred.hbm) >= 1
    assert (erred.remapped_correctable, erred.remapped_uncorrectable) == (0, 1)
    assert erred.ecc_ue_aggregate == 1 and erred.ecc_ce_aggregate == sum(h.ce for h in erred.hbm)
    assert sum(h.ce + h.ue for h in cleared.hbm) == 0  # volatile: cleared
    assert (cleared.ecc_ce_aggregate, cleared.ecc_ue_aggregate) == (erred.ecc_ce_aggregate, 1)  # aggregate: kept
    assert (rebooted.ecc_ce_aggregate, rebooted.ecc_ue_aggregate) == (erred.ecc_ce_aggregate, 1)
    assert rebooted.remapped_uncorrectable == 1  # recorded remaps stay counted
    assert metrics["MCM_FI_DEV_ECC_DBE_AGG_TOTAL"] == 1 and metrics["MCM_FI_DEV_ECC_DBE_VOL_TOTAL"] == 0
    assert metrics["MCM_FI_DEV_ECC_SBE_AGG_TOTAL"] == erred.ecc_ce_aggregate


def test_pcie_counters_stay_zero_on_a_clean_link_and_rise_with_an_injected_link_fault():
    async def scenario(fleet, host, rec):
        node = fleet.nodes[0]
        clean = (await host.status(0)).snapshot
        await host.request(
            0, Op.INJECT, InjectArgs(kind=int(FaultKind.PCIE_ERRORS), target="", value=200.0, value2=2.0)
        )
        await asyncio.sleep(10)
        faulty = (await host.status(0)).snapshot
        shard, row = fleet.shard_of(0)
        metrics = {k: float(v[row]) for k, v in module_values(shard).items()}
        clear_faults(node, parse_clear(["pcie-errors"]))
        await asyncio.sleep(5)
        still = (await host.status(0)).snapshot
        await asyncio.sleep(5)
        later = (await host.status(0)).snapshot
        node.reboot()
        await asyncio.sleep(10)
        rebooted = (await host.status(0)).snapshot
        tlm = [m.snapshot for m in rec.of(0, Channel.TLM) if isinstance(m, Telemetry)]
        return clean, faulty, metrics, still, later, rebooted, tlm

    clean, faulty, metrics, still, later, rebooted, tlm = on_fleet(scenario, nodes=1, settle=5)
    assert (clean.pcie_replays, clean.pcie_aer_correctable, clean.pcie_aer_uncorrectable) == (0, 0, 0)
    # 10 s at 200 corrupted TLPs a second, each replayed once (a replay is hit again 0.02 % of the
    # time): ~2,000, Poisson; 2 uncorrectable errors a second: ~20
    assert 1_800 <= faulty.pcie_replays <= 2_200
    assert faulty.pcie_aer_correctable == pytest.approx(faulty.pcie_replays, abs=5)
    assert 8 <= faulty.pcie_aer_uncorrectable <= 35
    assert metrics["MCM_FI_DEV_PCIE_REPLAY_COUNTER"] >= faulty.pcie_replays
    assert metrics["MCM_FI_DEV_PCIE_AER_UNCORRECTABLE"] >= faulty.pcie_aer_uncorrectable
    assert (later.pcie_replays, later.pcie_aer_uncorrectable) == (still.pcie_replays, still.pcie_aer_uncorrectable)
    assert (rebooted.pcie_replays, rebooted.pcie_aer_correctable, rebooted.pcie_aer_uncorrectable) == (0, 0, 0)
    replays = [s.pcie_replays for s in tlm if s.uptime_ns > 0]
    assert max(replays) >= faulty.pcie_replays  # telemetry carries them too


def test_a_storm_of_link_errors_replays_some_tlps_more_than_once():
    import numpy as np

    link = pcie.PcieCounters(2)
    link.rate[0] = (5e5, 0.0)  # a replay is hit again half the time (1 us round trip)
    link.rate[1] = (10.0, 0.0)
    rng = np.random.default_rng(3)
    for _ in range(2):
        link.step(rng, 0.5, np.array([True, True]))
    aer = link.counts[:, pcie.AER_CORRECTABLE]
    replays = link.counts[:, pcie.REPLAYS]
    # ~500,000 errors: each replayed until a replay arrives clean (geometric, 2 replays on average),
    # and one in 8 replayed 4 times or more, a REPLAY_NUM rollover: another correctable error
    assert replays[0] == pytest.approx(1e6, rel=0.01)
    assert aer[0] == pytest.approx(5e5 * 1.125, rel=0.01)
    assert replays[0] / aer[0] == pytest.approx(2 / 1.125, rel=0.01)
    assert 0 < replays[1] <= 30 and aer[1] == replays[1]  # a slow fault: one replay an error


def test_pcie_errors_fault_checks_its_numbers():
    assert make_fault("pcie-errors", value=5.0).value2 == 0.0
    with pytest.raises(FaultError, match=r"corrupted TLPs per second must be within 0\.\.100000"):
        make_fault("pcie-errors", value=-1.0)
    with pytest.raises(FaultError, match="needs a corrupted TLPs per second"):
        make_fault("pcie-errors")
