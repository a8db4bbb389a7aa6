"""JSON and text views of every message type (what monitor and ctl print)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from mcm_firmware.host.views import message_json, message_line, status_json, typed_json
from mcm_firmware.protocol import PowerLimits, Samples, Snapshot, StatusResult, Telemetry
from mcm_firmware.testing.golden import GOLDEN, SNAPSHOT
from mcm_firmware.transport import Address, Channel


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_message_has_a_json_and_a_text_view(name):
    msg = GOLDEN[name]
    obj = message_json(Address("f", msg.node_id, Channel.STATE), msg)
    again = json.loads(json.dumps(obj, allow_nan=False))
    assert again["type"] == msg.TYPE.name and again["node"] == msg.node_id and again["seq"] == msg.seq
    assert again["topic"] == f"mcm/v1/f/{msg.node_id}/state"
    line = message_line(None, msg)
    assert msg.TYPE.name in line and str(msg.seq) in line
    # every field the message carries shows in its JSON view
    if isinstance(msg, (Telemetry, Samples)):  # the snapshot's fields at the top level
        shown = {"uptime_ns": "uptime_s", "flags": "failsafe", "recovery_action": "ras"}
        shown |= dict.fromkeys(("remapped_correctable", "remapped_uncorrectable"), "ras")
        shown |= dict.fromkeys(("ecc_ce_aggregate", "ecc_ue_aggregate"), "ras")
        shown |= dict.fromkeys(("pcie_replays", "pcie_aer_correctable", "pcie_aer_uncorrectable"), "pcie")
        names = [shown.get(n, n) for n in Snapshot._fields]
        if isinstance(msg, Samples):
            names += ["period_us", "samples"]
            assert len(again["samples"]) == len(msg.samples)
            assert again["samples"][1]["dies"][0] == msg.samples[1].dies[0]._asdict()
    else:
        names = [f.name for f in dataclasses.fields(msg) if f.name not in ("node_id", "seq", "timestamp_ns", "flags")]
        names = [n for n in names if getattr(msg, n) is not None]
    assert [n for n in names if n not in again] == [], again


def test_failed_sensors_read_null_in_json():
    dead = SNAPSHOT._replace(dies=(SNAPSHOT.dies[0]._replace(temp_c=math.nan),) + SNAPSHOT.dies[1:])
    st = StatusResult(
        profile="p",
        firmware="f",
        boot_count=1,
        tx_seq=1,
        rx_frames=0,
        tx_frames=0,
        tx_dropped=0,
        reconnects=0,
        link_util_permille=0,
        pump_names=("A", "B"),
        faults=(),
        power_limits=PowerLimits(default_w=700.0, in_band_w=math.nan, out_of_band_w=650.0, min_w=200.0, max_w=700.0),
        snapshot=dead,
    )
    obj = json.loads(json.dumps(status_json(4, st), allow_nan=False))
    assert obj["dies"][0]["temp_c"] is None and obj["dies"][1]["temp_c"] == 71.5
    assert obj["dies"][1]["reason_names"] == ["SW_POWER_CAP"]
    assert [p["name"] for p in obj["pumps"]] == ["A", "B"] and obj["pumps"][0]["lead"] is True
    assert obj["power_limits"]["in_band_w"] is None and obj["power_limits"]["out_of_band_w"] == 650.0


def test_typed_json_names_enum_values_and_keeps_every_field():
    data = GOLDEN["response-status"].data
    obj = json.loads(json.dumps(typed_json(data), allow_nan=False))
    assert [f.name for f in dataclasses.fields(data)] == list(obj)
    assert obj["snapshot"]["state"] == "RUNNING" and obj["snapshot"]["mode"] == "NORMAL"
    assert obj["snapshot"]["dies"][1] == dict(SNAPSHOT.dies[1]._asdict())
    assert obj["pump_names"] == ["A", "B"]


def test_status_text_shows_coolant_faults_counters_and_readings_not_taken():
    from mcm_firmware.host.views import status_text

    status = GOLDEN["response-status"].data
    obj = status_json(3, status)
    obj["dies"][0]["temp_c"] = None  # a die waiting for its rig: no reading yet
    text = status_text(obj)
    assert "coolant: inlet" in text and "faults in force:" in text and f"boot={status.boot_count}" in text
    assert "link: rx" in text and "die 0: n/a" in text and "None" not in text
    power = next(line for line in text.splitlines() if line.startswith("  power "))
    assert power.split()[1].count(".") == 1 and len(power.split()[1].split("/")[0].split(".")[1]) == 1  # 1 decimal


def test_every_golden_message_has_a_line_with_its_time_and_no_raw_dict():
    import re

    from mcm_firmware.host.views import message_line
    from mcm_firmware.testing.golden import GOLDEN

    for name, msg in GOLDEN.items():
        line = message_line(None, msg)
        assert re.match(r"\d\d:\d\d:\d\d\.\d{3} +\d+ [A-Z]+ +seq=\d+", line), (name, line)
        assert "{" not in line and "'" not in line.split(" seq=")[1][:40], (name, line)
    cmd = message_line(None, GOLDEN["command-set-power-cap"])
    assert cmd.endswith("SET_POWER_CAP watts=800")


def _leaves(x, path=()):
    """Every leaf of a JSON value with its path (an empty list counts as a leaf)."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(x, list) and x:
        for i, v in enumerate(x):
            yield from _leaves(v, (*path, i))
    else:
        yield path, x


def _other(value):
    """A value of the leaf's kind that reads differently whatever the text rounds it to."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 9_876_543
    if isinstance(value, float):
        return value + 98_765.25
    if isinstance(value, str):
        return value + "ZQ"
    if value is None:
        return 4321.5
    return ["ZQ-fault"]  # an empty list: faults, reason names


def test_status_text_shows_every_figure_of_the_status_json():
    """Walk every leaf of ``ctl status --json`` (STATUS and STATS): changing any one of them
    changes the text, and no boolean reads as Python's True/False."""
    import copy

    from mcm_firmware.host.views import status_text
    from mcm_firmware.protocol import LinkFaultCounts, StatsResult

    figures = {f.name: i + 1 for i, f in enumerate(dataclasses.fields(StatsResult)) if f.type in (int, "int")}
    quiet = LinkFaultCounts(dropped=0, corrupted=0, duplicated=0, delayed=0)
    stats = StatsResult(**figures, link_out=quiet, link_in=quiet)
    obj = json.loads(json.dumps(status_json(3, GOLDEN["response-status"].data, stats), allow_nan=False))
    base = status_text(obj)
    assert "True" not in base and "False" not in base and "None" not in base
    # the same figure twice in the JSON, shown once: its other place is the one changed
    same = {("counters", "rx_rejected"): ("rx_rejected",), ("power_limits", "source"): ("power_limit_source",)}
    missing = []
    leaves = list(_leaves(obj))
    assert len(leaves) > 90  # the walk reaches the nested figures
    for path, value in leaves:
        if path in same.values():
            continue
        changed = copy.deepcopy(obj)
        for p in (path, *([same[path]] if path in same else [])):
            *head, last = p
            holder = changed
            for key in head:
                holder = holder[key]
            holder[last] = _other(value)
        text = status_text(changed)
        if text == base:
            missing.append(".".join(map(str, path)))
    assert missing == [], f"not shown by ctl status: {missing}"
    for flag in ("yes", "no"):
        assert f"failsafe={flag}" in status_text({**obj, "failsafe": flag == "yes"})


def test_every_response_line_carries_its_decoded_fields():
    """monitor's text: a RESPONSE line shows what the answer holds (a STATUS in a short summary),
    not a pointer elsewhere."""
    from mcm_firmware.protocol import Response

    responses = {name: m for name, m in GOLDEN.items() if isinstance(m, Response)}
    assert "response-status" in responses and len(responses) >= 5
    for name, msg in responses.items():
        line = message_line(None, msg)
        rest = line.split(f"request={msg.request_id} ", 1)[1]
        fields = [x.split("=")[0] for x in rest.split() if "=" in x]
        if msg.data is not None and not isinstance(msg.data, StatusResult):  # each field of the answer
            assert fields == [f.name for f in dataclasses.fields(msg.data)], (name, line)
        assert "see ctl" not in line, (name, line)
    status = GOLDEN["response-status"].data
    line = message_line(None, GOLDEN["response-status"])
    hot = max(d.temp_c for d in status.snapshot.dies)
    for part in ("state=RUNNING", "mode=NORMAL", f"Tmax={hot:.1f}C", f"profile={status.profile}"):
        assert part in line, (part, line)
    assert f"P={status.snapshot.power_w:.0f}/{status.snapshot.power_cap_w:.0f}W" in line, line
    faults = message_line(None, GOLDEN["response-get-faults"])  # records by their fields, not a count
    assert faults.endswith(" faults=HBM_FLIP:0x944d2310:2:1,INLET_STEP:5:0"), faults
