"""deploy/: the base and each overlay render with kustomize, every object is valid against its
kind's Kubernetes schema offline, the Dockerfile passes hadolint, every Flint container is locked
down with requests and limits, and every RBAC rule says why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S_VERSION = "1.30.0"
TARGETS = ["deploy", "deploy/overlays/nodeport", "deploy/overlays/redis"]


def render(target: str) -> list[dict[str, Any]]:
    out = subprocess.run([str(BIN / "kubectl"), "kustomize", str(ROOT / target)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("target", TARGETS)
def test_every_object_is_valid_for_its_kind(target: str) -> None:
    objs = render(target)
    assert objs
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_validator_refuses_an_unknown_field() -> None:
    dep = next(o for o in render("deploy") if o["kind"] == "Deployment")
    dep["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


def test_hadolint_passes_the_dockerfile() -> None:
    done = subprocess.run([str(BIN / "hadolint"), "--failure-threshold", "warning",
                           str(ROOT / "deploy" / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def _pods(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


@pytest.mark.parametrize("target", TARGETS)
def test_every_container_is_locked_down_with_requests_and_limits(target: str) -> None:
    for pod in _pods(render(target)):
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod.get("initContainers", []) + pod["containers"]:
            for k in ("requests", "limits"):
                assert set(c["resources"][k]) >= {"cpu", "memory"}, c["name"]
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]


def test_every_rbac_rule_says_why() -> None:
    for path in (ROOT / "deploy" / "flint").glob("rbac-*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("- apiGroups:"):
                j = i - 1
                while j >= 0 and lines[j].startswith("#") and not lines[j].startswith("# why:"):
                    j -= 1
                assert j >= 0 and lines[j].startswith("# why:"), f"{path.name}:{i + 1} has no `# why:`"


def test_exposed_ports_are_the_flint_containers_ports() -> None:
    exposed = {int(p) for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines()
               if line.startswith("EXPOSE") for p in line.split()[1:]}
    ports = {p["containerPort"] for pod in _pods(render("deploy")) for c in pod["containers"]
             if c["image"].startswith("flint") for p in c.get("ports", [])}
    assert exposed == ports
