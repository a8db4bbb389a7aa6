"""Fuzz campaigns (mcm-emu fuzz): the oracle, campaigns against an emulated node and over the real
transports, and a planted bug (a node build that skips the CRC check) found and shrunk."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re

import pytest

import mcm_firmware.runtime.node as node_module
from mcm_firmware.fuzz import Probe, judge, replay, run_campaign
from mcm_firmware.fuzz.report import write_report
from mcm_firmware.protocol import Birth, Command, FrameFlags, Op, PowerCapArgs, Response, Status, decode, encode
from mcm_firmware.target import emulated_target
from mcm_firmware.testing.strategies import fix_crc
from mcm_firmware.transport import transport_factory

from ..conftest import run_cli

NODE = 4


def _cmd(op=Op.PING, rid=7, node=NODE, flags=int(FrameFlags.HOST), args=None):
    return encode(Command(node_id=node, request_id=rid, op=op, flags=flags, args=args))


def _resp(status=Status.OK, rid=7):
    return Response(node_id=NODE, request_id=rid, op=Op.PING, status=status)


@pytest.mark.parametrize(
    "frame, replies, finding",
    [
        (_cmd(), [_resp()], None),
        (_cmd(), [_resp(Status.BAD_ARGUMENT)], None),
        (_cmd(), [], "no-reply"),
        (_cmd(), [_resp(), _resp()], "unexpected-reply"),
        (_cmd(), [_resp(Status.INTERNAL)], "internal-error"),
        (_cmd(node=NODE + 1), [], None),
        (_cmd(node=NODE + 1), [_resp()], "unexpected-reply"),
        (_cmd(flags=0), [_resp(Status.BAD_REQUEST)], None),
        (_cmd(flags=0), [_resp()], "unexpected-reply"),
        (
            encode(
                Birth(
                    node_id=NODE,
                    profile="p",
                    firmware="f",
                    capabilities=0,
                    boot_count=1,
                    bdseq=1,
                    dies=4,
                    hbm_stacks=8,
                    pumps=2,
                    valves=4,
                )
            ),
            [],
            None,
        ),
        (
            encode(
                Birth(
                    node_id=NODE,
                    profile="p",
                    firmware="f",
                    capabilities=0,
                    boot_count=1,
                    bdseq=1,
                    dies=4,
                    hbm_stacks=8,
                    pumps=2,
                    valves=4,
                )
            ),
            [_resp()],
            "unexpected-reply",
        ),
        (_cmd()[:-1] + b"\x00", [], None),  # bad CRC, dropped
        (_cmd()[:-1] + b"\x00", [_resp()], "executed-malformed"),
        (fix_crc(_cmd()[:-6] + b"\x77\x77" + _cmd()[-4:]), [_resp(Status.UNKNOWN_OP)], None),  # unknown op, answered
        (fix_crc(_cmd()[:-6] + b"\x77\x77" + _cmd()[-4:]), [_resp(Status.OK)], "executed-malformed"),
    ],
)
def test_the_oracle(frame, replies, finding):
    v = judge(Probe("t", frame), replies, node=NODE, earlier={})
    assert (v.finding.kind if v.finding else None) == finding, v


def test_a_replay_must_get_the_same_answer():
    frame = _cmd(Op.SET_POWER_CAP, args=PowerCapArgs(watts=800.0))
    earlier: dict = {}
    assert judge(Probe("a", frame), [_resp()], node=NODE, earlier=earlier).finding is None
    v = judge(Probe("a", frame), [_resp(Status.BAD_ARGUMENT)], node=NODE, earlier=earlier)
    assert v.finding is not None and v.finding.kind == "replay-mismatch"


async def _campaign(duration: float, seed: int = 1, **kw):
    async with emulated_target(node=NODE) as target:
        tr = transport_factory(target.transport_url)("fuzz-test")
        return await run_campaign(
            tr, fleet=target.fleet, node=NODE, target="emulated", duration=duration, seed_value=seed, **kw
        )


@pytest.mark.slow
async def test_campaign_against_an_emulated_node_finds_nothing_and_covers_every_kind():
    r = await _campaign(600.0, max_batches=12)  # a budget of work, not of time
    assert r.findings == [], [(f.kind, f.detail) for f in r.findings]
    assert r.cases == 12 * 25 and r.executions >= r.cases
    labels = set(r.coverage)
    assert {"random", "COMMAND/other-node", "RESPONSE", "TELEMETRY"} <= labels
    assert sum(label.startswith("malformed/") for label in labels) >= 6
    assert sum(label.startswith("COMMAND/") and "/" not in label[8:] for label in labels) >= 6
    # mutated commands reach the body: some are answered BAD_REQUEST or UNKNOWN_OP, not only dropped
    outcomes = {o for label, c in r.coverage.items() if label.startswith("malformed/") for o in c}
    assert "dropped" in outcomes and outcomes & {"BAD_REQUEST", "UNKNOWN_OP"}
    assert r.timeline[-1][1] == r.executions and r.cells == sum(len(c) for c in r.coverage.values())


@pytest.mark.slow
async def test_a_sealed_fleet_is_fuzzed_behind_its_authentication(tmp_path):
    """With --frame-keys every probe is sealed as a host would seal it: the node judges the same
    bytes, so the campaign finds nothing and reaches the decoder (answers BAD_REQUEST), not only
    the authentication; the node counts no refusal but the probes too short to be frames."""
    from mcm_firmware.host.client import HostClient
    from mcm_firmware.keyring import KeyRing, new_key_line
    from mcm_firmware.protocol.auth import FrameAuth

    new_key_line(tmp_path / "k")
    ring = KeyRing(tmp_path / "k")
    async with emulated_target(node=NODE, frame_keys=ring) as target:
        auth = FrameAuth(target.fleet, ring.secret, ring.current)
        tr = transport_factory(target.transport_url)("fuzz-sealed")
        r = await run_campaign(
            tr, fleet=target.fleet, node=NODE, target="emulated", duration=600, seed_value=5, max_batches=6, auth=auth
        )
        async with HostClient(transport_factory(target.transport_url)("h"), fleet=target.fleet, auth=auth) as host:
            stats = (await host.request(NODE, Op.STATS)).data
    assert r.findings == [], [(f.kind, f.detail) for f in r.findings]
    outcomes = {o for label, c in r.coverage.items() if label.startswith("malformed/") for o in c}
    assert outcomes & {"BAD_REQUEST", "UNKNOWN_OP"}
    # only bytes too short to be sealed (random junk, truncated frames) are refused unsealed
    short = sum(sum(r.coverage.get(label, {}).values()) for label in ("random", "malformed/truncate"))
    assert 0 < stats.auth_refused <= short, (stats.auth_refused, short)


def _skip_crc(data):
    """The planted bug: a node build that does not check the CRC (it recomputes it instead)."""
    b = bytes(data)
    if len(b) >= 27:
        b = fix_crc(b)
    return decode(b)


@pytest.mark.slow
def test_planted_bug_is_found_shrunk_and_written_as_a_regression_test(tmp_path, monkeypatch):
    monkeypatch.setattr(node_module, "decode", _skip_crc)
    r = asyncio.run(_campaign(600.0, seed=3, max_findings=1, max_batches=40))
    assert r.findings, "the campaign missed a node that skips the CRC check in 40 batches of cases"
    f = r.findings[0]
    assert f.kind in ("executed-malformed", "unexpected-reply"), f
    assert len(f.frames) == 1 and f.frames[0].label.startswith(("malformed/", "random")), f.frames
    write_report(r, tmp_path, node=NODE)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"][0]["kind"] == f.kind
    assert (tmp_path / "coverage.png").stat().st_size > 1000
    hexes = (tmp_path / "failure_1.hex").read_text().split()
    assert hexes[1] == f.frames[0].frame.hex()
    # the regression test fails on the bugged build ...
    spec = importlib.util.spec_from_file_location("reg", tmp_path / "test_fuzz_failure_1.py")
    reg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reg)
    with pytest.raises(AssertionError):
        reg.test_fuzz_failure_1()
    # ... and passes on the real one
    monkeypatch.setattr(node_module, "decode", decode)
    reg.test_fuzz_failure_1()


async def test_replay_of_a_saved_case_judges_it_again():
    frames = [_cmd(rid=11), _cmd(rid=11), _cmd()[:-1] + b"\x00"]
    async with emulated_target(node=NODE) as target:
        tr = transport_factory(target.transport_url)("replay-test")
        assert await replay(tr, frames, fleet=target.fleet, node=NODE) == []


@pytest.mark.slow
def test_cli_fuzz_emulated_with_report(tmp_path):
    r = run_cli("fuzz", "--duration", "3", "--seed", "5", "--report", str(tmp_path / "rep"), timeout=90)
    assert r.returncode == 0, r.stderr
    m = re.search(r"(\d+) executions in [\d.]+ s \((\d+)/s\)", r.stdout)
    assert m and int(m.group(1)) > 100, r.stdout
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["failures"] == [] and s["executions"] == int(m.group(1)) and s["coverage_cells"] >= 30


@pytest.mark.slow
def test_cli_fuzz_over_mosquitto_and_a_pty(cli_process, mosquitto):
    run = cli_process("run", "--nodes", "2", "--broker", mosquitto.url)
    run.wait_line("running 2 nodes")
    r = run_cli("fuzz", "--target", f"{mosquitto.url}/1", "--duration", "3", "--json", timeout=90)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["failures"] == [] and s["executions"] > 100 and s["target"].endswith("/1")
    pty = cli_process("run", "--nodes", "1", "--first-id", "9", "--serial", "pty")
    path = re.search(r"at (\S+)", pty.wait_line("serial: node 9 at")).group(1)
    pty.wait_line("running ")
    r = run_cli("fuzz", "--target", f"serial://{path}?node=9", "--duration", "3", "--json", timeout=90)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["failures"] == [] and s["executions"] > 50


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["fuzz", "--target", "ftp://x"], 2, "expected emulated, mqtt://HOST:PORT/NODE or serial://PORT"),
        (["fuzz", "--target", "mqtt://127.0.0.1:1"], 2, "node id as the path"),
        (["fuzz", "--duration", "0"], 2, "--duration"),
        (["fuzz", "--target", "mqtt://127.0.0.1:1/3", "--duration", "1"], 1, "cannot connect"),
    ],
)
def test_bad_fuzz_arguments(argv, code, needle):
    r = run_cli(*argv, timeout=60)
    assert r.returncode == code and needle in r.stderr, r.stderr


def test_the_ping_after_a_case_never_takes_a_probe_request_id():
    """Found by the first campaigns: request ids handed out in sequence let a bit-flipped id equal
    the id of the PING that closes the case, which then swallowed the probe's answer (a false
    no-reply). Ids are random now, and never one a probe of the running case carries."""
    from mcm_firmware.fuzz.campaign import Session

    s = Session(transport=None, fleet="f", node=NODE)  # type: ignore[arg-type]
    s._expect = {5, 6}

    class Rng:
        values = iter([5, 6, 5, 7])

        def getrandbits(self, bits):
            return next(self.values)

    s._rng = Rng()
    assert s.fresh_id() == 7
