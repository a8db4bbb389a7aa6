"""A module's coolant loop (DMTF's CoolingLoop, under the service root's ThermalEquipment) read
through python-redfish-library: one loop a module, linked both ways with its Chassis and its cold
plate, nothing shown that the module does not report; the cold plate's readings are those of one of
the node's own telemetry frames, and the loop's health follows the node's frames (a pump fault:
every read from the first TELEMETRY after the PUMP_FAULT event on is Warning), judged by the frames'
timestamps (``mcm-emu monitor --json``), not by the wall clock."""

from __future__ import annotations

import json
import time

import pytest
import redfish

from ..conftest import run_cli
from .conftest import OPERATOR
from .test_faults import micros

ROOT = "/redfish/v1"
# what the CoolingLoop schema has and the module does not report: never shown
NOT_REPORTED = {
    "Coolant", "CoolantLevelPercent", "CoolantLevelStatus", "CoolantQuality", "RatedFlowLitersPerMinute",
    "RatedPressurekPa", "CoolingLoopType", "SecondaryCoolantConnectors", "SupplyEquipmentNames",
    "ConsumingEquipmentNames",
}  # fmt: skip


@pytest.mark.slow
def test_a_modules_cooling_loop_links_its_chassis_and_cold_plate_and_follows_its_frames(redfish_service, cli_process):
    svc = redfish_service
    monitor = cli_process("monitor", "--broker", svc.broker, "--fleet", svc.fleet, "--node", "0", "--json")
    monitor.wait_line('"type": "TELEMETRY"')

    def frames() -> list[dict]:
        return [json.loads(line) for line in list(monitor.lines) if line.startswith("{")]

    client = redfish.redfish_client(base_url=svc.url, username=OPERATOR[0], password=OPERATOR[1])
    client.login(auth="session")
    try:
        root = client.get(f"{ROOT}/").dict
        assert root["ThermalEquipment"] == {"@odata.id": f"{ROOT}/ThermalEquipment"}
        equipment = client.get(root["ThermalEquipment"]["@odata.id"]).dict
        assert equipment["@odata.type"].startswith("#ThermalEquipment.")
        loops = client.get(equipment["CoolingLoops"]["@odata.id"]).dict
        chassis = client.get(root["Chassis"]["@odata.id"]).dict
        # one loop a module, by the module's id
        ids = [m["@odata.id"].rsplit("/", 1)[1] for m in loops["Members"]]
        assert ids == [m["@odata.id"].rsplit("/", 1)[1] for m in chassis["Members"]] == ["0", "1"]
        assert loops["Members@odata.count"] == 2

        for member in loops["Members"]:
            uri = member["@odata.id"]
            loop = client.get(uri).dict
            assert loop["@odata.type"].startswith("#CoolingLoop.") and loop["@odata.id"] == uri
            assert not NOT_REPORTED & loop.keys(), loop
            # the loop and its Chassis, both ways
            chassis_uri = loop["Links"]["Chassis"]["@odata.id"]
            assert chassis_uri == f"{ROOT}/Chassis/{loop['Id']}"
            module = client.get(chassis_uri).dict
            assert module["Links"]["ConnectedCoolingLoops"] == [{"@odata.id": uri}]
            # the loop and the module's cold plate, both ways
            plates = client.get(loop["PrimaryCoolantConnectors"]["@odata.id"]).dict
            plate_uri = f"{chassis_uri}/ThermalSubsystem/CoolantConnectors/ColdPlate"
            assert plates["Members"] == [{"@odata.id": plate_uri}] and plates["Members@odata.count"] == 1
            plate = client.get(plate_uri).dict
            assert plate["Links"]["ConnectedCoolingLoop"] == {"@odata.id": uri}
            assert loop["Status"]["State"] == "Enabled" and loop["Status"]["Health"] == "OK", loop["Status"]

        # live values: the cold plate's readings, reached from the loop, are one of the node's frames
        plate_uri = client.get(f"{ROOT}/ThermalEquipment/CoolingLoops/0/PrimaryCoolantConnectors").dict["Members"][0]
        plate = client.get(plate_uri["@odata.id"]).dict
        got = (
            plate["SupplyTemperatureCelsius"]["Reading"],
            plate["ReturnTemperatureCelsius"]["Reading"],
            plate["FlowLitersPerMinute"]["Reading"],
        )
        deadline = time.monotonic() + 30  # only keeps a broken service from hanging the test
        while not any(
            (f["inlet_c"], f["outlet_c"], f["flow_lpm"]) == got for f in frames() if f["type"] == "TELEMETRY"
        ):
            assert time.monotonic() < deadline, (
                got,
                [(f["inlet_c"], f["outlet_c"], f["flow_lpm"]) for f in frames()][-5:],
            )
            time.sleep(0.05)

        # the loop's health is the module's, from the frame it names (Oem.McmEmu.SnapshotTime)
        name = client.get(f"{ROOT}/Chassis/0/ThermalSubsystem/Pumps/0").dict["Name"].removeprefix("Pump ")
        r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "0", "inject", "pump-fail", name)
        assert r.returncode == 0, r.stderr

        def first_after_fault() -> dict | None:
            got = frames()
            fault = next((f for f in got if f["type"] == "EVENT" and f["code"] == "PUMP_FAULT"), None)
            after = [f for f in got if fault and f["type"] == "TELEMETRY" and f["seq"] > fault["seq"]]
            return min(after, key=lambda f: f["seq"]) if after else None

        seen: list[tuple[int, str]] = []
        first = None
        while True:
            loop = client.get(f"{ROOT}/ThermalEquipment/CoolingLoops/0").dict
            seen.append((micros(loop["Oem"]["McmEmu"]["SnapshotTime"]), loop["Status"]["Health"]))
            first = first or first_after_fault()
            if first and any(t >= first["timestamp_ns"] // 1000 for t, _ in seen):
                break
            assert time.monotonic() < deadline + 30, (frames()[-5:], seen[-5:])
        assert first["pumps"][0]["fault"], first["pumps"]
        t1 = first["timestamp_ns"] // 1000
        late = [h for t, h in seen if t >= t1]
        assert late and set(late) == {"Warning"}, (t1, seen)
        # the other module's loop is not touched
        other = client.get(f"{ROOT}/ThermalEquipment/CoolingLoops/1").dict
        assert other["Status"]["Health"] == "OK", other["Status"]
        print(f"cooling loop: {len(seen)} reads of loop 0, {len(late)} from the first frame after the fault on")
    finally:
        client.logout()
