"""A campaign's report directory: ``summary.json``, ``coverage.png``, and per failure the shrunk
frames in hex and a ready pytest regression test."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from .campaign import CampaignResult, Finding

REGRESSION = '''"""Written by ``mcm-emu fuzz`` ({target}, seed {seed}).

{kind}: {detail}

Sends the shrunk frame sequence to an emulated node and expects every answer to be right."""

import asyncio

from mcm_firmware.fuzz import replay
from mcm_firmware.target import emulated_target
from mcm_firmware.transport import transport_factory

NODE = {node}
FRAMES = [
{frames}]


def test_{name}():
    async def main():
        async with emulated_target(node=NODE) as target:
            tr = transport_factory(target.transport_url)("fuzz-regression")
            return await replay(tr, FRAMES, fleet=target.fleet, node=NODE)

    findings = asyncio.run(main())
    assert findings == [], findings
'''


def summary(result: CampaignResult) -> dict[str, Any]:
    pings = sorted(result.ping_ms)
    return {
        "target": result.target,
        "seed": result.seed,
        "duration_s": round(result.duration_s, 2),
        "cases": result.cases,
        "executions": result.executions,
        "executions_per_s": round(result.executions_per_s, 1),
        "coverage_cells": result.cells,
        "coverage": {k: dict(v) for k, v in sorted(result.coverage.items())},
        "timeline": [{"t_s": round(t, 2), "executions": e, "cells": c} for t, e, c in result.timeline],
        "ping_ms": {"p50": round(statistics.median(pings), 3), "p99": round(pings[int(0.99 * (len(pings) - 1))], 3)}
        if pings
        else None,
        "failures": [
            {
                "kind": f.kind,
                "detail": f.detail,
                "flaky": f.flaky,
                "frames": [{"label": p.label, "hex": p.frame.hex()} for p in f.frames],
            }
            for f in result.findings
        ],
    }


def regression_test(result: CampaignResult, finding: Finding, node: int, name: str) -> str:
    frames = "".join(f'    bytes.fromhex("{p.frame.hex()}"),  # {p.label}\n' for p in finding.frames)
    return REGRESSION.format(
        target=result.target,
        seed=result.seed,
        kind=finding.kind,
        detail=finding.detail.replace('"""', "'''"),
        node=node,
        frames=frames,
        name=name,
    )


def write_report(result: CampaignResult, directory: str | Path, *, node: int) -> Path:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = summary(result)
    for k, f in enumerate(result.findings, 1):
        stem = f"failure_{k}"
        (out / f"{stem}.hex").write_text("".join(f"{p.label} {p.frame.hex()}\n" for p in f.frames))
        (out / f"test_fuzz_{stem}.py").write_text(regression_test(result, f, node, f"fuzz_{stem}"))
        data["failures"][k - 1]["hex_file"] = f"{stem}.hex"
        data["failures"][k - 1]["regression_test"] = f"test_fuzz_{stem}.py"
    (out / "summary.json").write_text(json.dumps(data, indent=2) + "\n")
    _plot(result, out / "coverage.png")
    return out


def _plot(result: CampaignResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [x[0] for x in result.timeline]
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    a.plot(t, [x[2] for x in result.timeline], drawstyle="steps-post")
    a.set_ylabel("coverage cells\n(probe kind × outcome)")
    b.plot(t, [x[1] for x in result.timeline])
    b.set_ylabel("executions")
    b.set_xlabel("seconds")
    a.set_title(
        f"mcm-emu fuzz {result.target}: {result.executions_per_s:.0f} executions/s, {len(result.findings)} failure(s)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
