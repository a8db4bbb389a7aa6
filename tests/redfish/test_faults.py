"""A fault injected over the binary protocol shows in Redfish: the pump's health, the module's
health and the faults in force, within a fraction of a second."""

from __future__ import annotations

import time

import pytest

from ..conftest import run_cli


@pytest.mark.slow
def test_a_pump_fault_shows_in_redfish(redfish_service):
    svc = redfish_service
    pump = "/redfish/v1/Chassis/0/ThermalSubsystem/Pumps/0"
    assert svc.get(pump).json()["Status"]["Health"] == "OK"
    assert svc.get("/redfish/v1/Chassis/0").json()["Status"]["Health"] == "OK"
    name = svc.get(pump).json()["Name"].removeprefix("Pump ")

    r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "0", "inject", "pump-fail", name)
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    while svc.get(pump).json()["Status"]["Health"] != "Critical":
        assert time.monotonic() - t0 < 2.0
        time.sleep(0.02)
    seen = time.monotonic() - t0
    chassis = svc.get("/redfish/v1/Chassis/0").json()
    assert chassis["Status"]["Health"] == "Warning"
    deadline = time.monotonic() + 5  # the faults in force come with the STATUS the FAULT_INJECTED event asks for
    while not (faults := svc.get("/redfish/v1/Chassis/0").json()["Oem"]["McmEmu"].get("FaultsInjected")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert faults[0].startswith("pump-fail")
    assert svc.get("/redfish/v1/Chassis/1").json()["Status"]["Health"] == "OK"
    print(f"pump fault seen in Redfish {seen * 1e3:.0f} ms after ctl returned")
