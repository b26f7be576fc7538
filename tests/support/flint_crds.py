"""Flint's CRDs (deploy/crds) registered in the API a Kubernetes test talks to, for the store's tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client

from controller.store.kubernetes import KubernetesStore

from .kubeapi.session import eventually

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"


def flint_crds() -> list[dict[str, Any]]:
    """Flint's CRDs as `deploy/crds/*.yaml` hold them (generated from controller/api)."""
    docs = [yaml.safe_load(p.read_text()) for p in sorted(CRDS.glob("*.yaml"))]
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]


async def register_crds(api: client.ApiClient, crds: list[dict[str, Any]]) -> None:
    """Create the CRDs (one already there is kept) and wait until each kind is served."""
    ext: Any = client.ApiextensionsV1Api(api)  # the stubs want a model; a dict is what goes on the wire
    custom: Any = client.CustomObjectsApi(api)
    for crd in crds:
        try:
            await ext.create_custom_resource_definition(crd)
        except client.ApiException as e:
            if e.status != 409:
                raise
    for crd in crds:
        spec = crd["spec"]
        version = spec["versions"][0]["name"]

        async def served(group: str = spec["group"], version: str = version) -> set[str]:
            try:
                found = await custom.get_api_resources(group, version)
            except client.ApiException:
                return set()
            return {r.name for r in found.resources}

        await eventually(served, _has(spec["names"]["plural"]), what=f"{crd['metadata']['name']} served")




def _has(plural: str) -> Callable[[set[str]], bool]:
    return lambda names: plural in names


StoreMaker = Callable[..., Awaitable[KubernetesStore]]
"""`make_kstore(**settings)`: a KubernetesStore on the test's API with those KubernetesSettings."""
