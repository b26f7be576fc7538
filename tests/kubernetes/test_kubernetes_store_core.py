"""The Kubernetes store reads kinds of the core group (`Kind("", "services")`) through CoreV1Api:
get, list (a namespace or all) and watch, so an informer caches them; it refuses to write them.
Runs on the contract fake or a cluster (in the test's namespace)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget, eventually

from controller.informer import Informer
from controller.store.base import BadRequest, Kind, NotFound
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings

CORE_SERVICES = Kind("", "services")


def service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"ports": [{"port": 80}], "selector": {"app": name}}}


async def test_core_services_are_read_listed_watched_and_never_written(kube: KubeTarget) -> None:
    store = KubernetesStore(kube.api, {CORE_SERVICES: ("v1", "Service")},
                            KubernetesSettings(namespace=kube.namespace))
    core: Any = client.CoreV1Api(kube.api)
    ns = kube.namespace
    await core.create_namespaced_service(ns, service("one"))
    informer = Informer(store, CORE_SERVICES)
    try:
        got = await store.get(CORE_SERVICES, ns, "one")
        assert got["metadata"]["name"] == "one" and got["spec"]["ports"][0]["port"] == 80
        with pytest.raises(NotFound):
            await store.get(CORE_SERVICES, ns, "none")
        items, rv = await store.list(CORE_SERVICES, ns)
        assert [i["metadata"]["name"] for i in items] == ["one"] and rv
        everywhere, _ = await store.list(CORE_SERVICES)
        assert "one" in {i["metadata"]["name"] for i in everywhere}

        await informer.start()
        assert informer.get(ns, "one") is not None
        await core.create_namespaced_service(ns, service("two"))  # seen through the watch
        await eventually(lambda: _cached(informer, ns, "two"), bool, 10, "the new Service cached")
        await core.delete_namespaced_service("one", ns)
        await eventually(lambda: _cached(informer, ns, "one"), lambda seen: not seen, 10, "the deletion seen")

        with pytest.raises(BadRequest, match="only reads the core group"):
            await store.create(CORE_SERVICES, service("three"))
        with pytest.raises(BadRequest, match="only reads the core group"):
            await store.delete(CORE_SERVICES, ns, "two")
    finally:
        await informer.stop()
        await store.close()


async def _cached(informer: Informer, namespace: str, name: str) -> bool:
    return informer.get(namespace, name) is not None


async def test_a_watch_by_name_lists_and_follows_that_object_only(kube: KubeTarget) -> None:
    store = KubernetesStore(kube.api, {CORE_SERVICES: ("v1", "Service")},
                            KubernetesSettings(namespace=kube.namespace))
    core: Any = client.CoreV1Api(kube.api)
    ns = kube.namespace
    await core.create_namespaced_service(ns, service("other"))
    await core.create_namespaced_service(ns, service("mine"))
    seen: list[tuple[str, str]] = []
    try:
        async with asyncio.timeout(20):
            watch = store.watch(CORE_SERVICES, ns, name="mine")
            async for ev in watch:
                seen.append((ev.type, ev.object["metadata"]["name"]))
                if len(seen) == 1:  # listed; now a change to each
                    await core.delete_namespaced_service("other", ns)
                    await core.delete_namespaced_service("mine", ns)
                if ev.type == "DELETED":
                    break
    finally:
        await store.close()
    assert seen == [("ADDED", "mine"), ("DELETED", "mine")]
