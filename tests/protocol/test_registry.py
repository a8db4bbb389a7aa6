"""Every command operation is complete: a node handler, a ctl entry, golden frames and a row in
docs/protocol.md. A missing piece fails here, not at run time as UNKNOWN_OP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mcm_firmware.host.commands import COMMANDS
from mcm_firmware.protocol import OPS, Op, decode, encode
from mcm_firmware.runtime.handlers import HANDLERS
from mcm_firmware.testing.golden import GOLDEN

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def missing_pieces(op: Op, handlers=HANDLERS, commands=COMMANDS, golden=GOLDEN, doc: str | None = None) -> list[str]:
    """What operation ``op`` lacks, in words."""
    spec = OPS[op]
    doc = DOC.read_text() if doc is None else doc
    out = []
    if op not in handlers:
        out.append("a node handler (runtime/handlers.py)")
    if spec.name not in commands:
        out.append("a ctl entry (host/commands.py)")
    if f"command-{spec.name}" not in golden:
        out.append(f"a golden COMMAND frame 'command-{spec.name}'")
    if spec.args is not None and spec.example is None and f"command-{spec.name}" not in golden:
        out.append("example arguments in its OpSpec")
    if spec.result is not None and f"response-{spec.name}" not in golden:
        out.append(f"a golden RESPONSE frame 'response-{spec.name}' (example_result in its OpSpec)")
    if not re.search(rf"^\| 0x{int(op):04x} \| {op.name} +\|", doc, re.M):
        out.append("a row in the op table of docs/protocol.md")
    return out


@pytest.mark.parametrize("op", list(Op), ids=lambda o: o.name)
def test_every_operation_is_complete(op):
    assert missing_pieces(op) == []


@pytest.mark.parametrize("op", list(Op), ids=lambda o: o.name)
def test_each_golden_command_decodes_to_its_operation(op):
    msg = GOLDEN[f"command-{OPS[op].name}"]
    assert decode(encode(msg)) == msg and msg.op is op


def test_a_removed_handler_or_ctl_entry_or_doc_row_is_named():
    handlers = {o: h for o, h in HANDLERS.items() if o is not Op.REBIRTH}
    commands = {n: c for n, c in COMMANDS.items() if n != "ras"}
    golden = {n: m for n, m in GOLDEN.items() if n != "response-status"}
    doc = re.sub(r"^\| 0x0021 \| CLEAR_RAS.*$", "", DOC.read_text(), flags=re.M)
    assert missing_pieces(Op.REBIRTH, handlers=handlers) == ["a node handler (runtime/handlers.py)"]
    assert missing_pieces(Op.RAS, commands=commands) == ["a ctl entry (host/commands.py)"]
    assert missing_pieces(Op.STATUS, golden=golden) == [
        "a golden RESPONSE frame 'response-status' (example_result in its OpSpec)"
    ]
    assert missing_pieces(Op.CLEAR_RAS, doc=doc) == ["a row in the op table of docs/protocol.md"]
