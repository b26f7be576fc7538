"""A Route's in-cluster Services on the Kubernetes engine (Knative's placeholder Services)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio import client

from controller.runtime.kubernetes_routes import RouteServiceSettings, route_services, tag_service_name

Obj = dict[str, Any]


def route(traffic: list[Obj], status_traffic: list[Obj] | None = None, **labels: str) -> Obj:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Route",
            "metadata": {"name": "hello", "namespace": "apps", "uid": "route-uid",
                         "labels": {"serving.knative.dev/service": "hello", **labels},
                         "annotations": {"note": "kept"}},
            "spec": {"traffic": traffic}, "status": {"traffic": status_traffic or []}}


def test_one_service_per_route_and_tag() -> None:
    r = route([{"revisionName": "hello-00001", "percent": 100, "tag": "blue"},
               {"revisionName": "hello-00002", "percent": 0, "tag": "green"}],
              [{"revisionName": "hello-00000", "percent": 0, "tag": "old"}],
              **{"networking.knative.dev/visibility": "cluster-local"})
    main, *tags = route_services(r)
    assert [s["metadata"]["name"] for s in tags] == ["blue-hello", "green-hello", "old-hello"]
    assert main["metadata"] == {
        "name": "hello", "namespace": "apps",
        "labels": {"networking.knative.dev/visibility": "cluster-local",
                   "serving.knative.dev/route": "hello"},
        "ownerReferences": [{"apiVersion": "serving.knative.dev/v1", "kind": "Route", "name": "hello",
                             "uid": "route-uid", "controller": True, "blockOwnerDeletion": True}],
        "annotations": {"note": "kept"}}
    assert main["spec"] == {
        "type": "ExternalName", "externalName": "flint-gateway.flint-system.svc.cluster.local",
        "sessionAffinity": "None",
        "ports": [{"name": "http2", "appProtocol": "kubernetes.io/h2c", "port": 80, "targetPort": 80}]}
    assert tag_service_name("hello", "blue") == "blue-hello"


def test_the_gateway_service_is_a_setting() -> None:
    (only,) = route_services(route([{"revisionName": "x", "percent": 100}]),
                             RouteServiceSettings(gateway_service="gw.edge.svc.cluster.local"))
    assert only["spec"]["externalName"] == "gw.edge.svc.cluster.local"
    assert "networking.knative.dev/visibility" not in only["metadata"]["labels"]


class _Body:
    def __init__(self, obj: Obj) -> None:
        self.data = json.dumps(obj)


@pytest.mark.parametrize("index", [0, 1])
async def test_every_field_is_one_kubernetes_knows(index: int) -> None:
    made = route_services(route([{"revisionName": "x", "percent": 100, "tag": "t"}]))[index]
    async with client.ApiClient() as api:
        assert api.sanitize_for_serialization(api.deserialize(_Body(made), "V1Service")) == made
