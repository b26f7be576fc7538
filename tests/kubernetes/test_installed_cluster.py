"""The admission webhook on a real cluster where Flint is installed: the cases of
tests/support/webhook_cases.py (the ones test_webhook_e2e.py runs on the contract fake) with
`kubectl` against `FLINT_KUBECONFIG`, in a namespace of the test's own (deleted at the end).

Opt in: `FLINT_KUBECONFIG=~/.kube/config FLINT_TEST_IMAGE=REGISTRY/app:TAG pytest tests/kubernetes`.
Skipped without `FLINT_KUBECONFIG`, and when Deployment `flint-system/flint-controller` is not
available there. `FLINT_TEST_IMAGE` is an image the cluster can pull that serves HTTP on $PORT;
without it the valid Service is checked as stored but not waited on to be Ready.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from support import webhook_cases as cases
from support.kubeapi.session import KUBECONFIG_ENV, KubeTarget, eventually, real_cluster

pytestmark = [
    pytest.mark.skipif(not real_cluster(),
                       reason=f"a real cluster's test: set {KUBECONFIG_ENV} to its kubeconfig"),
    pytest.mark.timeout(600),
]

IMAGE_ENV = "FLINT_TEST_IMAGE"
SYSTEM_NAMESPACE = "flint-system"
INSTALL = ("install Flint first: docker build -f deploy/Dockerfile -t REGISTRY/flint:TAG . && "
           "docker push REGISTRY/flint:TAG && (cd deploy/overlays/redis && kustomize edit set image "
           "flint=REGISTRY/flint:TAG) && kubectl apply -k deploy/overlays/redis")
READY_DEADLINE_S = 300.0
"""A first pull of the test image and a pod's start, on a cluster."""
NO_IMAGE = "registry.invalid/flint-test:unset"
"""The valid Service's image without FLINT_TEST_IMAGE: stored and defaulted, never Ready."""


async def installed(api: client.ApiClient) -> str:
    """'' when Flint's controller is available on the cluster, else why not."""
    apps: Any = client.AppsV1Api(api)
    try:
        deployment = await apps.read_namespaced_deployment("flint-controller", SYSTEM_NAMESPACE)
    except client.ApiException as e:
        if e.status == 404:
            return f"Deployment {SYSTEM_NAMESPACE}/flint-controller does not exist"
        raise
    available = [c for c in deployment.status.conditions or [] if c.type == "Available"]
    if not available or available[0].status != "True":
        return f"Deployment {SYSTEM_NAMESPACE}/flint-controller is not available"
    return ""


async def ca_bundles_set(api: client.ApiClient) -> list[str]:
    """The webhooks of Flint's two configurations still without a caBundle (or missing)."""
    admission: Any = client.AdmissionregistrationV1Api(api)
    missing: list[str] = []
    for read, name in ((admission.read_mutating_webhook_configuration, "flint-defaulting"),
                       (admission.read_validating_webhook_configuration, "flint-validation")):
        try:
            config = await read(name)
        except client.ApiException as e:
            if e.status != 404:
                raise
            missing.append(f"{name} (absent)")
            continue
        missing += [f"{name}/{h.name}" for h in config.webhooks or [] if not h.client_config.ca_bundle]
    return missing


@pytest.fixture
async def kubectl(kube: KubeTarget) -> cases.Kubectl:
    why = await installed(kube.api)
    if why:
        pytest.skip(f"{why}; {INSTALL}")
    await eventually(lambda: ca_bundles_set(kube.api), lambda m: not m, 60.0,
                     "the controller leader's caBundle in Flint's webhook configurations")
    return cases.Kubectl(Path(os.environ[KUBECONFIG_ENV]), None)


def image() -> str:
    return os.environ.get(IMAGE_ENV) or NO_IMAGE


async def test_a_valid_service_is_defaulted_and_an_invalid_update_refused(
        kube: KubeTarget, kubectl: cases.Kubectl) -> None:
    await cases.valid_service_is_defaulted_and_ready(
        kubectl, kube.namespace, image(), wait_ready=bool(os.environ.get(IMAGE_ENV)),
        deadline_s=READY_DEADLINE_S)
    await cases.invalid_update_is_refused(kubectl, kube.namespace, image())
    await cases.every_write_path_is_checked(kubectl, kube.namespace, image())
    await cases.named_template_change_is_refused(kubectl, kube.namespace, image())


async def test_invalid_services_are_refused_in_knatives_words(
        kube: KubeTarget, kubectl: cases.Kubectl) -> None:
    await cases.invalid_services_are_refused(kubectl, kube.api, kube.namespace, image())


async def test_a_warning_reaches_kubectl(kube: KubeTarget, kubectl: cases.Kubectl) -> None:
    await cases.warning_is_shown(kubectl, kube.namespace)
