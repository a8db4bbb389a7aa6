"""Where a key is in TOML text: the line of a key path, for errors that name file, line and key.

Shared by hardware and rig profiles and by scenario files (which import it from here, the lowest
layer that reads TOML).
"""

from __future__ import annotations

import re
from typing import Any

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def locate(text: str, loc: tuple[Any, ...]) -> int | None:
    """The line (1-based) of a key path such as ("expect", 2, "type") in TOML source text.

    Knows the shapes our files use: top-level keys, [table] and [[array]] headers (including
    [[fleet.group]]). Returns the best line found (the table's header when the key is not in the
    file, e.g. inherited or missing), or None.
    """
    lines = text.splitlines()
    # walk the path: table names and array indices, then a key
    tables = [str(p) for p in loc if isinstance(p, str)]
    indices = [p for p in loc if isinstance(p, int)]
    want_table = ".".join(tables[:-1]) if len(tables) > 1 else (tables[0] if indices else "")
    want_key = tables[-1] if tables else None
    want_index = indices[0] if indices else None
    count: dict[str, int] = {}  # array-of-tables name -> index of the last one seen
    current, best = "", None
    for no, line in enumerate(lines, 1):
        m = _HEADER.match(line)
        if m:
            current = m.group(2)
            if m.group(1) == "[[":
                count[current] = count.get(current, -1) + 1
            if current == want_table and (want_index is None or count.get(current) == want_index):
                best = best or no
            continue
        k = _KEY.match(line)
        if not k:
            continue
        in_table = current == want_table and (want_index is None or count.get(current) == want_index)
        if in_table and k.group(1) == want_key:
            return no
        if not want_table and not current and k.group(1) == (tables[0] if tables else None):
            return no
    if best is None and tables:
        for no, line in enumerate(lines, 1):
            m = _HEADER.match(line)
            if m and m.group(2) == tables[0]:
                return no
    return best
