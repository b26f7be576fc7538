"""The Kubernetes store's pure pieces: Status → store error, watch lines, configuration choice,
the Redis-streams finalizer decision and the owner references the reconcilers write."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from kubernetes_asyncio import config

from controller.api import finalizers
from controller.api.meta import controller_ref
from controller.api.registry import served_kinds
from controller.api.serving_children import (
    configuration_from_service,
    revision_from_configuration,
    route_from_service,
)
from controller.reconcilers.channels import backing_manifest
from controller.store.base import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    Kind,
    NotFound,
    StoreError,
    TooLarge,
)
from controller.store.kubernetes_config import KubernetesSettings, load_configuration
from controller.store.kubernetes_errors import store_error
from controller.store.kubernetes_watch import parse_line

SVC = Kind("serving.knative.dev", "services")


def status(code: int, reason: str, message: str = "m", **details: Any) -> str:
    return orjson.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
                         "reason": reason, "message": message, "details": details}).decode()


@pytest.mark.parametrize(("code", "reason", "causes", "expected"), [
    (404, "NotFound", [], NotFound),
    (409, "AlreadyExists", [], AlreadyExists),
    (409, "Conflict", [], Conflict),
    (400, "BadRequest", [], BadRequest),
    (422, "Invalid", [{"field": "spec.x"}], Invalid),
    (410, "Expired", [], Gone),
    (504, "Timeout", [{"reason": "ResourceVersionTooLarge"}], TooLarge),
])
def test_api_statuses_map_to_the_protocols_errors(
    code: int, reason: str, causes: list[Any], expected: type[StoreError]
) -> None:
    err = store_error(code, status(code, reason, "the server's words", causes=causes),
                      kind=SVC, name="hello")
    assert type(err) is expected and err.code == code
    assert err.message == "the server's words" and err.kind == SVC and err.name == "hello"


def test_other_statuses_keep_their_code_and_reason() -> None:
    err = store_error(504, status(504, "Timeout", "slow"))
    assert type(err) is StoreError and err.code == 504 and err.reason == "Timeout"
    forbidden = store_error(403, status(403, "Forbidden", "no"), kind=SVC, name="x")
    assert forbidden.code == 403 and forbidden.reason == "Forbidden" and forbidden.message == "no"
    assert store_error(502, "<html>bad gateway</html>", kind=SVC).message == f"{SVC}: HTTP 502"


def test_watch_lines() -> None:
    assert parse_line(b'{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"7"}}}\n') == (
        "BOOKMARK", {"metadata": {"resourceVersion": "7"}})
    with pytest.raises(StoreError, match="not JSON"):
        parse_line(b"{half")
    with pytest.raises(StoreError, match="without an object"):
        parse_line(b'{"type":"ADDED"}')


def test_served_kinds_name_each_kinds_version_and_kind() -> None:
    kinds = served_kinds()
    assert kinds[SVC] == ("v1", "Service")
    assert kinds[Kind("messaging.flint.dev", "redischannels")] == ("v1", "RedisChannel")


def test_settings_defaults() -> None:
    s = KubernetesSettings()
    assert (s.inactivity_s, s.watch_timeout_s, s.retries, s.namespace) == (70.0, 300, 5, "default")


async def test_in_a_pod_the_in_cluster_configuration_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def in_cluster(client_configuration: Any = None, **_: Any) -> None:
        calls.append("incluster")
        client_configuration.host = "https://10.0.0.1:443"

    async def kubeconfig(**kwargs: Any) -> None:
        calls.append(f"kubeconfig {kwargs['config_file']} {kwargs['context']}")
        kwargs["client_configuration"].host = "https://elsewhere"

    monkeypatch.setattr(config, "load_incluster_config", in_cluster)
    monkeypatch.setattr(config, "load_kube_config", kubeconfig)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert (await load_configuration(KubernetesSettings(kubeconfig="/k"))).host == "https://10.0.0.1:443"
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    configuration = await load_configuration(KubernetesSettings(kubeconfig="/k", context="c"))
    assert configuration.host == "https://elsewhere"
    await load_configuration(KubernetesSettings())
    assert calls == ["incluster", "kubeconfig /k c", "kubeconfig None None"]


# -- the finalizer decision --


def broker(cls: str | None = None, **meta: Any) -> dict[str, Any]:
    annotations = {"eventing.knative.dev/broker.class": cls} if cls else {}
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
            "metadata": {"name": "b", "annotations": annotations, **meta}}


@pytest.mark.parametrize(("obj", "engine", "wanted"), [
    (broker("FlintRedis"), "kubernetes", True),
    (broker("FlintRedis"), "embedded", True),
    (broker("Flint"), "kubernetes", True),  # Redis is the Kubernetes engine's default backend
    (broker("Flint"), "embedded", False),  # SQLite: a file in the state dir, swept with it
    (broker("FlintSQLite"), "kubernetes", False),
    (broker("MTChannelBasedBroker"), "kubernetes", False),  # not Flint's to clean
    ({"apiVersion": "messaging.flint.dev/v1", "kind": "RedisChannel"}, "kubernetes", True),
    ({"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel"}, "kubernetes", False),
    ({"apiVersion": "serving.knative.dev/v1", "kind": "Service"}, "kubernetes", False),
])
def test_only_objects_with_redis_streams_carry_the_finalizer(
    obj: dict[str, Any], engine: str, wanted: bool
) -> None:
    assert finalizers.needs_redis_streams_finalizer(obj, engine) is wanted
    assert (finalizers.REDIS_STREAMS_FINALIZER in finalizers.finalizers_for(obj, engine)) is wanted


def test_the_finalizer_is_added_once_kept_with_others_and_never_added_to_a_deleted_object() -> None:
    name = finalizers.REDIS_STREAMS_FINALIZER
    assert name == "eventing.flint.dev/redis-streams"
    assert finalizers.finalizers_for(broker("FlintRedis", finalizers=["x"])) == ["x", name]
    assert finalizers.finalizers_for(broker("FlintRedis", finalizers=[name])) == [name]
    deleted = broker("FlintRedis", finalizers=["x"], deletionTimestamp="2026-01-01T00:00:00Z")
    assert finalizers.finalizers_for(deleted) == ["x"]
    assert finalizers.without_finalizer(broker("FlintRedis", finalizers=["x", name])) == ["x"]


# -- owner references: controller and blockOwnerDeletion on every child Flint makes --


def test_every_child_names_its_controller_and_blocks_its_deletion() -> None:
    service = {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
               "metadata": {"name": "s", "namespace": "n", "uid": "u1"},
               "spec": {"template": {"spec": {"containers": [{"image": "i"}]}}}}
    assert controller_ref(service) == {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                       "name": "s", "uid": "u1", "controller": True,
                                       "blockOwnerDeletion": True}
    configuration = configuration_from_service(service)
    configuration["metadata"]["uid"] = "u2"
    channel = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
               "metadata": {"name": "c", "namespace": "n", "uid": "u3"}, "spec": {}}
    children = [configuration, route_from_service(service),
                revision_from_configuration(configuration), backing_manifest(channel)]
    for child in children:
        refs = child["metadata"]["ownerReferences"]
        assert len(refs) == 1 and refs[0]["controller"] is True, child["kind"]
        assert refs[0]["blockOwnerDeletion"] is True and refs[0]["uid"], child["kind"]
