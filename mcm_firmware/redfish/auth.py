"""Accounts, roles and sessions of the Redfish service (DSP0266 "Security details").

Two roles of the standard Redfish set: ``ReadOnly`` (Login: GET and HEAD, and its own session)
and ``Operator`` (also ConfigureComponents: PATCH, POST, DELETE of resources). Accounts come from a
TOML file::

    [accounts.ops]
    role = "Operator"
    password = "a long secret"

    [accounts.grafana]
    role = "ReadOnly"
    password_file = "/run/secrets/grafana"   # its first line

Without a file the service makes an ``operator`` and a ``readonly`` account with random passwords
and says them once at start: no password works that nobody was told.
"""

from __future__ import annotations

import hmac
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("ReadOnly", "Operator")


class AccountError(ValueError):
    """An accounts file that cannot be used; the message names the file and the account."""


@dataclass(frozen=True)
class Account:
    user: str
    role: str
    password: str

    @property
    def can_write(self) -> bool:
        return self.role == "Operator"


def load_accounts(path: str | Path) -> dict[str, Account]:
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except OSError as e:
        raise AccountError(f"{p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise AccountError(f"{p}: {e}") from None
    table = data.get("accounts")
    extra = set(data) - {"accounts"}
    if extra:
        raise AccountError(f"{p}: unknown key {sorted(extra)[0]!r} (only [accounts.NAME] tables)")
    if not isinstance(table, dict) or not table:
        raise AccountError(f"{p}: no [accounts.NAME] table")
    out: dict[str, Account] = {}
    for user, entry in table.items():
        where = f"{p}: accounts.{user}"
        if not isinstance(entry, dict):
            raise AccountError(f"{where}: must be a table with role and password")
        unknown = set(entry) - {"role", "password", "password_file"}
        if unknown:
            raise AccountError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        role = entry.get("role")
        if role not in ROLES:
            raise AccountError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if ("password" in entry) == ("password_file" in entry):
            raise AccountError(f"{where}: give password or password_file (one of them)")
        if "password_file" in entry:
            pf = Path(str(entry["password_file"]))
            if not pf.is_absolute():
                pf = p.parent / pf
            try:
                lines = pf.read_text().splitlines()
            except OSError as e:
                raise AccountError(f"{where}: password_file {pf}: {e.strerror}") from None
            password = lines[0] if lines else ""
        else:
            password = entry["password"]
        if not isinstance(password, str) or len(password) < 8:
            raise AccountError(f"{where}: the password must be a string of 8 characters or more")
        out[user] = Account(user, role, password)
    return out


def generated_accounts() -> dict[str, Account]:
    """An ``operator`` and a ``readonly`` account with random passwords (to be shown once)."""
    return {
        "operator": Account("operator", "Operator", secrets.token_urlsafe(12)),
        "readonly": Account("readonly", "ReadOnly", secrets.token_urlsafe(12)),
    }


@dataclass
class Session:
    id: str
    token: str
    account: Account
    last_used: float


@dataclass
class Authority:
    """Who may do what: accounts, open sessions (tokens), their idle timeout."""

    accounts: dict[str, Account]
    session_timeout: float = 1800.0
    max_sessions: int = 256
    sessions: dict[str, Session] = field(default_factory=dict)  # by id

    def check_password(self, user: str, password: str) -> Account | None:
        acct = self.accounts.get(user)
        # compare even for an unknown user, so that timing does not tell which users exist
        good = hmac.compare_digest((acct.password if acct else "\0" * 16).encode(), password.encode())
        return acct if acct is not None and good else None

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for sid in [s.id for s in self.sessions.values() if now - s.last_used > self.session_timeout]:
            del self.sessions[sid]

    def open(self, account: Account, now: float | None = None) -> Session | None:
        """A new session, None when as many are open as allowed."""
        self.expire(now)
        if len(self.sessions) >= self.max_sessions:
            return None
        s = Session(secrets.token_hex(8), secrets.token_urlsafe(32), account, time.monotonic() if now is None else now)
        self.sessions[s.id] = s
        return s

    def by_token(self, token: str, now: float | None = None) -> Session | None:
        self.expire(now)
        for s in self.sessions.values():
            if hmac.compare_digest(s.token.encode(), token.encode()):
                s.last_used = time.monotonic() if now is None else now
                return s
        return None

    def close(self, sid: str) -> bool:
        return self.sessions.pop(sid, None) is not None
