"""A Revision's workload running: `KubernetesWorkloads` makes its Deployment and private Service on
the contract fake, the controllers-and-kubelet stand-in runs its pods as local processes of the
test apps, and what the workloads read back — the pod endpoints and the revision's conditions —
follows them: ready pods that answer as the revision (its PORT and K_* variables), scale to zero
and back, an image that cannot be pulled."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes_asyncio import client
from support.caches import ObjectCache
from support.flint_crds import flint_crds, register_crds
from support.kubeapi.session import KubeTarget, eventually
from support.kubelet import Kubelet, KubeletSettings

from controller.api.registry import served_kinds
from controller.reconcilers.context import CONFIGURATIONS, REVISIONS, ROUTES, Informers
from controller.reconcilers.revision_kubernetes import KubeServingContext, reconcile_revision_kubernetes
from controller.runtime.kubernetes import KubernetesRuntime, KubernetesWorkloads
from controller.runtime.kubernetes_manifests import ManifestSettings
from controller.runtime.kubernetes_status import Condition, PodEndpoint
from controller.settings import ControllerSettings
from controller.store.base import Obj
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings
from flint_common.snapshot import Snapshot

pytestmark = pytest.mark.fake_only  # the stand-in plays the cluster's controllers and kubelet

KUBELET = KubeletSettings(probe_period_s=0.05, grace_period_s=3.0, shutdown_grace_s=0.5,
                          crash_backoff_s=0.1, crash_backoff_max_s=0.4, image_backoff_s=0.2,
                          resync_s=0.1)
DEADLINE_S = 20.0


@pytest.fixture
async def cluster(kube: KubeTarget) -> AsyncIterator[tuple[KubernetesWorkloads, Kubelet]]:
    await register_crds(kube.api, flint_crds())
    kubelet = Kubelet(kube.api, namespace=kube.namespace, settings=KUBELET)
    await kubelet.start()
    workloads = KubernetesWorkloads(kube.api, manifests=ManifestSettings(prestop_s=1),
                                    namespace=kube.namespace)
    await workloads.start()
    try:
        yield workloads, kubelet
    finally:
        await workloads.close()
        pids = kubelet.pids()
        await kubelet.stop()
        for pid in pids:  # every pod's process stopped and reaped
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def revision(kube: KubeTarget, name: str, image: str) -> Obj:
    custom: Any = client.CustomObjectsApi(kube.api)
    made: Obj = await custom.create_namespaced_custom_object(
        "serving.knative.dev", "v1", kube.namespace, "revisions", {
            "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": name, "labels": {"serving.knative.dev/configuration": "hello",
                                                  "serving.knative.dev/service": "hello"}},
            "spec": {"containers": [{"name": "user-container", "image": image,
                                     "env": [{"name": "TARGET", "value": "cluster"}]}]}})
    return made


async def get_json(ip: str, port: int) -> Obj:
    async with aiohttp.ClientSession() as http, http.get(f"http://{ip}:{port}/") as r:
        assert r.status == 200
        body: Obj = orjson.loads(await r.read())
        return body


async def test_a_revision_runs_as_ready_pods_that_answer_as_the_revision(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet]) -> None:
    workloads, _ = cluster
    rev = await revision(kube, "hello-00001", "flint.test/apps/echo")
    await workloads.ensure(rev, 2)

    async def ready() -> list[PodEndpoint]:
        return [e for e in workloads.endpoints(kube.namespace, "hello-00001") if e.state == "ready"]

    endpoints = await eventually(ready, lambda got: len(got) == 2, DEADLINE_S, "two ready pods")
    assert len({e.ip for e in endpoints}) == 2 and all(e.ip.startswith("127.0.1.") for e in endpoints)
    for e in endpoints:
        answer = await get_json(e.ip, e.port)
        assert (answer["revision"], answer["configuration"], answer["service"], answer["port"]) == (
            "hello-00001", "hello", "hello", "8080")
        assert answer["env"]["TARGET"] == "cluster"

    async def conditions() -> dict[str, Condition]:
        dep = workloads.deployments.get(kube.namespace, "hello-00001-deployment")
        return await workloads.conditions(rev, dep)

    got = await eventually(conditions, lambda c: c["ResourcesAvailable"].status == "True",
                           DEADLINE_S, "the Deployment available")
    assert got["ContainerHealthy"] == Condition("True")


async def test_scale_to_zero_drains_the_endpoints_and_back(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet]) -> None:
    workloads, kubelet = cluster
    rev = await revision(kube, "hello-00002", "flint.test/apps/echo")
    await workloads.ensure(rev, 1)

    async def states() -> list[str]:
        return [e.state for e in workloads.endpoints(kube.namespace, "hello-00002")]

    await eventually(states, lambda s: s == ["ready"], DEADLINE_S, "one ready pod")
    await workloads.ensure(rev, 0)
    seen: list[list[str]] = []

    async def drained() -> list[str]:
        now = await states()
        seen.append(now)
        return now

    await eventually(drained, lambda s: s == [], DEADLINE_S, "no endpoint left")
    assert ["draining"] in seen  # during its preStop sleep: still serving, taking no new requests
    assert kubelet.pids() == []
    await workloads.ensure(rev, 1)
    await eventually(states, lambda s: s == ["ready"], DEADLINE_S, "ready again")


async def test_an_image_that_cannot_be_pulled_is_said_with_the_kubelet_s_words(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet]) -> None:
    workloads, _ = cluster
    rev = await revision(kube, "broken-00001", "ghcr.io/example/does-not-exist:1")
    dep = await workloads.ensure(rev, 1)

    async def conditions() -> dict[str, Condition]:
        return await workloads.conditions(
            rev, workloads.deployments.get(kube.namespace, "broken-00001-deployment") or dep)

    got = await eventually(conditions, lambda c: c["ResourcesAvailable"].status == "False",
                           DEADLINE_S, "the pull failure")
    assert got["ResourcesAvailable"].reason in ("ErrImagePull", "ImagePullBackOff")
    assert "ghcr.io/example/does-not-exist:1" in got["ResourcesAvailable"].message
    assert all(e.state != "ready" for e in workloads.endpoints(kube.namespace, "broken-00001"))


async def test_the_runtime_view_tells_the_replicas_as_they_come_and_go(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet]) -> None:
    """What the snapshot publisher and the scaler read on Kubernetes: replicas from the
    EndpointSlices, a change told once per replica, a gone one told as stopped."""
    workloads, _ = cluster
    runtime = KubernetesRuntime(workloads)
    told: list[tuple[str, str]] = []
    runtime.subscribe(lambda r: told.append((r.id, r.state)))
    await runtime.start()  # the workloads are started already (by the fixture): started once
    rev = await revision(kube, "hello-00003", "flint.test/apps/echo")
    key = f"{kube.namespace}/hello-00003"
    await workloads.ensure(rev, 1)

    async def states() -> list[str]:
        return [r.state for r in runtime.replicas(key)]

    await eventually(states, lambda s: s == ["ready"], DEADLINE_S, "one ready replica")
    (replica,) = runtime.replicas(key)
    assert replica.revision_key == key and replica.host.startswith("127.0.1.") and replica.port == 8080
    assert replica in runtime.replicas()  # every revision's
    assert (replica.id, "ready") in told
    await runtime.stop_replica(replica.id, grace_s=1)  # its pod deleted: the Deployment replaces it

    async def replaced() -> list[str]:
        return [r.id for r in runtime.replicas(key) if r.state == "ready"]

    ids = await eventually(replaced, lambda got: len(got) == 1 and got[0] != replica.id, DEADLINE_S,
                           "a replacement ready")

    async def all_ids() -> list[str]:
        return [r.id for r in runtime.replicas(key)]

    await eventually(all_ids, lambda got: replica.id not in got, DEADLINE_S, "the old pod gone")
    assert (replica.id, "stopped") in told and (ids[0], "ready") in told
    assert runtime.log_paths(key) == [] and await runtime.alog_paths(key) == []


# -- the Kubernetes engine's revision reconciler over them -------------------------------------


def route_to(kube: KubeTarget, revision_name: str) -> Obj:
    return {"metadata": {"name": "hello", "namespace": kube.namespace},
            "spec": {"traffic": [{"revisionName": revision_name, "percent": 100}]}}


async def reconciled_until(ctx: Any, key: tuple[str, str], done: Any, what: str,
                           kube: KubeTarget) -> Obj:
    """Reconcile (the queue would, on its requeues) until the stored revision satisfies `done`."""
    custom: Any = client.CustomObjectsApi(kube.api)

    async def step() -> Obj:
        current: Obj = await custom.get_namespaced_custom_object(
            "serving.knative.dev", "v1", key[0], "revisions", key[1])
        ctx.informers.by_kind[REVISIONS].objs = [current]
        await reconcile_revision_kubernetes(ctx, key)
        latest: Obj = await custom.get_namespaced_custom_object(
            "serving.knative.dev", "v1", key[0], "revisions", key[1])
        return latest

    return await eventually(step, done, DEADLINE_S, what)


def condition(rev: Obj, type_: str) -> tuple[str, str]:
    c: Obj = next((c for c in (rev.get("status") or {}).get("conditions") or []
                   if c["type"] == type_), {})
    return str(c.get("status", "")), str(c.get("reason", ""))


async def test_the_kubernetes_revision_reconciler_runs_a_routed_revision_and_scales_it_to_zero(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet], tmp_path: Path) -> None:
    workloads, kubelet = cluster
    await revision(kube, "hello-00004", "flint.test/apps/echo")
    routes = ObjectCache([route_to(kube, "hello-00004")])
    store = KubernetesStore(kube.api, served_kinds(), KubernetesSettings(namespace=kube.namespace))
    ctx = _ctx(kube, workloads, store, routes, tmp_path)
    key = (kube.namespace, "hello-00004")
    ready = await reconciled_until(ctx, key, lambda r: condition(r, "Ready")[0] == "True",
                                   "the revision Ready", kube)
    assert ready["status"]["actualReplicas"] == 1 and condition(ready, "Active") == ("True", "")
    assert ready["metadata"]["labels"]["serving.knative.dev/routingState"] == "active"
    # Nothing routes to it any more: scaled to zero, Inactive, still Ready (Knative's).
    routes.objs = []
    idle = await reconciled_until(ctx, key, lambda r: condition(r, "Active")[0] == "False",
                                  "the revision scaled to zero", kube)
    assert condition(idle, "Active") == ("False", "NoTraffic") and condition(idle, "Ready")[0] == "True"
    assert idle["status"]["desiredReplicas"] == 0
    await eventually(lambda: _value(kubelet.pids()), lambda p: p == [], DEADLINE_S, "its pods gone")
    await store.close()


async def test_an_unrouted_revision_keeps_its_pod_while_no_gateway_is_linked_until_the_drain_timeout(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet], tmp_path: Path) -> None:
    workloads, kubelet = cluster
    await revision(kube, "hello-00005", "flint.test/apps/echo")
    routes = ObjectCache([route_to(kube, "hello-00005")])
    store = KubernetesStore(kube.api, served_kinds(), KubernetesSettings(namespace=kube.namespace))
    ctx = _ctx(kube, workloads, store, routes, tmp_path)
    key = (kube.namespace, "hello-00005")
    await reconciled_until(ctx, key, lambda r: condition(r, "Ready")[0] == "True", "the revision Ready", kube)
    # No gateway is linked: one may still route to the pod from its last snapshot, so it stays...
    unlinked: Any = UnlinkedHub()
    ctx.hub = unlinked
    now = [1000.0]
    ctx.clock = lambda: now[0]
    routes.objs = []
    held = await reconciled_until(ctx, key, lambda r: r["metadata"]["labels"].get(
        "serving.knative.dev/routingState") == "reserve", "the revision unrouted", kube)
    assert held["status"]["desiredReplicas"] == 1 and ctx.held_since
    # ... until a drain would have timed out: then it goes anyway.
    now[0] += ctx.settings.drain_timeout_s + 1
    idle = await reconciled_until(ctx, key, lambda r: condition(r, "Active")[0] == "False",
                                  "scaled to zero after the drain timeout", kube)
    assert idle["status"]["desiredReplicas"] == 0
    await eventually(lambda: _value(kubelet.pids()), lambda p: p == [], DEADLINE_S, "its pods gone")
    await reconciled_until(ctx, key, lambda r: not ctx.held_since, "the hold forgotten", kube)
    await store.close()


async def _value(v: Any) -> Any:
    return v


class AckedHub:
    """The gateway hub as the reconciler reads it when one gateway is linked and has applied an
    empty snapshot: the revision's last pods may go (`gateways_let_go`)."""

    snapshot = Snapshot.empty()
    version = 0

    def connected(self) -> int:
        return 1

    def acked_by_all(self, version: int) -> bool:
        return True


def _ctx(kube: KubeTarget, workloads: KubernetesWorkloads, store: KubernetesStore, routes: ObjectCache,
         tmp_path: Path) -> KubeServingContext:
    """The Kubernetes revision reconciler's context over the test's caches."""
    caches: Any = {REVISIONS: ObjectCache([]), ROUTES: routes, CONFIGURATIONS: ObjectCache([])}
    settings = ControllerSettings(state_dir=tmp_path, engine="kubernetes")
    hub: Any = AckedHub()
    return KubeServingContext(store=store, settings=settings, informers=Informers(caches), hub=hub,
                              snapshot_dirty=lambda: None, workloads=workloads,
                              desired_scale=lambda _key: None)


async def test_an_hpa_class_revision_gets_its_autoscaler_and_a_name_taken_is_not_owned(
        kube: KubeTarget, cluster: tuple[KubernetesWorkloads, Kubelet], tmp_path: Path) -> None:
    workloads, _ = cluster
    custom: Any = client.CustomObjectsApi(kube.api)
    await custom.create_namespaced_custom_object("serving.knative.dev", "v1", kube.namespace,
                                                 "revisions", {
        "apiVersion": "serving.knative.dev/v1", "kind": "Revision",
        "metadata": {"name": "scaled-00001", "annotations": {
            "autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev",
            "autoscaling.knative.dev/max-scale": "4"}},
        "spec": {"containers": [{"image": "flint.test/apps/echo"}]}})
    store = KubernetesStore(kube.api, served_kinds(), KubernetesSettings(namespace=kube.namespace))
    ctx = _ctx(kube, workloads, store, ObjectCache([route_to(kube, "scaled-00001")]), tmp_path)
    await reconciled_until(ctx, (kube.namespace, "scaled-00001"), lambda r: True, "one reconcile", kube)
    autoscaling: Any = client.AutoscalingV2Api(kube.api)
    made = await autoscaling.read_namespaced_horizontal_pod_autoscaler("scaled-00001", kube.namespace)
    assert made.spec.scale_target_ref.name == "scaled-00001-deployment" and made.spec.max_replicas == 4
    # A Deployment of the name the next revision needs, made by someone else: left alone.
    apps: Any = client.AppsV1Api(kube.api)
    await apps.create_namespaced_deployment(kube.namespace, {
        "metadata": {"name": "taken-00001-deployment"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    await revision(kube, "taken-00001", "flint.test/apps/echo")
    refused = await reconciled_until(ctx, (kube.namespace, "taken-00001"),
                                     lambda r: condition(r, "ResourcesAvailable")[0] == "False",
                                     "the refusal", kube)
    assert condition(refused, "ResourcesAvailable") == ("False", "NotOwned")
    assert condition(refused, "Ready")[0] == "False"
    await store.close()


class UnlinkedHub(AckedHub):
    """No gateway linked to the controller."""

    def connected(self) -> int:
        return 0
