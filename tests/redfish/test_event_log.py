"""The event log kept in a file (``--event-log``): its records and their Ids survive a restart of
the service; the file is bounded (rotated), a line that is not a record is skipped and counted."""

from __future__ import annotations

import json
import signal
import time

import pytest

from ..conftest import run_cli
from .conftest import OPERATOR, served_url, start_service


def _record(node: int, rid: int, text: str = "m") -> object:
    from mcm_firmware.redfish.events import Record

    return Record(node, rid, 1_000 + rid, "OK", "McmEmu.1.0.Boot", text, ("0", "0", "-"), "/redfish/v1/Chassis/0", True)


def test_the_file_is_bounded_and_a_bad_line_is_skipped(tmp_path):
    from mcm_firmware.redfish.eventlog import EventLogFile

    path = tmp_path / "events.jsonl"
    store = EventLogFile(path, max_entries=3)
    for rid in range(1, 8):  # 7 records, 3 a file: FILE.1 holds 4..6, FILE the 7th
        store.append(_record(rid % 2, rid))
    store.close()
    assert len(path.read_text().splitlines()) == 1 and len(store.rotated.read_text().splitlines()) == 3
    with path.open("a") as f:
        f.write("not json\n[1]\n" + json.dumps({"node": 0, "id": 0}) + '\n{"node": 1, "id": 9, "sev')  # torn
    again = EventLogFile(path, max_entries=100)
    logs = again.load()
    assert again.restored == 4 and again.skipped == 4
    assert [r.id for r in logs[0].entries] == [4, 6] and logs[0].next_id == 7
    assert [r.id for r in logs[1].entries] == [5, 7] and logs[1].next_id == 8
    assert logs[1].entries[-1] == _record(1, 7)  # every field as written
    again.append(_record(1, 8))  # after the torn line, on a line of its own
    again.close()
    assert EventLogFile(path).load()[1].entries[-1].id == 8
    with pytest.raises(ValueError, match="max_entries"):
        EventLogFile(path, max_entries=0)


@pytest.mark.slow
def test_the_event_log_survives_a_restart_of_the_service(mosquitto, cli_process, tmp_path):
    path = tmp_path / "events.jsonl"
    svc = start_service(mosquitto.url, cli_process, tmp_path, extra=("--event-log", str(path)))
    svc.gateway.wait_line("0 records of 0 modules restored, 0 lines skipped")
    entries = "/redfish/v1/Chassis/1/LogServices/EventLog/Entries"
    r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "1", "inject", "pump-fail", "A")
    assert r.returncode == 0, r.stderr

    def logged() -> list[dict]:
        return svc.get(entries).json()["Members"]

    deadline = time.monotonic() + 10
    while not any(m["MessageId"].endswith("PumpFailed") for m in logged()):
        assert time.monotonic() < deadline, logged()
        time.sleep(0.1)
    time.sleep(0.5)  # the change of the module's health follows
    before = [(m["Id"], m["MessageId"], m["Created"]) for m in logged()]
    svc.gateway.signal(signal.SIGTERM)
    assert svc.gateway.wait() == 0
    written = [json.loads(line) for line in path.read_text().splitlines()]  # of every module
    kept = len(written)
    # what the service had when it stopped: every entry seen above, and any it logged since (on a
    # loaded machine a module silent for the alive window changes state in between)
    at_exit = sorted(((str(r["id"]), r["message_id"]) for r in written if r["node"] == 1), key=lambda x: -int(x[0]))
    assert {(i, m) for i, m, _ in before} <= set(at_exit), (before, at_exit)
    with path.open("a") as f:
        f.write("{this is not a record}\n")

    gw = cli_process("redfish", "--broker", svc.broker, "--fleet", svc.fleet, "--port", "0",
                     "--accounts", str(tmp_path / "accounts.toml"), "--event-log", str(path))  # fmt: skip
    line = gw.wait_line("restored")
    assert f": {kept} records" in line and "1 lines skipped" in line, line
    svc.url = served_url(gw)
    svc.gateway = gw
    last = int(at_exit[0][0])
    restored = [(m["Id"], m["MessageId"], m["Created"]) for m in logged() if int(m["Id"]) <= last]
    assert [(i, m) for i, m, _ in restored] == at_exit  # the same entries and Ids
    assert [r for r in restored if r[0] in {i for i, _, _ in before}] == before  # and the same times
    one = svc.get(f"{entries}/{before[0][0]}").json()
    assert one["Id"] == before[0][0] and one["MessageId"] == before[0][1]
    # a new record takes the next Id
    r = run_cli("ctl", "--broker", svc.broker, "--fleet", svc.fleet, "1", "clear-fault", "all")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 10
    while not any(m["MessageId"].endswith("FaultCleared") for m in logged()):
        assert time.monotonic() < deadline, logged()
        time.sleep(0.1)
    ids = [int(m["Id"]) for m in logged()]  # newest first, each Id once, the new ones after the restored
    assert ids == list(range(ids[0], ids[0] - len(ids), -1)) and ids[0] > last, ids
    assert "OPERATOR" not in path.read_text() and OPERATOR[1] not in path.read_text()
