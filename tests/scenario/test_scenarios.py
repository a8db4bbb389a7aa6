"""Scenarios: the shipped library passes, runs are deterministic, bad files are named by line,
reports, recordings and replays, and the same scenario in real time over Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import sys
from pathlib import Path

import pytest

from mcm_firmware.protocol import Birth, Death, Event, EventCode, Telemetry, decode
from mcm_firmware.scenario import (
    ScenarioError,
    check_scenario,
    list_scenarios,
    load_scenario,
    load_scenario_text,
    run_scenario,
)
from mcm_firmware.transport import Channel, Subscription, TransportError, transport_factory

from ..conftest import ROOT, cli_env, free_port, run_cli
from ..helpers import read_terminal

LIBRARY = list_scenarios()

SHORT = """
name = "short"
seed = 3
duration_s = 20

[fleet]
nodes = 3
workload = "mixed"

[[fault]]
at = 5.0
nodes = "1"
fault = "pump-fail A"

[[expect]]
name = "pump B takes over on node 1"
type = "within"
nodes = "1"
at = 5.0
within_s = 1.0
signal = "pump_running:B"
equals = true

[[expect]]
name = "no die reaches slowdown"
type = "max"
signal = "die_temp"
below = "slowdown_c"
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# --- the library ----------------------------------------------------------------------------------


def test_the_library_covers_every_fault_kind_and_the_soak():
    from mcm_firmware.faults import FaultKind

    assert "soak-24h" in LIBRARY
    soak = load_scenario(LIBRARY["soak-24h"])
    assert soak.fleet.nodes == 64 and soak.duration_s == 24 * 3600
    assert soak.random_faults is not None and soak.random_faults.per_node_per_hour > 0
    used = set()
    for path in LIBRARY.values():
        sc = load_scenario(path)
        texts = [f.fault for f in sc.fault] + (sc.random_faults.faults if sc.random_faults else [])
        used |= {t.split()[0] for t in texts}
    missing = {k.label for k in FaultKind} - used
    assert not missing, f"no shipped scenario injects {sorted(missing)}"


SLOW_SCENARIOS = {"soak-24h", "natural-convection", "mixed-profiles"}


@pytest.mark.parametrize(
    "name",
    [
        # the soak simulates a day: 45-90 s here by the machine's day, more under coverage; the
        # timeout only guards against a hang
        pytest.param(n, marks=[pytest.mark.slow, pytest.mark.timeout(900)]) if n in SLOW_SCENARIOS else n
        for n in sorted(LIBRARY)
    ],
)
def test_every_shipped_scenario_passes(name):
    sc = load_scenario(LIBRARY[name])
    r = run_scenario(sc, path=str(LIBRARY[name]))
    assert r.outcomes, "a scenario without expectations checks nothing"
    failed = [f"{o.name}: {o.detail}" for o in r.outcomes if not o.passed]
    assert not failed, failed
    assert r.frames > 0 and len(r.digest) == 64
    assert not any("refused" in what for _, _, what in r.log), r.log


# --- determinism ----------------------------------------------------------------------------------


def test_same_file_and_seed_give_the_same_digest_another_seed_another():
    sc = load_scenario_text(SHORT)
    a, b = run_scenario(sc), run_scenario(sc)
    assert a.digest == b.digest and a.frames == b.frames
    c = run_scenario(sc, seed=4)
    assert c.digest != a.digest
    assert a.passed and c.passed


def test_the_digest_covers_the_content_of_frames():
    # one fault more on one node changes the digest: it is not a count of frames
    sc = load_scenario_text(SHORT)
    other = load_scenario_text(
        SHORT.replace(
            'fault = "pump-fail A"', 'fault = "pump-fail A"\n\n[[fault]]\nat = 6.0\nnodes = "2"\nfault = "inlet-step 1"'
        )
    )
    assert run_scenario(sc).digest != run_scenario(other).digest


# --- the CLI: run, failing expectations, malformed files ------------------------------------------


@pytest.mark.slow
def test_cli_run_prints_the_digest_and_every_expectation():
    out = run_cli("scenario", "run", "pump-failure")
    assert out.returncode == 0, out.stderr
    assert "digest sha256:" in out.stdout
    sc = load_scenario(LIBRARY["pump-failure"])
    for e in sc.expect:
        assert f"PASS  {e['name']}" in out.stdout
    again = run_cli("scenario", "run", "pump-failure", "--json")
    assert again.returncode == 0
    summary = json.loads(again.stdout)
    assert summary["digest"] == "sha256:" + out.stdout.split("digest sha256:")[1].split()[0]
    assert summary["passed"] is True and summary["seed"] == sc.seed


def test_a_wrong_expectation_fails_naming_it(tmp_path):
    wrong = (
        SHORT
        + """
[[expect]]
name = "the dice stay below 40 C"
type = "max"
signal = "die_temp"
below = 40
"""
    )
    out = run_cli("scenario", "run", str(write(tmp_path, wrong)))
    assert out.returncode == 1, out.stderr
    fail = [line for line in out.stdout.splitlines() if line.startswith("  FAIL  ")]
    assert len(fail) == 1 and fail[0].startswith("  FAIL  the dice stay below 40 C: node ")
    assert "die_temp = " in fail[0] and "over 40" in fail[0]
    assert "PASS  pump B takes over on node 1" in out.stdout
    assert out.stderr.strip() == "mcm-emu: failed expectations: the dice stay below 40 C"


MALFORMED = [
    ("[fleet]\nnodes = 2\ncolour = 'red'", ":7: fleet.colour: unknown key"),
    ("[fleet]\nnodes = 'two'", ":6: fleet.nodes: Input should be a valid integer"),
    (
        "[fleet]\nnodes = 2\n\n[[expect]]\ntype = 'max'\nsignal = 'die_tmp'\nbelow = 1",
        ":10: expect.0.signal: unknown signal 'die_tmp'",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[expect]]\ntype = 'max'\nsignal = 'die_temp'\nbelow = 'slowdwn_c'",
        ":11: expect.0.below: threshold 'slowdwn_c' is neither a number",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[expect]]\ntype = 'sometimes'\nsignal = 'die_temp'",
        ":9: expect.0.type: type must be one of event, max",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[expect]]\ntype = 'max'\nsignal = 'die_temp'\nbelow = 90\nabove = 3",
        ":12: expect.0.above: unknown key for a max expectation",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[fault]]\nat = 1.0\nnodes = '0'\nfault = 'pump-fail C'",
        ":11: fault.0.fault: node 0: no pump C on this module (pumps: A, B)",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[fault]]\nat = 1.0\nnodes = '0-7'\nfault = 'pump-fail A'",
        ":10: fault.0.nodes: node selector '0-7' names nodes that do not exist",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[fault]]\nat = 1.0\nnodes = '0'\nfault = 'pump-explode A'",
        ":11: fault.0.fault: unknown fault 'pump-explode'",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[fault]]\nat = 11.0\nnodes = '0'\nfault = 'pump-fail A'",
        ":9: fault.0.at: at 11 s is after the end (10 s)",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[command]]\nat = 1.0\nnodes = '0'\ncommand = 'set-power-cap lots'",
        ":11: command.0.command",
    ),
    (
        "[fleet]\nnodes = 2\n\n[[fleet.group]]\nnodes = '1'\nprofile = 'h200'",
        ":10: fleet.group.0.profile: h200: no such profile",
    ),
    ("[fleet]\nnodes = [2", ":6: TOML syntax error"),
]


@pytest.mark.parametrize(
    "body, needle", MALFORMED, ids=[n.split(": ")[0].strip(":") + "-" + str(i) for i, (_, n) in enumerate(MALFORMED)]
)
def test_malformed_scenarios_are_refused_naming_file_line_and_key(tmp_path, body, needle):
    text = 'name = "bad"\nseed = 1\nduration_s = 10\n\n' + body + "\n"
    path = write(tmp_path, text, "bad.toml")
    with pytest.raises(ScenarioError) as e:
        check_scenario(load_scenario(path), path=str(path))
    assert needle in str(e.value) and str(e.value).startswith(str(path))
    for action in ("validate", "run"):
        out = run_cli("scenario", action, str(path))
        assert out.returncode == 2, (action, out.stdout, out.stderr)
        assert needle in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (("scenario", "run", "no-such-scenario"), "no such scenario (shipped: "),
        (("scenario", "run", "pump-failure", "--realtime"), "--realtime needs --broker URL"),
        (("scenario", "run", "pump-failure", "--broker", "mqtt://127.0.0.1:1"), "--broker goes with --realtime"),
        (("scenario", "run", "pump-failure", "--seed", "-1"), "--seed must be within"),
        (("scenario", "run", "pump-failure", "--speed", "0"), "--speed must be within"),
        (("scenario", "validate", "/nonexistent/x.toml"), "cannot read"),
        (("replay", "/nonexistent/x.jsonl.gz"), "x.jsonl.gz"),
    ],
)
def test_bad_scenario_and_replay_arguments_exit_2(args, needle):
    out = run_cli(*args)
    assert out.returncode == 2, (args, out.stdout, out.stderr)
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_list_names_every_shipped_scenario():
    out = run_cli("scenario", "list")
    assert out.returncode == 0
    names = [line.split()[0] for line in out.stdout.splitlines()]
    assert names == sorted(LIBRARY)
    assert "INVALID" not in out.stdout
    out = run_cli("scenario", "validate", *sorted(LIBRARY))
    assert out.returncode == 0 and out.stdout.count(": ok (") == len(LIBRARY)


def test_list_shows_the_first_full_sentence_of_every_description():
    out = run_cli("scenario", "list")
    assert out.returncode == 0
    shown = {line.split()[0]: line.split(" s  ", 1)[1] for line in out.stdout.splitlines()}
    for name, path in LIBRARY.items():
        flat = " ".join(load_scenario(path).description.split())
        assert flat.startswith(shown[name]), name
        assert shown[name].endswith("."), (name, shown[name])  # a sentence, not cut in the middle


def test_list_wraps_descriptions_to_the_terminal(tmp_path):
    import os
    import pty
    import subprocess

    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcm_firmware", "scenario", "list"],
        stdout=secondary,
        stderr=subprocess.PIPE,
        env={**cli_env(), "COLUMNS": "90"},
        cwd=ROOT,
    )
    os.close(secondary)
    out = read_terminal(primary)
    assert proc.wait(timeout=60) == 0
    lines = out.decode().splitlines()
    assert lines and all(len(line) <= 90 for line in lines), [line for line in lines if len(line) > 90]
    names = [line.split()[0] for line in lines if not line.startswith(" ")]
    assert names == sorted(LIBRARY)
    joined = " ".join(line.strip() for line in lines)
    assert "a stuck cell (a CE at every read: its row is marked for remapping, applied by a reset)." in joined


MANY_PROBLEMS = """name = "bad"
seed = 1
duration_s = 10

[fleet]
nodes = 2

[[fault]]
at = 11.0
nodes = '0'
fault = 'pump-fail A'

[[fault]]
at = 1.0
nodes = '0'
fault = 'pump-fail C'

[[command]]
at = 1.0
nodes = '0-7'
command = 'set-power-cap 800'

[[expect]]
type = 'sometimes'
signal = 'die_temp'

[[expect]]
type = 'max'
signal = 'die_temp'
below = 90
above = 3
"""


def test_validate_names_every_problem_of_a_file(tmp_path):
    path = write(tmp_path, MANY_PROBLEMS, "many.toml")
    out = run_cli("scenario", "validate", str(path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"{path}:9: fault.0.at: at 11 s is after the end (10 s)",
        f"{path}:16: fault.1.fault: node 0: no pump C on this module (pumps: A, B)",
        f"{path}:20: command.0.nodes: node selector '0-7' names nodes that do not exist: [2, 3, 4, 5, 6] and 1 more",
        f"{path}:24: expect.0.type: type must be one of event, max, min, average, delta, within, final, online, "
        "telemetry (got 'sometimes')",
        f"{path}:31: expect.1.above: unknown key for a max expectation",
    ]
    out = run_cli("scenario", "run", str(path))  # run names the first and says there are more
    assert out.returncode == 2
    assert f"{path}:9: fault.0.at: at 11 s is after the end (10 s) (and 2 more problems" in out.stderr


def test_validate_names_every_schema_problem(tmp_path):
    text = 'name = "bad"\nseed = 1\nduration_s = 10\ncolour = "red"\n\n[fleet]\nnodes = 2\nsizes = 3\n'
    path = write(tmp_path, text, "schema.toml")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert [(p.line, p.key, p.message) for p in info.value.problems] == [
        (4, "colour", "unknown key"),
        (8, "fleet.sizes", "unknown key"),
    ]
    out = run_cli("scenario", "validate", str(path), "pump-failure")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [f"{path}:4: colour: unknown key", f"{path}:8: fleet.sizes: unknown key"]
    assert out.stdout.startswith("pump-failure: ok (")


# --- report ---------------------------------------------------------------------------------------


def test_report_writes_summary_plots_and_an_index(tmp_path):
    out = run_cli("scenario", "run", "crash-reboot", "--report", str(tmp_path / "rep"))
    assert out.returncode == 0, out.stderr
    rep = tmp_path / "rep"
    summary = json.loads((rep / "summary.json").read_text())
    sc = load_scenario(LIBRARY["crash-reboot"])
    assert [e["name"] for e in summary["expectations"]] == [e["name"] for e in sc.expect]
    assert all(e["passed"] for e in summary["expectations"]) and summary["passed"]
    assert summary["digest"].startswith("sha256:") and summary["frames"] > 0
    pngs = sorted(p.name for p in rep.glob("*.png"))
    actions = [a for a in summary["actions"] if not a["what"].startswith("clear")]
    assert "overview.png" in pngs and len(pngs) == 1 + len(actions)  # one figure per fault or command
    assert sorted(summary["plots"]) == pngs
    for name in pngs:
        assert (rep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    nodes = summary["figures"]["nodes"]
    assert sorted(nodes) == ["0", "1", "2", "3"]
    assert nodes["0"]["boots"] == 2 and nodes["2"]["boots"] == 1  # node 0 rebooted; node 2 stayed down
    html = (rep / "index.html").read_text()
    for name in pngs:
        assert f"src='{name}'" in html
    for e in sc.expect:
        assert e["name"] in html


def test_report_into_a_file_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = run_cli("scenario", "run", "crash-reboot", "--report", str(blocker))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"mcm-emu: error: --report {blocker}: File exists")


# --- record and replay ----------------------------------------------------------------------------


def read_recording(path: Path) -> tuple[dict, list[dict]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    return lines[0], lines[1:]


async def collect(url: str, fleet: str, until: int, timeout: float) -> list:
    tr = transport_factory(url)("test-collector")
    await tr.connect()
    await tr.subscribe(Subscription(fleet))
    got = []

    async def loop() -> None:
        while len(got) < until:
            got.append(await tr.receive())

    try:
        await asyncio.wait_for(loop(), timeout)
    except (TimeoutError, TransportError):
        pass
    finally:
        await tr.close()
    return got


async def test_scenario_record_then_replay_to_mosquitto(tmp_path, mosquitto):
    rec = tmp_path / "trace.jsonl.gz"
    r = await asyncio.to_thread(run_scenario, load_scenario_text(SHORT), record=str(rec))
    header, frames = read_recording(rec)
    assert header["format"] == "mcm-emu-record" and header["clock"] == "virtual" and header["seed"] == 3
    assert len(frames) == r.frames
    births = [f for f in frames if f["topic"].endswith("/state") and f["retain"]]
    assert len(births) >= 3  # every BIRTH and DEATH is kept to be published retained

    watcher = asyncio.create_task(collect(mosquitto.url, "replayed", len(frames), 30))
    await asyncio.sleep(0.5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcm_firmware",
        "replay",
        str(rec),
        "--broker",
        mosquitto.url,
        "--speed",
        "50",
        "--fleet",
        "replayed",
        cwd=ROOT,
        env=cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert f"replayed {len(frames)} frames of fleet 'replayed'".encode() in out
    got = await watcher
    assert len(got) == len(frames)
    sent = [f["frame"] for f in frames]
    assert [base64.b64encode(d.payload).decode() for d in got] == sent  # the same bytes, in order
    kinds = {type(decode(d.payload)) for d in got}
    assert {Birth, Telemetry, Event, Death} <= kinds
    # late subscribers find each node's last state retained
    late = await collect(mosquitto.url, "replayed", 3, 3)
    assert {d.address.node for d in late if d.address.channel is Channel.STATE} == {0, 1, 2}
    assert all(d.retained for d in late)


def test_a_corrupt_recording_is_refused_naming_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write(
            json.dumps({"format": "mcm-emu-record", "version": 1, "fleet": "x", "clock": "real", "started_ns": 0})
            + "\n"
        )
        f.write('{"t_ns": 1, "topic": "mcm/v1/x/0/tlm", "retain": false, "frame": "AAAA"}\n')
        f.write("{not json\n")
    out = run_cli("replay", str(bad), "--broker", "mqtt://127.0.0.1:1")
    assert out.returncode == 2 and f"{bad}:3" in out.stderr, out.stderr
    notgz = tmp_path / "plain.jsonl.gz"
    notgz.write_text("hello")
    out = run_cli("replay", str(notgz), "--broker", "mqtt://127.0.0.1:1")
    assert out.returncode == 2 and str(notgz) in out.stderr and "Traceback" not in out.stderr


def test_run_record_keeps_every_frame_of_a_live_fleet(tmp_path, cli_process):
    rec = tmp_path / "live.jsonl.gz"
    p = cli_process("run", "--nodes", "3", "--embedded-port", str(free_port()), "--duration", "2", "--record", str(rec))
    assert p.wait(60) == 0
    line = p.wait_line("recorded ")
    header, frames = read_recording(rec)
    assert line == f"recorded {len(frames)} frames to {rec}"
    assert header["clock"] == "real" and header["fleet"] == "default"
    msgs = [decode(base64.b64decode(f["frame"])) for f in frames]
    assert {m.node_id for m in msgs if isinstance(m, Birth)} == {0, 1, 2}
    assert {m.node_id for m in msgs if isinstance(m, Death)} == {0, 1, 2}
    tlm = [m for m in msgs if isinstance(m, Telemetry)]
    assert len(tlm) >= 3 * 10  # 10 Hz per node for about two seconds
    ts = [f["t_ns"] for f in frames]
    assert ts == sorted(ts)
    assert isinstance(msgs[0], Birth)


# --- real time over Mosquitto ---------------------------------------------------------------------


@pytest.mark.slow
async def test_the_same_scenario_runs_in_real_time_over_mosquitto(tmp_path, mosquitto):
    path = write(tmp_path, SHORT.replace('name = "short"', 'name = "short-rt"'))
    watcher = asyncio.create_task(collect(mosquitto.url, "scenario", 10**9, 8))
    await asyncio.sleep(0.3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcm_firmware",
        "scenario",
        "run",
        str(path),
        "--realtime",
        "--broker",
        mosquitto.url,
        "--speed",
        "4",
        "--json",
        cwd=ROOT,
        env=cli_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["passed"] and summary["frames"] > 3 * 10 * 20 * 0.8  # 3 nodes, 10 Hz, 20 s
    assert 4.0 <= summary["wall_s"] < 10.0  # 20 simulated seconds at 4x
    got = await watcher
    # fleet software watching the broker saw the run unfold: every node's telemetry and the failover
    assert {d.address.node for d in got if d.address.channel is Channel.TLM} == {0, 1, 2}
    events = [decode(d.payload) for d in got if d.address.channel is Channel.EVT]
    assert any(e.code == EventCode.PUMP_FAILOVER and e.node_id == 1 for e in events)


def test_a_cut_short_recording_is_refused_before_anything_is_sent(tmp_path):
    rec = tmp_path / "r.jsonl.gz"
    run_scenario(load_scenario_text(SHORT), record=str(rec))
    data = rec.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])
    out = run_cli("replay", str(cut), "--broker", "mqtt://127.0.0.1:1")  # nothing listens: not reached
    assert out.returncode == 2, out.stderr
    assert f"mcm-emu: error: {cut}:" in out.stderr and "cut short or damaged" in out.stderr
