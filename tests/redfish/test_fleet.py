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


def test_a_pump_fault_is_logged_with_dmtfs_message(shared_service):
    svc = shared_service
    entries = "/redfish/v1/Chassis/0/LogServices/EventLog/Entries"
    svc_log = svc.get("/redfish/v1/Chassis/0/LogServices/EventLog").json()
    assert svc_log["OverWritePolicy"] == "WrapsWhenFull" and svc_log["MaxNumberOfRecords"] == 500
    before = {m["@odata.id"] for m in svc.get(entries).json()["Members"]}
    name = svc.get("/redfish/v1/Chassis/0/ThermalSubsystem/Pumps/0").json()["Name"].removeprefix("Pump ")
    ctl(svc, 0, "inject", "pump-fail", name)

    def new() -> list[dict]:
        members = [m["@odata.id"] for m in svc.get(entries).json()["Members"] if m["@odata.id"] not in before]
        return [svc.get(u).json() for u in members]

    failed = until(lambda: [e for e in new() if e["MessageId"] == "Environmental.1.4.PumpFailed"])[0]
    assert failed["Message"] == f"Pump '{name}' has failed." and failed["Severity"] in ("Warning", "Critical")
    assert failed["Links"]["OriginOfCondition"]["@odata.id"].endswith("/ThermalSubsystem/Pumps/0")
    got = until(lambda: {e["MessageId"] for e in new()} >= {
        "McmEmu.1.0.FaultInjected", "ResourceEvent.1.4.ResourceStatusChangedWarning"} and new())  # fmt: skip
    changed = next(e for e in got if e["MessageId"] == "ResourceEvent.1.4.ResourceStatusChangedWarning")
    assert changed["MessageArgs"] == ["/redfish/v1/Chassis/0", "Warning"]
    registry = svc.get("/redfish/v1/Registries/McmEmu/McmEmu.1.0.0.json").json()
    assert "FaultInjected" in registry["Messages"]
    ctl(svc, 0, "clear-fault", "all")  # the pump stays latched (until its retry, 600 s): module 0 stays Warning
