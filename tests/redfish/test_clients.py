"""Redfish clients against the live service: python-redfish-library and sushy each read every
sensor of the modules and set a power limit through the Control, which the node then enforces (as
``ctl status`` reports) and its power follows; bad request bodies get Base registry errors and are
counted. sushy (5.x) models the Chassis (type, power state, health, model, the reset action) but
neither Sensor nor Control nor the Thermal/PowerSubsystem: those go through its connector (its
session, its error mapping)."""

from __future__ import annotations

import json
import math
import time

import pytest
import redfish
import requests
import sushy

from ..conftest import run_cli
from .conftest import OPERATOR

UNITS = {
    "Temperature": "Cel",
    "Power": "W",
    "EnergyJoules": "J",
    "Current": "A",
    "Voltage": "V",
    "Frequency": "Hz",
    "LiquidFlowLPM": "L/min",
    "Rotational": "{rev}/min",
    "Valve": "%",
}


def ctl_status(svc, node: int) -> dict:
    r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, str(node), "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.slow
def test_clients_read_every_sensor_and_set_the_power_limit(redfish_service):
    svc = redfish_service
    client = redfish.redfish_client(base_url=svc.url, username=OPERATOR[0], password=OPERATOR[1])
    client.login(auth="session")
    try:
        chassis = client.get("/redfish/v1/Chassis").dict
        assert chassis["Members@odata.count"] == 2
        for member in chassis["Members"]:
            node = int(member["@odata.id"].rsplit("/", 1)[1])
            status = ctl_status(svc, node)
            sensors = client.get(member["@odata.id"] + "/Sensors").dict["Members"]
            readings = {}
            for s in sensors:
                body = client.get(s["@odata.id"]).dict
                assert body["ReadingUnits"] == UNITS[body["ReadingType"]], body
                assert isinstance(body["Reading"], (int, float)) and body["Status"]["State"] == "Enabled", body
                readings[body["Id"]] = body["Reading"]
            # one sensor per reading of the module's telemetry, near what the node itself says
            n_dies, n_hbm = len(status["dies"]), len(status["hbm"])
            n_pumps, n_valves = len(status["pumps"]), len(status["valves"])
            assert len(readings) == 6 + 4 * n_dies + n_hbm + n_pumps + n_valves
            assert all(f"Die{i}Temp" in readings and f"Die{i}Power" in readings for i in range(n_dies))
            assert all(f"HBM{i}Temp" in readings for i in range(n_hbm))
            assert all(f"Pump{i}Speed" in readings for i in range(n_pumps))
            assert abs(readings["CoolantInletTemp"] - status["inlet_c"]) < 2.0
            assert math.isclose(readings["TotalPower"], status["power_w"], rel_tol=0.2)

        # the power limit, through the Control; the node enforces it
        uri = "/redfish/v1/Chassis/1/Controls/PowerLimit"
        control = client.get(uri).dict
        assert control["ControlType"] == "Power" and control["SetPointUnits"] == "W"
        lo, hi = control["AllowableMin"], control["AllowableMax"]
        assert lo < 800 < hi
        r = client.patch(uri, body={"SetPoint": 800})
        assert r.status == 200 and r.dict["SetPoint"] == 800.0, r.dict
        assert ctl_status(svc, 1)["power_cap_w"] == 800.0
        assert ctl_status(svc, 0)["power_cap_w"] != 800.0
        deadline = time.monotonic() + 15  # the module's power follows within a few seconds
        while client.get("/redfish/v1/Chassis/1/Sensors/TotalPower").dict["Reading"] > 800 * 1.05:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        r = client.patch(uri, body={"SetPoint": None})  # clear it: the default holds again
        assert r.status == 200 and r.dict["SetPoint"] is None
        assert ctl_status(svc, 1)["power_cap_w"] == control["Oem"]["McmEmu"]["DefaultWatts"]

        # bad input: a Base registry message, HTTP 400, nothing changed
        bad = [
            ({"SetPoint": hi + 1}, "PropertyValueOutOfRange"),
            ({"SetPoint": "900"}, "PropertyValueTypeError"),
            ({"SetPoint": True}, "PropertyValueTypeError"),
            ({"ControlType": "Frequency"}, "PropertyNotWritable"),
            ({"Colour": "red"}, "PropertyUnknown"),
            ({}, "NoOperation"),
        ]
        for body, message in bad:
            r = client.patch(uri, body=body)
            assert r.status == 400 and r.dict["error"]["code"] == f"Base.1.22.{message}", (body, r.dict)
            info = r.dict["error"]["@Message.ExtendedInfo"][0]
            assert info["MessageId"] == f"Base.1.22.{message}" and info["Resolution"]
        raw = requests.patch(svc.url + uri, data=b"{not json", auth=OPERATOR, timeout=10)
        assert raw.status_code == 400 and raw.json()["error"]["code"] == "Base.1.22.MalformedJSON"
        assert ctl_status(svc, 1)["power_cap_w"] == control["Oem"]["McmEmu"]["DefaultWatts"]
    finally:
        client.logout()

    # sushy: the modules, their type, power state and health
    s = sushy.Sushy(svc.url + "/redfish/v1", auth=sushy.auth.BasicAuth(username=OPERATOR[0], password=OPERATOR[1]))
    ids = sorted(s.get_chassis_collection().members_identities)
    assert ids == ["/redfish/v1/Chassis/0", "/redfish/v1/Chassis/1"]
    for i in ids:
        ch = s.get_chassis(i)
        assert ch.chassis_type == sushy.ChassisType.MODULE
        assert ch.power_state == sushy.PowerState.ON
        assert ch.status.health == sushy.Health.OK and ch.model == "colossus-mcm"

    summary = svc.stop()  # the gateway counts what it refused, by message
    assert "7 refused" in summary and "PropertyValueTypeError 2" in summary and "MalformedJSON 1" in summary, summary


@pytest.mark.slow
def test_sushy_reads_every_sensor_and_sets_the_power_limit(redfish_service):
    svc = redfish_service
    conn = sushy.connector.Connector(svc.url)
    auth = sushy.auth.SessionAuth(username=OPERATOR[0], password=OPERATOR[1])
    s = sushy.Sushy(svc.url + "/redfish/v1", auth=auth, connector=conn)
    try:
        # what sushy models: the modules
        ids = sorted(s.get_chassis_collection().members_identities)
        assert ids == ["/redfish/v1/Chassis/0", "/redfish/v1/Chassis/1"]
        for i in ids:
            ch = s.get_chassis(i)
            assert ch.chassis_type == sushy.ChassisType.MODULE and ch.model == "colossus-mcm"
            assert ch.power_state == sushy.PowerState.ON
            assert ch.status.health == sushy.Health.OK and ch.status.state == sushy.State.ENABLED
            assert ch.get_allowed_reset_chassis_values() == {sushy.ResetType.FORCE_RESTART}

            # what it does not (Sensor): through its connector, on its session
            node = int(ch.identity)
            status = ctl_status(svc, node)
            members = conn.get(f"{i}/Sensors").json()["Members"]
            readings = {}
            for m in members:
                body = conn.get(m["@odata.id"]).json()
                assert body["ReadingUnits"] == UNITS[body["ReadingType"]], body
                assert isinstance(body["Reading"], (int, float)) and body["Status"]["State"] == "Enabled", body
                readings[body["Id"]] = body["Reading"]
            n_dies, n_hbm = len(status["dies"]), len(status["hbm"])
            assert len(readings) == 6 + 4 * n_dies + n_hbm + len(status["pumps"]) + len(status["valves"])
            assert abs(readings["CoolantInletTemp"] - status["inlet_c"]) < 2.0
            assert math.isclose(readings["TotalPower"], status["power_w"], rel_tol=0.2)
        assert auth.get_session_key(), "sushy did not open a session"  # the reads went on it

        # the power limit: a PATCH through sushy's connector; the node enforces it and its power follows
        uri = "/redfish/v1/Chassis/0/Controls/PowerLimit"
        control = conn.get(uri).json()
        r = conn.patch(uri, data={"SetPoint": 780})
        assert r.status_code == 200 and r.json()["SetPoint"] == 780.0, r.text
        assert ctl_status(svc, 0)["power_cap_w"] == 780.0 and ctl_status(svc, 1)["power_cap_w"] != 780.0
        deadline = time.monotonic() + 15  # the module's power follows within a few seconds
        while conn.get("/redfish/v1/Chassis/0/Sensors/TotalPower").json()["Reading"] > 780 * 1.05:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        assert s.get_chassis("/redfish/v1/Chassis/0").status.health == sushy.Health.OK
        # a refusal is sushy's BadRequestError, with the Base registry's message
        with pytest.raises(sushy.exceptions.BadRequestError) as refused:
            conn.patch(uri, data={"SetPoint": control["AllowableMax"] + 1})
        assert refused.value.code == "Base.1.22.PropertyValueOutOfRange", refused.value.body
        r = conn.patch(uri, data={"SetPoint": None})
        assert r.status_code == 200 and r.json()["SetPoint"] is None
        assert ctl_status(svc, 0)["power_cap_w"] == control["Oem"]["McmEmu"]["DefaultWatts"]
    finally:
        auth.close()
