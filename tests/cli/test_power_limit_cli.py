"""`ctl set-power-limit` and the limits in `ctl status` (text and --json), as real subprocesses."""

from __future__ import annotations

import json
import signal

from ..conftest import free_port, run_cli


def test_set_power_limit_by_source_and_status_names_the_one_enforced(cli_process):
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    run = cli_process("run", "--nodes", "1", "--profile", "h100-sxm-class", "--embedded-port", str(port))
    run.wait_line("node=0 state=RUNNING")
    ctl = ("ctl", "--broker", url, "0")

    assert run_cli(*ctl, "set-power-cap", "650").returncode == 0
    r = run_cli(*ctl, "set-power-limit", "out-of-band", "600")
    assert r.returncode == 0, r.stderr
    out = json.loads(run_cli(*ctl, "status", "--json").stdout)
    assert out["power_cap_w"] == 600.0
    assert out["power_limits"] == {
        "enforced_w": 600.0,
        "source": "out-of-band",
        "default_w": 700.0,
        "in_band_w": 650.0,
        "out_of_band_w": 600.0,
        "min_w": 200.0,
        "max_w": 700.0,
    }
    text = run_cli(*ctl, "status").stdout
    assert (
        "  power limit 600 W enforced (out-of-band); limits set: default 700, in-band 650, out-of-band 600; "
        "range 200..700 W" in text
    ), text
    assert "pcie: replays=0 aer correctable=0 uncorrectable=0" in text

    assert run_cli(*ctl, "set-power-limit", "out-of-band", "clear").returncode == 0
    out = json.loads(run_cli(*ctl, "status", "--json").stdout)
    assert out["power_limits"]["source"] == "in-band" and out["power_limits"]["out_of_band_w"] is None

    # bad input: named, exit code 2; refused by the node, counted
    r = run_cli(*ctl, "set-power-limit", "bmc", "500")
    assert r.returncode == 2 and "unknown power limit source 'bmc' (sources: in-band, out-of-band)" in r.stderr
    r = run_cli(*ctl, "set-power-limit", "out-of-band", "150")
    assert r.returncode == 2 and "out-of-band power limit 150 W outside 200..700 W" in r.stdout + r.stderr
    out = json.loads(run_cli(*ctl, "status", "--json").stdout)
    assert out["runtime"]["refused"]["bad_argument"] == 1 and out["power_cap_w"] == 650.0

    run.signal(signal.SIGTERM)
    assert run.wait() == 0
