"""``mcm-emu rig-sim``: the bench rig simulator on the far end of a real pty, answering the rig line
protocol (io and controller rigs), started as ``mcm-emu rig-sim`` and as ``tools/rig_sim.py``."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
import tty

import pytest

from mcm_firmware.cli import GROUPS, rigsim

from ..conftest import ROOT, cli_env, run_cli

REGISTERED = rigsim in GROUPS
STARTS = [
    pytest.param(
        (sys.executable, "-m", "mcm_firmware", "rig-sim"),
        id="mcm-emu",
        marks=pytest.mark.skipif(not REGISTERED, reason="rig-sim is not yet in mcm_firmware.cli.GROUPS"),
    ),
    pytest.param((sys.executable, str(ROOT / "tools" / "rig_sim.py")), id="tools"),
]


class Bench:
    """A rig simulator on the secondary side of a pty; the test talks to it as a node would."""

    def __init__(self, start: tuple[str, ...], *args: str) -> None:
        self.primary, secondary = pty.openpty()
        tty.setraw(secondary)
        path = os.ttyname(secondary)
        self.proc = subprocess.Popen(
            [*start, path, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT
        )
        os.close(secondary)
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first.startswith("rig-sim: ") and f" on {path}" in first, (first, self.proc.stderr.read())
        self.buf = b""

    def ask(self, line: str, timeout: float = 5.0) -> str:
        os.write(self.primary, line.encode() + b"\n")
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {line!r}"
            if select.select([self.primary], [], [], left)[0]:
                self.buf += os.read(self.primary, 4096)
        answer, self.buf = self.buf.split(b"\n", 1)
        return answer.decode().strip()

    def close(self) -> tuple[int, str]:
        out, _ = self.proc.communicate(timeout=20)
        os.close(self.primary)
        return self.proc.returncode, out


@pytest.mark.parametrize("start", STARTS)
def test_an_io_rig_answers_reads_and_writes_and_ends_after_its_seconds(start):
    bench = Bench(start, "--rig", "bench-tc-valve", "--seconds", "3")
    try:
        kind, ch, raw = bench.ask("R 0").split()  # die:0 in 0.1 degC counts
        assert (kind, ch) == ("V", "0") and 300 < float(raw) < 800
        kind, ch, raw = bench.ask("R 1").split()  # flow:0 in mL/min
        assert (kind, ch) == ("V", "1") and float(raw) == pytest.approx(250.0, abs=5)  # valve at 50 %
        assert bench.ask("W 0 1000").split()[:2] == ["A", "0"]  # valve 0 to 100 %, slewing there
        assert bench.ask("R 7") == "E 7 no such channel"
        assert bench.ask("W 0 lots") == "E 0 bad value"
        assert bench.ask("nonsense 0") == "E 0 no such channel"
    finally:
        rc, out = bench.close()
    assert rc == 0 and out.splitlines()[-1] == "rig-sim: answered 6 requests"


@pytest.mark.parametrize("start", STARTS)
def test_a_controller_rig_answers_readings_with_valve_commands(start):
    bench = Bench(start, "--rig", "bench-controller", "--seconds", "2")
    try:
        hot, cold = bench.ask("S 0 7000"), bench.ask("S 0 5000")  # die 0 at 70 and 50 degC
    finally:
        rc, _ = bench.close()
    assert rc == 0
    assert hot.split()[0] == "C" and cold.split()[0] == "C"
    assert float(hot.split()[2]) > float(cold.split()[2])  # hotter, the valve opens further


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (("/dev/pts/0", "--rig", "nosuch"), 2, "no such rig profile (known: bench-controller, bench-tc-valve)"),
        (("pty",), 2, "needs the rig's port"),
        (("/dev/pts/99999",), 1, "cannot open serial port /dev/pts/99999"),
        (("/dev/pts/0", "--baud", "5"), 2, "--baud must be within"),
    ],
)
@pytest.mark.parametrize("start", STARTS)
def test_bad_arguments_are_said_in_one_line(start, args, code, needle):
    out = subprocess.run([*start, *args], capture_output=True, text=True, timeout=60, env=cli_env(), cwd=ROOT)
    assert out.returncode == code and needle in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # the error, and for a usage error a hint


@pytest.mark.skipif(not REGISTERED, reason="rig-sim is not yet in mcm_firmware.cli.GROUPS")
def test_rig_sim_is_listed_in_the_help():
    out = run_cli("--help")
    assert out.returncode == 0 and "rig-sim" in out.stdout
