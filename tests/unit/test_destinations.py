"""Resolving a Knative Destination (`ref` and/or `uri`) against objects in a fake cache."""

from __future__ import annotations

from typing import Any

import pytest

from controller.reconcilers.destinations import resolve_destination

Obj = dict[str, Any]


class Cache:
    """A lookup over a dict keyed by (group, kind, namespace, name); records every call."""

    def __init__(self, objects: dict[tuple[str, str, str, str], Obj]) -> None:
        self.objects = objects
        self.calls: list[tuple[str, str, str, str]] = []

    def __call__(self, group: str, kind: str, namespace: str, name: str) -> Obj | None:
        self.calls.append((group, kind, namespace, name))
        return self.objects.get((group, kind, namespace, name))


def ksvc(url: str | None = None, address: str | None = None) -> Obj:
    status: Obj = {}
    if url is not None:
        status["url"] = url
    if address is not None:
        status["address"] = {"url": address}
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "status": status}


def broker(address: str | None, url: str | None = None) -> Obj:
    status: Obj = {}
    if address is not None:
        status["address"] = {"url": address}
    if url is not None:
        status["url"] = url
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "status": status}


SVC_REF = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "hello"}
BROKER_REF = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}


@pytest.fixture
def cache() -> Cache:
    return Cache(
        {
            ("serving.knative.dev", "Service", "ns", "hello"): ksvc(
                "http://hello.ns.localhost", "http://hello.ns.svc.cluster.local"
            ),
            ("serving.knative.dev", "Service", "other", "hello"): ksvc("http://hello.other.localhost"),
            ("serving.knative.dev", "Service", "ns", "addr-only"): ksvc(None, "http://addr-only.ns.internal"),
            ("serving.knative.dev", "Service", "ns", "pending"): ksvc(),
            ("serving.knative.dev", "Service", "ns", "nostatus"): {"kind": "Service"},
            ("serving.knative.dev", "Route", "ns", "r"): {"status": {"url": "http://r.ns.localhost"}},
            ("eventing.knative.dev", "Broker", "ns", "default"): broker(
                "http://broker-ingress.localhost/ns/default", url="http://wrong.example"
            ),
            ("eventing.knative.dev", "Broker", "ns", "unready"): broker(None, url="http://wrong.example"),
            ("serving.knative.dev", "Service", "ns", "deep"): ksvc("http://deep.ns.localhost/base/x"),
        }
    )


def test_uri_alone_is_used_as_is(cache: Cache) -> None:
    assert resolve_destination({"uri": "http://example.com/hook?x=1"}, "ns", cache) == (
        "http://example.com/hook?x=1",
        "",
    )
    assert cache.calls == []


@pytest.mark.parametrize("dest", [None, "http://x", [], 3])
def test_not_a_destination(cache: Cache, dest: Any) -> None:
    url, why = resolve_destination(dest, "ns", cache)
    assert url is None
    assert why


@pytest.mark.parametrize("dest", [{}, {"uri": ""}, {"ref": None}, {"ref": {}, "uri": None}])
def test_neither_ref_nor_uri(cache: Cache, dest: Obj) -> None:
    url, why = resolve_destination(dest, "ns", cache)
    assert url is None
    assert "neither" in why


def test_knative_service_ref_uses_status_url(cache: Cache) -> None:
    assert resolve_destination({"ref": SVC_REF}, "ns", cache) == ("http://hello.ns.localhost", "")
    assert cache.calls == [("serving.knative.dev", "Service", "ns", "hello")]


def test_knative_service_without_url_uses_its_address(cache: Cache) -> None:
    ref = {**SVC_REF, "name": "addr-only"}
    assert resolve_destination({"ref": ref}, "ns", cache) == ("http://addr-only.ns.internal", "")


def test_route_ref_uses_status_url(cache: Cache) -> None:
    ref = {"apiVersion": "serving.knative.dev/v1", "kind": "Route", "name": "r"}
    assert resolve_destination({"ref": ref}, "ns", cache) == ("http://r.ns.localhost", "")


def test_broker_ref_uses_status_address_url_not_status_url(cache: Cache) -> None:
    assert resolve_destination({"ref": BROKER_REF}, "ns", cache) == (
        "http://broker-ingress.localhost/ns/default",
        "",
    )


def test_broker_without_address_is_unresolved(cache: Cache) -> None:
    url, why = resolve_destination({"ref": {**BROKER_REF, "name": "unready"}}, "ns", cache)
    assert url is None
    assert "ns/unready" in why
    assert "address" in why


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/path", "http://hello.ns.localhost/path"),
        ("sub/path", "http://hello.ns.localhost/sub/path"),
        ("/path?q=1", "http://hello.ns.localhost/path?q=1"),
        ("http://elsewhere.example/x", "http://elsewhere.example/x"),
    ],
)
def test_ref_and_relative_uri_resolve_against_the_ref(cache: Cache, uri: str, expected: str) -> None:
    assert resolve_destination({"ref": SVC_REF, "uri": uri}, "ns", cache) == (expected, "")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/path", "http://deep.ns.localhost/path"),
        ("sub/path", "http://deep.ns.localhost/base/sub/path"),
        ("../up", "http://deep.ns.localhost/up"),
    ],
)
def test_relative_uri_follows_rfc3986_against_a_ref_with_path(cache: Cache, uri: str, expected: str) -> None:
    ref = {**SVC_REF, "name": "deep"}
    assert resolve_destination({"ref": ref, "uri": uri}, "ns", cache) == (expected, "")


def test_missing_object_is_named(cache: Cache) -> None:
    url, why = resolve_destination({"ref": {**SVC_REF, "name": "nope"}}, "ns", cache)
    assert url is None
    assert "ns/nope" in why
    assert "services.serving.knative.dev" in why
    assert "not found" in why


def test_missing_broker_is_named(cache: Cache) -> None:
    url, why = resolve_destination({"ref": {**BROKER_REF, "name": "gone"}}, "ns", cache)
    assert url is None
    assert 'brokers.eventing.knative.dev "gone" not found' in why


@pytest.mark.parametrize("name", ["pending", "nostatus"])
def test_object_without_address_is_unresolved(cache: Cache, name: str) -> None:
    url, why = resolve_destination({"ref": {**SVC_REF, "name": name}, "uri": "/x"}, "ns", cache)
    assert url is None
    assert f"ns/{name}" in why


CORE_REF = {"apiVersion": "v1", "kind": "Service", "name": "hello"}
CORE_SVC: Obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"}}


def test_a_core_service_is_refused_on_the_embedded_engine_without_a_lookup(cache: Cache) -> None:
    url, why = resolve_destination({"ref": CORE_REF}, "ns", cache)
    assert url is None
    assert "v1 Service ns/hello" in why and "DNS" in why and "Kubernetes engine" in why
    assert "serving.knative.dev/v1" in why  # what would be right
    assert cache.calls == []


def test_a_core_service_resolves_to_its_cluster_dns_name_on_kubernetes() -> None:
    cache = Cache({("", "Service", "ns", "hello"): CORE_SVC})
    assert resolve_destination({"ref": CORE_REF}, "ns", cache, engine="kubernetes") == (
        "http://hello.ns.svc.cluster.local", "")
    assert cache.calls == [("", "Service", "ns", "hello")]


def test_a_core_service_in_another_namespace_and_another_cluster_domain() -> None:
    cache = Cache({("", "Service", "other", "hello"): CORE_SVC})
    dest = {"ref": {**CORE_REF, "namespace": "other"}}
    assert resolve_destination(dest, "ns", cache, engine="kubernetes", cluster_domain="corp.example") == (
        "http://hello.other.svc.corp.example", "")


@pytest.mark.parametrize(("uri", "want"), [
    ("/events", "http://hello.ns.svc.cluster.local/events"),
    ("a/b?x=1", "http://hello.ns.svc.cluster.local/a/b?x=1"),
    ("http://elsewhere:8080/p", "http://elsewhere:8080/p"),
])
def test_a_uri_resolves_against_a_core_services_url(uri: str, want: str) -> None:
    cache = Cache({("", "Service", "ns", "hello"): CORE_SVC})
    assert resolve_destination({"ref": CORE_REF, "uri": uri}, "ns", cache, engine="kubernetes") == (want, "")


def test_a_missing_core_service_is_named(cache: Cache) -> None:
    url, why = resolve_destination({"ref": CORE_REF}, "ns", cache, engine="kubernetes")
    assert url is None
    assert why == 'failed to get ref ns/hello: services "hello" not found'


def test_a_core_kind_other_than_service_is_not_addressable() -> None:
    cache = Cache({})
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "p"}
    url, why = resolve_destination({"ref": ref}, "ns", cache, engine="kubernetes")
    assert url is None and "Pod (core) is not an addressable kind" in why
    assert cache.calls == []


def test_unknown_kind_is_not_supported(cache: Cache) -> None:
    ref = {"apiVersion": "flows.knative.dev/v1", "kind": "Sequence", "name": "c"}
    url, why = resolve_destination({"ref": ref}, "ns", cache)
    assert url is None
    assert "Sequence" in why
    assert "flows.knative.dev" in why


def test_group_field_is_accepted_instead_of_api_version(cache: Cache) -> None:
    ref = {"group": "serving.knative.dev", "kind": "Service", "name": "hello"}
    assert resolve_destination({"ref": ref}, "ns", cache) == ("http://hello.ns.localhost", "")


def test_namespace_defaults_to_the_argument(cache: Cache) -> None:
    assert resolve_destination({"ref": SVC_REF}, "other", cache) == ("http://hello.other.localhost", "")
    assert cache.calls == [("serving.knative.dev", "Service", "other", "hello")]


def test_ref_namespace_overrides_the_argument(cache: Cache) -> None:
    ref = {**SVC_REF, "namespace": "other"}
    assert resolve_destination({"ref": ref}, "ns", cache) == ("http://hello.other.localhost", "")
    assert cache.calls == [("serving.knative.dev", "Service", "other", "hello")]
