"""Whatever a client sends, the service answers with a Redfish status and, for a refusal, a Base
registry message; it never answers 500 and keeps serving: a few hundred seeded random requests
(methods, mutated URIs, query parameters, bodies, credentials) against the live service."""

from __future__ import annotations

import base64
import json
import random

import pytest
import requests

from .conftest import OPERATOR, READONLY

METHODS = ["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"]
URIS = [
    "/redfish",
    "/redfish/v1/",
    "/redfish/v1/$metadata",
    "/redfish/v1/odata",
    "/redfish/v1/Chassis",
    "/redfish/v1/Chassis/0",
    "/redfish/v1/Chassis/1/Sensors",
    "/redfish/v1/Chassis/1/Sensors/Die0Temp",
    "/redfish/v1/Chassis/0/Controls/PowerLimit",
    "/redfish/v1/Chassis/0/ThermalSubsystem/Pumps/1",
    "/redfish/v1/Chassis/0/ThermalSubsystem/CoolantConnectors/ColdPlate",
    "/redfish/v1/SessionService/Sessions",
    "/redfish/v1/Schemas/McmEmu_v1.xml",
    "/redfish/v1/Chassis/1/Memory/HBM3/MemoryMetrics",
    "/redfish/v1/Chassis/0/LogServices/EventLog/Entries",
    "/redfish/v1/Chassis/0/Actions/Chassis.Reset",
    "/redfish/v1/Chassis/1/Controls/Valve0",
    "/redfish/v1/EventService",
    "/redfish/v1/EventService/Subscriptions",
    "/redfish/v1/Registries/McmEmu",
]
SUFFIXES = ["", "/", "/x", "/..", "/%00", "/%ff", "/0", "/-1", "/00", "/1e3", "/" + "A" * 3000, "/Sensors/../..", "//"]
QUERIES = ["", "", "", "?$expand=*", "?$select=Id", "?only", "?excerpt", "?foo=bar", "?$top=-1", "?a=%ff"]


def body(rng: random.Random) -> bytes | None:
    kind = rng.randrange(9)
    if kind == 0:
        return None
    if kind == 1:
        return rng.randbytes(rng.randrange(1, 200))
    if kind == 2:
        return b"[" * 20000 + b"]" * 20000  # nested too deep for a recursive parser
    if kind == 3:
        return json.dumps(rng.choice([1, "x", None, [], True, 1e308])).encode()
    if kind == 4:
        return b'{"SetPoint": NaN}'
    if kind == 5:
        return json.dumps({"SetPoint": rng.choice([-1, 0, 1e9, "800", [800], {"a": 1}, None, 2**70])}).encode()
    if kind == 6:
        return json.dumps(
            {"UserName": rng.choice([OPERATOR[0], 1, None]), "Password": rng.choice(["x", 2, None])}
        ).encode()
    if kind == 7:
        return json.dumps({rng.choice(["Id", "Oem", "@odata.id", "Status", "Zz"]): rng.random()}).encode()
    return b"\xef\xbb\xbf{}"  # a byte-order mark


def credentials(rng: random.Random) -> dict[str, str]:
    kind = rng.randrange(6)
    if kind == 0:
        return {}
    if kind == 1:
        return {"Authorization": "Basic " + base64.b64encode(f"{OPERATOR[0]}:{OPERATOR[1]}".encode()).decode()}
    if kind == 2:
        return {"Authorization": "Basic " + base64.b64encode(f"{READONLY[0]}:{READONLY[1]}".encode()).decode()}
    if kind == 3:
        return {
            "Authorization": rng.choice(
                ["Basic !!!", "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Bearer x", "Basic"]
            )
        }
    if kind == 4:
        return {"X-Auth-Token": rng.choice(["", "x" * 500, "%00"])}
    return {"Authorization": "Basic " + base64.b64encode(b"nobody:" + rng.randbytes(8).hex().encode()).decode()}


@pytest.mark.slow
def test_no_request_breaks_the_service(redfish_service):
    svc = redfish_service
    rng = random.Random(20260)
    statuses: dict[int, int] = {}
    control = svc.url + "/redfish/v1/Chassis/0/Controls/PowerLimit"
    for data, message in (
        (b"[" * 20000 + b"]" * 20000, "MalformedJSON"),
        (b"\xff\xfe", "MalformedJSON"),
        (b'{"SetPoint": NaN}', "PropertyValueOutOfRange"),
        (b'{"SetPoint": 1e400}', "PropertyValueOutOfRange"),
        (json.dumps({"SetPoint": 2**70}).encode(), "PropertyValueOutOfRange"),
        (b"x" * 70000, None),  # above the 64 KiB a body may have
    ):
        r = requests.patch(control, data=data, auth=OPERATOR, timeout=10)
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        if message is None:
            assert r.status_code == 413 and r.json()["error"]["code"] == "Base.1.22.GeneralError", r.text
        else:
            assert r.status_code == 400 and r.json()["error"]["code"] == f"Base.1.22.{message}", (data[:20], r.text)
    # every resource that takes a body refuses a bad one with a Base message
    for method, uri, data, message in (
        ("PATCH", "/redfish/v1/EventService", b'{"DeliveryRetryAttempts": -1}', "PropertyValueOutOfRange"),
        ("POST", "/redfish/v1/EventService/Subscriptions", b"[]", "MalformedJSON"),
        (
            "POST",
            "/redfish/v1/Chassis/0/Actions/Chassis.Reset",
            b'{"ResetType": "On"}',
            "ActionParameterValueNotInList",
        ),
        ("PATCH", "/redfish/v1/Chassis/1/Controls/Valve0", b'{"SetPoint": NaN}', "PropertyValueOutOfRange"),
        ("POST", "/redfish/v1/SessionService/Sessions", b'{"UserName": 1, "Password": ""}', "PropertyValueTypeError"),
    ):
        r = requests.request(method, svc.url + uri, data=data, auth=OPERATOR, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["code"] == f"Base.1.22.{message}", (uri, r.text)
    with requests.Session() as http:
        for _ in range(400):
            method = rng.choice(METHODS)
            uri = rng.choice(URIS) + rng.choice(SUFFIXES) + rng.choice(QUERIES)
            data = body(rng)
            r = http.request(method, svc.url + uri, data=data, headers=credentials(rng), timeout=10)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            # 503: a command (a reset, a valve, a limit) the node did not answer in time, under load
            assert r.status_code in (200, 201, 204, 400, 401, 403, 404, 405, 413, 501, 503), (method, uri, data, r.text)
            if r.status_code >= 400 and method != "HEAD":
                code = r.json()["error"]["code"]
                assert code.startswith("Base.1.22."), (method, uri, r.text)
    assert statuses.get(401, 0) and statuses.get(404, 0) and statuses.get(400, 0), sorted(statuses.items())
    # still serving, and counting what it refused
    assert svc.get("/redfish/v1/Chassis/0/Sensors/TotalPower").json()["Reading"] > 0
    summary = svc.stop()
    assert "InternalError" not in summary, summary
