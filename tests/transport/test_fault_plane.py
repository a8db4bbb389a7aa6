"""The fault control plane on a real Mosquitto, through the CLI: a link fault that drops every frame
both ways leaves commands unanswered, while ``get-faults`` and ``clear-fault`` (the INJECT,
CLEAR_FAULT and GET_FAULTS operations and their answers) pass by it, so the fault can always be
cleared."""

from __future__ import annotations

import json

from ..conftest import run_cli


def test_a_link_fault_that_drops_everything_is_seen_and_cleared_through_the_cli(mosquitto, cli_process):
    run = cli_process("run", "--broker", mosquitto.url, "--nodes", "2", "--fleet", "fp")
    run.wait_line("up: 2 nodes")

    def ctl(*argv: str) -> tuple[int, dict]:
        r = run_cli("ctl", "--broker", mosquitto.url, "--fleet", "fp", "--json", "--timeout", "2", "1", *argv)
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])

    code, out = ctl("inject", "link-drop", "both", "1.0")
    assert code == 0 and out["ok"], out
    code, out = ctl("ping")  # lost both ways, and the error says so
    assert code == 1 and "no reply from node 1 to ping within 2 s" in out["error"], out
    code, out = ctl("get-faults")  # the control plane answers
    assert code == 0 and [(f["kind"], f["target"], f["value"]) for f in out["faults"]] == [("LINK_DROP", "both", 1.0)]
    code, out = ctl("clear-fault", "link-drop")
    assert code == 0 and out["ok"], out
    code, out = ctl("ping")
    assert code == 0 and out["ok"], out
    code, out = ctl("get-faults")
    assert code == 0 and out["faults"] == [], out
