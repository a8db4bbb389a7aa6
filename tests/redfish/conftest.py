"""A real fleet behind a real Redfish service: Mosquitto, ``mcm-emu run`` and ``mcm-emu redfish`` as
subprocesses, with known accounts."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

# DMTF's published schemas (DSP8010) and registries (DSP8011) that the service references, vendored
# (tests/data/redfish, BSD-3, DMTF's LICENSE.md beside them); MCM_REDFISH_SHARED names another copy
VENDORED = Path(__file__).resolve().parent.parent / "data" / "redfish"
SHARED = Path(os.environ.get("MCM_REDFISH_SHARED") or VENDORED)

OPERATOR = ("ops", "operator-secret-1")
READONLY = ("viewer", "viewer-secret-1")


def shared(sub: str) -> Path:
    """A folder of DMTF's files; a test without them fails (a skipped conformance test cannot fail)."""
    path = SHARED / sub
    assert path.is_dir(), (
        f"DMTF's Redfish schemas are not at {path} (MCM_REDFISH_SHARED={os.environ.get('MCM_REDFISH_SHARED')})"
    )
    return path


@dataclass
class Service:
    url: str  # http://127.0.0.1:PORT
    broker: str
    fleet: str
    run: Any
    gateway: Any

    def get(self, path: str, auth: tuple[str, str] | None = OPERATOR, **kw: Any) -> requests.Response:
        return requests.get(self.url + path, auth=auth, timeout=10, **kw)

    def stop(self) -> str:
        """Stop the gateway and the fleet; the gateway's summary line."""
        self.gateway.signal(signal.SIGTERM)
        assert self.gateway.wait() == 0
        self.run.signal(signal.SIGTERM)
        assert self.run.wait() == 0
        return self.gateway.wait_line("requests,")


def served_url(gw: Any) -> str:
    """The service's base URL, from the address it prints once it serves."""
    line = gw.wait_line("redfish: http://")
    return line.split("redfish: ", 1)[1].removesuffix("/redfish/v1/").strip()


def start_service(broker: str, spawn: Any, tmp_path: Path, fleet: str = "rf", extra: tuple[str, ...] = ()) -> Service:
    """``mcm-emu run`` (2 nodes) and ``mcm-emu redfish`` in front of it; returns once both modules
    are served with telemetry and their limits."""
    run = spawn("run", "--broker", broker, "--nodes", "2", "--fleet", fleet)
    run.wait_line("up: 2 nodes")
    accounts = tmp_path / "accounts.toml"
    (tmp_path / "viewer.pw").write_text(READONLY[1] + "\n")
    accounts.write_text(
        f'[accounts.{OPERATOR[0]}]\nrole = "Operator"\npassword = "{OPERATOR[1]}"\n\n'
        f'[accounts.{READONLY[0]}]\nrole = "ReadOnly"\npassword_file = "viewer.pw"\n'
    )
    # port 0: the service binds a free port itself and prints it (a port picked here and bound later
    # could be taken in between by another process of a busy machine)
    gw = spawn("redfish", "--broker", broker, "--fleet", fleet, "--port", "0", "--accounts", str(accounts), *extra)
    svc = Service(served_url(gw), broker, fleet, run, gw)
    # ready: both modules known, with telemetry and the limits of their STATUS
    deadline = time.monotonic() + 20
    while True:
        ok = [svc.get(f"/redfish/v1/Chassis/{n}/Controls/PowerLimit") for n in (0, 1)]
        if all(
            r.status_code == 200 and "AllowableMax" in r.json() and r.json()["Status"]["State"] == "Enabled" for r in ok
        ):
            break
        assert time.monotonic() < deadline, [r.text for r in ok]
        time.sleep(0.2)
    return svc


@pytest.fixture
def redfish_service(mosquitto, cli_process, tmp_path: Path) -> Iterator[Service]:
    yield start_service(mosquitto.url, cli_process, tmp_path)


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One live fleet and service for a whole test module (tests that leave it serving)."""
    from ..conftest import CliProcess, Mosquitto

    tmp = tmp_path_factory.mktemp("rf")
    broker = Mosquitto(tmp)
    broker.start()
    started: list[CliProcess] = []

    def spawn(*args: str) -> CliProcess:
        p = CliProcess(*args)
        started.append(p)
        return p

    try:
        yield start_service(broker.url, spawn, tmp)
    finally:
        for p in reversed(started):
            with contextlib.suppress(Exception):
                p.signal(signal.SIGTERM)
                p.wait()
            p.close()
        broker.stop()
