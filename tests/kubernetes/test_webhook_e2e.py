"""The admission webhook end to end on the contract fake: a real controller (`--engine kubernetes`
with its webhook listener) whose leader fills the `caBundle` of the two configurations of
deploy/flint/webhook.yaml, the fake calling them over HTTPS (the certificate checked against that
bundle and the Service name `flint-webhook.<ns>.svc`), and the real `kubectl` applying Knative
objects: a valid Service stored with the embedded API's defaults and Ready, invalid ones refused
in Knative's words with their field paths, a warning shown, an invalid update refused.

The cases are tests/support/webhook_cases.py's, which test_installed_cluster.py runs on a real
cluster."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import webhook_cases as cases
from support.flint_crds import flint_crds, register_crds
from support.harness import REPO
from support.kube_engine import GatewayProcess, reaped, running_engine
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually

from controller.cluster_tls.settings import CA_CONFIGMAP, WEBHOOK_SERVICE
from controller.webhook.settings import WebhookSettings
from loadtests.flint_process import free_ports

pytestmark = [pytest.mark.fake_only, pytest.mark.timeout(240)]

DEADLINE_S = 60.0
WEBHOOK_YAML = REPO / "deploy" / "flint" / "webhook.yaml"
CONFIGURATIONS = (("mutatingwebhookconfiguration", "flint-defaulting"),
                  ("validatingwebhookconfiguration", "flint-validation"))


def webhook_manifests(namespace: str) -> list[dict[str, Any]]:
    """deploy/flint/webhook.yaml with the Service (and the configurations' references to it) in
    `namespace`, the controller's there (its certificate names `flint-webhook.<namespace>.svc`)."""
    docs = [d for d in yaml.safe_load_all(WEBHOOK_YAML.read_text()) if d]
    for d in docs:
        if d["kind"] == "Service":
            d["metadata"]["namespace"] = namespace
        for hook in d.get("webhooks") or []:
            assert "caBundle" not in hook["clientConfig"], "shipped without: the leader writes it"
            hook["clientConfig"]["service"]["namespace"] = namespace
    assert sorted(d["kind"] for d in docs) == [
        "MutatingWebhookConfiguration", "Service", "ValidatingWebhookConfiguration"]
    return docs


@dataclass
class Cluster:
    kubectl: cases.Kubectl
    kube: KubeTarget


@pytest.fixture
async def cluster(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[Cluster]:
    assert kube.fake is not None
    ns = kube.namespace
    kubectl = cases.Kubectl(write_kubeconfig(tmp_path / "kubectl-config", kube.fake.url), tmp_path / "home",
                            apply_flags=("--validate=false",))
    (tmp_path / "home").mkdir()
    applied = await kubectl.apply(*webhook_manifests(ns))  # before the leader's term: it publishes then
    assert applied.returncode == 0, applied.stderr
    (port,) = free_ports(1)
    kube.fake.webhook_addresses[f"{ns}/{WEBHOOK_SERVICE}"] = f"127.0.0.1:{port}"
    async with running_engine(kube, tmp_path, webhook=WebhookSettings(port=port, host="127.0.0.1")) as (
            controller, settings, _kubelet), reaped() as procs:
        assert controller.webhook is not None and controller.webhook.url == f"https://127.0.0.1:{port}"
        procs.append(GatewayProcess(f"http://127.0.0.1:{settings.api_port}",
                                    settings.state_dir / "auth" / "token", tmp_path / "gateway",
                                    settings.gateway_port))
        await eventually(lambda: ca_bundles(kubectl, ns), lambda b: len(b) == 1 and "" not in b, DEADLINE_S,
                         "the leader's CA bundle in both webhook configurations")
        yield Cluster(kubectl, kube)


async def ca_bundles(kubectl: cases.Kubectl, namespace: str) -> set[str]:
    """Each webhook's caBundle, decoded ("" where unset), and the ConfigMap's trust bundle must
    be the same."""
    found: set[str] = set()
    for kind, name in CONFIGURATIONS:
        config = await kubectl.get(kind, None, name)
        assert config is not None
        for hook in config["webhooks"]:
            raw = hook["clientConfig"].get("caBundle") or ""
            found.add(base64.b64decode(raw).decode() if raw else "")
    cm = await kubectl.get("configmap", namespace, CA_CONFIGMAP)
    found.add((cm or {}).get("data", {}).get("ca.crt", ""))
    return found


async def test_a_valid_service_gets_the_embedded_defaults_and_an_invalid_update_is_refused(
        cluster: Cluster) -> None:
    ns, kubectl, fake = cluster.kube.namespace, cluster.kubectl, cluster.kube.fake
    assert fake is not None
    calls = fake.admission.calls
    await cases.valid_service_is_defaulted_and_ready(kubectl, ns, cases.FAKE_IMAGE, wait_ready=True,
                                                     deadline_s=DEADLINE_S)
    assert fake.admission.calls > calls  # defaulted by the webhook (and its children admitted by it)
    refused = await cases.invalid_update_is_refused(kubectl, ns, cases.FAKE_IMAGE)
    assert refused == ('The Service "hello" is invalid: spec.template.spec.containerConcurrency: '
                       'expected 0 <= 5000 <= 1000'), refused
    await cases.every_write_path_is_checked(kubectl, ns, cases.FAKE_IMAGE)
    await cases.named_template_change_is_refused(kubectl, ns, cases.FAKE_IMAGE)


async def test_invalid_services_are_refused_with_the_field_path_in_knatives_words(cluster: Cluster) -> None:
    kube = cluster.kube
    shown = await cases.invalid_services_are_refused(cluster.kubectl, kube.api, kube.namespace,
                                                     cases.FAKE_IMAGE)
    assert shown["traffic-sum"] == (
        'The Service "bad-traffic-sum" is invalid: spec.traffic: Traffic targets sum to 90, want 100')


async def test_a_warning_of_the_registry_is_a_kubectl_warning_line(cluster: Cluster) -> None:
    line = await cases.warning_is_shown(cluster.kubectl, cluster.kube.namespace)
    assert f'broker class "{cases.WARNED_BROKER_CLASS}" is not reconciled by Flint' in line


async def test_the_webhook_fails_closed_when_it_cannot_be_reached(kube: KubeTarget, tmp_path: Path) -> None:
    """failurePolicy Fail (deploy/flint/webhook.yaml): with no controller serving the webhook,
    kubectl's Service is refused and nothing is stored."""
    assert kube.fake is not None
    kubectl = cases.Kubectl(write_kubeconfig(tmp_path / "kubectl-config", kube.fake.url), tmp_path,
                            apply_flags=("--validate=false",))
    await register_crds(kube.api, flint_crds())
    assert (await kubectl.apply(*webhook_manifests(kube.namespace))).returncode == 0
    done = await kubectl.apply(cases.service(kube.namespace, "hello", cases.FAKE_IMAGE))
    assert done.returncode != 0
    url = f"https://flint-webhook.{kube.namespace}.svc:443/admission/defaulting?timeout=10s"
    assert ('Internal error occurred: failed calling webhook "defaulting.webhook.flint.dev": failed to call '
            f'webhook: Post "{url}": no endpoints available for service "flint-webhook"') in done.stderr, \
        done.stderr
    assert await kubectl.get("ksvc", kube.namespace, "hello") is None
