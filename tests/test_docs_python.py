"""Every ```python block of the docs runs as it stands (each block in a fresh namespace):
docs/python-api.md and the Python part of docs/faults.md by themselves; docs/record.md's against
a recording the test makes; docs/redfish.md's against a served fleet (its placeholders, the
service's address and the operator's password, given those of that fleet)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests

from .conftest import free_port, run_cli

DOCS = Path(__file__).parents[1] / "docs"
FILES = ("python-api.md", "faults.md")


def blocks(files: tuple[str, ...] = FILES) -> list[tuple[str, str]]:
    out = []
    for name in files:
        text = (DOCS / name).read_text()
        for k, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            out.append((f"{name}#{k + 1}", code))
    return out


def test_the_api_doc_has_examples():
    assert sum(name.startswith("python-api") for name, _ in blocks()) >= 4


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_a_python_block_of_the_docs_runs(where, code, capsys):
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip() or "print(" not in code, f"{where} printed nothing"


def test_the_record_docs_python_reads_a_recording(tmp_path, monkeypatch):
    (where, code), *more = blocks(("record.md",))
    assert not more and '"trace.jsonl.gz"' in code
    r = run_cli(
        *("run", "--nodes", "2", "--embedded-port", str(free_port()), "--duration", "1.5"),
        *("--record", str(tmp_path / "trace.jsonl.gz")),
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.chdir(tmp_path)
    space: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(code, where, "exec"), space)
    assert type(space["msg"]).__name__ == "Death"  # every frame decoded, the last the nodes' DEATH
    assert space["header"]["format"] == "mcm-emu-record"  # type: ignore[index]


def test_the_redfish_docs_python_talks_to_a_served_fleet(cli_process, capsys):
    (where, code), *more = blocks(("redfish.md",))
    assert not more and '"http://127.0.0.1:8000"' in code and 'password="..."' in code
    port = free_port()
    run = cli_process("run", "--nodes", "1", "--embedded-port", str(port), "--redfish-port", "0")
    password = run.wait_line("redfish: account operator (Operator) password ", timeout=60).split()[-1]
    url = run.wait_line("redfish: http://", timeout=60).split()[1].removesuffix("/redfish/v1/")
    code = code.replace('"http://127.0.0.1:8000"', repr(url)).replace('password="..."', f"password={password!r}")
    run.wait_line("up: 1 nodes", timeout=60)
    deadline = time.monotonic() + 30  # as a reader would: once the module is served with its sensors
    while True:
        r = requests.get(f"{url}/redfish/v1/Chassis/0/Sensors", auth=("operator", password), timeout=5)
        if r.status_code == 200 and len(r.json()["Members"]) >= 10:
            break
        assert time.monotonic() < deadline, (r.status_code, r.text[:500])
        time.sleep(0.2)
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) >= 10 and all(len(line.split()) >= 3 for line in printed), printed
    status = run_cli("ctl", "--broker", f"mqtt://127.0.0.1:{port}", "0", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["power_limits"]["out_of_band_w"] == 900.0  # the block's PATCH
