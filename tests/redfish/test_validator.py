"""DMTF's Redfish Service Validator against the live service: every resource reachable from the
service root checked against the published schemas, offline (--skipschema), no failure."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import READONLY, shared

ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*$", re.M)


def walk(svc, start: str = "/redfish/v1/") -> set[str]:
    """Every resource URI reachable from ``start`` through @odata.id links."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        uri = todo.pop()
        if uri in seen:
            continue
        seen.add(uri)
        body = svc.get(uri).json()

        def links(x: object) -> None:
            if isinstance(x, dict):
                for k, v in x.items():
                    if k in ("@odata.id", "@Redfish.ActionInfo") and isinstance(v, str) and "#" not in v:
                        todo.append(v)
                    elif k == "Location" and isinstance(v, list):  # a registry the service serves
                        todo.extend(loc["Uri"] for loc in v if "Uri" in loc)
                    else:
                        links(v)
            elif isinstance(x, list):
                for v in x:
                    links(v)

        links(body)
    return seen


@pytest.mark.slow
def test_the_service_validator_finds_no_error(redfish_service, tmp_path: Path):
    schemas = tmp_path / "schemas"
    shutil.copytree(shared("csdl"), schemas)  # the validator writes into its schema directory
    # the service's own schema (the Oem.McmEmu extensions), as the validator would fetch it by $metadata
    oem = redfish_service.get("/redfish/v1/Schemas/McmEmu_v1.xml", auth=READONLY)
    assert oem.status_code == 200 and 'Namespace="McmEmu.v1_0_0"' in oem.text
    (schemas / "McmEmu_v1.xml").write_text(oem.text)
    tool = Path(sys.executable).with_name("rf_service_validator")
    r = subprocess.run(
        [str(tool), "--rhost", redfish_service.url, "--authtype", "Basic", "-u", READONLY[0], "-p", READONLY[1],
         "--schema_directory", str(schemas), "--skipschema", "--logdir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    out = r.stdout + r.stderr
    rows = ROW.findall(out)
    assert rows, out[-3000:]
    passed, warned, failed, _untested = map(int, rows[-1])
    checked = re.findall(r"^Validating (\S+)\.\.\.$", out, re.M)
    failures = [line for line in out.splitlines() if "FAIL" in line and "Fail: 0" not in line and "|" not in line]
    warnings = [line for line in out.splitlines() if " - WARN - " in line]
    assert failed == 0, failures or [ln for ln in out.splitlines() if "ERROR" in ln or "FAIL" in ln][:40]
    assert warned == 0, warnings
    assert r.returncode == 0, out[-3000:]
    # every resource of the service was checked, and the figures are the validator's own
    resources = {u.rstrip("/") or "/" for u in walk(redfish_service)}
    assert {u.rstrip("/") or "/" for u in checked} == resources
    assert len(resources) >= 2 * 40 and passed > 1000
    print(f"validator: {len(checked)} resources, pass {passed}, warn {warned}, fail {failed}")
