"""Per-node connections spread over several source addresses: one address reaches one broker port
through its ephemeral ports only, so a big per-node fleet comes from 127.0.0.2, 127.0.0.3 ..."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mcm_firmware.transport import PerNodeLinks, ephemeral_ports, node_links, source_addresses

from ..conftest import cli_env


def test_a_range_and_a_list_name_the_addresses():
    assert source_addresses("127.0.0.2-127.0.0.4", 10, "127.0.0.1") == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_addresses("127.0.0.9, 10.0.0.1", 10, "127.0.0.1") == ["127.0.0.9", "10.0.0.1"]


def test_auto_uses_one_address_while_its_ports_suffice_then_loopback_addresses():
    per_source = int(ephemeral_ports() * 0.9)
    assert source_addresses("auto", per_source, "127.0.0.1") == []
    spread = source_addresses("auto", 2 * per_source + 1, "127.0.0.1")
    assert spread == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert source_addresses("auto", 55_000, "localhost")  # a Colossus-size per-node fleet


@pytest.mark.parametrize(
    ("spec", "host", "says"),
    [
        ("auto", "192.0.2.7", "exceed its"),  # a remote broker: this machine's addresses are the operator's to name
        ("127.0.0.5-127.0.0.2", "127.0.0.1", "must run upwards"),
        ("127.0.0.1-127.0.9.1", "127.0.0.1", "at most 1024"),
        ("127.0.0.300", "127.0.0.1", "127.0.0.300"),
        (",", "127.0.0.1", "no address given"),
    ],
)
def test_bad_source_addresses_are_refused_naming_the_problem(spec, host, says):
    with pytest.raises(ValueError, match=says):
        source_addresses(spec, 60_000, host)


def test_per_node_links_hand_each_node_the_connection_of_its_source():
    links = node_links(
        ["mqtt://127.0.0.1:1883"], [0, 1, 2], fleet="t", connection="node", sources="127.0.0.2,127.0.0.3"
    )
    assert isinstance(links, PerNodeLinks) and links.sources == ["127.0.0.2", "127.0.0.3"]
    assert [links.factory(n)("c").bind_address for n in (0, 1, 2)] == ["127.0.0.2", "127.0.0.3", "127.0.0.2"]
    with pytest.raises(ValueError, match="MQTT broker"):
        node_links(["loopback://x"], [0], fleet="t", connection="node", sources="127.0.0.2")


def _local_addresses_to(port: int) -> set[str]:
    """Local IPv4 addresses of established TCP connections to ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:  # noqa: SIM115 - one short read
        local, remote, state = line.split()[1:4]
        if state == "01" and int(remote.split(":")[1], 16) == port:
            ip = bytes.fromhex(local.split(":")[0])[::-1]
            found.add(".".join(str(b) for b in ip))
    return found


def test_a_run_connects_its_nodes_from_the_addresses_given(mosquitto, cli_process):
    run = cli_process(
        "run",
        "--broker",
        mosquitto.url,
        "--nodes",
        "6",
        "--fleet",
        "src",
        "--connection",
        "node",
        "--source-addresses",
        "127.0.0.2-127.0.0.4",
    )
    run.wait_line("up: 6 nodes connected")
    assert _local_addresses_to(mosquitto.port) >= {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
    run.close()


def test_a_per_node_fleet_beyond_the_descriptor_limit_is_refused_naming_it(mosquitto):
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300)); "
        "from mcm_firmware.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "run", "--broker", mosquitto.url, "--nodes", "100", "--connection", "node"],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )
    assert r.returncode == 2, r.stderr
    assert "100 connections need about 356 file descriptors" in r.stderr and "--connection carrier" in r.stderr
