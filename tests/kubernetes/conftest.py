"""Fixtures of the Kubernetes tests: a kubernetes-asyncio client on the contract fake, or on a real cluster.

Without `FLINT_KUBECONFIG` every test gets a fresh `KubeApiFake` (tests/support/kubeapi) on
loopback; with it set to a kubeconfig path the same tests run against that cluster, each in a
namespace of its own that is deleted at the end. Tests marked `fake_only` (they use the fake's
controls, e.g. compaction) are skipped on a real cluster.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget, kube_target, real_cluster


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
