"""The modules' event logs kept in a file across restarts of the service (``--event-log FILE``).

One JSON object a line, a record each (:class:`~.events.Record`), appended as it is logged. The
file is bounded: once it holds ``max_entries`` lines it becomes ``FILE.1`` (replacing the one
before) and a new ``FILE`` is started, so at most twice ``max_entries`` records are on disk. At
start both are read, older first: each module's newest ``events.LOG_LIMIT`` entries come back
with their Ids, and its next Id follows the highest kept. A line that is not a record (a torn
write, an edit) is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

from .events import NodeLog, Record

log = logging.getLogger(__name__)

MAX_ENTRIES = 100_000  # lines in FILE before it is rotated to FILE.1


def _record(line: str) -> Record:
    """A record from one line; ValueError (or KeyError, TypeError) for anything else."""
    d = json.loads(line)
    if not isinstance(d, dict):
        raise ValueError("not an object")
    rec = Record(
        node=int(d["node"]),
        id=int(d["id"]),
        created_ns=int(d["created_ns"]),
        severity=str(d["severity"]),
        message_id=str(d["message_id"]),
        message=str(d["message"]),
        args=tuple(str(a) for a in d["args"]),
        origin=str(d["origin"]),
        event=bool(d["event"]),
    )
    if rec.id < 1 or rec.node < 0:
        raise ValueError("id or node out of range")
    return rec


def _line(rec: Record) -> str:
    return json.dumps(
        {
            "node": rec.node,
            "id": rec.id,
            "created_ns": rec.created_ns,
            "severity": rec.severity,
            "message_id": rec.message_id,
            "message": rec.message,
            "args": list(rec.args),
            "origin": rec.origin,
            "event": rec.event,
        },
        separators=(",", ":"),
    )


class EventLogFile:
    """``load`` the logs kept, then ``append`` (a gateway listener) every record logged."""

    def __init__(self, path: str | os.PathLike[str], max_entries: int = MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be 1 or more")
        self.path = Path(path)
        self.rotated = self.path.with_name(self.path.name + ".1")
        self.max_entries = max_entries
        self.restored = 0  # records read back
        self.skipped = 0  # lines that were not records
        self.failed = 0  # records that could not be written
        self._lines = 0  # lines in FILE
        self._out: IO[str] | None = None

    def load(self) -> dict[int, NodeLog]:
        """The logs kept (OSError when a file exists but cannot be read)."""
        logs: dict[int, NodeLog] = {}
        for path in (self.rotated, self.path):
            if not path.exists():
                continue
            with path.open(encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    if path == self.path:
                        self._lines += 1
                    if not line.strip():
                        continue
                    try:
                        rec = _record(line)
                    except (ValueError, KeyError, TypeError) as e:
                        self.skipped += 1
                        log.warning("redfish: event log %s line %d skipped: %s", path, n, e)
                        continue
                    nlog = logs.get(rec.node)
                    if nlog is None:
                        nlog = logs[rec.node] = NodeLog()
                    nlog.entries.append(rec)  # the deque keeps the newest LOG_LIMIT
                    nlog.next_id = max(nlog.next_id, rec.id + 1)
                    self.restored += 1
        return logs

    def append(self, rec: Record) -> None:
        try:
            if self._out is None or self._lines >= self.max_entries:
                self._open()
            assert self._out is not None
            self._out.write(_line(rec) + "\n")
            self._out.flush()
            self._lines += 1
        except OSError as e:
            self.failed += 1
            log.warning("redfish: event log %s: record not written: %s", self.path, e)

    def _open(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        if self._lines >= self.max_entries:
            os.replace(self.path, self.rotated)
            self._lines = 0
        torn = False
        if self.path.exists() and self.path.stat().st_size:
            with self.path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # a last line cut short: the next record starts a line of its own
        self._out = self.path.open("a", encoding="utf-8")
        if torn:
            self._out.write("\n")

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def summary(self) -> dict[str, Any]:
        return {"restored": self.restored, "skipped": self.skipped, "failed": self.failed}
