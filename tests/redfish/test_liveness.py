"""What the service shows of nodes it cannot hear: a broker gone (every node silent, commands
refused with 503), the broker back (the service connects again, commands work again), a node
killed (its DEATH, published by the broker as its Last Will)."""

from __future__ import annotations

import json
import signal
import time

import pytest
import requests

from ..conftest import run_cli
from .conftest import OPERATOR


def wait_for(svc, path: str, check, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = svc.get(path).json()
        if check(body):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


@pytest.mark.slow
def test_silent_nodes_are_offline_and_the_service_reconnects(redfish_service, mosquitto):
    svc = redfish_service
    control = "/redfish/v1/Chassis/0/Controls/PowerLimit"
    wait_for(svc, "/redfish/v1/Chassis/0", lambda b: b["Status"]["State"] == "Enabled", 10)

    mosquitto.stop()
    t0 = time.monotonic()
    body = wait_for(svc, "/redfish/v1/Chassis/0", lambda b: b["Status"]["State"] == "UnavailableOffline", 10)
    assert time.monotonic() - t0 < 5 and body["PowerState"] is None
    sensor = svc.get("/redfish/v1/Chassis/0/Sensors/Die0Temp").json()
    assert sensor["Status"]["State"] == "UnavailableOffline"
    r = requests.patch(svc.url + control, json={"SetPoint": 900}, auth=OPERATOR, timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "Base.1.22.ServiceTemporarilyUnavailable"

    mosquitto.start()  # the same port: nodes and service connect again
    wait_for(svc, "/redfish/v1/Chassis/0", lambda b: b["Status"]["State"] == "Enabled")
    deadline = time.monotonic() + 20
    while (
        r := requests.patch(svc.url + control, json={"SetPoint": 900}, auth=OPERATOR, timeout=10)
    ).status_code != 200:
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        time.sleep(0.5)
    status = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "0", "status", "--json")
    assert json.loads(status.stdout)["power_cap_w"] == 900.0

    svc.run.proc.kill()  # no clean DEATH: the broker publishes the node's Last Will
    body = wait_for(svc, "/redfish/v1/Chassis/1", lambda b: b["Status"]["State"] == "UnavailableOffline", 15)
    assert body["Oem"]["McmEmu"]["DeathReason"] == "CONNECTION_LOST" and body["PowerState"] is None
    svc.gateway.signal(signal.SIGTERM)
    assert svc.gateway.wait() == 0
