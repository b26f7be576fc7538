"""`flint export`'s choices: what is authored, what the server added, images of this machine only,
the order of the stream; and the Kubernetes engine's channel default the export relies on."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import messaging
from controller.api.registry import admit, registry_for
from controller.cli.errors import CliError
from controller.cli.export_cmd import cluster_refusals, parse_images
from controller.cli.exported import (
    cleaned,
    export_objects,
    exportable,
    is_local_image,
    local_images,
)
from controller.reconcilers.channels import backing_kind, backing_manifest

SERVER_META = {"uid": "u-1", "resourceVersion": "7", "generation": 2,
               "creationTimestamp": "2026-12-07T00:00:00Z", "managedFields": [{"manager": "flint"}],
               "finalizers": ["x"]}


def ksvc(name: str = "hello", ns: str = "default", image: str = "/home/me/app",
         **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns, **SERVER_META, **meta},
            "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def owned(kind: str, api_version: str, name: str) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {
        "name": name, "namespace": "default",
        "ownerReferences": [{"kind": "Service", "name": name, "uid": "u-1", "controller": True}]}}


def test_what_a_controller_made_is_not_exported() -> None:
    assert exportable(ksvc())
    assert not exportable(owned("Configuration", "serving.knative.dev/v1", "hello"))
    assert not exportable(owned("Route", "serving.knative.dev/v1", "hello"))
    hand_made_route = {"apiVersion": "serving.knative.dev/v1", "kind": "Route", "metadata": {"name": "r"}}
    assert exportable(hand_made_route)
    revision = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                "metadata": {"name": "hello-00001"}}
    assert not exportable(revision)
    non_controller_owner = {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {
        "name": "t", "ownerReferences": [{"kind": "Broker", "name": "b", "uid": "x"}]}}
    assert exportable(non_controller_owner)


def test_cleaning_drops_status_server_metadata_and_controller_written_fields() -> None:
    svc = ksvc(labels={"team": "a"}, annotations={
        "serving.knative.dev/creator": "owner", "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "autoscaling.knative.dev/target": "10"})
    out = cleaned(svc)
    assert out["metadata"] == {"name": "hello", "namespace": "default", "labels": {"team": "a"},
                               "annotations": {"autoscaling.knative.dev/target": "10"}}
    assert "status" not in out and svc["status"]  # a copy: the input is untouched
    channel: dict[str, Any] = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
               "metadata": {"name": "c", "annotations": {"messaging.flint.dev/subscription-uids": "a,b"}},
               "spec": {"channelTemplate": dict(messaging.DEFAULT_CHANNEL_TEMPLATE),
                        "subscribers": [{"uid": "a"}], "delivery": {"retry": 3}}}
    assert cleaned(channel)["spec"] == {"delivery": {"retry": 3}}
    assert "annotations" not in cleaned(channel)["metadata"]
    redis_template = {"apiVersion": messaging.FLINT_API_VERSION, "kind": messaging.REDIS_CHANNEL_KIND}
    channel["spec"]["channelTemplate"] = redis_template
    assert cleaned(channel)["spec"]["channelTemplate"] == redis_template  # one the author chose


@pytest.mark.parametrize(("image", "local"), [
    ("/home/me/app", True), ("./app", True), ("..", True), ("file://./x", True),
    ("sha256:" + "a" * 64, True), ("registry.example.com/app:1.0", False),
    ("nginx", False), ("ghcr.io/x/y@sha256:" + "b" * 64, False),
])
def test_images_of_this_machine_only(image: str, local: bool) -> None:
    assert is_local_image(image) is local


def test_images_are_replaced_and_the_rest_named() -> None:
    objs = export_objects([ksvc("a", image="/src/a"), ksvc("b", image="/src/b")],
                          images={"/src/a": "reg.example/a:1"})
    images = {o["metadata"]["name"]: o["spec"]["template"]["spec"]["containers"][0]["image"] for o in objs}
    assert images == {"a": "reg.example/a:1", "b": "/src/b"}
    left = [i for o in objs for i in local_images(o)]
    assert [(i.name, i.path, i.image) for i in left] == [
        ("b", "spec.template.spec.containers[0].image", "/src/b")]


def test_the_stream_puts_what_others_refer_to_first_and_adds_namespaces() -> None:
    meta = {"namespace": "x"}
    trigger = {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "t", **meta}}
    broker = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": "b", **meta}}
    objs = export_objects([trigger, ksvc("s", ns="x"), ksvc("d"), broker])
    assert [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs] == [
        ("Namespace", None, "x"), ("Broker", "x", "b"), ("Service", "default", "d"),
        ("Service", "x", "s"), ("Trigger", "x", "t")]
    assert [o["kind"] for o in export_objects([broker], namespaces=False)] == ["Broker"]


def test_image_flags() -> None:
    assert parse_images(["/a=reg/a:1", " /b = reg/b "]) == {"/a": "reg/a:1", "/b": "reg/b"}
    for bad in ("/a", "=reg/a", "/a="):
        with pytest.raises(CliError) as e:
            parse_images([bad])
        assert e.value.code == 2 and "expected OLD=NEW" in e.value.message


def test_what_the_cluster_would_refuse_is_named_by_field() -> None:
    bad = ksvc()
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = ""
    lines = cluster_refusals(export_objects([bad, ksvc("fine")]))
    assert len(lines) == 1 and lines[0].startswith("Service default/hello: ")
    assert "spec.template.spec.containers[0].image" in lines[0]


def test_a_channel_on_the_kubernetes_engine_defaults_to_a_redis_channel() -> None:
    channel = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "metadata": {"name": "c"}}
    on_k8s, _ = admit(registry_for("kubernetes").lookup("channel"), channel)
    embedded, _ = admit(registry_for("embedded").lookup("channel"), channel)
    assert on_k8s["spec"]["channelTemplate"] == dict(messaging.KUBERNETES_CHANNEL_TEMPLATE)
    assert embedded["spec"]["channelTemplate"] == dict(messaging.DEFAULT_CHANNEL_TEMPLATE)
    # one the webhook never defaulted is backed by the engine's default
    undefaulted = {**channel, "metadata": {"name": "c", "namespace": "n", "uid": "u"}}
    k8s_default = messaging.default_channel_template("kubernetes")
    redis = (messaging.FLINT_API_VERSION, messaging.REDIS_CHANNEL_KIND)
    assert backing_kind(undefaulted, k8s_default) == redis
    assert backing_manifest(undefaulted, None, k8s_default)["kind"] == messaging.REDIS_CHANNEL_KIND
    assert backing_kind(undefaulted) == (messaging.API_VERSION, messaging.IN_MEMORY_CHANNEL_KIND)
