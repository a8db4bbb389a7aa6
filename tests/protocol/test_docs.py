"""docs/protocol.md and docs/serial.md against the declarations, so the docs cannot drift from the
bytes again.

Every message type, field, record size, operation and enum value of the wire appears in them; and
more than appears: a decoder is built from the docs' own tables (the header block, each field
table's names, types and order, the op table, the authentication trailer; serial.md's framing,
packet header bits and vendor header), every golden frame of the docs is decoded with it and
compared field by field with ``codec.decode`` (and ``mctp``) of the same bytes, and every enum
table's numbers are compared with the enumeration's. Mutated copies of the docs (a wrong type, a
reordered field, a wrong number) are shown to fail."""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import struct
import zlib
from pathlib import Path
from typing import Any

import construct as c
import pytest

from mcm_firmware.protocol import OPS, MsgType, codec, fields, frames, mctp, vocabulary
from mcm_firmware.protocol.frames import HEADER_SIZE
from mcm_firmware.protocol.messages import HEADER_FIELDS, Command, Message
from mcm_firmware.protocol.ops import Op
from mcm_firmware.protocol.vocabulary import (
    Capability,
    ClockReason,
    CoolingMode,
    DeathReason,
    EccMode,
    EventCode,
    FaultKind,
    FrameFlags,
    LinkCondition,
    NodeState,
    PowerLimitSource,
    PumpFlags,
    RasFlags,
    Reason,
    RecoveryAction,
    Severity,
    SnapshotFlags,
    Status,
    ValveFlags,
)
from mcm_firmware.testing.golden import GOLDEN, SERIAL_GOLDEN

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


# --- a decoder built from the docs' tables --------------------------------------------------------
# docs/protocol.md's header block and field tables, read as a reader of the docs would, give
# struct formats; every golden frame of the docs is decoded with them and compared, field by field,
# with codec.decode of the same bytes. A wrong type, a field out of order or a wrong enum number in
# the docs makes this fail (tests below mutate the text to show it).

SCALARS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "f32": "f", "f64": "d"}
NAME = r"[A-Z][A-Z0-9_]+"


class DocError(AssertionError):
    """The docs do not describe the bytes (or cannot be read)."""


def inline_record(spec: str) -> list[tuple[str, str]]:
    """``temp_c f32, power_w f32`` as [(name, type)]."""
    out = []
    for part in spec.split(","):
        words = part.split()
        if len(words) != 2 or words[1] not in (*SCALARS, "text8"):
            raise DocError(f"cannot read {part.strip()!r} of `{spec}` as 'name type'")
        out.append((words[0], words[1]))
    return out


@dataclasses.dataclass
class Row:
    names: list[str]
    type: str
    notes: str


@dataclasses.dataclass
class Doc:
    """The parsed docs/protocol.md: header block, field tables, op table, enum tables."""

    text: str
    header: list[tuple[str, str, str]]  # (name, type, notes) in order
    trailer: list[tuple[str, str, int]]  # authentication trailer: (name, type, size)
    tables: dict[str, list[Row]]
    table_sizes: dict[str, int]
    ops: dict[int, tuple[str, str, str]]  # number: (name, args, answer data table or "")


def _cells(line: str) -> list[str]:
    return [x.strip() for x in line.strip().strip("|").split("|")]


def _code_rows(block: str, offset_re: str) -> list[list[str]]:
    """Rows of a code-block table 'offset size field type notes', continuation lines joined."""
    rows: list[list[str]] = []
    for line in block.splitlines():
        m = re.match(rf"^\s*({offset_re})\s+(\d+|n)\s+(\w+)\s+(\S+)\s*(.*)$", line)
        if m:
            rows.append(list(m.groups()))
        elif rows and line.startswith(" " * 20) and line.strip():
            rows[-1][4] += " " + line.strip()
    return rows


def parse_doc(text: str) -> Doc:
    frame = re.search(r"^## Frame\n\n```\n(.*?)```", text, re.M | re.S)
    if not frame:
        raise DocError("no header block under '## Frame'")
    header = []
    offset = 0
    for off, size, name, typ, notes in _code_rows(frame.group(1), r"\d+(?:\+n)?"):
        if name == "payload":
            if off != str(offset) or size != "n":
                raise DocError(f"payload row at {off} ({size}), the fields before end at {offset}")
            offset = -1  # what follows is after the payload
            header.append((name, typ, notes))
            continue
        if offset >= 0:
            if off != str(offset):
                raise DocError(f"header field {name} at offset {off}, the fields before end at {offset}")
            offset += int(size)
        if typ in SCALARS and struct.calcsize("<" + SCALARS[typ]) != int(size):
            raise DocError(f"header field {name}: type {typ} but size {size}")
        header.append((name, typ if typ != "bytes" else f"bytes{size}", notes))
    auth = re.search(r"^## Frame authentication\n.*?```\n(.*?)```", text, re.M | re.S)
    trailer = []
    if auth:
        for _off, size, name, typ, _notes in _code_rows(auth.group(1), r"\d+\+n"):
            trailer.append((name, typ if typ != "bytes" else f"bytes{size}", int(size)))
    tables: dict[str, list[Row]] = {}
    sizes: dict[str, int] = {}
    ops: dict[int, tuple[str, str, str]] = {}
    lines = text.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := re.match(r"^#{2,3} (\w+)", line):
            section = m.group(1)
        if not line.startswith("|"):
            i += 1
            continue
        start = i
        while i < len(lines) and lines[i].startswith("|"):
            i += 1
        head = _cells(lines[start])
        body = [_cells(x) for x in lines[start + 2 : i]]
        if head[:2] == ["op", "name"]:
            for number, name, args, answer in body:
                ans = re.match(r"(\w+)", answer)
                ops[int(number, 0)] = (name, args, ans.group(1) if ans else "")
            continue
        if head[:2] != ["field", "type"]:
            continue
        before = next((lines[k] for k in range(start - 1, 0, -1) if lines[k].strip()), "")
        m = re.match(r"^(\w+)(?: \((.*)\))?:$", before)
        name = m.group(1) if m else section
        if m and m.group(2) and (sz := re.match(r"(\d+) bytes$", m.group(2))):
            sizes[name] = int(sz.group(1))
        if name in tables:
            raise DocError(f"two field tables named {name}")
        tables[name] = [Row([n.strip() for n in cells[0].split(",")], cells[1], cells[2]) for cells in body]
    return Doc(text, header, trailer, tables, sizes, ops)


class Reader:
    def __init__(self, data: bytes, fmt: str = "<") -> None:
        self.data, self.pos, self.fmt = data, 0, fmt

    def scalar(self, typ: str) -> Any:
        if typ == "text8":
            n = self.scalar("u8")
            raw = self.take(n)
            return raw.decode("utf-8")
        if typ.startswith("bytes"):
            return self.take(int(typ[5:]))
        if typ not in SCALARS:
            raise DocError(f"unknown type {typ!r}")
        st = struct.Struct(self.fmt + SCALARS[typ])
        (v,) = st.unpack(self.take(st.size))
        return v

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DocError(f"the bytes end at {len(self.data)}, the docs read {n} more at {self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _first_code(notes: str) -> str:
    m = re.search(r"`([^`]*)`", notes)
    if not m:
        raise DocError(f"no `layout` in the notes {notes!r}")
    return m.group(1)


class DocDecoder:
    def __init__(self, doc: Doc) -> None:
        self.doc = doc
        self.status_ok = enum_pairs(dict(row_notes(doc, "RESPONSE", "status")))["OK"]

    def record(self, name: str, r: Reader, outer: dict[str, Any] | None = None) -> dict[str, Any]:
        if name not in self.doc.tables:
            raise DocError(f"no field table {name!r}")
        start = r.pos
        out: dict[str, Any] = {}
        for row in self.doc.tables[name]:
            self.row(name, row, r, out, outer or {})
        if name in self.doc.table_sizes and r.pos - start != self.doc.table_sizes[name]:
            raise DocError(f"{name} is said to be {self.doc.table_sizes[name]} bytes, its table reads {r.pos - start}")
        return out

    def item(self, typ: str, r: Reader) -> Any:
        if typ.startswith("`"):
            return {n: r.scalar(t) for n, t in inline_record(typ.strip("`"))}
        if typ in SCALARS or typ == "text8":
            return r.scalar(typ)
        return self.record(typ, r)

    def row(self, table: str, row: Row, r: Reader, out: dict[str, Any], outer: dict[str, Any]) -> None:
        typ = row.type
        if m := re.fullmatch(r"(\w+)(?: ×(\d+))?", typ):
            base, count = m.group(1), int(m.group(2) or 1)
            if count != len(row.names):
                raise DocError(f"{table}: {row.names} are {len(row.names)} fields, the type says {typ}")
            for n in row.names:
                out[n] = self.item(base, r)
            return
        (name,) = row.names
        if m := re.fullmatch(r"(u8|u16) count, then (`[^`]*`|\w+) each", typ):
            count = r.scalar(m.group(1))
            out[name] = [self.item(m.group(2), r) for _ in range(count)]
            return
        if m := re.fullmatch(r"(\w+)\[(\w+)\]", name):
            name, counter = m.groups()
            if counter not in out:
                raise DocError(f"{table}: {name} counted by {counter}, which comes later or not at all")
            if em := re.fullmatch(r"(\d+) B each", typ):
                spec = _first_code(row.notes)
                size = sum(struct.calcsize("<" + SCALARS[t]) for _, t in inline_record(spec))
                if size != int(em.group(1)):
                    raise DocError(f"{table}.{name}: {typ}, but `{spec}` is {size} bytes")
                out[name] = [self.item(f"`{spec}`", r) for _ in range(out[counter])]
            elif em := re.fullmatch(r"(\w+) each", typ):
                out[name] = [self.item(em.group(1), r) for _ in range(out[counter])]
            else:
                raise DocError(f"{table}.{name}: cannot read the type {typ!r}")
            return
        if typ == "—" and table == "COMMAND" and name == "args":
            _, args, _ = self.doc.ops[out["op"]]
            out[name] = None if args == "—" else self.item(args, r)
            return
        if typ == "—" and table == "RESPONSE" and name == "data":
            answer = self.doc.ops[out["op"]][2] if out["op"] in self.doc.ops else ""
            present = out["status"] == self.status_ok and answer in self.doc.tables
            out[name] = self.record(answer, r) if present else None
            return
        raise DocError(f"{table}.{name}: cannot read the type {typ!r}")

    def frame(self, data: bytes) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
        """Header, payload fields and authentication trailer of one frame, as the docs say."""
        r = Reader(data)
        head: dict[str, Any] = {}
        payload: dict[str, Any] = {}
        for name, typ, _ in self.doc.header:
            if name == "payload":
                mtype = MsgType(head["type"]).name
                p = Reader(r.take(head["payload_len"]))
                if mtype in self.doc.tables:
                    payload = self.record(mtype, p)
                else:
                    section = self.doc.text.split(f"### {mtype} (")[1].split("\n### ")[0]
                    m = re.search(r"The payload is a \*(\w+)\*", section)
                    if not m:
                        raise DocError(f"no payload table for {mtype}")
                    payload = {m.group(1).lower(): self.record(m.group(1), p)}
                if p.pos != len(p.data):
                    raise DocError(f"{mtype}: the docs' table reads {p.pos} of {len(p.data)} payload bytes")
                continue
            head[name] = r.scalar(typ)
        trailer = None
        if head["flags"] & flag_bits(self.doc)["AUTH"]:
            trailer = {name: r.scalar(typ) for name, typ, _ in self.doc.trailer}
        if r.pos != len(data):
            raise DocError(f"the docs read {r.pos} of the frame's {len(data)} bytes")
        return head, payload, trailer


def row_notes(doc: Doc, table: str, field: str) -> list[tuple[str, int]]:
    """The 'N NAME' pairs of the notes of a field row (code spans left out)."""
    if table == "header":
        notes = next((n for name, _, n in doc.header if name == field), None)
    else:
        notes = next((row.notes for row in doc.tables.get(table, []) if field in row.names), None)
        if notes is None:
            notes = next(
                (row.notes for row in doc.tables.get(table, []) if any(n.startswith(field + "[") for n in row.names)),
                None,
            )
    if notes is None:
        raise DocError(f"no row {table}.{field}")
    return pairs(re.sub(r"`[^`]*`", "", notes))


def pairs(text: str) -> list[tuple[str, int]]:
    """'0 NONE, 1 GPU_RESET' -> [(NONE, 0), ...]; 'bit 0 A, 1 B' -> bits; '0x4 C' -> masks."""
    bits = re.match(r"\W*bit \d", text) is not None or re.search(rf"^[^A-Z]*bit \d+ {NAME}", text) is not None
    out = []
    for m in re.finditer(rf"(?<![\w.-])(0x[0-9a-fA-F]+|\d+) ({NAME})\b", text):
        number = int(m.group(1), 0)
        out.append((m.group(2), 1 << number if bits and not m.group(1).startswith("0x") else number))
    return out


def enum_pairs(found: dict[str, int] | list[tuple[str, int]]) -> dict[str, int]:
    items = found.items() if isinstance(found, dict) else found
    out: dict[str, int] = {}
    for name, value in items:
        if out.get(name, value) != value:
            raise DocError(f"{name} is given two numbers: {out[name]} and {value}")
        out[name] = value
    return out


def flag_bits(doc: Doc) -> dict[str, int]:
    return enum_pairs(row_notes(doc, "header", "flags"))


def paragraph(doc: Doc, start: str) -> list[tuple[str, int]]:
    i = doc.text.find(start)
    if i < 0:
        raise DocError(f"no paragraph beginning {start!r}")
    return pairs(re.sub(r"`[^`]*`", "", doc.text[i : doc.text.find("\n\n", i)]))


def reason_table(doc: Doc) -> list[tuple[str, int]]:
    """Rows of the tables with a `reason` and a `value` column: the decoder's and the authentication's."""
    out = []
    for block in re.findall(r"(?:^\|.*\n)+", doc.text, re.M):
        lines = block.splitlines()
        head = _cells(lines[0])
        if "reason" in head and "value" in head:
            ri, vi = head.index("reason"), head.index("value")
            out += [(_cells(x)[ri].strip("`"), int(_cells(x)[vi])) for x in lines[2:]]
    return out


ENUM_SOURCES: dict[type[enum.Enum], Any] = {
    MsgType: lambda d: row_notes(d, "header", "type"),
    FrameFlags: lambda d: row_notes(d, "header", "flags"),
    Capability: lambda d: row_notes(d, "BIRTH", "capabilities"),
    DeathReason: lambda d: row_notes(d, "DEATH", "reason"),
    NodeState: lambda d: row_notes(d, "Snapshot", "state"),
    CoolingMode: lambda d: row_notes(d, "Snapshot", "mode"),
    SnapshotFlags: lambda d: row_notes(d, "Snapshot", "flags"),
    RecoveryAction: lambda d: row_notes(d, "Snapshot", "recovery_action"),
    PowerLimitSource: lambda d: row_notes(d, "Snapshot", "power_limit_source"),
    PumpFlags: lambda d: row_notes(d, "Snapshot", "pumps"),
    ValveFlags: lambda d: row_notes(d, "Snapshot", "valves"),
    ClockReason: lambda d: paragraph(d, "`reasons` is the NVML"),
    Status: lambda d: row_notes(d, "RESPONSE", "status"),
    Severity: lambda d: row_notes(d, "EVENT", "severity"),
    EventCode: lambda d: paragraph(d, "Event codes:"),
    LinkCondition: lambda d: row_notes(d, "LINK", "condition"),
    EccMode: lambda d: row_notes(d, "RasData", "ecc"),
    RasFlags: lambda d: row_notes(d, "RasData", "flags"),
    FaultKind: lambda d: paragraph(d, "Fault kinds"),
    Reason: reason_table,
    Op: lambda d: [(name, number) for number, (name, _, _) in d.ops.items()],
}


def enum_problems(doc: Doc) -> list[str]:
    problems = []
    for enum_type, source in ENUM_SOURCES.items():
        try:
            found = enum_pairs(source(doc))
        except DocError as e:
            problems.append(f"{enum_type.__name__}: {e}")
            continue
        declared = {m.name: int(m.value) for m in enum_type}  # type: ignore[arg-type]
        if found != declared:
            wrong = sorted(set(found.items()) ^ set(declared.items()), key=str)
            problems.append(f"{enum_type.__name__}: docs {found}, declared {declared} (differ in {wrong})")
    return problems


def same(doc_value: Any, value: Any, path: str, problems: list[str]) -> None:
    """Every field the docs decoded equals the codec's, and the codec has no field the docs lack."""
    if isinstance(doc_value, dict):
        names = set(value._fields) if isinstance(value, tuple) else {f.name for f in dataclasses.fields(value)}
        if isinstance(value, Message):
            names -= set(HEADER_FIELDS)
        for key, v in doc_value.items():
            if key.startswith("n_") and key[2:] in doc_value:
                if v != len(doc_value[key[2:]]):
                    problems.append(f"{path}.{key}: {v}, but {len(doc_value[key[2:]])} items")
                continue
            if key == "layout" and path.endswith("SAMPLES"):
                if v != fields.SAMPLES_LAYOUT:
                    problems.append(f"{path}.layout: {v}, declared {fields.SAMPLES_LAYOUT}")
                continue
            if key not in names:
                problems.append(f"{path}.{key}: the docs have it, the decoded message has not")
                continue
            same(v, getattr(value, key), f"{path}.{key}", problems)
        for key in sorted(names - set(doc_value)):
            problems.append(f"{path}.{key}: decoded by the codec, missing from the docs")
    elif isinstance(doc_value, list):
        if len(doc_value) != len(value):
            problems.append(f"{path}: the docs read {len(doc_value)} items, the codec {len(value)}")
        for k, (a, b) in enumerate(zip(doc_value, value, strict=False)):
            same(a, b, f"{path}[{k}]", problems)
    elif doc_value is None or value is None:
        if doc_value is not value:
            problems.append(f"{path}: docs {doc_value!r}, codec {value!r}")
    elif isinstance(doc_value, float) and math.isnan(doc_value):
        if not (isinstance(value, float) and math.isnan(value)):
            problems.append(f"{path}: docs NaN, codec {value!r}")
    elif doc_value != value or type(doc_value) is not type(value if not isinstance(value, enum.Enum) else value.value):
        problems.append(f"{path}: docs {doc_value!r}, codec {value!r}")


def golden_blocks(text: str, marker: str) -> dict[str, bytes]:
    blocks = re.findall(rf"<!-- {marker}: ([\w-]+) -->\s*```hex\n(.*?)```", text, re.S)
    return {name: bytes.fromhex(hexes) for name, hexes in blocks}


def frame_problems(decoder: DocDecoder, name: str, data: bytes) -> list[str]:
    problems: list[str] = []
    try:
        head, payload, trailer = decoder.frame(data)
    except (DocError, struct.error, UnicodeDecodeError, KeyError, ValueError) as e:
        return [f"{name}: the docs' tables cannot decode it: {e}"]
    msg = codec.decode(data)
    crc_end = HEADER_SIZE + head["payload_len"]
    expect = {
        "magic": frames.MAGIC,
        "version": frames.VERSION,
        "type": int(msg.TYPE),
        "flags": msg.flags,
        "node_id": msg.node_id,
        "seq": msg.seq,
        "timestamp_ns": msg.timestamp_ns,
        "payload_len": crc_end - HEADER_SIZE,
        "crc32": zlib.crc32(data[:crc_end]),
    }
    for key in sorted(set(expect) | set(head)):
        if head.get(key) != expect.get(key):
            problems.append(f"{name}: header {key}: docs {head.get(key)!r}, codec {expect.get(key)!r}")
    same(payload, msg, f"{name}:{msg.TYPE.name}", problems)
    if trailer is not None:
        declared = frames.Frame.parse(data).auth
        for key in sorted(set(trailer) | {k for k in declared if not k.startswith("_")}):
            if trailer.get(key) != declared.get(key):
                problems.append(f"{name}: trailer {key}: docs {trailer.get(key)!r}, declared {declared.get(key)!r}")
    return problems


def doc_problems(text: str) -> list[str]:
    """Everything the docs' tables say that the declarations and the codec contradict."""
    try:
        doc = parse_doc(text)
        decoder = DocDecoder(doc)
    except DocError as e:
        return [str(e)]
    problems = enum_problems(doc)
    goldens = {
        **golden_blocks(text, "golden"),
        **{f"auth-{k}": v for k, v in golden_blocks(text, "auth-golden").items()},
    }
    if sorted(golden_blocks(text, "golden")) != sorted(GOLDEN):
        problems.append(f"golden frames in the docs {sorted(golden_blocks(text, 'golden'))}, declared {sorted(GOLDEN)}")
    for name, data in goldens.items():
        problems += frame_problems(decoder, name, data)
    decoded = {MsgType(codec.decode(d).TYPE) for d in goldens.values()}
    if decoded != set(MsgType):
        problems.append(f"no golden frame of {sorted(t.name for t in set(MsgType) - decoded)}")
    answered = {codec.decode(d).op for d in goldens.values() if isinstance(codec.decode(d), Command)}
    if answered != set(Op):
        problems.append(f"no golden COMMAND of {sorted(o.name for o in set(Op) - answered)}")
    return problems


def test_the_docs_tables_decode_every_golden_frame_as_the_codec_does():
    problems = doc_problems(DOC)
    assert not problems, "docs/protocol.md disagrees with the declarations:\n" + "\n".join(problems)


MUTATIONS = [
    ("a wrong type", "| rx_rejected  | u32  |", "| rx_rejected  | u16  |"),
    (
        "a reordered field",
        "`temp_c f32, power_w f32, clock_mhz u16, voltage_mv u16,",
        "`temp_c f32, power_w f32, voltage_mv u16, clock_mhz u16,",
    ),
    ("a reordered header field", "      5     4  node_id       u32 ", "      5     4  seq           u32 "),
    ("a wrong enum number", "1 CONNECTION_LOST", "3 CONNECTION_LOST"),
    ("a wrong bit", "bit 1 REMAP_FAILED", "bit 3 REMAP_FAILED"),
    ("a wrong decode reason number", "| `BAD_CRC`             | 5 |", "| `BAD_CRC`             | 6 |"),
    ("a wrong op number", "| 0x0013 | SET_VALVE ", "| 0x0015 | SET_VALVE "),
    ("a wrong argument type", "`mhz u16`", "`mhz u32`"),
    ("a wrong record size", "| dies[n_dies]     | 18 B each", "| dies[n_dies]     | 16 B each"),
    ("a missing field", "| rx_duplicates | u32 | commands answered again from the cache |\n", ""),
    ("a wrong trailer field", " 28+n          4  sender   u32 ", " 28+n          4  sender   f32 "),
]


@pytest.mark.parametrize(("what", "old", "new"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_wrong_table_fails_the_check(what, old, new):
    assert old in DOC, f"the mutation for {what} no longer applies"
    problems = doc_problems(DOC.replace(old, new, 1))
    assert problems, f"docs/protocol.md with {what} passed the check"


def test_every_enum_of_the_wire_has_its_table_in_the_docs():
    missing = [e.__name__ for e in [*WIRE_ENUMS, Op] if e not in ENUM_SOURCES]
    assert not missing, f"enumerations without a table of numbers in docs/protocol.md: {missing}"


# --- docs/serial.md: DSP0253 framing, DSP0236 packet header, vendor header, kinds and channels -----

SERIAL = (Path(__file__).resolve().parents[2] / "docs" / "serial.md").read_text()
PACKET_FIELDS = {
    "reserved": None,
    "header version": None,
    "destination EID": "dest",
    "source EID": "src",
    "SOM": "som",
    "EOM": "eom",
    "packet sequence": "seq",
    "tag owner": "tag_owner",
    "tag": "tag",
}
VENDOR_FIELDS = {"kind": "kind", "channel": "channel", "flags": "flags", "node id": "node", "data": "data"}


def _crc16(data: bytes, poly: int, init: int) -> int:
    crc = init
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc


class SerialDoc:
    """A reader of serial lines written from docs/serial.md alone."""

    def __init__(self, text: str) -> None:
        self.text = text
        m = re.search(r"## Framing \(DSP0253\)\n\n```\n(.*?)\n```", text, re.S)
        if not m:
            raise DocError("no framing line under '## Framing (DSP0253)'")
        self.framing = [p.strip() for p in m.group(1).split("|")]
        found = re.findall(r"0x([0-9A-F]{2}) (?:is sent )?as `7D ([0-9A-F]{2})`", text)
        self.escapes = {int(escaped, 16): int(byte, 16) for byte, escaped in found}  # 5E: 7E ...
        m = re.search(r"reflected polynomial (0x[0-9A-F]+), init (0x[0-9A-F]+), no final XOR", text)
        if not m:
            raise DocError("no FCS parameters")
        self.poly, self.init = int(m.group(1), 16), int(m.group(2), 16)
        m = re.search(r'Check value: `"123456789"` → (0x[0-9A-F]{4})', text)
        if not m or _crc16(b"123456789", self.poly, self.init) != int(m.group(1), 16):
            raise DocError("the FCS parameters do not give the check value the docs state")
        m = re.search(r"## Packets \(DSP0236\)\n\n```\n(.*?)\n```", text, re.S)
        if not m:
            raise DocError("no packet header block")
        self.bits: list[tuple[str, int, int | None]] = []  # (name, bits, fixed value)
        for line in m.group(1).splitlines():
            body = re.match(r"byte \d+\s+(.*)$", line)
            if not body:
                raise DocError(f"cannot read the header line {line!r}")
            parts = body.group(1).split(" | ")
            if len(parts) == 1:
                self.bits.append((re.split(r"\s{2,}", parts[0])[0].strip(), 8, None))
                continue
            for part in parts:
                pm = re.fullmatch(r"(.+?)\((\d)\)(?: = (\d+))?", part.strip())
                if not pm:
                    raise DocError(f"cannot read the header bits {part!r}")
                self.bits.append((pm.group(1).strip(), int(pm.group(2)), int(pm.group(3)) if pm.group(3) else None))
        if sum(b for _, b, _ in self.bits) != 32:
            raise DocError("the packet header is not 32 bits")
        m = re.search(r"## Messages\n.*?```\n(.*?)\n```", text, re.S)
        if not m:
            raise DocError("no vendor header line")
        self.vendor = [p.strip() for p in m.group(1).split("|")]
        kinds = re.search(r"^\| kind \| direction \| meaning \|\n\|.*\n((?:\|.*\n)+)", text, re.M)
        if not kinds:
            raise DocError("no kind table")
        self.kinds = enum_pairs(pairs("\n".join(_cells(x)[0] for x in kinds.group(1).splitlines())))
        frame_row = next(x for x in kinds.group(1).splitlines() if "FRAME" in x)
        m = re.search(r"a channel \(([^)]*)\)", frame_row)
        if not m:
            raise DocError("no channel codes in the FRAME row")
        self.channels = {name.upper(): int(n) for n, name in re.findall(r"(\d+) ([a-z]+)", m.group(1))}

    def frames(self, data: bytes) -> list[bytes]:
        """The MCTP packets of a byte stream, every frame with flags of its own."""
        out, i = [], 0
        while i < len(data):
            fields_: dict[str, int] = {}
            packet = b""
            for part in self.framing:
                if re.fullmatch(r"[0-9A-F]{2}", part):
                    if data[i] != int(part, 16):
                        raise DocError(f"byte {i}: {data[i]:02x}, the framing says {part}")
                    i += 1
                elif cm := re.fullmatch(r"([0-9A-F]{2}) \((\w+)\)", part):
                    if data[i] != int(cm.group(1), 16):
                        raise DocError(f"byte {i}: {data[i]:02x}, the {cm.group(2)} is {cm.group(1)}")
                    fields_[cm.group(2)] = data[i]
                    i += 1
                elif part == "byte count":
                    fields_["count"] = data[i]
                    i += 1
                elif part == "MCTP packet, escaped":
                    raw = bytearray()
                    while len(raw) < fields_["count"]:
                        b = data[i]
                        if b == 0x7D:
                            b = self.escapes[data[i + 1]]
                            i += 1
                        raw.append(b)
                        i += 1
                    packet = bytes(raw)
                elif part in ("FCS high", "FCS low"):
                    fields_[part] = data[i]
                    i += 1
                else:
                    raise DocError(f"cannot read the framing part {part!r}")
            fcs = (fields_["FCS high"] << 8) | fields_["FCS low"]
            if fcs != _crc16(bytes((fields_["revision"], fields_["count"])) + packet, self.poly, self.init):
                raise DocError("FCS differs from the docs' CRC")
            out.append(packet)
        return out

    def packet(self, packet: bytes) -> dict[str, Any]:
        word, out, shift = int.from_bytes(packet[:4], "big"), {}, 32
        for name, bits, fixed in self.bits:
            shift -= bits
            value = (word >> shift) & ((1 << bits) - 1)
            if fixed is not None and value != fixed:
                raise DocError(f"{name} is {value}, the docs say {fixed}")
            out[name] = value
        out["body"] = packet[4:]
        return out

    def message(self, message: bytes) -> dict[str, Any] | None:
        """The vendor header's fields; None for a message of another MCTP type."""
        r = Reader(message, ">")
        out: dict[str, Any] = {}
        for part in self.vendor:
            if re.fullmatch(r"[0-9A-F]{2}(?: [0-9A-F]{2})*", part):
                const = bytes.fromhex(part)
                if r.pos == 0 and message[: len(const)] != const:
                    return None  # not a vendor message (an MCTP control message ...)
                if r.take(len(const)) != const:
                    raise DocError(f"the vendor header's {part} differs")
            elif part == "data":
                out["data"] = r.take(len(message) - r.pos)
            else:
                pm = re.fullmatch(r"(.+?) (u8|u16|u32)(?: (BE))?", part)
                if not pm or (pm.group(2) != "u8" and pm.group(3) != "BE"):
                    raise DocError(f"cannot read the vendor header part {part!r}")
                out[pm.group(1)] = r.scalar(pm.group(2))
        return out


def serial_problems(text: str, protocol: str = DOC) -> list[str]:
    try:
        sd = SerialDoc(text)
        decoder = DocDecoder(parse_doc(protocol))
    except DocError as e:
        return [str(e)]
    problems = []
    for enum_type, found in ((mctp.Kind, sd.kinds), (mctp.ChannelCode, sd.channels)):
        declared = {m.name: int(m.value) for m in enum_type}
        if found != declared:
            problems.append(f"{enum_type.__name__}: docs {found}, declared {declared}")
    declared_escapes = {mctp.escape(bytes((b,)))[1]: b for b in range(256) if len(mctp.escape(bytes((b,)))) == 2}
    if sd.escapes != declared_escapes:
        problems.append(f"escapes: docs {sd.escapes}, mctp.escape {declared_escapes}")
    goldens = golden_blocks(text, "serial-golden")
    if sorted(goldens) != sorted(SERIAL_GOLDEN):
        problems.append(f"serial golden frames in the docs {sorted(goldens)}, declared {sorted(SERIAL_GOLDEN)}")
    for name, data in goldens.items():
        try:
            doc_packets = [sd.packet(p) for p in sd.frames(data)]
        except (DocError, IndexError, KeyError) as e:
            problems.append(f"{name}: the docs cannot read it: {e}")
            continue
        fd = mctp.FrameDecoder()
        packets = [mctp.parse_packet(p) for p in fd.feed(data)]
        if len(packets) != len(doc_packets) or fd.dropped:
            problems.append(f"{name}: the docs read {len(doc_packets)} packets, mctp {len(packets)} ({fd.drops})")
            continue
        reassembler = mctp.Reassembler()
        message = None
        for dp, p in zip(doc_packets, packets, strict=True):
            for doc_name, attr in PACKET_FIELDS.items():
                if attr is not None and dp.get(doc_name) != int(getattr(p, attr)):
                    problems.append(f"{name}: packet {doc_name}: docs {dp.get(doc_name)}, mctp {int(getattr(p, attr))}")
            if dp["body"] != p.body:
                problems.append(f"{name}: packet body differs")
            done = reassembler.feed(p.to_bytes())
            message = done[1] if done else message
        if message is None:
            problems.append(f"{name}: no whole message")
            continue
        try:
            vendor = sd.message(message)
        except DocError as e:
            problems.append(f"{name}: {e}")
            continue
        if vendor is None:
            if message[:1] == bytes((mctp.MSG_TYPE_VENDOR_IANA,)):
                problems.append(f"{name}: a vendor message the docs' header does not read")
            continue
        parsed = mctp.parse_vendor(message)
        for doc_name, attr in VENDOR_FIELDS.items():
            ours, theirs = vendor.get(doc_name), getattr(parsed, attr)
            if ours != (int(theirs) if isinstance(theirs, int) else theirs):
                problems.append(f"{name}: vendor {doc_name}: docs {ours!r}, mctp {theirs!r}")
        if vendor.get("data"):
            problems += frame_problems(decoder, name, vendor["data"])
    return problems


def test_the_serial_docs_decode_every_serial_golden_frame_as_mctp_does():
    problems = serial_problems(SERIAL)
    assert not problems, "docs/serial.md disagrees with mctp.py:\n" + "\n".join(problems)


SERIAL_MUTATIONS = [
    ("kind and channel swapped", "| kind u8 | channel u8 |", "| channel u8 | kind u8 |"),
    ("a wrong node id width", "node id u32 BE", "node id u16 BE"),
    ("tag and tag owner swapped", "tag owner(1) | tag(3)", "tag(3) | tag owner(1)"),
    ("a wrong kind number", "| 3 HELLO |", "| 6 HELLO |"),
    ("a wrong channel code", "2 tlm, 3 evt", "3 tlm, 2 evt"),
    ("a wrong FCS byte order", "FCS high | FCS low", "FCS low | FCS high"),
    ("a wrong escape", "0x7D as `7D 5D`", "0x7D as `7D 5C`"),
]


@pytest.mark.parametrize(("what", "old", "new"), SERIAL_MUTATIONS, ids=[m[0] for m in SERIAL_MUTATIONS])
def test_a_wrong_serial_table_fails_the_check(what, old, new):
    assert old in SERIAL, f"the mutation for {what} no longer applies"
    assert serial_problems(SERIAL.replace(old, new, 1)), f"docs/serial.md with {what} passed the check"
