"""Authentication and roles of the Redfish service: what DSP0266 leaves open, Basic auth, sessions
(login, token, logout), ReadOnly refused a write."""

from __future__ import annotations

import pytest
import requests

from .conftest import OPERATOR, READONLY


@pytest.mark.slow
def test_open_documents_credentials_roles_and_sessions(redfish_service):
    svc = redfish_service
    control = "/redfish/v1/Chassis/0/Controls/PowerLimit"

    # DSP0266: the version document, the service root, $metadata and the OData document need no credentials
    for path in ("/redfish", "/redfish/v1/", "/redfish/v1", "/redfish/v1/odata", "/redfish/v1/$metadata"):
        r = svc.get(path, auth=None)
        assert r.status_code == 200 and r.headers["OData-Version"] == "4.0", path
    assert (
        '<edmx:Reference Uri="http://redfish.dmtf.org/schemas/v1/Chassis_v1.xml">'
        in svc.get("/redfish/v1/$metadata", auth=None).text
    )

    # everything else does: 401 without, or with wrong ones
    for path in ("/redfish/v1/Chassis", "/redfish/v1/Chassis/0/Sensors/TotalPower", "/redfish/v1/SessionService"):
        for auth in (None, (OPERATOR[0], "wrong"), ("nobody", OPERATOR[1])):
            r = svc.get(path, auth=auth)
            assert r.status_code == 401 and r.json()["error"]["code"] == "Base.1.22.NoValidSession", (path, auth)
            assert r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(svc.url + "/redfish/v1/Chassis", headers={"X-Auth-Token": "forged"}, timeout=10)
    assert r.status_code == 401

    # ReadOnly reads, and is refused a write; Operator may write
    assert svc.get(control, auth=READONLY).status_code == 200
    r = requests.patch(svc.url + control, json={"SetPoint": 900}, auth=READONLY, timeout=10)
    assert r.status_code == 403 and r.json()["error"]["code"] == "Base.1.22.InsufficientPrivilege"
    assert svc.get(control).json()["SetPoint"] is None  # nothing changed
    r = requests.patch(svc.url + control, json={"SetPoint": 900}, auth=OPERATOR, timeout=10)
    assert r.status_code == 200 and r.json()["SetPoint"] == 900.0

    # a session: login (no credentials needed to ask), token, Location, logout
    sessions = svc.url + "/redfish/v1/SessionService/Sessions"
    r = requests.post(sessions, json={"UserName": READONLY[0], "Password": "wrong"}, timeout=10)
    assert r.status_code == 401 and "X-Auth-Token" not in r.headers
    r = requests.post(sessions, json={"UserName": READONLY[0]}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Base.1.22.PropertyMissing"
    r = requests.post(sessions, json={"UserName": READONLY[0], "Password": READONLY[1]}, timeout=10)
    assert r.status_code == 201, r.text
    token, location = r.headers["X-Auth-Token"], r.headers["Location"]
    assert location == r.json()["@odata.id"] and r.json()["UserName"] == READONLY[0]
    assert r.json()["Password"] is None
    tok = {"X-Auth-Token": token}
    assert requests.get(svc.url + "/redfish/v1/Chassis", headers=tok, timeout=10).status_code == 200
    listed = requests.get(sessions, headers=tok, timeout=10).json()["Members"]
    assert {"@odata.id": location} in listed
    r = requests.patch(svc.url + control, json={"SetPoint": 700}, headers=tok, timeout=10)
    assert r.status_code == 403  # the session has the account's role
    assert requests.delete(svc.url + location, headers=tok, timeout=10).status_code == 204
    assert requests.get(svc.url + "/redfish/v1/Chassis", headers=tok, timeout=10).status_code == 401
    assert svc.get(location).status_code == 404

    # methods a resource does not take, URIs that are not there
    r = requests.delete(svc.url + "/redfish/v1/Chassis/0", auth=OPERATOR, timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "Base.1.22.OperationNotAllowed"
    assert "GET" in r.headers["Allow"]
    for path in ("/redfish/v1/Chassis/7", "/redfish/v1/Chassis/0/Sensors/Nope", "/redfish/v1/Systems", "/redfish/v2"):
        r = svc.get(path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "Base.1.22.ResourceMissingAtURI", path
    summary = svc.stop()
    assert "0 refused" not in summary and "InsufficientPrivilege 2" in summary, summary
