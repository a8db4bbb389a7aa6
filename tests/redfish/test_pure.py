"""The parts without I/O: the Base registry messages as published, accounts files, readings."""

from __future__ import annotations

import json

import pytest

from mcm_firmware.redfish import resources as rs
from mcm_firmware.redfish.auth import AccountError, Authority, load_accounts
from mcm_firmware.redfish.registry import BASE, REGISTRY, error

from .conftest import shared


def test_the_base_messages_are_dmtfs():
    published = json.loads((shared("registries") / f"{REGISTRY}.json").read_text())["Messages"]
    for key, msg in BASE.items():
        ref = published[key]
        assert (msg.text, msg.args, msg.severity, msg.resolution) == (
            ref["Message"],
            ref.get("NumberOfArgs", 0),
            ref["MessageSeverity"],
            ref["Resolution"],
        ), key
    e = error("PropertyValueOutOfRange", 5, "SetPoint")["error"]
    assert e["message"] == "The value '5' for the property SetPoint is not in the supported range of acceptable values."
    with pytest.raises(ValueError, match="takes 2 arguments"):
        error("PropertyValueOutOfRange", 5)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[accounts.a]\nrole = "Admin"\npassword = "longenough"\n', "role must be one of ReadOnly, Operator"),
        ('[accounts.a]\nrole = "Operator"\npassword = "short"\n', "8 characters or more"),
        ('[accounts.a]\nrole = "Operator"\n', "give password or password_file"),
        ('[accounts.a]\nrole = "Operator"\npassword = "longenough"\ncolour = 1\n', "unknown key 'colour'"),
        ('[accounts.a]\nrole = "Operator"\npassword_file = "missing"\n', "password_file"),
        ("[users]\n", "unknown key 'users'"),
        ("accounts = [", "accounts.toml"),
    ],
)
def test_an_accounts_file_that_cannot_be_used_is_named(tmp_path, text, says):
    path = tmp_path / "accounts.toml"
    path.write_text(text)
    with pytest.raises(AccountError, match=says) as e:
        load_accounts(path)
    assert str(path) in str(e.value)


def test_sessions_expire_when_idle_and_passwords_are_checked():
    auth = Authority(load_accounts_from({"op": ("Operator", "op-password")}), session_timeout=10)
    assert auth.check_password("op", "nope") is None and auth.check_password("nobody", "op-password") is None
    acct = auth.check_password("op", "op-password")
    assert acct is not None and acct.can_write
    s = auth.open(acct, now=0.0)
    assert s is not None and auth.by_token(s.token, now=5.0) is s
    assert auth.by_token(s.token, now=14.0) is s  # used at 5: idle 9 s
    assert auth.by_token(s.token, now=25.0) is None and not auth.sessions


def load_accounts_from(table: dict[str, tuple[str, str]]):
    from mcm_firmware.redfish.auth import Account

    return {u: Account(u, role, pw) for u, (role, pw) in table.items()}


def test_a_failed_sensor_reads_null_never_nan():
    assert rs.num(float("nan")) is None and rs.num(float("inf")) is None and rs.num(1.23456) == 1.235
    assert "Chassis_v1.xml" in rs.metadata_document() and rs.odata_document()["value"][0]["url"] == "/redfish/v1/"
