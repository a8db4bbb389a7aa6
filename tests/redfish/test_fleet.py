"""One live fleet (Mosquitto, ``mcm-emu run``, ``mcm-emu redfish``) for the module: what a fault
injected over the binary protocol does to the module's Redfish resources (memory, logs, events)."""

from __future__ import annotations

import json
import time

import pytest
import requests

from ..conftest import run_cli
from .conftest import OPERATOR

pytestmark = pytest.mark.slow


def ctl(svc, node: int, *args: str) -> dict:
    r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "--json", str(node), *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def until(fn, timeout: float = 20.0, step: float = 0.05):  # a bound for a hang, not a speed
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


class Receiver:
    """A real HTTP event listener on loopback: records every POST (time, body); answers the first
    ``refuse`` of them 503."""

    def __init__(self, refuse: int = 0) -> None:
        import http.server
        import threading

        self.got: list[tuple[float, dict]] = []
        self.answered: list[int] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = 503 if len(outer.answered) < refuse else 204
                outer.answered.append(code)
                if code == 204:
                    outer.got.append((time.time(), body))
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def events(self) -> list[tuple[float, dict]]:
        return [(t, e) for t, body in list(self.got) for e in body["Events"]]


class SseClient:
    """Reads the service's SSE stream in a thread: (time, id, Event) per event."""

    def __init__(self, svc, params: dict[str, str] | None = None) -> None:
        import threading

        self.resp = requests.get(
            svc.url + "/redfish/v1/EventService/SSE", params=params, auth=svc_auth(), stream=True, timeout=30
        )
        assert self.resp.status_code == 200 and self.resp.headers["Content-Type"].startswith("text/event-stream")
        self.got: list[tuple[float, str, dict]] = []
        self.thread = threading.Thread(target=self._read, name="sse", daemon=True)
        self.thread.start()

    def _read(self) -> None:
        eid = ""
        try:
            for line in self.resp.iter_lines(decode_unicode=True):
                if line.startswith("id: "):
                    eid = line[4:]
                elif line.startswith("data: "):
                    self.got.append((time.time(), eid, json.loads(line[6:])))
        except (requests.RequestException, OSError, ValueError, AttributeError):  # closed under the reader
            pass

    def close(self, wait: float = 5.0) -> None:
        import contextlib
        import socket

        with contextlib.suppress(AttributeError, OSError):  # else closing waits for the stream's next line
            self.resp.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        self.resp.close()
        self.thread.join(wait)

    def events(self) -> list[tuple[float, dict]]:
        return [(t, e) for t, _, body in list(self.got) for e in body["Events"]]


def svc_auth():
    from .conftest import OPERATOR

    return OPERATOR


def test_events_are_pushed_with_retries_and_streamed(shared_service):
    from .conftest import READONLY

    svc = shared_service
    subs = "/redfish/v1/EventService/Subscriptions"
    es = svc.get("/redfish/v1/EventService").json()
    assert es["ServerSentEventUri"] == "/redfish/v1/EventService/SSE" and es["DeliveryRetryAttempts"] == 3

    def post(path: str, body: object, auth: tuple[str, str] | None = None):
        return requests.post(svc.url + path, json=body, auth=auth or svc_auth(), timeout=10)

    def patch(path: str, body: object):
        return requests.patch(svc.url + path, json=body, auth=svc_auth(), timeout=10)

    # bad subscriptions refused with the Base registry's messages
    for body, code in (
        ({"Destination": "http://127.0.0.1:1/x"}, "PropertyMissing"),
        ({"Destination": "ftp://example/x", "Protocol": "Redfish"}, "PropertyValueFormatError"),
        ({"Destination": "http://127.0.0.1:1/x", "Protocol": "SNMPv2c"}, "PropertyValueNotInList"),
        ({"Destination": "http://127.0.0.1:1/x", "Protocol": "Redfish", "Colour": 1}, "PropertyUnknown"),
        ({"Destination": 5, "Protocol": "Redfish"}, "PropertyValueTypeError"),
    ):
        r = post(subs, body)
        assert r.status_code == 400 and r.json()["error"]["code"].endswith(code), (body, r.text)
    assert post(subs, {"Destination": "http://127.0.0.1:1/x", "Protocol": "Redfish"}, auth=READONLY).status_code == 403
    assert patch("/redfish/v1/EventService", {"DeliveryRetryIntervalSeconds": 0}).status_code == 400
    assert patch("/redfish/v1/EventService", {"DeliveryRetryIntervalSeconds": 1}).status_code == 200

    flaky = Receiver(refuse=2)  # the first two deliveries answered 503: retried
    sse = SseClient(svc)
    try:
        r = post(subs, {"Destination": flaky.url, "Protocol": "Redfish", "Context": "ops-1",
                        "RegistryPrefixes": ["Environmental", "ResourceEvent"]})  # fmt: skip
        assert r.status_code == 201, r.text
        sub = r.headers["Location"]
        assert svc.get(sub).json()["Destination"] == flaky.url
        gone = post(subs, {"Destination": "http://127.0.0.1:9/none", "Protocol": "Redfish",
                           "DeliveryRetryPolicy": "SuspendRetries"}).headers["Location"]  # fmt: skip

        name = svc.get("/redfish/v1/Chassis/1/ThermalSubsystem/Pumps/0").json()["Name"].removeprefix("Pump ")
        ctl(svc, 1, "inject", "pump-fail", name)

        def first(source, message_id: str):
            return next(((t, e) for t, e in source.events() if e["MessageId"] == message_id), None)

        t_sse, e_sse = until(lambda: first(sse, "Environmental.1.4.PumpFailed"))
        assert e_sse["Message"] == f"Pump '{name}' has failed."
        assert e_sse["OriginOfCondition"]["@odata.id"] == "/redfish/v1/Chassis/1/ThermalSubsystem/Pumps/0"
        t_push, _ = until(lambda: first(flaky, "Environmental.1.4.PumpFailed"), timeout=10)
        assert flaky.answered[:3] == [503, 503, 204]  # delivered at the third attempt, 1 s apart
        assert flaky.got[0][1]["Context"] == "ops-1"
        health = until(lambda: first(flaky, "ResourceEvent.1.4.ResourceStatusChangedWarning"), timeout=10)[1]
        assert health["MessageArgs"] == ["/redfish/v1/Chassis/1", "Warning"]
        # the registry filter: no McmEmu message (the FAULT_INJECTED event) pushed, but streamed
        assert not [e for _, e in flaky.events() if e["MessageId"].startswith("McmEmu.")]
        until(lambda: first(sse, "McmEmu.1.0.FaultInjected"))
        # a destination that never answers: suspended after the retries (1 + 3 attempts, 1 s apart)
        until(lambda: svc.get(gone).json()["Status"]["State"] == "Disabled", timeout=10)
        import datetime as dt

        t0 = dt.datetime.fromisoformat(e_sse["EventTimestamp"].replace("Z", "+00:00")).timestamp()
        assert t_sse - t0 < 1.0  # the node's event, streamed within a fraction of a second
        print(
            f"pump fault: on the SSE stream {(t_sse - t0) * 1e3:.0f} ms after the node's event, "
            f"pushed {(t_push - t0) * 1e3:.0f} ms after it (the subscription's first delivery refused twice, "
            f"delivered at the third attempt)"
        )
        assert requests.delete(svc.url + sub, auth=svc_auth(), timeout=10).status_code == 204
        assert svc.get(sub).status_code == 404
        assert requests.delete(svc.url + gone, auth=svc_auth(), timeout=10).status_code == 204
    finally:
        sse.close()
        flaky.close()
        patch("/redfish/v1/EventService", {"DeliveryRetryIntervalSeconds": 5})


def test_chassis_reset_and_a_valve_held_through_its_control(shared_service):
    from .conftest import READONLY

    svc = shared_service
    chassis = svc.get("/redfish/v1/Chassis/1").json()
    action = chassis["Actions"]["#Chassis.Reset"]
    info = svc.get(action["@Redfish.ActionInfo"]).json()
    assert info["Parameters"][0]["AllowableValues"] == ["ForceRestart"] == action["ResetType@Redfish.AllowableValues"]

    def post(path: str, body: object | None, auth=None):
        kw = {"json": body} if body is not None else {}
        return requests.post(svc.url + path, auth=auth or svc_auth(), timeout=10, **kw)

    for body, code in (
        ({"ResetType": "PowerCycle"}, "ActionParameterValueNotInList"),
        ({"ResetType": 1}, "ActionParameterValueTypeError"),
        ({"Colour": "red"}, "ActionParameterUnknown"),
    ):
        r = post(action["target"], body)
        assert r.status_code == 400 and r.json()["error"]["code"].endswith(code), r.text
    assert post(action["target"], {}, auth=READONLY).status_code == 403
    assert svc.get(action["target"]).status_code == 405
    entries = "/redfish/v1/Chassis/1/LogServices/EventLog/Entries"
    seen = {m["Id"] for m in svc.get(entries).json()["Members"]}
    assert post(action["target"], {"ResetType": "ForceRestart"}).status_code == 204
    assert post(action["target"], None).status_code == 204  # no body: the default reset
    done = until(lambda: [m for m in svc.get(entries).json()["Members"]
                          if m["Id"] not in seen and m["MessageId"] == "McmEmu.1.0.ResetDone"])  # fmt: skip
    assert done[0]["Message"].startswith("The module reported reset done")

    valve = "/redfish/v1/Chassis/1/Controls/Valve0"
    ctl_ = svc.get(valve).json()
    assert (ctl_["ControlType"], ctl_["ControlMode"], ctl_["SetPointUnits"]) == ("Valve", "Automatic", "%")
    for body, code in (
        ({"SetPoint": 150}, "PropertyValueOutOfRange"),
        ({"ControlMode": "Manual"}, "PropertyValueNotInList"),
        ({"SetPoint": "half"}, "PropertyValueTypeError"),
        ({"AllowableMax": 50}, "PropertyNotWritable"),
    ):
        r = requests.patch(svc.url + valve, json=body, auth=svc_auth(), timeout=10)
        assert r.status_code == 400 and r.json()["error"]["code"].endswith(code), r.text
    r = requests.patch(svc.url + valve, json={"SetPoint": 30}, auth=svc_auth(), timeout=10)
    assert r.status_code == 200 and (r.json()["ControlMode"], r.json()["SetPoint"]) == ("Override", 30), r.text
    until(lambda: abs(svc.get(valve).json()["Sensor"]["Reading"] - 30) < 1.0, timeout=15, step=0.2)
    r = requests.patch(svc.url + valve, json={"ControlMode": "Automatic"}, auth=svc_auth(), timeout=10)
    assert r.status_code == 200 and (r.json()["ControlMode"], r.json()["SetPoint"]) == ("Automatic", None), r.text


def test_https_with_the_certificate_the_fleet_ca_issued(shared_service, tmp_path):
    """``mcm-emu broker-config --tls-ca-cert/--tls-ca-key`` issues the Redfish service's certificate
    (``certs/redfish.crt``: 127.0.0.1, localhost and each ``--redfish-host``) from the fleet's CA;
    ``mcm-emu redfish --https-cert --https-key`` serves with it: a client that trusts the fleet's CA
    reads it by address or by name, one that trusts another CA or speaks plain HTTP does not; a
    certificate without its key is refused at start (exit 2)."""
    import os
    import pwd

    from cryptography import x509

    from mcm_firmware.cli import certs

    from ..conftest import CliProcess

    svc = shared_service
    (tmp_path / "host.pw").write_text("host-secret-1\n")
    r = run_cli(
        *("broker-config", "--fleet", svc.fleet, "--nodes", "2", "--node-secret", str(tmp_path / "node.secret")),
        *("--host-password-file", str(tmp_path / "host.pw"), "--out", str(tmp_path / "broker")),
        *("--tls-ca-cert", str(tmp_path / "ca.pem"), "--tls-ca-key", str(tmp_path / "ca.key")),
        *("--redfish-host", "redfish.fleet.example", "--redfish-host", "10.1.2.3"),
        *("--broker-user", pwd.getpwuid(os.geteuid()).pw_name),
    )
    assert r.returncode == 0, r.stderr
    server_pem, server_key = (
        tmp_path / "broker" / "certs" / "redfish.crt",
        tmp_path / "broker" / "certs" / "redfish.key",
    )
    assert f"--https-cert {server_pem} --https-key {server_key}" in r.stdout, r.stdout
    assert server_key.stat().st_mode & 0o077 == 0
    issued = x509.load_pem_x509_certificate(server_pem.read_bytes())
    names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "10.1.2.3"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "redfish.fleet.example"]
    half = run_cli("redfish", "--broker", svc.broker, "--fleet", svc.fleet, "--https-cert", str(server_pem))
    assert half.returncode == 2 and "both a certificate and its key" in half.stderr, half.stderr
    gw = CliProcess(
        "redfish", "--broker", svc.broker, "--fleet", svc.fleet, "--port", "0",
        "--https-cert", str(server_pem), "--https-key", str(server_key),
    )  # fmt: skip
    try:
        line = gw.wait_line("redfish: http")
        assert line.startswith("redfish: https://127.0.0.1:") and line.endswith("/redfish/v1/"), line
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        password = gw.wait_line("account operator").rsplit(" ", 1)[1]
        url = f"https://127.0.0.1:{port}/redfish/v1/Chassis/0"
        r = until(lambda: (r := requests.get(url, auth=("operator", password), verify=str(tmp_path / "ca.pem"),
                                             timeout=10)).status_code == 200 and r)  # fmt: skip
        assert r.json()["Id"] == "0"
        by_name = requests.get(url.replace("127.0.0.1", "localhost"), auth=("operator", password),
                               verify=str(tmp_path / "ca.pem"), timeout=10)  # fmt: skip
        assert by_name.status_code == 200 and by_name.json()["Id"] == "0"
        certs.load_or_create_ca(tmp_path / "other.pem", tmp_path / "other.key", "another CA")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(url, verify=str(tmp_path / "other.pem"), timeout=10)
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/redfish/v1/", timeout=10).raise_for_status()
    finally:
        import signal

        gw.signal(signal.SIGTERM)
        assert gw.wait() == 0
        gw.close()


def interop(svc, profile, logs) -> tuple[int, tuple[int, int, int, int], str]:
    """Run DMTF's Redfish Interop Validator with ``profile``: exit code, (pass, warn, fail, not
    tested), output."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    from .conftest import OPERATOR

    tool = Path(sys.executable).with_name("rf_interop_validator")
    r = subprocess.run(
        [str(tool), "--rhost", svc.url, "-u", OPERATOR[0], "-p", OPERATOR[1], "--authtype", "Basic",
         "--logdir", str(logs), str(profile)],
        capture_output=True, text=True, timeout=600, cwd=logs.parent,
    )  # fmt: skip
    out = r.stdout + r.stderr
    rows = re.findall(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*$", out, re.M)
    assert rows, out[-3000:]
    p, w, f, n = map(int, rows[-1])
    return r.returncode, (p, w, f, n), out


def test_the_interop_validator_finds_the_profile_met(shared_service, tmp_path):
    """DMTF's Redfish Interop Validator against the product's own profile
    (tests/data/redfish/profile/McmEmu.v1_0_0.json): every requirement met; a profile asking for
    what the service lacks fails."""
    from .conftest import VENDORED

    path = VENDORED / "profile" / "McmEmu.v1_0_0.json"
    code, (passed, warned, failed, untested), out = interop(shared_service, path, tmp_path / "logs")
    assert code == 0 and failed == 0 and warned == 0, out[-3000:]
    assert passed > 500, out[-3000:]
    for uri in ("/redfish/v1/Chassis/0/Memory/HBM7/MemoryMetrics", "/redfish/v1/Chassis/1/Controls/Valve3",
                "/redfish/v1/Chassis/0/LogServices/EventLog", "/redfish/v1/EventService",
                "/redfish/v1/ThermalEquipment/CoolingLoops/1"):  # fmt: skip
        assert f"Validating {uri}..." in out, uri
    print(f"interop validator: pass {passed}, warn {warned}, fail {failed}, not tested {untested}")
    profile = json.loads(path.read_text())
    profile["Resources"]["Chassis"]["PropertyRequirements"]["SerialNumber"] = {"ReadRequirement": "Mandatory"}
    (tmp_path / "strict.json").write_text(json.dumps(profile))
    code, (_, _, failed, _), out = interop(shared_service, tmp_path / "strict.json", tmp_path / "logs2")
    assert code != 0 and failed >= 2, out[-3000:]  # no module has a serial number


def test_a_row_remap_waits_in_its_stack_until_the_chassis_reset(shared_service):
    svc = shared_service
    hbm2 = "/redfish/v1/Chassis/0/Memory/HBM2"
    assert svc.get(hbm2).json()["Status"]["Health"] == "OK"
    ctl(svc, 0, "inject", "hbm-flip", "0x944d2310", "2")  # two bits of one word: a UE in stack 2
    until(lambda: svc.get(f"{hbm2}/MemoryMetrics").json()["CurrentPeriod"]["UncorrectableECCErrorCount"] > 0)
    until(lambda: svc.get("/redfish/v1/Chassis/0").json()["Oem"]["McmEmu"]["MemoryRowRemapPending"])
    ctl(svc, 0, "clear-ras")  # the counts go, the remap still waits
    until(lambda: svc.get(f"{hbm2}/MemoryMetrics").json()["CurrentPeriod"]["UncorrectableECCErrorCount"] == 0)
    assert svc.get(hbm2).json()["Status"]["Health"] == "Warning"
    assert svc.get("/redfish/v1/Chassis/0/Memory/HBM1").json()["Status"]["Health"] == "OK"
    r = requests.post(svc.url + "/redfish/v1/Chassis/0/Actions/Chassis.Reset", json={}, auth=svc_auth(), timeout=10)
    assert r.status_code == 204, r.text
    until(lambda: svc.get(hbm2).json()["Status"]["Health"] == "OK")
    assert svc.get("/redfish/v1/Chassis/0").json()["Oem"]["McmEmu"]["MemoryRowsRemappedUncorrectable"] >= 1


def test_the_aggregation_service_names_the_broker_and_the_fleet_as_an_aggregate(shared_service):
    svc = shared_service
    agg = svc.get("/redfish/v1/").json()["AggregationService"]["@odata.id"]
    body = svc.get(agg).json()
    assert body["ServiceEnabled"] is True and body["Status"]["State"] == "Enabled"
    chassis = [m["@odata.id"] for m in svc.get("/redfish/v1/Chassis").json()["Members"]]
    assert chassis == ["/redfish/v1/Chassis/0", "/redfish/v1/Chassis/1"]

    sources = svc.get(body["AggregationSources"]["@odata.id"]).json()["Members"]
    assert [s["@odata.id"] for s in sources] == [f"{agg}/AggregationSources/{svc.fleet}"]
    src = svc.get(sources[0]["@odata.id"]).json()
    assert src["HostName"] == svc.broker.split("?")[0]  # the broker the service reaches the fleet through
    assert src["AggregationType"] == "Full" and src["Status"]["State"] == "Enabled"
    assert [r["@odata.id"] for r in src["Links"]["ResourcesAccessed"]] == chassis
    method = svc.get(src["Links"]["ConnectionMethod"]["@odata.id"]).json()
    assert method["ConnectionMethodType"] == "OEM" and "MQTT" in method["ConnectionMethodVariant"]
    assert method["Links"]["AggregationSources"] == [{"@odata.id": sources[0]["@odata.id"]}]

    members = svc.get(body["Aggregates"]["@odata.id"]).json()["Members"]
    aggregate = svc.get(members[0]["@odata.id"]).json()
    assert [e["@odata.id"] for e in aggregate["Elements"]] == chassis and aggregate["ElementsCount"] == 2
    for missing in ("Aggregates/other", "AggregationSources/other", "ConnectionMethods/x", "Nothing"):
        r = svc.get(f"{agg}/{missing}")
        assert r.status_code == 404 and r.json()["error"]["@Message.ExtendedInfo"][0]["MessageId"].endswith(
            "ResourceMissingAtURI"
        )
    r = requests.patch(svc.url + agg, json={"ServiceEnabled": False}, auth=OPERATOR, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD"


def test_the_gateway_counts_the_telemetry_it_takes_in(shared_service):
    """SIGUSR1: the gateway's counts as one JSON line; every telemetry frame of the 2 modules at
    10 Hz received and taken in, none rejected; most kept raw (decoded when read)."""
    import signal

    svc = shared_service

    def stats() -> dict:
        def lines() -> list[str]:
            return [ln for ln in list(svc.gateway.lines) if ln.startswith('{"redfish"')]

        before = len(lines())
        svc.gateway.signal(signal.SIGUSR1)
        until(lambda: len(lines()) > before)
        return json.loads(lines()[-1])["redfish"]

    first = stats()
    time.sleep(1.0)
    second = stats()
    assert second["nodes"] == 2 and second["rejected"] == 0
    got = second["telemetry_received"] - first["telemetry_received"]
    assert 10 <= got <= 30  # 2 modules at 10 Hz for about a second
    assert second["telemetry_decoded_on_arrival"] < second["telemetry_received"]
    assert 0 <= second["telemetry_age_max_s"] < 5


def test_the_sse_stream_takes_a_filter(shared_service):
    """DSP0266's $filter of an SSE stream (EventFormatType, MessageId, MetricReportDefinition,
    OriginResource, RegistryPrefix, ResourceType; eq, and, or): each stream gets only what its
    filter lets through; a filter that cannot be used is refused naming what is wrong."""
    svc = shared_service
    sse = "/redfish/v1/EventService/SSE"
    for text, part in (
        ("Severity eq 'Critical'", "Severity"),
        ("MessageId ne 'x'", "MessageId ne"),
        ("(MessageId eq 'x'", "(MessageId eq 'x'"),
        ("MessageId eq 'x' or", "MessageId eq 'x' or"),
        ("MessageId eq 'x' MessageId", "MessageId"),
        ("", ""),
    ):
        r = svc.get(sse, params={"$filter": text})
        assert r.status_code == 400, (text, r.text)
        msg = r.json()["error"]["@Message.ExtendedInfo"][0]
        assert msg["MessageId"] == "Base.1.22.QueryParameterValueFormatError" and msg["MessageArgs"] == [
            part,
            "$filter",
        ]
    assert svc.get(sse, params={"$expand": "*"}).status_code == 501  # other query parameters still refused
    chassis0 = "/redfish/v1/Chassis/0"
    wants = {  # each stream's filter, and what it lets through (MessageId, origin) in plain Python
        "injected": ("MessageId eq 'McmEmu.FaultInjected'", lambda m, o: m == "McmEmu.1.0.FaultInjected"),
        "node0": (f"OriginResource eq '{chassis0}' and (RegistryPrefix eq McmEmu or RegistryPrefix eq ResourceEvent)",
                  lambda m, o: o == chassis0 and m.split(".")[0] in ("McmEmu", "ResourceEvent")),
        "pumps": ("ResourceType eq Pump or EventFormatType eq 'MetricReport'", lambda m, o: "/Pumps/" in o),
        "none": ("MetricReportDefinition eq '/redfish/v1/x'", lambda m, o: False),
    }  # fmt: skip
    streams = {"all": SseClient(svc)} | {k: SseClient(svc, {"$filter": f}) for k, (f, _) in wants.items()}
    try:
        ctl(svc, 0, "inject", "pump-fail", "A")
        ctl(svc, 0, "clear-fault", "all")
        until(lambda: {"McmEmu.1.0.FaultInjected", "McmEmu.1.0.FaultCleared"}
              <= {e["MessageId"] for _, e in streams["all"].events()})  # fmt: skip
        time.sleep(0.5)  # the filtered streams had as long
        got = {k: [(e["MessageId"], e["OriginOfCondition"]["@odata.id"]) for _, e in c.events()]
               for k, c in streams.items()}  # fmt: skip
        for k, (_, let) in wants.items():
            assert got[k] == [(m, o) for m, o in got["all"] if let(m, o)], (k, got)
        assert got["injected"] == [("McmEmu.1.0.FaultInjected", chassis0)]
        assert ("McmEmu.1.0.FaultCleared", chassis0) in got["node0"] and got["none"] == []
    finally:
        ctl(svc, 0, "clear-fault", "all")
        for c in streams.values():
            c.close()
