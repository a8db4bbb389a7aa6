"""One live fleet (Mosquitto, ``mcm-emu run``, ``mcm-emu redfish``) for the module: what a fault
injected over the binary protocol does to the module's Redfish resources (memory, logs, events)."""

from __future__ import annotations

import json
import time

import pytest

from ..conftest import run_cli

pytestmark = pytest.mark.slow


def ctl(svc, node: int, *args: str) -> dict:
    r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "--json", str(node), *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def until(fn, timeout: float = 5.0, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(step)
    return value


def test_a_ce_storm_in_one_hbm_stack_shows_in_its_memory_metrics(shared_service):
    svc = shared_service
    mem = "/redfish/v1/Chassis/1/Memory"
    assert [m["@odata.id"] for m in svc.get(mem).json()["Members"]] == [f"{mem}/HBM{i}" for i in range(8)]
    assert svc.get(f"{mem}/HBM1").json()["MemoryDeviceType"] == "HBM"
    assert svc.get(f"{mem}/HBM9").status_code == 404

    ctl(svc, 1, "inject", "ce-storm", "1", "500")

    def counts(stack: int) -> dict:
        return svc.get(f"{mem}/HBM{stack}/MemoryMetrics").json()["CurrentPeriod"]

    until(lambda: counts(1)["CorrectableECCErrorCount"] > 100)
    seen = counts(1)["CorrectableECCErrorCount"]
    ras = ctl(svc, 1, "ras")
    assert 0 < seen <= ras["stacks"][1]["ce"]  # the node's own counters, read after
    assert counts(0) == {"CorrectableECCErrorCount": 0, "UncorrectableECCErrorCount": 0}
    ext = until(lambda: (e := svc.get("/redfish/v1/Chassis/1").json()["Oem"]["McmEmu"])["MemoryCEStorm"] and e)
    assert ext["MemoryLifetimeCorrectableECCErrorCount"] >= seen
    assert svc.get("/redfish/v1/Chassis/1").json()["Status"]["Health"] == "Warning"

    ctl(svc, 1, "clear-fault", "all")
    ctl(svc, 1, "clear-ras")
    until(lambda: counts(1)["CorrectableECCErrorCount"] == 0)
    assert (
        svc.get("/redfish/v1/Chassis/0/Memory/HBM1/MemoryMetrics").json()["CurrentPeriod"]["CorrectableECCErrorCount"]
        == 0
    )
