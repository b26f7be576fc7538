"""The Kubernetes engine's store as `controller.engine` builds it: from the settings' kubeconfig,
on the cluster it names (the contract fake), serving Flint's kinds from deploy/crds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from support.flint_crds import flint_crds, register_crds
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget

from controller.engine import open_store
from controller.reconcilers.context import BROKERS
from controller.settings import ControllerSettings
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_config import KubernetesSettings

pytestmark = pytest.mark.fake_only  # Knative's groups on a real cluster are Knative's


async def test_open_store_reaches_the_cluster_of_the_kubeconfig(
        kube: KubeTarget, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert kube.fake is not None
    path = tmp_path / "kubeconfig"
    write_kubeconfig(path, kube.fake.url)
    await register_crds(kube.api, flint_crds())
    settings = ControllerSettings(state_dir=tmp_path, engine="kubernetes",
                                  kubernetes=KubernetesSettings(kubeconfig=str(path),
                                                                namespace=kube.namespace))
    store = await open_store(settings)
    try:
        assert isinstance(store, KubernetesStore)
        broker: dict[str, Any] = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                                  "metadata": {"name": "default"}, "spec": {}}
        created = await store.create(BROKERS, broker)
        items, _ = await store.list(BROKERS, kube.namespace)
        assert [o["metadata"]["uid"] for o in items] == [created["metadata"]["uid"]]
    finally:
        await store.close()
