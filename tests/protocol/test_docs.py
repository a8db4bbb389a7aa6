"""docs/protocol.md against the declarations: every message type, field, record size, operation
and enum value of the wire appears in it, so the docs cannot drift from the bytes again."""

from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path

import construct as c
import pytest

from mcm_firmware.protocol import OPS, MsgType, codec, frames, vocabulary

DOC = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
ROWS = "\n".join(line for line in DOC.splitlines() if line.startswith(("|", " ")))
INTERNAL = {"items"}  # names construct gives its own parts (PrefixedArray's count-and-items)


def field_names(con: c.Construct) -> set[str]:
    """The named fields of a construct declaration, nested ones included."""
    out: set[str] = set()
    stack = [con]
    while stack:
        x = stack.pop()
        name = getattr(x, "name", None)
        if name and not name.startswith("_") and name not in INTERNAL:
            out.add(name)
        for attr in ("subcon", "subcons", "cases", "thensubcon", "elsesubcon"):
            sub = getattr(x, attr, None)
            if isinstance(sub, c.Construct):
                stack.append(sub)
            elif isinstance(sub, list | tuple):
                stack.extend(s for s in sub if isinstance(s, c.Construct))
            elif isinstance(sub, dict):
                stack.extend(s for s in sub.values() if isinstance(s, c.Construct))
    return out


@pytest.mark.parametrize("mtype", list(MsgType), ids=lambda t: t.name)
def test_every_message_type_has_its_section_and_fields(mtype):
    assert re.search(rf"^### {mtype.name} \({int(mtype)}\)", DOC, re.M), f"no section '### {mtype.name} ({int(mtype)})'"
    body = frames.BODIES.get(mtype)
    names = field_names(body) if body is not None else set()
    missing = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", ROWS))
    assert not missing, f"{mtype.name}: fields not in docs/protocol.md's tables: {missing}"


@pytest.mark.parametrize("spec", list(OPS.values()), ids=lambda s: s.op.name)
def test_every_argument_and_result_field_is_documented(spec):
    missing = []
    for record in (spec.args, spec.result):
        if record is None:
            continue
        for f in dataclasses.fields(record):
            if not re.search(rf"\b{re.escape(f.name)}\b", ROWS):
                missing.append(f"{record.__name__}.{f.name}")
    assert not missing, f"{spec.op.name}: not in docs/protocol.md: {missing}"


def test_record_sizes_in_the_snapshot_table_are_the_declared_ones():
    base = codec.snapshot_dtype(0, 0, 0, 0).itemsize
    sizes = {
        "dies[n_dies]": codec.snapshot_dtype(1, 0, 0, 0).itemsize - base,
        "hbm[n_hbm]": codec.snapshot_dtype(0, 1, 0, 0).itemsize - base,
        "pumps[n_pumps]": codec.snapshot_dtype(0, 0, 1, 0).itemsize - base,
        "valves[n_valves]": codec.snapshot_dtype(0, 0, 0, 1).itemsize - base,
    }
    for row, size in sizes.items():
        m = re.search(rf"^\| {re.escape(row)} +\| +(\d+) B each", DOC, re.M)
        assert m, f"no row for {row}"
        assert int(m.group(1)) == size, f"{row}: the docs say {m.group(1)} B, the declaration {size} B"


WIRE_ENUMS = [
    e
    for e in vars(vocabulary).values()
    if isinstance(e, type) and issubclass(e, enum.Enum) and e.__module__ == vocabulary.__name__
]


@pytest.mark.parametrize("enum_type", WIRE_ENUMS, ids=lambda e: e.__name__)
def test_every_enum_value_of_the_wire_is_documented(enum_type):
    missing = [m.name for m in enum_type if not re.search(rf"\b{re.escape(m.name)}\b", DOC)]
    assert not missing, f"{enum_type.__name__}: values not in docs/protocol.md: {missing}"
