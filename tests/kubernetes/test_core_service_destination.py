"""A core v1 Service as a Destination on the Kubernetes engine: a Trigger whose subscriber is
`ref: {apiVersion: v1, kind: Service}` gets `status.subscriberUri` =
`http://<name>.<namespace>.svc.cluster.local` (a `uri` resolved against it; its dead-letter sink
too) once the Service exists, is woken when it appears, and is unresolved again when it goes.
The controller runs in this process on the contract fake (its informer of core Services through
the workloads)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.flint_crds import flint_crds, register_crds
from support.kube_engine import loopback_cluster_tls
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually

from controller.api.registry import admit, registry_for
from controller.app import Controller
from controller.leader import LeaderSettings
from controller.reconcilers.context import BROKERS, TRIGGERS
from controller.settings import ControllerSettings
from controller.store.base import Store
from controller.store.kubernetes_config import KubernetesSettings
from loadtests.flint_process import free_ports

pytestmark = pytest.mark.fake_only  # the controller of one machine on the fake

DEADLINE_S = 30.0


@pytest.fixture
async def store(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[Store]:
    assert kube.fake is not None
    await register_crds(kube.api, flint_crds())
    api_port, tls_port = free_ports(2)
    controller = Controller(ControllerSettings(
        state_dir=tmp_path / "controller", api_port=api_port, api_tls_port=tls_port, engine="kubernetes",
        kubernetes=KubernetesSettings(
            kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", kube.fake.url)),
            namespace=kube.namespace),
        leader=LeaderSettings(namespace=kube.namespace, lease_duration_s=6, renew_deadline_s=3.0,
                              retry_period_s=1.0),
        gateway_rejoin_s=2.0, cluster_tls=loopback_cluster_tls(kube.namespace)))
    try:
        await controller.start()
        assert controller._store is not None
        yield controller._store
    finally:
        await controller.stop(stop_replicas=True)


def admitted(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    made, _ = admit(registry_for("kubernetes").lookup(kind), obj)
    return made


async def create_core_service(kube: KubeTarget, name: str) -> None:
    core: Any = client.CoreV1Api(kube.api)
    await core.create_namespaced_service(kube.namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": name}}})


async def subscriber(store: Store, ns: str, name: str) -> tuple[Any, Any, Any]:
    """The trigger's (subscriberUri, SubscriberResolved status, its message)."""
    status = (await store.get(TRIGGERS, ns, name)).get("status") or {}
    cond: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "SubscriberResolved"), {})
    return status.get("subscriberUri"), cond.get("status"), cond.get("message")


async def test_a_trigger_to_a_core_service_gets_its_cluster_url_once_it_exists(
        kube: KubeTarget, store: Store) -> None:
    ns = kube.namespace
    await store.create(BROKERS, admitted("broker", {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": {"name": "default", "namespace": ns}}))
    for name, uri in (("to-core", None), ("to-core-path", "/events?x=1")):
        dest: dict[str, Any] = {"ref": {"apiVersion": "v1", "kind": "Service", "name": "legacy"}}
        if uri:
            dest["uri"] = uri
        await store.create(TRIGGERS, admitted("trigger", {
            "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"broker": "default", "subscriber": dest, "delivery": {"deadLetterSink": {
                "ref": {"apiVersion": "v1", "kind": "Service", "name": "legacy"}, "uri": "/dead"}}}}))

    # Before the Service exists: unresolved, saying so.
    uri, _, message = await eventually(lambda: subscriber(store, ns, "to-core"),
                                       lambda s: s[1] == "False", DEADLINE_S, "unresolved")
    assert uri is None and 'services "legacy" not found' in message, message
    # The Service appears: its change wakes the triggers (no wait for a requeue).
    await create_core_service(kube, "legacy")
    got = await eventually(lambda: subscriber(store, ns, "to-core"), lambda s: s[1] == "True", DEADLINE_S,
                           "resolved once the Service exists")
    assert got[0] == f"http://legacy.{ns}.svc.cluster.local"
    got = await eventually(lambda: subscriber(store, ns, "to-core-path"), lambda s: s[1] == "True",
                           DEADLINE_S, "the uri resolved against it")
    assert got[0] == f"http://legacy.{ns}.svc.cluster.local/events?x=1"
    trigger = await store.get(TRIGGERS, ns, "to-core-path")
    assert trigger["status"]["deadLetterSinkUri"] == f"http://legacy.{ns}.svc.cluster.local/dead"
    # It goes: unresolved again.
    core: Any = client.CoreV1Api(kube.api)
    await core.delete_namespaced_service("legacy", ns)
    got = await eventually(lambda: subscriber(store, ns, "to-core"), lambda s: s[1] == "False", DEADLINE_S,
                           "unresolved once the Service is gone")
    assert got[0] is None
