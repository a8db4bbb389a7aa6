"""The Kubernetes manifests under deploy/k8s pass kubernetes-validate (strict), and the command
lines they give mcm-emu are ones this mcm-emu accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mcm_firmware.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MANIFESTS = sorted((DEPLOY / "k8s").glob("*.yaml"))


def test_every_manifest_validates_strictly():
    tool = shutil.which("kubernetes-validate") or str(Path(sys.executable).with_name("kubernetes-validate"))
    out = subprocess.run([tool, "--strict", *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    passed = out.stdout.count(" passed for resource ")
    resources = sum(1 for m in MANIFESTS for doc in yaml.safe_load_all(m.read_text()) if doc)
    assert passed == resources >= 7


def _fleet_containers():
    for m in MANIFESTS:
        for doc in yaml.safe_load_all(m.read_text()):
            if doc and doc["kind"] in ("Job", "StatefulSet") and doc["metadata"]["name"] == "mcm-fleet":
                yield m.name, doc["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("name", "container"), list(_fleet_containers()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_the_fleet_pods_run_a_valid_sharded_command(name, container):
    args = build_parser().parse_args(container["args"])
    assert args.command == "run" and args.shard == "index/16" and args.metrics_port == 9400
    assert args.nodes == 55_000 and args.processes >= 1
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_containerfile_installs_the_wheel_and_runs_as_a_user():
    text = (DEPLOY / "Containerfile").read_text()
    assert "pip wheel" in text and "USER 10001" in text and 'ENTRYPOINT ["mcm-emu"]' in text
