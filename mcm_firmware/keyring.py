"""Fleet secrets for frame authentication, from a key file that may change under a running fleet.

The file holds one key a line, ``KEY_ID SECRET [next]``: an id 0..255 and a secret of at least 16
bytes in hex; ``#`` starts a comment. Frames are sealed with the last key not marked ``next``;
every key listed is accepted. The file is read again when it changes (checked at most once a
second), so keys rotate without a restart: add the new key marked ``next`` (everyone accepts it),
then drop the mark (everyone seals with it), then remove the old key. A file that stops parsing
keeps the keys read last, and the error is kept in :attr:`KeyRing.error` and counted.
``mcm-emu frame-keys new FILE`` adds a key. See docs/security.md.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path

log = logging.getLogger(__name__)

MIN_SECRET_BYTES = 16
CHECK_INTERVAL_S = 1.0


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and line."""


def parse_keys(text: str, source: str) -> tuple[dict[int, bytes], int]:
    """The keys of a key file's text and the id of the current one."""
    keys: dict[int, bytes] = {}
    current: int | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        where = f"{source}:{lineno}"
        if len(words) not in (2, 3) or (len(words) == 3 and words[2] != "next"):
            raise KeyFileError(f"{where}: expected 'KEY_ID SECRET_HEX [next]', got {line!r}")
        try:
            key_id = int(words[0])
        except ValueError:
            raise KeyFileError(f"{where}: key id {words[0]!r} is not an integer") from None
        if not 0 <= key_id <= 255:
            raise KeyFileError(f"{where}: key id {key_id} is outside 0..255")
        if key_id in keys:
            raise KeyFileError(f"{where}: key id {key_id} is listed twice")
        try:
            secret = bytes.fromhex(words[1])
        except ValueError:
            raise KeyFileError(f"{where}: the secret of key {key_id} is not hex") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise KeyFileError(
                f"{where}: the secret of key {key_id} has {len(secret)} bytes, at least {MIN_SECRET_BYTES} are needed"
            )
        keys[key_id] = secret
        if len(words) == 2:
            current = key_id
    if current is None:
        raise KeyFileError(f"{source}: no key to seal with (every key is marked 'next', or none is listed)")
    return keys, current


class KeyRing:
    """The keys of one key file, read again when it changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.reloads = 0
        self.reload_errors = 0
        self.error: str | None = None
        self._stamp = self._stat()
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise KeyFileError(f"{self.path}: {e.strerror or e}") from None
        self._keys, self._current = parse_keys(text, str(self.path))
        self._checked = time.monotonic()

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < CHECK_INTERVAL_S:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp and not force:
            return
        self._stamp = stamp
        try:
            self._keys, self._current = parse_keys(self.path.read_text(encoding="utf-8"), str(self.path))
        except (OSError, KeyFileError, UnicodeDecodeError) as e:
            self.reload_errors += 1
            self.error = str(e)
            log.warning("frame keys: %s (the keys read before stay in use)", e)
            return
        self.error = None
        self.reloads += 1

    def secret(self, key_id: int) -> bytes | None:
        self.refresh()
        return self._keys.get(key_id)

    def current(self) -> int:
        self.refresh()
        return self._current

    @property
    def key_ids(self) -> list[int]:
        return sorted(self._keys)


def new_key_line(path: str | Path, *, mark_next: bool = False) -> int:
    """Append a new random key to a key file (made, mode 0600, when missing); its id."""
    p = Path(path)
    keys: dict[int, bytes] = {}
    if p.exists():
        keys, _ = parse_keys(p.read_text(encoding="utf-8"), str(p))
    key_id = next((k for k in range(max(keys, default=0) + 1, 256)), None)
    if key_id is None:
        key_id = next((k for k in range(256) if k not in keys), None)
    if key_id is None:
        raise KeyFileError(f"{p}: all 256 key ids are in use: remove old keys first")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        f.write(f"{key_id} {secrets.token_hex(32)}{' next' if mark_next else ''}\n")
    return key_id
