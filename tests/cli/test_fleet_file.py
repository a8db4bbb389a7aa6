"""``mcm-emu run --fleet-file``: a mixed fleet runs each node's profile, bad files list every
problem by file, line and key, options that conflict with the file are refused (real subprocesses,
a real Mosquitto where a broker is needed)."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from mcm_firmware.profile import ProfileError
from mcm_firmware.profile.fleet_file import load_fleet_file, parse_ids
from mcm_firmware.transport import check_fleet_name
from mcm_firmware.transport.mqtt import parse_broker_url
from mcm_firmware.transport.serial import parse_port_url

from ..conftest import ROOT, free_port, run_cli

CHECKS = {"broker_url": parse_broker_url, "serial_port": parse_port_url, "fleet_name": check_fleet_name}


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def test_the_documented_example_and_the_shipped_fleets_load(tmp_path):
    doc = (ROOT / "docs" / "fleet-file.md").read_text()
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    fleet = load_fleet_file(write(tmp_path, example.group(1)), CHECKS)
    assert sorted(fleet.profiles) == list(range(103))
    assert {n: p.name for n, p in fleet.profiles.items() if n >= 99} == {
        99: "colossus-mcm",
        100: "mi300x-class",
        101: "mi300x-class",
        102: "h100-sxm-class",
    }
    assert {n: r.name for n, r in fleet.rigs.items()} == {102: "bench-tc-valve"}
    assert fleet.spec.fleet == "prod" and fleet.spec.seed == 7
    assert fleet.spec.broker is not None and fleet.spec.broker.url == "mqtt://127.0.0.1:1883"
    shipped = sorted((ROOT / "fleets").glob("*.toml"))
    assert shipped
    for path in shipped:
        assert load_fleet_file(path, CHECKS).profiles


def test_ids_take_numbers_ranges_and_lists():
    assert parse_ids("0-3,8, 10-11") == [0, 1, 2, 3, 8, 10, 11]
    for bad in ("3-1", "a", "1-", "-1", "0-4294967296"):
        with pytest.raises(ValueError):
            parse_ids(bad)


BAD = """
    fleet = "a/b"
    colour = "red"

    [broker]
    url = "http://example.com"
    connection = "carier"
    embedded_port = 1884

    [[nodes]]
    ids = "0-5"
    profile = "colossus-mcm"
    workload = "training"

    [[nodes]]
    ids = "4-7"
    profile = "mi300x-clas"

    [[nodes]]
    ids = "9-8"
    profile = "h100-sxm-class"

    [[nodes]]
    ids = "10-11"
    profile = "h100-sxm-class"
    rig = "bench-tc-valve@/dev/ttyUSB0"
    workload = "gaming"

    [[nodes]]
    ids = 12
    profile = "colossus-mcm"
    rig = "no-such-rig"
    """


def test_a_bad_file_exits_2_naming_file_line_and_key_of_every_problem(tmp_path):
    path = write(tmp_path, BAD)
    r = run_cli("run", "--fleet-file", str(path))
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    expected = [
        (1, "fleet", "fleet name 'a/b'"),
        (2, "colour", "unknown key"),
        (5, "broker.url", "http"),
        (6, "broker.connection", "'carier'"),
        (7, "broker.embedded_port", "is for the embedded broker: it does not go with url"),
        (15, "nodes.1.ids", "ids 4-5 are already in nodes.0 (line 10)"),
        (16, "nodes.1.profile", "'mi300x-clas': no such profile (known: colossus-mcm"),
        (19, "nodes.2.ids", "range 9-8 runs backwards"),
        (25, "nodes.3.rig", "serves one node, and ids names 2"),
        (26, "nodes.3.workload", "'gaming'"),
        (31, "nodes.4.rig", "'no-such-rig': no such rig profile (known: bench-controller, bench-tc-valve)"),
    ]
    assert len(lines) == len(expected), r.stderr
    for line, (no, key, needle) in zip(lines, expected, strict=True):
        assert line.startswith(f"mcm-emu: error: {path}:{no}: key '{key}': "), line
        assert needle in line, line
    assert r.stdout == ""  # nothing started


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("nodes = []\n", ":1: key 'nodes': List should have at least 1 item"),
        ("fleet = 'x'\n", "key 'nodes': missing key"),
        ("[[nodes]]\nids = 0\n", ":1: key 'nodes.0.profile': missing key"),
        ("[[nodes]\n", ":1: TOML syntax error"),
        (
            "[broker]\nembedded_port = 1884\nusername = 'u'\n[[nodes]]\nids = 0\nprofile = 'colossus-mcm'\n",
            ":3: key 'broker.username': is for a broker url: the embedded broker is open",
        ),
        (
            "[broker]\nurl = 'mqtt://h'\npassword_file = 'nope.pw'\n[[nodes]]\nids = 0\nprofile = 'colossus-mcm'\n",
            ":3: key 'broker.password_file': no such file: ",
        ),
        (
            "[serial]\nport = ['pty', 'pty']\n[[nodes]]\nids = '0-2'\nprofile = 'colossus-mcm'\n",
            ":2: key 'serial.port': 2 ports for 3 nodes",
        ),
        (
            "[broker]\n[serial]\nport = 'pty'\n[[nodes]]\nids = 0\nprofile = 'colossus-mcm'\n",
            ":2: key 'serial': [serial] replaces the MQTT link",
        ),
    ],
)
def test_each_kind_of_problem_is_named(tmp_path, text, needle):
    with pytest.raises(ProfileError) as e:
        load_fleet_file(write(tmp_path, text), CHECKS)
    assert any(needle in line for line in e.value.lines()), e.value.lines()


def test_a_profile_given_as_a_path_is_relative_to_the_file_and_its_errors_are_passed_on(tmp_path):
    (tmp_path / "profiles").mkdir()
    base = (ROOT / "hw_profiles" / "h100-sxm-class.toml").read_text()
    (tmp_path / "profiles" / "mine.toml").write_text(base.replace('name = "h100-sxm-class"', 'name = "mine"'))
    (tmp_path / "profiles" / "broken.toml").write_text('extends = "colossus-mcm"\nname = "broken"\nbogus = 1\n')
    fleet = load_fleet_file(
        write(tmp_path, "[[nodes]]\nids = '0-1'\nprofile = 'profiles/mine.toml'\n", "ok.toml"), CHECKS
    )
    assert {p.name for p in fleet.profiles.values()} == {"mine"}
    with pytest.raises(ProfileError) as e:
        load_fleet_file(write(tmp_path, "[[nodes]]\nids = 0\nprofile = 'profiles/broken.toml'\n"), CHECKS)
    assert "fleet.toml:3: key 'nodes.0.profile': 'profiles/broken.toml' does not load: " in str(e.value)
    assert "broken.toml:3: key 'bogus': unknown key" in str(e.value)


def test_options_the_file_replaces_are_refused_and_a_repeated_profile_too(tmp_path):
    path = str(ROOT / "fleets" / "mixed.toml")
    r = run_cli("run", "--fleet-file", path, "--nodes", "4", "--profile", "h100-sxm-class")
    assert r.returncode == 2
    assert "--nodes, --profile do not go with --fleet-file: the fleet file" in r.stderr
    r = run_cli("run", "--fleet-file", path, "--rig", "0=bench-tc-valve")
    assert r.returncode == 2 and "--rig does not go with --fleet-file" in r.stderr
    r = run_cli("run", "--profile", "colossus-mcm", "--profile", "mi300x-class")
    assert r.returncode == 2
    assert "--profile given twice ('colossus-mcm', then 'mi300x-class')" in r.stderr and "--fleet-file" in r.stderr
    r = run_cli("run", "--nodes", "2", "--nodes", "3")
    assert r.returncode == 2 and "--nodes given twice (2, then 3): give it once" in r.stderr
    serial = write(tmp_path, "[serial]\nport = 'pty'\n[[nodes]]\nids = 0\nprofile = 'colossus-mcm'\n")
    r = run_cli("run", "--fleet-file", str(serial), "--broker", "mqtt://127.0.0.1:1")
    assert r.returncode == 2 and f"--broker does not go with {serial}:1: key 'serial'" in r.stderr
    r = run_cli("run", "--fleet-file", str(serial), "--processes", "2")
    assert r.returncode == 2 and f"--processes runs nodes on a broker: {serial}:1: key 'serial' puts them" in r.stderr
    rig = write(tmp_path, "[[nodes]]\nids = 0\nprofile = 'colossus-mcm'\nrig = 'bench-tc-valve'\n", "rig.toml")
    r = run_cli("run", "--fleet-file", str(rig), "--processes", "2")
    assert r.returncode == 2 and f"{rig}:4: key 'nodes.0.rig'" in r.stderr


def test_run_help_shows_every_default_in_groups():
    r = run_cli("run", "--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for group in ("fleet: which nodes, running what:", "broker and links:", "scale:", "run and output:"):
        assert group in text
    for shown in (
        "--nodes N how many nodes (default 8)",
        "(default colossus-mcm)",
        "(default 'default')",
        "port of the embedded broker, on 127.0.0.1 (default 1883)",
        "(default: none, a broker is embedded)",
        "(default steady)",
        "(default 1.0)",
    ):
        assert shown in text, shown


def test_a_mixed_fleet_file_runs_each_node_s_profile_and_the_command_line_overrides(tmp_path, mosquitto, cli_process):
    path = write(
        tmp_path,
        f"""
        fleet = "from-file"
        seed = 3

        [broker]
        url = "{mosquitto.url}"
        connection = "carrier"

        [[nodes]]
        ids = "0-1"
        profile = "colossus-mcm"
        workload = "steady"

        [[nodes]]
        ids = 2
        profile = "colossus-mcm"
        workload = "idle"

        [[nodes]]
        ids = "5"
        profile = "mi300x-class"
        workload = "steady"

        [[nodes]]
        ids = 7
        profile = "h100-sxm-class"
        workload = "mixed"
        """,
    )
    run = cli_process("run", "--fleet-file", str(path), "--fleet", "ff", "--summary-interval", "0.5")
    run.wait_line(f"fleet file: --fleet ff is used instead of fleet = 'from-file' ({path}:1)")
    line = run.wait_line("running 5 nodes")
    assert "(ids 0..2, 5, 7) of colossus-mcm ×3, h100-sxm-class ×1, mi300x-class ×1 in fleet 'ff'" in line
    run.wait_line("up: 5 nodes")
    run.wait_line("t=    1.0s node=7")  # a second of load
    r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "ff", "--json", "all", "status")
    assert r.returncode == 0, r.stderr
    status = {x["node"]: x for x in json.loads(r.stdout)["results"]}
    assert {n: x["profile"] for n, x in status.items()} == {
        0: "colossus-mcm",
        1: "colossus-mcm",
        2: "colossus-mcm",
        5: "mi300x-class",
        7: "h100-sxm-class",
    }
    assert status[2]["power_w"] < 0.5 * min(status[0]["power_w"], status[1]["power_w"])  # idle, steady
    run.signal(2)
    assert run.wait() == 0
    run.wait_line("stopped 5 nodes")


def test_a_fleet_file_spreads_over_worker_processes(tmp_path, cli_process):
    path = write(
        tmp_path,
        """
        seed = 1
        [[nodes]]
        ids = "10-11"
        profile = "colossus-mcm"

        [[nodes]]
        ids = "20-21"
        profile = "mi300x-class"
        """,
    )
    run = cli_process(
        "run",
        "--fleet-file",
        str(path),
        "--embedded-port",
        str(free_port()),
        "--processes",
        "2",
        "--duration",
        "2",
        "--seed",
        "5",
    )
    assert run.wait(40) == 0
    assert [x for x in run.lines if "--seed 5 is used instead of seed = 1" in x] == [
        f"fleet file: --seed 5 is used instead of seed = 1 ({path}:1)"
    ]  # said once, by the parent
    run.wait_line("[0/2] running 2 nodes (ids 10..11) of colossus-mcm in fleet 'default'")
    run.wait_line("[1/2] running 2 nodes (ids 20..21) of mi300x-class in fleet 'default'")


def test_the_bench_fleet_puts_its_nodes_on_serial_links_and_one_on_a_rig(cli_process):
    run = cli_process("run", "--fleet-file", str(ROOT / "fleets" / "bench.toml"), "--duration", "1.5")
    assert run.wait(30) == 0
    assert re.search(r"serial: node 0 at /dev/\S+", run.wait_line("serial: node 0 at"))
    run.wait_line("serial: node 1 at")
    run.wait_line("running 2 nodes of h100-sxm-class in fleet 'bench' on serial links")
    assert re.search(r"rig: node 1 \(bench-tc-valve\) at /dev/\S+", run.wait_line("rig: node 1"))
    assert not any(line.startswith("rig: node 0") for line in run.lines)


def test_paths_in_the_file_are_relative_to_it(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "host.pw").write_text("pw\n")
    path = write(
        tmp_path,
        """
        [broker]
        url = "mqtt://127.0.0.1:1883"
        username = "fleet-host"
        password_file = "secrets/host.pw"

        [[nodes]]
        ids = 0
        profile = "colossus-mcm"
        """,
    )
    broker = load_fleet_file(path, CHECKS).spec.broker
    assert broker is not None and broker.password_file == str(tmp_path / "secrets" / "host.pw")


def test_a_shard_of_a_fleet_file_is_a_slice_of_its_ids(cli_process):
    run = cli_process(
        "run",
        "--fleet-file",
        str(ROOT / "fleets" / "mixed.toml"),
        "--shard",
        "1/2",
        "--embedded-port",
        str(free_port()),
        "--duration",
        "1",
    )
    assert run.wait(30) == 0
    run.wait_line("running 4 nodes (ids 4..7) of colossus-mcm ×2, mi300x-class ×2 in fleet 'mixed'")
