"""``mcm-emu run --redfish-port``: the same service in the run's process, on the run's broker."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
import requests

from ..conftest import free_port, run_cli


@pytest.mark.slow
def test_run_serves_its_fleet_over_redfish(cli_process):
    broker = free_port()
    run = cli_process("run", "--nodes", "2", "--embedded-port", str(broker), "--redfish-port", "0")
    password = run.wait_line("redfish: account operator (Operator) password ").rsplit(" ", 1)[1]
    readonly = run.wait_line("redfish: account readonly (ReadOnly) password ").rsplit(" ", 1)[1]
    assert password != readonly and len(password) >= 12
    line = run.wait_line("redfish: http://")
    assert line.startswith("redfish: http://127.0.0.1:") and line.endswith("/redfish/v1/"), line
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    run.wait_line("up: 2 nodes")
    url = f"http://127.0.0.1:{port}/redfish/v1"
    auth = ("operator", password)
    assert requests.get(url + "/Chassis", timeout=10).status_code == 401
    deadline = time.monotonic() + 20
    while (
        "AllowableMax" not in (ctl := requests.get(url + "/Chassis/0/Controls/PowerLimit", auth=auth, timeout=10)).text
    ):
        assert time.monotonic() < deadline, ctl.text
        time.sleep(0.2)
    r = requests.patch(url + "/Chassis/0/Controls/PowerLimit", json={"SetPoint": 750}, auth=auth, timeout=10)
    assert r.status_code == 200 and r.json()["Oem"]["McmEmu"]["EnforcedBy"] == "OutOfBand"
    status = run_cli("ctl", "--broker", f"mqtt://127.0.0.1:{broker}", "0", "status", "--json")
    assert json.loads(status.stdout)["power_cap_w"] == 750.0
    run.signal(signal.SIGTERM)
    assert run.wait() == 0
    assert re.search(r"redfish: \d+ requests, 1 refused \(NoValidSession 1\)", "\n".join(run.lines)), run.lines


def test_redfish_port_is_refused_where_it_cannot_serve():
    for extra in (("--serial", "loop://"), ("--processes", "2")):
        r = run_cli("run", "--nodes", "2", "--redfish-port", "8000", *extra, "--duration", "1")
        assert r.returncode == 2 and "--redfish-port serves a fleet on MQTT from one process" in r.stderr, r.stderr
