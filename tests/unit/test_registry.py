"""The resource registry: lookups by any name a client uses, and admission (defaults, errors)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.api import registry
from controller.api.registry import (
    REGISTRY,
    TYPES,
    Registry,
    UnknownResource,
    admit,
    for_api_version_kind,
    for_group_version_plural,
    lookup,
    registry_for,
)
from controller.api.types import FieldError, Invalid, ResourceType
from controller.store.base import Kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("services", "Service"),
        ("service", "Service"),
        ("ksvc", "Service"),
        ("kservice", "Service"),
        ("Service", "Service"),
        ("KSVC", "Service"),
        ("services.serving.knative.dev", "Service"),
        ("configurations", "Configuration"),
        ("configuration", "Configuration"),
        ("config", "Configuration"),
        ("cfg", "Configuration"),
        ("revisions", "Revision"),
        ("revision", "Revision"),
        ("rev", "Revision"),
        ("routes", "Route"),
        ("route", "Route"),
        ("rt", "Route"),
        ("ROUTE", "Route"),
    ],
)
def test_lookup(name: str, kind: str) -> None:
    assert lookup(name).kind == kind


def test_lookup_unknown_lists_what_is_known() -> None:
    with pytest.raises(UnknownResource) as info:
        lookup("pods")
    message = str(info.value)
    assert message.startswith('the server doesn\'t have a resource type "pods"; known: ')
    assert "services (service, kservice, ksvc)" in message
    assert "routes (route, rt)" in message
    assert isinstance(info.value, KeyError)


def test_types_are_the_four_serving_kinds_then_the_eventing_kinds() -> None:
    kinds = [rt.kind for rt in TYPES]
    assert kinds == ["Service", "Configuration", "Revision", "Route", "Broker", "Trigger", "Channel",
                     "InMemoryChannel", "RedisChannel", "Subscription"]
    groups = [rt.api_version for rt in TYPES[4:]]
    assert groups == (["eventing.knative.dev/v1"] * 2 + ["messaging.knative.dev/v1"] * 2
                      + ["messaging.flint.dev/v1", "messaging.knative.dev/v1"])
    for rt in TYPES[:4]:
        assert rt.group == "serving.knative.dev"
        assert rt.version == "v1"
        assert rt.api_version == "serving.knative.dev/v1"
        assert rt.namespaced
        assert rt.store_kind == Kind("serving.knative.dev", rt.plural)


def test_for_group_version_plural() -> None:
    assert for_group_version_plural("serving.knative.dev", "v1", "routes").kind == "Route"
    with pytest.raises(UnknownResource, match='unknown API group "apps"'):
        for_group_version_plural("apps", "v1", "deployments")
    with pytest.raises(UnknownResource, match='unknown version "v1alpha1" of API group'):
        for_group_version_plural("serving.knative.dev", "v1alpha1", "routes")
    with pytest.raises(UnknownResource, match='unknown resource "domainmappings"'):
        for_group_version_plural("serving.knative.dev", "v1", "domainmappings")


def test_for_api_version_kind() -> None:
    assert for_api_version_kind("serving.knative.dev/v1", "Service").plural == "services"
    with pytest.raises(UnknownResource, match=r'unknown apiVersion "serving\.knative\.dev/v2"'):
        for_api_version_kind("serving.knative.dev/v2", "Service")
    with pytest.raises(
        UnknownResource, match=r'unknown kind "Ingress" in serving\.knative\.dev/v1'
    ):
        for_api_version_kind("serving.knative.dev/v1", "Ingress")


def test_registry_is_open_for_more_kinds() -> None:
    parallel = ResourceType(
        group="flows.knative.dev",
        version="v1",
        kind="Parallel",
        plural="parallels",
        singular="parallel",
    )
    more = REGISTRY.extend([parallel])
    assert more.lookup("parallels") is parallel
    assert more.for_api_version_kind("flows.knative.dev/v1", "Parallel") is parallel
    assert more.lookup("ksvc").kind == "Service"
    with pytest.raises(UnknownResource):
        REGISTRY.lookup("parallels")
    assert isinstance(more, Registry)


def hello() -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"template": {"spec": {"containers": [{"image": "/srv/app"}]}}},
    }


def test_admit_defaults_a_copy() -> None:
    manifest = hello()
    obj, warnings = admit(lookup("ksvc"), manifest, None)
    assert warnings == []
    assert obj["metadata"]["namespace"] == "default"
    assert obj["spec"]["traffic"] == [{"percent": 100, "latestRevision": True}]
    assert obj["spec"]["template"]["spec"]["timeoutSeconds"] == 300
    assert manifest == hello()  # the caller's object is untouched


def test_admit_fills_api_version_and_kind() -> None:
    manifest = hello()
    del manifest["apiVersion"], manifest["kind"]
    obj, _ = admit(lookup("ksvc"), manifest)
    assert (obj["apiVersion"], obj["kind"]) == ("serving.knative.dev/v1", "Service")


def test_admit_raises_invalid_with_every_error() -> None:
    manifest = hello()
    manifest["kind"] = "Route"
    manifest["spec"]["template"]["spec"]["timeoutSeconds"] = 700
    manifest["spec"]["traffic"] = [{"percent": 50}]
    with pytest.raises(Invalid) as info:
        admit(lookup("ksvc"), manifest)
    err = info.value
    assert (err.kind, err.name) == ("Service", "hello")
    assert FieldError("kind", "invalid value: Route; expected Service") in err.errors
    assert FieldError("spec.template.spec.timeoutSeconds", "expected 0 <= 700 <= 600") in err.errors
    assert FieldError("spec.traffic", "Traffic targets sum to 50, want 100") in err.errors
    assert "expected 0 <= 700 <= 600: spec.template.spec.timeoutSeconds" in str(err)


def test_admit_returns_warnings() -> None:
    manifest = hello()
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    _, warnings = admit(lookup("ksvc"), manifest)
    assert warnings == [
        "spec.template.spec.nodeSelector is accepted but not enforced by the embedded engine"
    ]


def test_admit_update_checks_immutability() -> None:
    rt = lookup("rev")
    rev = {"metadata": {"name": "hello-00001"}, "spec": {"containers": [{"image": "/srv/a"}]}}
    old, _ = admit(rt, rev)
    new = copy.deepcopy(old)
    new["spec"]["containers"][0]["image"] = "./b"
    with pytest.raises(Invalid) as info:
        admit(rt, new, old)
    assert info.value.errors == [FieldError("spec", "Immutable fields changed (-old +new)")]
    same, _ = admit(rt, copy.deepcopy(old), old)
    assert same == old


def test_admit_uses_generate_name_for_the_error() -> None:
    manifest = hello()
    manifest["metadata"] = {"generateName": "hello-"}
    manifest["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(Invalid) as info:
        admit(lookup("services"), manifest)
    assert info.value.name == "hello-"


def test_kubernetes_engine_registry() -> None:
    k8s = registry_for("kubernetes")
    assert registry_for("embedded") is REGISTRY
    manifest = hello()
    manifest["spec"]["template"]["spec"]["volumes"] = [{"name": "v"}]
    manifest["spec"]["template"]["spec"]["nodeSelector"] = {"disk": "ssd"}
    _, warnings = admit(k8s.lookup("ksvc"), manifest)
    assert warnings == []
    with pytest.raises(Invalid):
        admit(REGISTRY.lookup("ksvc"), manifest)
    assert [rt.kind for rt in k8s.types] == [rt.kind for rt in registry.TYPES]
