"""Every ```python block of the docs that teach the Python API runs as it stands (each block in a
fresh namespace): docs/python-api.md and the Python part of docs/faults.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parents[1] / "docs"
FILES = ("python-api.md", "faults.md")


def blocks() -> list[tuple[str, str]]:
    out = []
    for name in FILES:
        text = (DOCS / name).read_text()
        for k, code in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            out.append((f"{name}#{k + 1}", code))
    return out


def test_the_api_doc_has_examples():
    assert sum(name.startswith("python-api") for name, _ in blocks()) >= 4


@pytest.mark.parametrize(("where", "code"), blocks(), ids=[w for w, _ in blocks()])
def test_a_python_block_of_the_docs_runs(where, code, capsys):
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip() or "print(" not in code, f"{where} printed nothing"
