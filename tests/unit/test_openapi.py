"""The kinds' schemas agree with the validators, and the OpenAPI documents generated from them
are what kubectl reads (paths tagged with their GVK, `fieldValidation`, resolvable references)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio.client import models

from controller.api import duck, eventing, messaging, openapi
from controller.api.registry import TYPES, registry_for
from controller.api.schema import Schema
from controller.api.schema_k8s import component_name, k8s
from controller.api.serving import TEMPLATE_METADATA_FIELDS
from controller.api.serving_container import CONTAINER_FIELDS, PROBE_FIELDS
from controller.api.serving_podspec import REVISION_SPEC_FIELDS
from controller.api.serving_traffic import TRAFFIC_TARGET_FIELDS


def kind(api_version: str, name: str) -> Schema:
    return openapi.kind_schemas()[(api_version, name)]


def at(s: Schema, path: str) -> Schema:
    for part in path.split("."):
        if part == "[]":
            assert s.items is not None
            s = s.items
        else:
            s = s.properties[part]
    return s


def names(s: Schema) -> set[str]:
    return set(s.properties)


def test_every_served_kind_has_a_schema_on_both_engines() -> None:
    for engine in ("embedded", "kubernetes"):
        for rt in registry_for(engine).types:
            s = openapi.schema_for(rt)
            assert s is not None and s.gvk == (rt.group, rt.version, rt.kind), rt.kind
    assert len(openapi.kind_schemas()) == len(TYPES)


SERVING = "serving.knative.dev/v1"


def test_serving_schemas_have_the_fields_the_validators_accept() -> None:
    svc = kind(SERVING, "Service")
    assert names(at(svc, "spec")) == {"template", "traffic"}
    assert names(at(svc, "spec.template")) == {"metadata", "spec"}
    assert names(at(svc, "spec.template.metadata")) == TEMPLATE_METADATA_FIELDS
    assert names(at(svc, "spec.template.spec")) == REVISION_SPEC_FIELDS
    assert names(at(svc, "spec.template.spec.containers.[]")) == CONTAINER_FIELDS
    assert names(at(svc, "spec.template.spec.containers.[].readinessProbe")) == PROBE_FIELDS
    assert names(at(svc, "spec.traffic.[]")) == TRAFFIC_TARGET_FIELDS
    assert names(at(kind(SERVING, "Route"), "spec")) == {"traffic"}
    assert names(at(kind(SERVING, "Configuration"), "spec")) == {"template"}
    assert at(kind(SERVING, "Revision"), "spec").name == at(svc, "spec.template.spec").name
    limits = at(svc, "spec.template.spec.containers.[].resources.limits")
    assert limits.values is not None and limits.values.int_or_string  # 128Mi or a number
    port = at(svc, "spec.template.spec.containers.[].readinessProbe.httpGet.port")
    assert port.int_or_string


def test_eventing_schemas_have_the_fields_the_validators_accept() -> None:
    ev, msg = eventing.API_VERSION, messaging.API_VERSION
    assert names(at(kind(ev, "Broker"), "spec")) == set(eventing.BROKER_SPEC_FIELDS)
    trigger = kind(ev, "Trigger")
    assert names(at(trigger, "spec")) == set(eventing.TRIGGER_SPEC_FIELDS)
    assert names(at(trigger, "spec.filters.[]")) == set(eventing.FILTER_DIALECTS)
    assert names(at(trigger, "spec.subscriber")) == duck.DESTINATION_FIELDS
    assert names(at(trigger, "spec.subscriber.ref")) == duck.KREFERENCE_FIELDS
    assert names(at(trigger, "spec.delivery")) == duck.DELIVERY_FIELDS
    channel = kind(msg, "Channel")
    assert names(at(channel, "spec")) == set(messaging.CHANNEL_SPEC_FIELDS)
    assert names(at(channel, "spec.channelTemplate")) == messaging.CHANNEL_TEMPLATE_FIELDS
    assert names(at(channel, "spec.subscribers.[]")) == messaging.SUBSCRIBER_SPEC_FIELDS
    assert names(at(kind(msg, "InMemoryChannel"), "spec")) == set(messaging.IN_MEMORY_CHANNEL_SPEC_FIELDS)
    assert names(at(kind(msg, "Subscription"), "spec")) == set(messaging.SUBSCRIPTION_SPEC_FIELDS)


def test_kubernetes_types_come_from_the_generated_models_with_their_documentation() -> None:
    probe = k8s("V1Probe")
    assert names(probe) == set(vars(models)["V1Probe"].attribute_map.values())
    assert probe.name == "io.k8s.api.core.v1.Probe"
    assert (
        "Number of seconds after the container has started"
        in probe.properties["initialDelaySeconds"].description
    )
    assert "noqa" not in probe.properties["initialDelaySeconds"].description
    assert component_name("V1ObjectMeta") == "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["$ref"]} if "$ref" in node else set()
        return own.union(*(refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node))
    return set()


def test_each_group_version_document_lists_operations_kubectl_can_use() -> None:
    docs = {k: orjson.loads(v) for k, v in openapi.documents(TYPES).items()}
    assert set(docs) == {f"apis/{g}" for g in (SERVING, eventing.API_VERSION, messaging.API_VERSION,
                                                   messaging.FLINT_API_VERSION)}
    serving = docs[f"apis/{SERVING}"]
    item = serving["paths"]["/apis/serving.knative.dev/v1/namespaces/{namespace}/services/{name}"]
    gvk = {"group": "serving.knative.dev", "version": "v1", "kind": "Service"}
    assert item["patch"]["x-kubernetes-group-version-kind"] == gvk
    for params in (item["parameters"], item["patch"]["parameters"]):
        assert {"fieldValidation", "fieldManager"} <= {p["name"] for p in params if p["in"] == "query"}
    assert "application/strategic-merge-patch+json" not in item["patch"]["requestBody"]["content"]
    schemas = serving["components"]["schemas"]
    assert schemas["dev.knative.serving.v1.Service"]["x-kubernetes-group-version-kind"] == [gvk]
    for doc in docs.values():
        for ref in refs(doc):
            assert ref.removeprefix("#/components/schemas/") in doc["components"]["schemas"], ref
    for doc in docs.values():  # kubectl checks whichever PATCH of a kind it meets first
        for path in doc["paths"].values():
            if "patch" in path:
                for params in (path["parameters"], path["patch"]["parameters"]):
                    assert "fieldValidation" in {p["name"] for p in params if p["in"] == "query"}
    kinds = {
        op["x-kubernetes-group-version-kind"]["kind"]
        for doc in docs.values()
        for path in doc["paths"].values()
        for key, op in path.items()
        if key == "post"
    }
    assert kinds == {rt.kind for rt in TYPES}


def test_the_index_points_at_each_document_by_its_hash() -> None:
    docs = openapi.documents(TYPES)
    index = openapi.index(docs)
    url = index["paths"][f"apis/{SERVING}"]["serverRelativeURL"]
    assert url == f"/openapi/v3/apis/{SERVING}?hash={openapi.digest(docs[f'apis/{SERVING}'])}"
    assert len(url.rsplit("=", 1)[1]) == 128


def test_the_command_writes_the_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert openapi.main(["--out", str(tmp_path)]) == 0
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json"))
    assert written == [
        "apis/eventing.knative.dev/v1.json",
        "apis/messaging.flint.dev/v1.json",
        "apis/messaging.knative.dev/v1.json",
        "apis/serving.knative.dev/v1.json",
        "index.json",
    ]
    docs = openapi.documents(TYPES)
    for key, body in docs.items():
        assert orjson.loads((tmp_path / f"{key}.json").read_bytes()) == orjson.loads(body)
    assert orjson.loads((tmp_path / "index.json").read_bytes()) == openapi.index(docs)
    assert "index.json" in capsys.readouterr().out


def test_a_crd_schema_comes_from_the_same_source() -> None:
    rt = next(rt for rt in TYPES if rt.kind == "Service")
    crd = openapi.crd_openapi_schema(rt)
    assert "$ref" not in orjson.dumps(crd).decode()
    assert crd["properties"]["metadata"] == {"type": "object"}
    container = crd["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"][
        "containers"
    ]["items"]
    assert set(container["properties"]) == CONTAINER_FIELDS
