"""Flint's own CRD schemas (what the Kubernetes engine's CRDs will carry) served by the contract fake.

The fake accepts any CRD; these register one per Flint kind, rendered by
`controller.api.openapi.crd_openapi_schema`, and check that a sample Knative Service survives
pruning whole and that a wrong type is refused, as a real API server would.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget

from controller.api.openapi import crd_openapi_schema, schema_for
from controller.api.registry import REGISTRY

pytestmark = pytest.mark.fake_only  # Knative's groups on a real cluster belong to Knative


def _crd(rt: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{rt.plural}.{rt.group}"},
        "spec": {
            "group": rt.group,
            "scope": "Namespaced" if rt.namespaced else "Cluster",
            "names": {
                "plural": rt.plural,
                "singular": rt.singular,
                "kind": rt.kind,
                "shortNames": list(rt.short_names),
            },
            "versions": [
                {
                    "name": rt.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": crd_openapi_schema(rt)},
                }
            ],
        },
    }


SERVICE: dict[str, Any] = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "hello", "annotations": {"autoscaling.knative.dev/min-scale": "1"}},
    "spec": {
        "template": {
            "metadata": {"labels": {"app": "hello"}},
            "spec": {
                "containerConcurrency": 10,
                "containers": [
                    {
                        "image": "ghcr.io/example/hello",
                        "env": [{"name": "TARGET", "value": "World"}],
                        "ports": [{"containerPort": 8080}],
                    }
                ],
            },
        },
        "traffic": [{"latestRevision": True, "percent": 100}],
    },
}


async def test_flint_kinds_register_and_a_knative_service_survives_pruning(kube: KubeTarget):
    ext: Any = client.ApiextensionsV1Api(kube.api)
    custom: Any = client.CustomObjectsApi(kube.api)
    kinds = [rt for rt in REGISTRY.types if schema_for(rt) is not None]
    assert kinds
    for rt in kinds:
        await ext.create_custom_resource_definition(_crd(rt))
    discovered = await custom.get_api_resources("serving.knative.dev", "v1")
    assert {"services", "configurations", "revisions", "routes"} <= {r.name for r in discovered.resources}
    created = await custom.create_namespaced_custom_object(
        "serving.knative.dev", "v1", kube.namespace, "services", SERVICE
    )
    assert created["spec"] == SERVICE["spec"]
    wrong = {
        **SERVICE,
        "metadata": {"name": "wrong"},
        "spec": {"template": {"spec": {"containerConcurrency": "ten", "containers": [{"image": "x"}]}}},
    }
    with pytest.raises(client.ApiException) as info:
        await custom.create_namespaced_custom_object(
            "serving.knative.dev", "v1", kube.namespace, "services", wrong
        )
    assert info.value.status == 422, info.value.body
    assert "spec.template.spec.containerConcurrency" in str(info.value.body)  # body: the decoded text
