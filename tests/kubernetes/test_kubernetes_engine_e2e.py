"""The Kubernetes engine end to end, on one machine: Flint's controller with `--engine kubernetes`
keeps its objects in the contract fake (Flint's CRDs registered), the kubelet stand-in runs the
revisions' pods as local processes on their own loopback addresses, and a real gateway process,
linked to the controller, routes to the pods' IPs. A Knative Service created in the API server
answers through the gateway, and the Route is reachable in the cluster (its ExternalName
Service)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.kube_engine import DEADLINE_S, GatewayProcess, answer, ksvc, running_engine, update_env
from support.kubeapi.session import KubeTarget, eventually
from support.kubelet import Kubelet

from controller.api.registry import admit, registry_for
from controller.app import Controller
from controller.reconcilers.context import SERVICES

pytestmark = pytest.mark.fake_only  # a cluster of one machine: the fake and the stand-in



@pytest.fixture
async def engine(kube: KubeTarget, tmp_path: Path
                 ) -> AsyncIterator[tuple[Controller, GatewayProcess, Kubelet]]:
    async with running_engine(kube, tmp_path) as (controller, settings, kubelet):
        gateway = GatewayProcess(f"http://127.0.0.1:{settings.api_port}",
                                 settings.state_dir / "auth" / "token", tmp_path / "gateway",
                                 settings.gateway_port)
        try:
            yield controller, gateway, kubelet
        finally:
            await gateway.stop()


async def test_a_service_answers_through_the_gateway_from_pods_in_the_cluster(
        kube: KubeTarget, engine: tuple[Controller, GatewayProcess, Kubelet]) -> None:
    controller, gateway, kubelet = engine
    await create(controller, kube)
    _, body = await eventually(lambda: ask(gateway, kube), lambda a: a[0] == 200, DEADLINE_S,
                               "the Service answering through the gateway")
    assert body["revision"] == "hello-00001" and body["service"] == "hello" and body["port"] == "8080"
    assert kubelet.pids(), "served by a pod the stand-in runs"
    core: Any = client.CoreV1Api(kube.api)
    svc = await core.read_namespaced_service("hello", kube.namespace)
    assert (svc.spec.type, svc.spec.external_name) == (
        "ExternalName", "flint-gateway.flint-system.svc.cluster.local")


async def test_an_idle_service_goes_to_zero_pods_and_a_request_wakes_it(
        kube: KubeTarget, engine: tuple[Controller, GatewayProcess, Kubelet]) -> None:
    controller, gateway, kubelet = engine
    await create(controller, kube)
    await eventually(lambda: ask(gateway, kube), lambda a: a[0] == 200, DEADLINE_S, "first answer")
    apps: Any = client.AppsV1Api(kube.api)

    async def replicas() -> tuple[int, int]:
        dep = await apps.read_namespaced_deployment("hello-00001-deployment", kube.namespace)
        return dep.spec.replicas, len(kubelet.pids())

    # Idle: the autoscaler takes it to zero — the Deployment scaled down, its pod gone.
    await eventually(replicas, lambda r: r == (0, 0), DEADLINE_S, "scaled to zero, no pod left")
    # A request at zero is held by the gateway while the autoscaler scales the Deployment up.
    status, body = await ask(gateway, kube, timeout_s=DEADLINE_S)
    assert status == 200 and body["revision"] == "hello-00001"
    assert (await replicas())[0] >= 1


async def test_a_split_and_tags_route_to_the_pods_of_each_revision(
        kube: KubeTarget, engine: tuple[Controller, GatewayProcess, Kubelet]) -> None:
    controller, gateway, _ = engine
    await create(controller, kube)
    await eventually(lambda: ask(gateway, kube), lambda a: a[0] == 200, DEADLINE_S, "first answer")
    store = controller._store
    assert store is not None
    current = await store.get(SERVICES, kube.namespace, "hello")
    spec = current["spec"]
    spec["template"]["spec"]["containers"][0]["env"] = [{"name": "TARGET", "value": "two"}]
    spec["traffic"] = [{"revisionName": "hello-00001", "percent": 50, "tag": "blue"},
                       {"latestRevision": True, "percent": 50, "tag": "green"}]
    updated, _ = admit(registry_for("kubernetes").lookup("ksvc"), current, current)
    await store.update(SERVICES, updated)

    async def revisions_answering(host_prefix: str = "hello", n: int = 40) -> dict[str, int]:
        seen: dict[str, int] = {}
        for _ in range(n):
            status, body = await ask(gateway, kube, timeout_s=DEADLINE_S, host_prefix=host_prefix)
            if status == 200:
                seen[body["revision"]] = seen.get(body["revision"], 0) + 1
        return seen

    # 40 requests split 50/50: each revision answers at least 5 (fewer: 1 in 10^7), once the
    # split is in place (a batch that straddles the new revision's first ready pod may not be)
    both = await eventually(revisions_answering,
                            lambda s: all(s.get(r, 0) >= 5 for r in ("hello-00001", "hello-00002")),
                            DEADLINE_S, "both revisions answering the split")
    assert set(both) == {"hello-00001", "hello-00002"}
    assert await revisions_answering("blue-hello", 10) == {"hello-00001": 10}
    assert await revisions_answering("green-hello", 10) == {"hello-00002": 10}


async def test_a_new_revision_rolls_out_under_a_prober_with_no_failed_request(
        kube: KubeTarget, engine: tuple[Controller, GatewayProcess, Kubelet]) -> None:
    controller, gateway, _ = engine
    await create(controller, kube)
    await eventually(lambda: ask(gateway, kube), lambda a: a[0] == 200, DEADLINE_S, "first answer")
    outcomes: list[tuple[Any, str | None]] = []
    stop = asyncio.Event()

    async def probe() -> None:  # one request after another for as long as the rollout lasts
        while not stop.is_set():
            status, body = await ask(gateway, kube, timeout_s=DEADLINE_S)
            outcomes.append((status, body["revision"] if body else None))

    prober = asyncio.create_task(probe())
    try:
        store = controller._store
        assert store is not None
        await update_env(store, kube.namespace, {"TARGET": "2"})

        async def latest_answering() -> int:
            return sum(1 for _, rev in outcomes[-5:] if rev == "hello-00002")

        await eventually(latest_answering, lambda n: n == 5, DEADLINE_S, "the new revision serving")
        apps: Any = client.AppsV1Api(kube.api)

        async def old_replicas() -> int:
            dep = await apps.read_namespaced_deployment("hello-00001-deployment", kube.namespace)
            return int(dep.spec.replicas)

        await eventually(old_replicas, lambda n: n == 0, DEADLINE_S, "the old revision scaled down")
        discovery: Any = client.DiscoveryV1Api(kube.api)

        async def old_endpoints() -> int:  # its pod through its preStop sleep and SIGTERM, gone
            listed = await discovery.list_namespaced_endpoint_slice(
                kube.namespace, label_selector="kubernetes.io/service-name=hello-00001-private")
            return sum(len(s.endpoints or []) for s in listed.items)

        await eventually(old_endpoints, lambda n: n == 0, DEADLINE_S, "the old pod gone")
    finally:
        stop.set()
        await prober
    failed = [o for o in outcomes if o[0] != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    assert {rev for _, rev in outcomes} == {"hello-00001", "hello-00002"}


async def create(controller: Controller, kube: KubeTarget) -> None:
    assert controller._store is not None
    await controller._store.create(SERVICES, ksvc(kube.namespace))


def ask(gateway: GatewayProcess, kube: KubeTarget, **kw: Any) -> Awaitable[Any]:
    """`answer` of the test's Service through `gateway`."""
    return answer(gateway.port, kube.namespace, **kw)
