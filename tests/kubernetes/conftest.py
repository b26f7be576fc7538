"""Fixtures of the Kubernetes tests: a kubernetes-asyncio client on the contract fake, or on a real cluster.

Without `FLINT_KUBECONFIG` every test gets a fresh `KubeApiFake` (tests/support/kubeapi) on
loopback; with it set to a kubeconfig path the same tests run against that cluster, each in a
namespace of its own that is deleted at the end. Tests marked `fake_only` (they use the fake's
controls, e.g. compaction) are skipped on a real cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.flint_crds import StoreMaker, flint_crds, register_crds
from support.kubeapi.session import KubeTarget, kube_target, real_cluster

from controller.api.registry import served_kinds
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "fake_only: needs the Kubernetes API fake's controls (skipped on a cluster)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not real_cluster():
        return
    skip = pytest.mark.skip(reason="uses the fake's controls; FLINT_KUBECONFIG points at a real cluster")
    for item in items:
        if item.get_closest_marker("fake_only") is not None:
            item.add_marker(skip)


@pytest.fixture
async def kube() -> AsyncIterator[KubeTarget]:
    async with kube_target() as target:
        yield target


@pytest.fixture
def kube_api(kube: KubeTarget) -> client.ApiClient:
    """The kubernetes_asyncio ApiClient (host = the fake's URL, or the kubeconfig's cluster)."""
    return kube.api


@pytest.fixture
async def make_kstore(kube: KubeTarget) -> AsyncIterator[StoreMaker]:
    """Makes KubernetesStores on the test's API (Flint's CRDs registered, objects without a
    namespace in the test's); settings overrides as keyword arguments. All closed at the end."""
    await register_crds(kube.api, flint_crds())
    made: list[KubernetesStore] = []

    async def make(**settings: Any) -> KubernetesStore:
        settings.setdefault("namespace", kube.namespace)
        store = KubernetesStore(kube.api, served_kinds(), KubernetesSettings(**settings))
        await store.open()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def kstore(make_kstore: StoreMaker) -> KubernetesStore:
    """A KubernetesStore with default settings on the test's API."""
    return await make_kstore()
