"""``ctl`` around a broker restart without persistence: the broker comes back empty, then holds
the BIRTHs of the nodes already back. A node not seen yet may be on its way, so ctl sends anyway
and :class:`HostClient` waits for its BIRTH; one not back in time is said to be so. A wrong id in
a fleet that is not coming back from anything, or a wrong --fleet, is still refused at once."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from mcm_firmware.host.discovery import read_state, reconnect_window
from mcm_firmware.protocol import Birth
from mcm_firmware.transport import transport_factory

from ..conftest import ROOT, cli_env, run_cli


def ctl(url: str, fleet: str, *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mcm_firmware", "ctl", "--broker", url, "--fleet", fleet, "--json", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        cwd=ROOT,
    )


def test_an_empty_broker_has_ctl_wait_for_a_named_node_and_say_it_is_not_back(mosquitto):
    t0 = time.monotonic()
    r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "em", "--timeout", "1.5", "--json", "3", "ping")
    took = time.monotonic() - t0
    assert r.returncode == 1, (r.stdout, r.stderr)
    out = json.loads(r.stdout)
    assert out["status"] == "NOT_BACK", out
    assert out["error"] == "node 3: not back in fleet 'em' within 1.5 s (no node of it seen)", out
    assert took >= 1.5, took  # it waited its timeout: the broker holds nothing, the node may be coming
    # all cannot be known from an empty broker: refused at once, with what to do instead
    r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "em", "all", "ping")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "mcm-emu: error: no node of fleet 'em' on this broker (no fleet at all)",
        "  (the broker holds no state at all, just started or restarted? name the nodes (0-7) to wait for them)",
    ], r.stderr


@pytest.mark.slow
def test_ctl_right_after_a_broker_restart_reaches_every_node_and_a_typo_is_refused_once_stable(mosquitto, cli_process):
    nodes = 6
    url = mosquitto.url
    run = cli_process("run", "--broker", url, "--nodes", str(nodes), "--fleet", "rs", "--connection", "node")
    run.wait_line(f"up: {nodes} nodes")

    mosquitto.stop()  # no persistence: it comes back empty
    mosquitto.start()
    returned = time.monotonic()
    procs = {n: ctl(url, "rs", "--timeout", "15", str(n), "status") for n in range(nodes)}
    away = ctl(url, "rs", "--timeout", "3", "7", "ping")  # not in the fleet: waited for, in vain
    results = {n: p.communicate(timeout=60) for n, p in procs.items()}
    for n, (out, err) in results.items():
        assert procs[n].returncode == 0, (n, out, err)
        assert json.loads(out)["node"] == n, out
    print(f"{nodes} of {nodes} answered, the last {time.monotonic() - returned:.1f} s after the broker's return")
    out, err = away.communicate(timeout=60)
    assert away.returncode == 1, (out, err)
    answer = json.loads(out)
    assert answer["status"] == "NOT_BACK", answer
    assert answer["error"].startswith("node 7: not back in fleet 'rs' within 3 s ("), answer

    # once the fleet is stable (its last BIRTH older than the nodes' reconnect window), a wrong id
    # is refused at once, as before the restart, and so is a wrong --fleet
    state = asyncio.run(read_state(transport_factory(url), "rs"))
    births = [m.timestamp_ns for m in state.nodes.values() if isinstance(m, Birth)]
    assert len(births) == nodes and all(m.bdseq > 1 for m in state.nodes.values() if isinstance(m, Birth))
    time.sleep(max(0.0, (max(births) / 1e9 + reconnect_window() + 0.5) - time.time()))
    for fleet, node, says in (
        ("rs", "99", "node 99: not in fleet 'rs' (nodes 0-5 seen)"),
        ("nope", "1", "no node of fleet 'nope' on this broker (fleets seen: rs)"),
    ):
        t0 = time.monotonic()
        r = run_cli("ctl", "--broker", url, "--fleet", fleet, "--timeout", "20", node, "ping")
        took = time.monotonic() - t0
        assert r.returncode == 1 and r.stderr.splitlines() == [f"mcm-emu: error: {says}"], r.stderr
        assert took < 10, took  # at once: well within half of --timeout, process start included
