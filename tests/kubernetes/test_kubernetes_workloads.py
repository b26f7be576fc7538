"""A revision's workload through the API server (`controller.runtime.kubernetes`), on the contract
fake: the Deployment and private Service made once and kept, the scale through the subresource,
drift repaired, objects the revision does not control left alone, endpoints from EndpointSlices
and conditions from the Deployment and its pods. The fake runs no controllers: the test writes
what the cluster's controllers and kubelet would (Deployment status, Pods, EndpointSlices)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.flint_crds import flint_crds, register_crds
from support.kubeapi.session import KubeTarget, eventually

from controller.runtime.kubernetes import (
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    HASH_ANNOTATION,
    KubernetesWorkloads,
    NotOwned,
)
from controller.runtime.kubernetes_status import Condition, PodEndpoint
from controller.store.base import Obj

pytestmark = pytest.mark.fake_only  # writes what a real cluster's controllers own


def revision(ns: str, name: str = "hello-00001", image: str = "ghcr.io/example/hello:1") -> Obj:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"serving.knative.dev/configuration": "hello",
                                    "serving.knative.dev/service": "hello"}},
            "spec": {"containers": [{"name": "user-container", "image": image}]}}


async def created(kube: KubeTarget, rev: Obj) -> Obj:
    """`rev` made in the API server (its children's owner must exist, or the garbage collector
    takes them at once, as a cluster's does)."""
    custom: Any = client.CustomObjectsApi(kube.api)
    made: Obj = await custom.create_namespaced_custom_object(
        "serving.knative.dev", "v1", kube.namespace, "revisions", rev)
    return made


@pytest.fixture
async def workloads(kube: KubeTarget) -> AsyncIterator[KubernetesWorkloads]:
    await register_crds(kube.api, flint_crds())
    w = KubernetesWorkloads(kube.api, namespace=kube.namespace)
    await w.start()
    try:
        yield w
    finally:
        await w.close()


def apps(kube: KubeTarget) -> Any:
    return client.AppsV1Api(kube.api)


def core(kube: KubeTarget) -> Any:
    return client.CoreV1Api(kube.api)


async def read_deployment(kube: KubeTarget, name: str = "hello-00001-deployment") -> Obj:
    got: Obj = kube.api.sanitize_for_serialization(
        await apps(kube).read_namespaced_deployment(name, kube.namespace))
    return got


async def test_ensure_makes_the_deployment_and_the_private_service_once(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    rev = await created(kube, revision(kube.namespace))
    made = await workloads.ensure(rev, 2)
    assert made["metadata"]["name"] == "hello-00001-deployment" and made["spec"]["replicas"] == 2
    svc = await core(kube).read_namespaced_service("hello-00001-private", kube.namespace)
    assert svc.spec.selector == {"serving.knative.dev/revisionUID": rev["metadata"]["uid"]}
    first = await read_deployment(kube)
    again = await workloads.ensure(rev, 2)  # nothing changed: no write
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert first["metadata"]["annotations"][HASH_ANNOTATION]


async def test_the_scale_goes_through_the_subresource_and_keeps_the_template(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    rev = await created(kube, revision(kube.namespace))
    await workloads.ensure(rev, 1)
    before = await read_deployment(kube)
    await workloads.ensure(rev, 3)
    after = await read_deployment(kube)
    assert after["spec"]["replicas"] == 3
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1  # spec.replicas
    await workloads.ensure(rev, 0)  # scale to zero keeps the Deployment
    assert (await read_deployment(kube))["spec"]["replicas"] == 0


async def test_drift_is_repaired_and_a_new_manifest_rolls_the_template(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    rev = await created(kube, revision(kube.namespace))
    await workloads.ensure(rev, 1)
    dep = await read_deployment(kube)
    dep["spec"]["template"]["spec"]["containers"][0]["image"] = "ghcr.io/someone/else"
    dep["metadata"]["annotations"][HASH_ANNOTATION] = "tampered"
    dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "7"  # the cluster's
    await apps(kube).replace_namespaced_deployment("hello-00001-deployment", kube.namespace, dep)
    await eventually(lambda: _cached_hash(workloads, kube), lambda h: h == "tampered", 5.0, "the cache")
    await workloads.ensure(rev, 1)
    repaired = await read_deployment(kube)
    assert repaired["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example/hello:1"
    assert repaired["metadata"]["annotations"][HASH_ANNOTATION] != "tampered"
    assert repaired["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "7"  # kept
    assert repaired["spec"]["selector"] == dep["spec"]["selector"]  # immutable: never rewritten


async def _cached_hash(w: KubernetesWorkloads, kube: KubeTarget) -> str:
    dep = w.deployments.get(kube.namespace, "hello-00001-deployment") or {}
    return str(((dep.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION, ""))


async def test_objects_the_revision_does_not_control_are_left_alone(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    ns = kube.namespace
    await apps(kube).create_namespaced_deployment(ns, {
        "metadata": {"name": "hello-00001-deployment"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "x"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    with pytest.raises(NotOwned, match="existing Deployment 'hello-00001-deployment' that we do not own"):
        await workloads.ensure(await created(kube, revision(ns)), 1)
    await core(kube).create_namespaced_service(ns, {"metadata": {"name": "other-00001-private"},
                                                     "spec": {"ports": [{"port": 80}]}})
    with pytest.raises(NotOwned, match="Service 'other-00001-private'"):
        await workloads.ensure(await created(kube, revision(ns, "other-00001")), 1)
    kept = await read_deployment(kube)
    assert kept["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"


async def test_endpoints_come_from_the_private_service_s_slices(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    ns = kube.namespace
    changed: list[str] = []
    workloads.subscribe(changed.append)
    slices: Any = client.DiscoveryV1Api(kube.api)
    await slices.create_namespaced_endpoint_slice(ns, {
        "metadata": {"name": "hello-00001-private-abcde",
                     "labels": {"kubernetes.io/service-name": "hello-00001-private"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["127.0.1.5"], "conditions": {"ready": True},
             "targetRef": {"kind": "Pod", "name": "p1"}},
            {"addresses": ["127.0.1.6"], "conditions": {"ready": False},
             "targetRef": {"kind": "Pod", "name": "p2"}},
        ]})
    await slices.create_namespaced_endpoint_slice(ns, {  # another service's: not this revision's
        "metadata": {"name": "x-1", "labels": {"kubernetes.io/service-name": "other-private"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 80}],
        "endpoints": [{"addresses": ["127.0.1.9"]}]})

    async def got() -> list[PodEndpoint]:
        return workloads.endpoints(ns, "hello-00001")

    found = await eventually(got, lambda e: len(e) == 2, 5.0, "the slice in the cache")
    assert found == [PodEndpoint("p1", "127.0.1.5", 8080, "ready"),
                     PodEndpoint("p2", "127.0.1.6", 8080, "starting")]
    assert f"{ns}/hello-00001" in changed
    assert ENDPOINT_SLICES.group == "discovery.k8s.io" and DEPLOYMENTS.group == "apps"


async def test_conditions_from_the_deployment_and_a_failing_pod(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    ns, rev = kube.namespace, await created(kube, revision(kube.namespace))
    dep = await workloads.ensure(rev, 1)
    assert (await workloads.conditions(rev, None))["ResourcesAvailable"] == Condition("Unknown", "Deploying")
    await core(kube).create_namespaced_pod(ns, {
        "metadata": {"name": "hello-00001-deployment-1",
                     "labels": {"serving.knative.dev/revisionUID": rev["metadata"]["uid"]}},
        "spec": {"containers": [{"name": "user-container", "image": "ghcr.io/example/nope"}]}})
    await core(kube).patch_namespaced_pod_status("hello-00001-deployment-1", ns, {"status": {
        "containerStatuses": [{"name": "user-container", "ready": False, "restartCount": 0, "image": "x",
                               "imageID": "", "state": {"waiting": {
                                   "reason": "ImagePullBackOff",
                                   "message": 'Back-off pulling image "ghcr.io/example/nope"'}}}]}})
    got = await workloads.conditions(rev, dep)
    assert got["ResourcesAvailable"] == Condition("False", "ImagePullBackOff",
                                                  'Back-off pulling image "ghcr.io/example/nope"')


async def test_a_route_s_in_cluster_services_follow_its_tags(
        kube: KubeTarget, workloads: KubernetesWorkloads) -> None:
    custom: Any = client.CustomObjectsApi(kube.api)
    route: Obj = await custom.create_namespaced_custom_object(
        "serving.knative.dev", "v1", kube.namespace, "routes", {
            "apiVersion": "serving.knative.dev/v1", "kind": "Route", "metadata": {"name": "hello"},
            "spec": {"traffic": [{"revisionName": "hello-00001", "percent": 100, "tag": "blue"},
                                 {"revisionName": "hello-00002", "percent": 0, "tag": "green"}]}})
    await workloads.ensure_route_services(route)

    async def names() -> list[str]:
        listed = await core(kube).list_namespaced_service(
            kube.namespace, label_selector="serving.knative.dev/route=hello")
        return sorted(s.metadata.name for s in listed.items)

    assert await names() == ["blue-hello", "green-hello", "hello"]
    svc = await core(kube).read_namespaced_service("hello", kube.namespace)
    assert (svc.spec.type, svc.spec.external_name) == (
        "ExternalName", "flint-gateway.flint-system.svc.cluster.local")
    route["spec"]["traffic"] = route["spec"]["traffic"][:1]  # the green tag goes
    await workloads.ensure_route_services(route)
    assert await names() == ["blue-hello", "hello"]
    other: Obj = await custom.create_namespaced_custom_object(
        "serving.knative.dev", "v1", kube.namespace, "routes", {
            "apiVersion": "serving.knative.dev/v1", "kind": "Route", "metadata": {"name": "blue-hello"},
            "spec": {"traffic": [{"revisionName": "x-00001", "percent": 100}]}})
    with pytest.raises(NotOwned, match="Service 'blue-hello'"):  # the first route's tag holds it
        await workloads.ensure_route_services(other)
