"""Hardware profiles: the shipped ones load; bad ones are refused naming file and key."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from mcm_firmware.profile import ProfileError, list_profiles, load_profile, load_profile_file

from ..conftest import ROOT, cli_env, run_cli

SHIPPED = sorted((ROOT / "hw_profiles").glob("*.toml"))


def test_profiles_are_shipped():
    assert "colossus-mcm" in list_profiles()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profile_is_valid_and_named_after_its_file(path):
    prof = load_profile_file(path)
    assert prof.name == path.stem
    assert prof.sources, "every profile documents the source of its figures"


def test_colossus_figures():
    p = load_profile("colossus-mcm")
    assert (p.die.count, p.hbm.count, p.cooling.valves, len(p.cooling.pumps)) == (4, 8, 4, 2)
    assert 250 <= p.die.tdp_w <= 350
    assert p.thermal.slowdown_c < p.thermal.shutdown_c
    assert [s.mhz for s in p.die.pstates] == sorted((s.mhz for s in p.die.pstates), reverse=True)


def base() -> dict:
    return tomllib.loads((ROOT / "hw_profiles" / "colossus-mcm.toml").read_text())


def dump(data: dict) -> str:
    return tomli_w.dumps(data)


def bad_profile(tmp_path: Path, mutate) -> str:
    data = base()
    mutate(data)
    path = tmp_path / "variant.toml"
    path.write_text(dump(data))
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert str(path) in str(info.value)
    return str(info.value)


def test_round_trip_of_the_test_writer(tmp_path):
    path = tmp_path / "copy.toml"
    path.write_text(dump(base()))
    assert load_profile_file(path) == load_profile("colossus-mcm")


def test_missing_key_is_named(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d["thermal"].pop("shutdown_c"))
    assert "key 'thermal.shutdown_c': missing key" in msg


def test_unknown_key_is_named(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d["cooling"].update(pump_count=3))
    assert "key 'cooling.pump_count': unknown key" in msg


def test_unknown_section_is_named(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d.update(extras={"a": 1}))
    assert "key 'extras': unknown key" in msg


def test_out_of_range_key_is_named(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d["rates"].update(telemetry_hz=-5.0))
    assert "key 'rates.telemetry_hz'" in msg and "greater than 0" in msg


def test_nested_list_item_is_named(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d["die"]["pstates"][3].update(mv=5))
    assert "key 'die.pstates.3.mv'" in msg


def test_inconsistent_thresholds_are_refused(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d["thermal"].update(shutdown_c=80.0))
    assert "key 'thermal'" in msg and "shutdown_c" in msg


def test_pstates_must_descend(tmp_path):
    def swap(d):
        ps = d["die"]["pstates"]
        ps[0], ps[1] = ps[1], ps[0]

    msg = bad_profile(tmp_path, swap)
    assert "key 'die.pstates'" in msg and "slower" in msg


def test_duplicate_pump_names_are_refused(tmp_path):
    msg = bad_profile(tmp_path, lambda d: d["cooling"]["pumps"][1].update(name="A"))
    assert "key 'cooling.pumps'" in msg and "unique" in msg


def test_toml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("name = 'x'\n[die\n")
    with pytest.raises(ProfileError, match=r"broken\.toml: TOML syntax error"):
        load_profile_file(path)


def test_unreadable_file_names_the_file(tmp_path):
    with pytest.raises(ProfileError, match=r"nope\.toml: cannot read"):
        load_profile_file(tmp_path / "nope.toml")


def test_unknown_profile_name_lists_the_known_ones():
    with pytest.raises(ProfileError, match=r"no such profile.*colossus-mcm"):
        load_profile("does-not-exist")


def test_cli_profiles_list_show_validate(tmp_path):
    out = run_cli("profiles", "list")
    assert out.returncode == 0 and "colossus-mcm" in out.stdout
    out = run_cli("profiles", "show", "colossus-mcm")
    assert out.returncode == 0 and '"name": "colossus-mcm"' in out.stdout
    out = run_cli("profiles", "validate", str(ROOT / "hw_profiles" / "colossus-mcm.toml"))
    assert out.returncode == 0 and "ok (colossus-mcm)" in out.stdout


def test_cli_validate_bad_profile_exits_2_naming_file_and_key(tmp_path):
    data = base()
    data["power"]["default_cap_w"] = 99999.0
    path = tmp_path / "hot.toml"
    path.write_text(dump(data))
    out = run_cli("profiles", "validate", str(path))
    assert out.returncode == 2
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text == "[power]")
    assert f"{path}:{line}: key 'power'" in out.stderr and "default_cap_w" in out.stderr
    assert "Traceback" not in out.stderr


def test_cli_show_unknown_profile_exits_2():
    out = run_cli("profiles", "show", "nope")
    assert out.returncode == 2 and "no such profile" in out.stderr


# --- extends -------------------------------------------------------------------------------------


def test_batched_profile_extends_the_reference_and_changes_only_its_rates():
    ref, batched = load_profile("colossus-mcm"), load_profile("colossus-mcm-batched")
    assert (batched.rates.telemetry_hz, batched.rates.samples_per_frame) == (1.0, 10)
    assert batched.rates.sample_hz == ref.rates.telemetry_hz  # the same sample rate, a tenth the frames
    assert batched.model_dump(exclude={"name", "description", "rates"}) == ref.model_dump(
        exclude={"name", "description", "rates"}
    )


def test_extends_merges_tables_key_by_key_and_replaces_arrays(tmp_path):
    (tmp_path / "child.toml").write_text(
        'extends = "colossus-mcm"\nname = "child"\ndescription = "d"\n'
        "[thermal]\nslowdown_c = 84.0\n"
        "[die]\npstates = [{ mhz = 1500, mv = 800 }, { mhz = 500, mv = 650 }]\n"
    )
    child, ref = load_profile_file(tmp_path / "child.toml"), load_profile("colossus-mcm")
    assert child.thermal.slowdown_c == 84.0
    assert child.thermal.shutdown_c == ref.thermal.shutdown_c  # the rest of the table inherited
    assert [p.mhz for p in child.die.pstates] == [1500, 500]  # an array is replaced whole
    assert child.die.tdp_w == ref.die.tdp_w


def test_extends_a_sibling_file_and_a_chain(tmp_path):
    data = base()
    data["name"] = "mid"
    (tmp_path / "mid.toml").write_text(dump(data))
    (tmp_path / "leaf.toml").write_text('extends = "mid.toml"\nname = "leaf"\n[die]\ntdp_w = 280.0\n')
    leaf = load_profile_file(tmp_path / "leaf.toml")
    assert (leaf.name, leaf.die.tdp_w, leaf.die.count) == ("leaf", 280.0, 4)


def test_an_extends_cycle_is_refused_naming_the_key(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a"\nname = "b"\n')
    with pytest.raises(ProfileError) as info:
        load_profile_file(tmp_path / "a.toml")
    assert "key 'extends'" in str(info.value) and "cycle" in str(info.value)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('extends = "no-such-profile"', "no base profile 'no-such-profile'"),
        ('extends = "missing/base.toml"', "base profile file 'missing/base.toml' not found"),
        ("extends = 3", "must name a profile"),
    ],
)
def test_a_bad_extends_is_refused_naming_the_key(tmp_path, line, says):
    path = tmp_path / "p.toml"
    path.write_text(f'{line}\nname = "p"\n')
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert str(path) in str(info.value) and "key 'extends'" in str(info.value) and says in str(info.value)


def test_an_error_in_the_inherited_part_is_still_named(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('extends = "colossus-mcm"\nname = "p"\n[rates]\nsamples_per_frame = 0\n')
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert "key 'rates.samples_per_frame'" in str(info.value)


@pytest.mark.parametrize(
    ("rates", "says"),
    [
        ({"telemetry_hz": 5.0, "samples_per_frame": 8}, "exceeds tick_hz"),  # 40 samples/s > 20 Hz ticks
        ({"telemetry_hz": 1.0, "samples_per_frame": 3}, "not a whole multiple"),  # every 6.67 ticks
        ({"samples_per_frame": 65}, "less than or equal to 64"),
    ],
)
def test_sample_rates_the_tick_cannot_keep_are_refused(tmp_path, rates, says):
    msg = bad_profile(tmp_path, lambda d: d["rates"].update(rates))
    assert "key 'rates" in msg and says in msg


def test_every_bad_key_is_named_with_its_line(tmp_path):
    text = (ROOT / "hw_profiles" / "colossus-mcm.toml").read_text()
    text = text.replace("[rates]\n", "[rates]\nbogus = 1\n", 1).replace("[cooling]\n", "[cooling]\npump_count = 3\n", 1)
    path = tmp_path / "two.toml"
    path.write_text(text)
    lines = text.splitlines()
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    assert sorted(info.value.lines()) == sorted(
        [
            f"{path}:{lines.index('pump_count = 3') + 1}: key 'cooling.pump_count': unknown key",
            f"{path}:{lines.index('bogus = 1') + 1}: key 'rates.bogus': unknown key",
        ]
    )
    assert info.value.line in (lines.index("pump_count = 3") + 1, lines.index("bogus = 1") + 1)


# --- rig profiles through `profiles validate` ----------------------------------------------------

RIG = ROOT / "hw_profiles" / "rigs" / "bench-tc-valve.toml"


def test_cli_validates_the_shipped_rig_profiles_as_rig_profiles():
    rigs = sorted((ROOT / "hw_profiles" / "rigs").glob("*.toml"))
    out = run_cli("profiles", "validate", *map(str, rigs), str(ROOT / "hw_profiles" / "colossus-mcm.toml"))
    assert out.returncode == 0, out.stderr
    assert [line.split(": ", 1)[1] for line in out.stdout.splitlines()] == [
        *(f"ok (rig {p.stem})" for p in rigs),
        "ok (colossus-mcm)",
    ]


def test_cli_names_file_line_and_key_of_every_error_of_a_rig_profile(tmp_path):
    (tmp_path / "rigs").mkdir()
    path = tmp_path / "rigs" / "bad.toml"
    text = "colour = 'red'\n" + RIG.read_text().replace('target = "flow:0"', 'target = "cpu:0"')
    path.write_text(text)
    out = run_cli("profiles", "validate", str(path))
    assert out.returncode == 2 and out.stdout == ""
    target_line = text.splitlines().index('target = "cpu:0"') + 1
    assert sorted(out.stderr.splitlines()) == sorted(
        [
            f"{path}:1: key 'colour': unknown key",
            f"{path}:{target_line}: key 'sensor.1.target': target must be one of die:N, hbm:N, flow:N",
        ]
    )


def test_cli_recognises_a_rig_profile_outside_rigs_by_its_keys_and_kind_forces_one(tmp_path):
    path = tmp_path / "bench.toml"
    path.write_text(RIG.read_text())
    out = run_cli("profiles", "validate", str(path))
    assert out.returncode == 0 and out.stdout == f"{path}: ok (rig bench-tc-valve)\n"
    out = run_cli("profiles", "validate", "--kind", "hardware", str(path))
    assert out.returncode == 2 and f"{path}: key 'die': missing key" in out.stderr
    out = run_cli("profiles", "validate", "--kind", "rig", str(ROOT / "hw_profiles" / "colossus-mcm.toml"))
    assert out.returncode == 2 and "key 'die': unknown key" in out.stderr


# --- profiles list: files and $MCM_EMU_PROFILES ---------------------------------------------------


def test_cli_list_shows_each_profile_with_its_kind_and_file():
    out = run_cli("profiles", "list")
    assert out.returncode == 0
    rows = {line.split()[0]: line.split()[1:3] for line in out.stdout.splitlines()[1:]}
    assert out.stdout.split()[:4] == ["NAME", "KIND", "FILE", "DESCRIPTION"]
    assert rows["colossus-mcm"] == ["hardware", "hw_profiles/colossus-mcm.toml"]
    assert rows["bench-tc-valve"] == ["rig", "hw_profiles/rigs/bench-tc-valve.toml"]


def test_mcm_emu_profiles_directories_come_first_and_list_shows_where_each_is_from(tmp_path):
    mine = tmp_path / "mine"
    (mine / "rigs").mkdir(parents=True)
    data = base()
    data["description"] = "my own colossus"
    (mine / "colossus-mcm.toml").write_text(dump(data))
    data["name"] = "extra"
    (mine / "extra.toml").write_text(dump(data))
    (mine / "rigs" / "my-rig.toml").write_text(RIG.read_text().replace('"bench-tc-valve"', '"my-rig"'))
    out = subprocess.run(
        [sys.executable, "-m", "mcm_firmware", "profiles", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**cli_env(), "MCM_EMU_PROFILES": str(mine)},
    )
    assert out.returncode == 0, out.stderr
    rows = {line.split()[0]: line for line in out.stdout.splitlines()[1:]}
    assert rows["colossus-mcm"].split()[1:3] == ["hardware", "mine/colossus-mcm.toml"]
    assert rows["colossus-mcm"].endswith("my own colossus")
    assert rows["extra"].split()[1:3] == ["hardware", "mine/extra.toml"]
    assert rows["my-rig"].split()[1:3] == ["rig", "mine/rigs/my-rig.toml"]
    assert rows["h100-sxm-class"].split()[2] == str(ROOT / "hw_profiles" / "h100-sxm-class.toml")


@pytest.mark.parametrize("args", [("profiles", "--help"), ("profiles", "list", "--help")])
def test_help_says_where_profiles_are_found(args):
    out = run_cli(*args)
    assert out.returncode == 0
    assert "$MCM_EMU_PROFILES" in out.stdout and "rigs/" in out.stdout


def test_cli_show_falls_back_to_rig_profiles():
    out = run_cli("profiles", "show", "bench-tc-valve")
    assert out.returncode == 0 and '"name": "bench-tc-valve"' in out.stdout and '"sensor"' in out.stdout
