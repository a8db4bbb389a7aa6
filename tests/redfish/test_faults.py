"""A pump fault injected over the binary protocol shows in Redfish with the first telemetry frame
after the node's PUMP_FAULT event, judged by the node's own frames (their sequence numbers and
timestamps, as ``mcm-emu monitor --json`` prints them), not by the wall clock: every Pump and
Chassis resource read (python-redfish-library) that comes from that frame or a later one
(``Oem.McmEmu.SnapshotTime``) shows the fault, and the EventService streams the pump's failure and
the module's change of health (SSE) stamped no later than that frame."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import time

import pytest
import redfish

from ..conftest import run_cli
from .conftest import OPERATOR
from .test_fleet import SseClient

PUMP = "/redfish/v1/Chassis/0/ThermalSubsystem/Pumps/0"
CHASSIS = "/redfish/v1/Chassis/0"


def micros(stamp: str) -> int:
    """An ISO 8601 time of the service (``...Z``) in microseconds since the epoch."""
    t = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)


def millis_iso(ns: int) -> str:
    """A node's timestamp as the service writes an EventTimestamp."""
    t = dt.datetime.fromtimestamp(ns // 1_000_000 / 1e3, dt.UTC)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.mark.slow
def test_a_pump_fault_shows_in_redfish_with_the_first_telemetry_after_its_event(redfish_service, cli_process):
    svc = redfish_service
    monitor = cli_process("monitor", "--broker", svc.broker, "--fleet", svc.fleet, "--node", "0", "--json")
    monitor.wait_line('"type": "TELEMETRY"')
    client = redfish.redfish_client(base_url=svc.url, username=OPERATOR[0], password=OPERATOR[1])
    client.login(auth="session")
    sse = SseClient(svc)
    try:
        pump = client.get(PUMP).dict
        assert pump["Status"]["Health"] == "OK" and client.get(CHASSIS).dict["Status"]["Health"] == "OK"
        name = pump["Name"].removeprefix("Pump ")

        r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "0", "inject", "pump-fail", name)
        assert r.returncode == 0, r.stderr

        def frames() -> list[dict]:
            return [json.loads(line) for line in list(monitor.lines) if line.startswith("{")]

        def first_after_fault() -> tuple[dict, dict] | None:
            """The node's PUMP_FAULT event and its first TELEMETRY frame after it (by sequence number)."""
            got = frames()
            fault = next((f for f in got if f["type"] == "EVENT" and f["code"] == "PUMP_FAULT"), None)
            if fault is None:
                return None
            after = [f for f in got if f["type"] == "TELEMETRY" and f["seq"] > fault["seq"]]
            return (fault, min(after, key=lambda f: f["seq"])) if after else None

        # read the pump and the module as fast as the service answers, until both were read from the
        # first frame after the fault or a later one (the deadline only keeps a broken service from
        # hanging the test: the bound checked is the node's frame, not this time)
        seen: dict[str, list[tuple[int, str]]] = {PUMP: [], CHASSIS: []}
        deadline = time.monotonic() + 30
        found = None
        while True:
            for uri in (PUMP, CHASSIS):
                body = client.get(uri).dict
                seen[uri].append((micros(body["Oem"]["McmEmu"]["SnapshotTime"]), body["Status"]["Health"]))
            found = found or first_after_fault()
            if found and all(any(t >= found[1]["timestamp_ns"] // 1000 for t, _ in obs) for obs in seen.values()):
                break
            assert time.monotonic() < deadline, (frames()[-5:], seen)
        fault, first = found
        t1 = first["timestamp_ns"] // 1000
        # the node: the frame after its PUMP_FAULT event carries the fault; the one before it did not
        assert first["pumps"][0]["fault"], first["pumps"]
        before = [f for f in frames() if f["type"] == "TELEMETRY" and f["seq"] < fault["seq"]]
        assert before and not before[-1]["pumps"][0]["fault"]
        # Redfish: from that frame on, the pump Critical and the module Warning
        for uri, bad in ((PUMP, "Critical"), (CHASSIS, "Warning")):
            late = [h for t, h in seen[uri] if t >= t1]
            assert late and set(late) == {bad}, (uri, t1, seen[uri])
        pump_seen = seen[PUMP]
        caught = any(t == t1 for t, _ in pump_seen)
        # when no read fell on that frame exactly, it was skipped between two reads (not missed)
        assert caught or any(a < t1 < b for (a, _), (b, _) in itertools.pairwise(pump_seen))
        assert all(h == "OK" for t, h in pump_seen if t < before[-1]["timestamp_ns"] // 1000 + 1)

        # the EventService: the node's event, stamped with its time, and the module's change of health,
        # stamped with the frame (or STATUS answer) that showed it: not after the first frame
        failed = changed = None
        while failed is None or changed is None:
            events = [e for _, e in sse.events()]
            failed = next((e for e in events if e["MessageId"] == "Environmental.1.4.PumpFailed"), None)
            changed = next(
                (
                    e
                    for e in events
                    if e["MessageId"] == "ResourceEvent.1.4.ResourceStatusChangedWarning"
                    and e["OriginOfCondition"]["@odata.id"] == CHASSIS
                ),
                None,
            )
            assert time.monotonic() < deadline + 10, events
            time.sleep(0.05)
        assert failed["EventTimestamp"] == millis_iso(fault["timestamp_ns"]), (failed, fault["timestamp_ns"])
        assert failed["OriginOfCondition"]["@odata.id"] == PUMP
        assert micros(changed["EventTimestamp"]) <= t1, (changed, first["timestamp_ns"])
        # the faults in force come with the STATUS the FAULT_INJECTED event asks for
        while not (faults := client.get(CHASSIS).dict["Oem"]["McmEmu"].get("FaultsInjected")):
            assert time.monotonic() < deadline + 10
            time.sleep(0.05)
        assert faults[0].startswith("pump-fail")
        assert client.get("/redfish/v1/Chassis/1").dict["Status"]["Health"] == "OK"
        print(
            f"pump fault: PUMP_FAULT seq {fault['seq']}, first telemetry after it seq {first['seq']}; "
            f"{len(pump_seen)} pump reads, that frame read {'exactly' if caught else 'between two reads'}"
        )
    finally:
        sse.close()
        client.logout()
