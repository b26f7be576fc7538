"""The Store protocol's shared suite (tests/unit/test_store.py) run over the Kubernetes store.

The unit suite is parametrized over the embedded stores through its `make_store` fixture; this
module imports the tests that hold for any store and gives them a `make_store` of Kubernetes
stores on the contract fake (over HTTP, which is why they are not in tests/unit). Its kinds get
schemaless CRDs here (the suite's objects are not Knative-shaped), with the status subresource.
Left out, because they pin what only the embedded stores do: exact resourceVersion numbers
(`test_create_fills_metadata`, `..._ignores_client_resource_version...`,
`test_list_sorted_filtered_with_resource_version`, `test_delete_returns_object`, the `watch_*`
replay tests: the fake's counter is shared with namespaces and CRDs), a seeded `generateName`
(`test_generate_name_retries_on_collision`), the embedded history and buffer sizes
(`test_watch_gone_when_history_compacted`, `test_slow_watcher_gets_gone`) and the in-process
fan-out (`test_close_ends_watches`); tests/kubernetes/test_kubernetes_store.py covers each of
those behaviours the Kubernetes way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.flint_crds import register_crds
from support.kubeapi.session import KubeTarget
from unit.test_store import (
    StoreFactory,
    test_a_finalizer_holds_a_delete_until_it_is_removed,
    test_create_duplicate_is_already_exists,
    test_create_needs_name_or_generate_name,
    test_get_missing_is_not_found,
    test_update_conflict_on_stale_resource_version,
    test_update_generation_only_on_spec_change_and_identity_immutable,
    test_update_ignores_status_and_noop_keeps_resource_version,
    test_update_missing_is_not_found,
    test_update_status_replaces_only_status,
    test_update_without_resource_version_is_unconditional,
    test_without_finalizers_a_delete_removes_the_object_at_once,
)

from controller.store.base import Kind
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings

pytestmark = pytest.mark.fake_only  # Knative's groups on a real cluster belong to Knative

__all__ = [
    "test_a_finalizer_holds_a_delete_until_it_is_removed",
    "test_create_duplicate_is_already_exists",
    "test_create_needs_name_or_generate_name",
    "test_get_missing_is_not_found",
    "test_update_conflict_on_stale_resource_version",
    "test_update_generation_only_on_spec_change_and_identity_immutable",
    "test_update_ignores_status_and_noop_keeps_resource_version",
    "test_update_missing_is_not_found",
    "test_update_status_replaces_only_status",
    "test_update_without_resource_version_is_unconditional",
    "test_without_finalizers_a_delete_removes_the_object_at_once",
]

KINDS = {
    Kind("serving.knative.dev", "services"): ("v1", "Service"),
    Kind("serving.knative.dev", "revisions"): ("v1", "Revision"),
}
NAMESPACES = ("other", "a", "b", "none")
"""The suite's namespaces besides `default` (objects need an existing namespace)."""


def schemaless_crd(kind: Kind, version: str, name: str) -> dict[str, Any]:
    free = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{kind.group}"},
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {"plural": kind.plural, "singular": name.lower(), "kind": name},
            "versions": [{
                "name": version, "served": True, "storage": True, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object", "properties": {"spec": free, "status": free}}},
            }],
        },
    }


@pytest.fixture
async def make_store(kube: KubeTarget) -> AsyncIterator[StoreFactory]:
    await register_crds(kube.api, [schemaless_crd(k, v, n) for k, (v, n) in KINDS.items()])
    core: Any = client.CoreV1Api(kube.api)  # the stubs want a V1Namespace; a dict goes on the wire
    for ns in NAMESPACES:
        await core.create_namespace({"metadata": {"name": ns}})
    opened: list[KubernetesStore] = []

    async def make(**kwargs: Any) -> KubernetesStore:
        assert not kwargs, f"options of the embedded stores: {kwargs}"
        store = KubernetesStore(kube.api, KINDS, KubernetesSettings())
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Any:
    return await make_store()
