"""The Kubernetes API contract Flint's engine relies on, through kubernetes-asyncio: the fake, or a cluster.

Every test runs against tests/support/kubeapi's fake by default and unchanged against a real
cluster with FLINT_KUBECONFIG set (see conftest.py); `fake_only` tests use the fake's controls.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client, watch
from support.kubeapi.session import KubeTarget, eventually, gone

GROUP, VERSION, PLURAL, KIND = "serving.contract.flint.dev", "v1", "services", "Service"
MERGE = "application/merge-patch+json"
APPLY = "application/apply-patch+yaml"
# what a real cluster's root-CA publisher adds to every namespace (the fake has no controllers)
MINE = "metadata.name!=kube-root-ca.crt"

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.{GROUP}"},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {
            "plural": PLURAL,
            "singular": "service",
            "kind": KIND,
            "listKind": "ServiceList",
            "shortNames": ["cksvc"],
        },
        "versions": [
            {
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
                },
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["image"],
                                "properties": {
                                    "image": {"type": "string"},
                                    "replicas": {"type": "integer", "minimum": 0},
                                    "traffic": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "properties": {
                                                "tag": {"type": "string"},
                                                "percent": {"type": "integer"},
                                            },
                                        },
                                    },
                                    "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                },
                            },
                            "status": {
                                "type": "object",
                                "properties": {
                                    "observedGeneration": {"type": "integer"},
                                    "url": {"type": "string"},
                                    "replicas": {"type": "integer"},
                                },
                            },
                        },
                    }
                },
            }
        ],
    },
}


def untyped(api: object) -> Any:
    """An API as the tests call it: kubernetes-asyncio's stubs want model bodies and omit `_content_type`."""
    return api


def ksvc(name: str, image: str = "hello", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {"image": image, **spec},
    }


@pytest.fixture
async def crd(kube: KubeTarget) -> AsyncIterator[Any]:
    """The inline CRD, served (on a cluster it is created, or updated to this spec, and left installed)."""
    ext = untyped(client.ApiextensionsV1Api(kube.api))
    custom = untyped(client.CustomObjectsApi(kube.api))
    try:
        await ext.create_custom_resource_definition(CRD)
    except client.ApiException as e:
        if e.status != 409:
            raise
        installed = await ext.read_custom_resource_definition(CRD["metadata"]["name"])
        if installed.to_dict()["spec"]["versions"][0]["subresources"].get("scale") is None:
            await ext.replace_custom_resource_definition(
                CRD["metadata"]["name"],
                {
                    **CRD,
                    "metadata": {**CRD["metadata"], "resourceVersion": installed.metadata.resource_version},
                },
            )

    async def served() -> bool:
        try:
            await custom.list_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL)
        except client.ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    await eventually(served, bool, deadline_s=30, what="the CRD to be served")
    yield custom


def status_of(e: client.ApiException) -> dict[str, Any]:
    body: dict[str, Any] = orjson.loads(e.body or b"{}")
    return body


async def expect_error(code: int, call: Any) -> dict[str, Any]:
    with pytest.raises(client.ApiException) as info:
        await call
    assert info.value.status == code, info.value.body
    body = status_of(info.value)
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == code
    return body


# --- discovery -----------------------------------------------------------------------------------


async def test_discovery_lists_groups_versions_and_resources(kube: KubeTarget, crd: Any):
    versions = await client.CoreApi(kube.api).get_api_versions()
    assert "v1" in versions.versions
    core = await untyped(client.CoreV1Api(kube.api)).get_api_resources()
    names = {r.name: r for r in core.resources}
    assert {"configmaps", "secrets", "services", "pods", "namespaces", "pods/status"} <= set(names)
    assert names["configmaps"].namespaced and not names["namespaces"].namespaced
    apps = await untyped(client.AppsV1Api(kube.api)).get_api_resources()
    assert {"deployments", "deployments/status", "deployments/scale"} <= {r.name for r in apps.resources}
    leases = await untyped(client.CoordinationV1Api(kube.api)).get_api_resources()
    assert "leases" in {r.name for r in leases.resources}
    groups = await client.ApisApi(kube.api).get_api_versions()
    assert {"apps", "coordination.k8s.io", GROUP} <= {g.name for g in groups.groups}
    mine = await crd.get_api_resources(GROUP, VERSION)
    by_name = {r.name: r for r in mine.resources}
    assert by_name[PLURAL].kind == KIND and by_name[PLURAL].short_names == ["cksvc"]
    assert by_name[PLURAL].namespaced and f"{PLURAL}/status" in by_name


# --- create, read, update, delete ----------------------------------------------------------------


async def test_configmap_create_get_list_replace_patch_delete(kube: KubeTarget):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    _, code, _ = await core.create_namespaced_config_map_with_http_info(
        ns, {"metadata": {"name": "a", "labels": {"x": "1"}}, "data": {"k": "v"}}
    )
    assert code == 201
    got = await core.read_namespaced_config_map("a", ns)
    assert got.data == {"k": "v"} and got.metadata.uid and isinstance(got.metadata.resource_version, str)
    listed = await core.list_namespaced_config_map(ns, field_selector=MINE)
    assert [c.metadata.name for c in listed.items] == ["a"] and listed.metadata.resource_version
    got.data = {"k": "w"}
    replaced = await core.replace_namespaced_config_map("a", ns, got)
    assert replaced.data == {"k": "w"} and replaced.metadata.resource_version != got.metadata.resource_version
    # a dict body goes as application/strategic-merge-patch+json on built-in kinds
    patched = await core.patch_namespaced_config_map("a", ns, {"data": {"extra": "1"}})
    assert patched.data == {"k": "w", "extra": "1"}
    # a list body goes as application/json-patch+json
    patched = await core.patch_namespaced_config_map("a", ns, [{"op": "remove", "path": "/data/k"}])
    assert patched.data == {"extra": "1"}
    await expect_error(
        422, core.patch_namespaced_config_map("a", ns, [{"op": "test", "path": "/data/extra", "value": "2"}])
    )
    await core.delete_namespaced_config_map("a", ns)
    body = await expect_error(404, core.read_namespaced_config_map("a", ns))
    assert (
        body["reason"] == "NotFound"
        and body["details"]["name"] == "a"
        and body["details"]["kind"] == "configmaps"
    )


async def test_create_answers_201_and_a_taken_name_409(kube: KubeTarget, crd: Any):
    created = await crd.create_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, ksvc("hello"))
    assert created is not None and created["metadata"]["generation"] == 1  # None would mean a 200
    body = await expect_error(
        409, crd.create_namespaced_custom_object(GROUP, VERSION, kube.namespace, PLURAL, ksvc("hello"))
    )
    assert body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "hello", "group": GROUP, "kind": PLURAL}
    # a resourceVersion (say, of an object read and re-created) is refused by the storage: 500, no reason
    body = await expect_error(
        500,
        crd.create_namespaced_custom_object(
            GROUP,
            VERSION,
            kube.namespace,
            PLURAL,
            {
                **ksvc("again"),
                "metadata": {"name": "again", "resourceVersion": created["metadata"]["resourceVersion"]},
            },
        ),
    )
    assert "resourceVersion should not be set" in body["message"]
    named = await crd.create_namespaced_custom_object(
        GROUP, VERSION, kube.namespace, PLURAL, {**ksvc(""), "metadata": {"generateName": "gen-"}}
    )
    assert named["metadata"]["name"].startswith("gen-") and len(named["metadata"]["name"]) > len("gen-")


async def test_custom_object_replace_merge_patch_json_patch_delete(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    obj = await crd.create_namespaced_custom_object(*args, ksvc("s", replicas=1))
    obj["spec"]["replicas"] = 2
    obj = await crd.replace_namespaced_custom_object(*args, "s", obj)
    assert obj["spec"]["replicas"] == 2 and obj["metadata"]["generation"] == 2
    obj = await crd.patch_namespaced_custom_object(*args, "s", {"spec": {"image": "v2"}}, _content_type=MERGE)
    assert obj["spec"] == {"image": "v2", "replicas": 2} and obj["metadata"]["generation"] == 3
    obj = await crd.patch_namespaced_custom_object(
        *args, "s", [{"op": "replace", "path": "/spec/replicas", "value": 5}]
    )
    assert obj["spec"]["replicas"] == 5
    # metadata only: no new generation
    obj = await crd.patch_namespaced_custom_object(
        *args, "s", {"metadata": {"labels": {"a": "b"}}}, _content_type=MERGE
    )
    assert obj["metadata"]["generation"] == 4 and obj["metadata"]["labels"] == {"a": "b"}
    deleted = await crd.delete_namespaced_custom_object(*args, "s")
    assert deleted["metadata"]["name"] == "s"  # a custom resource's DELETE answers the object
    await expect_error(404, crd.get_namespaced_custom_object(*args, "s"))


async def test_custom_objects_refuse_strategic_merge_and_a_put_without_resource_version(
    kube: KubeTarget, crd: Any
):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    await crd.create_namespaced_custom_object(*args, ksvc("s"))
    body = await expect_error(
        415,
        crd.patch_namespaced_custom_object(
            *args, "s", {"spec": {"image": "x"}}, _content_type="application/strategic-merge-patch+json"
        ),
    )
    assert body["reason"] == "UnsupportedMediaType"
    # kubernetes-asyncio's default for a dict body here is application/json-patch+json: refused
    await expect_error(400, crd.patch_namespaced_custom_object(*args, "s", {"spec": {"image": "x"}}))
    await expect_error(422, crd.replace_namespaced_custom_object(*args, "s", ksvc("s", image="y")))


async def test_stale_update_is_a_409_conflict(kube: KubeTarget, crd: Any):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    first = await core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"n": "1"}})
    await core.replace_namespaced_config_map("c", ns, {**first.to_dict(), "data": {"n": "2"}})
    stale = client.V1ConfigMap(metadata=first.metadata, data={"n": "3"})
    body = await expect_error(409, core.replace_namespaced_config_map("c", ns, stale))
    assert body["reason"] == "Conflict" and body["details"]["name"] == "c"
    args = (GROUP, VERSION, ns, PLURAL)
    obj = await crd.create_namespaced_custom_object(*args, ksvc("s"))
    await crd.patch_namespaced_custom_object(*args, "s", {"spec": {"image": "b"}}, _content_type=MERGE)
    await expect_error(409, crd.replace_namespaced_custom_object(*args, "s", obj))
    # a patch naming a stale resourceVersion is a precondition too
    await expect_error(
        409,
        crd.patch_namespaced_custom_object(
            *args,
            "s",
            {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "spec": {"image": "c"}},
            _content_type=MERGE,
        ),
    )


async def test_status_subresource_writes_status_only_and_keeps_generation(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    created = await crd.create_namespaced_custom_object(*args, {**ksvc("s"), "status": {"url": "dropped"}})
    assert "url" not in (created.get("status") or {})  # create drops the status
    obj = await crd.patch_namespaced_custom_object_status(
        *args,
        "s",
        {"status": {"observedGeneration": 1, "url": "http://s"}, "spec": {"image": "ignored"}},
        _content_type=MERGE,
    )
    assert obj["status"] == {"observedGeneration": 1, "url": "http://s"}
    assert obj["spec"]["image"] == "hello" and obj["metadata"]["generation"] == 1
    obj["status"]["url"] = "http://t"
    obj = await crd.replace_namespaced_custom_object_status(*args, "s", obj)
    assert obj["status"]["url"] == "http://t" and obj["metadata"]["generation"] == 1
    # the main resource ignores status; a spec change bumps generation
    obj["status"]["url"] = "http://ignored"
    obj["spec"]["image"] = "v2"
    obj = await crd.replace_namespaced_custom_object(*args, "s", obj)
    assert obj["status"]["url"] == "http://t" and obj["metadata"]["generation"] == 2
    # a write that changes nothing writes nothing
    again = await crd.replace_namespaced_custom_object(*args, "s", obj)
    assert again["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"]


async def test_server_side_apply_creates_then_updates(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    # an apply that creates answers 201, which kubernetes-asyncio's patch methods map to None
    none = await crd.patch_namespaced_custom_object(
        *args, "s", ksvc("s", replicas=1), _content_type=APPLY, field_manager="flint-contract"
    )
    assert none is None
    applied = await crd.get_namespaced_custom_object(*args, "s")
    assert applied["spec"] == {"image": "hello", "replicas": 1}
    _, code, _ = await crd.patch_namespaced_custom_object_with_http_info(
        *args, "t", ksvc("t"), _content_type=APPLY, field_manager="flint-contract"
    )
    assert code == 201
    applied = await crd.patch_namespaced_custom_object(
        *args, "s", ksvc("s", image="v2", replicas=1), _content_type=APPLY, field_manager="flint-contract"
    )
    assert applied["spec"]["image"] == "v2" and applied["metadata"]["generation"] == 2
    await expect_error(400, crd.patch_namespaced_custom_object(*args, "s", ksvc("s"), _content_type=APPLY))


# --- schema validation ---------------------------------------------------------------------------


async def test_crd_schema_refuses_wrong_types_and_missing_fields(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    body = await expect_error(422, crd.create_namespaced_custom_object(*args, ksvc("s", replicas="three")))
    assert (
        body["reason"] == "Invalid" and body["details"]["kind"] == KIND and body["details"]["group"] == GROUP
    )
    (cause,) = body["details"]["causes"]
    assert cause["field"] == "spec.replicas" and cause["reason"].startswith("FieldValue")
    assert "must be of type integer" in cause["message"] and "spec.replicas" in body["message"]
    body = await expect_error(
        422, crd.create_namespaced_custom_object(*args, {**ksvc("s"), "spec": {"replicas": 1}})
    )
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.image"]
    await expect_error(422, crd.create_namespaced_custom_object(*args, ksvc("s", replicas=-1)))
    obj = await crd.create_namespaced_custom_object(*args, ksvc("s"))
    await expect_error(
        422,
        crd.patch_namespaced_custom_object(
            *args, "s", {"spec": {"traffic": [{"percent": "all"}]}}, _content_type=MERGE
        ),
    )
    assert obj["spec"] == {"image": "hello"}


async def test_crd_schema_prunes_unknown_fields_unless_preserved(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    obj = await crd.create_namespaced_custom_object(
        *args, ksvc("s", unknown=1, extra={"anything": {"goes": [1]}}, traffic=[{"tag": "a", "bogus": 1}])
    )
    assert obj["spec"] == {"image": "hello", "extra": {"anything": {"goes": [1]}}, "traffic": [{"tag": "a"}]}
    body = await expect_error(
        400, crd.create_namespaced_custom_object(*args, ksvc("t", unknown=1), field_validation="Strict")
    )
    assert 'unknown field "spec.unknown"' in body["message"]


# --- watch ---------------------------------------------------------------------------------------


async def _collect(func: Any, *args: Any, until: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Watch until `until(events)` holds (the watch's own timeoutSeconds bounds the wait)."""
    events: list[dict[str, Any]] = []
    async with watch.Watch() as w:
        async for event in w.stream(func, *args, timeout_seconds=10, **kwargs):
            events.append(event)
            if until(events):
                return events
    raise AssertionError(f"the watch ended before the expected events: {[e['type'] for e in events]}")


def _summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["raw_object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]


async def test_watch_sends_bookmarks(kube: KubeTarget):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    events = await _collect(
        core.list_namespaced_config_map,
        ns,
        field_selector=MINE,
        allow_watch_bookmarks=True,
        until=lambda es: es[-1]["type"] == "BOOKMARK",
    )
    assert _summary(events) == [("ADDED", "a")]  # no resourceVersion: what exists, as ADDED
    bookmark = events[-1]["raw_object"]
    assert bookmark["kind"] == "ConfigMap" and isinstance(bookmark["metadata"]["resourceVersion"], str)
    # a bookmark's resourceVersion is a resume point: nothing before it comes again
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
    events = await _collect(
        core.list_namespaced_config_map,
        ns,
        field_selector=MINE,
        resource_version=bookmark["metadata"]["resourceVersion"],
        until=lambda es: bool(_summary(es)),
    )
    assert _summary(events) == [("ADDED", "b")]


async def test_watch_resumes_from_a_resource_version_without_loss_or_repeat(kube: KubeTarget):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    a = await core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}, "data": {"n": "1"}})
    await core.patch_namespaced_config_map("a", ns, {"data": {"n": "2"}})
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
    events = await _collect(
        core.list_namespaced_config_map,
        ns,
        field_selector=MINE,
        resource_version=a.metadata.resource_version,
        until=lambda es: len(_summary(es)) == 2,
    )
    assert _summary(events) == [("MODIFIED", "a"), ("ADDED", "b")]
    assert events[0]["object"].data == {"n": "2"}  # typed: a V1ConfigMap
    resume = events[-1]["raw_object"]["metadata"]["resourceVersion"]
    await core.patch_namespaced_config_map("b", ns, {"data": {"n": "1"}})
    await core.delete_namespaced_config_map("a", ns)
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})  # the sentinel: the last one
    events = await _collect(
        core.list_namespaced_config_map,
        ns,
        field_selector=MINE,
        resource_version=resume,
        until=lambda es: ("ADDED", "c") in _summary(es),
    )
    assert _summary(events) == [("MODIFIED", "b"), ("DELETED", "a"), ("ADDED", "c")]


async def test_watch_of_custom_objects_with_a_label_selector(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    listed = await crd.list_namespaced_custom_object(*args)
    start = listed["metadata"]["resourceVersion"]
    await crd.create_namespaced_custom_object(
        *args, {**ksvc("in"), "metadata": {"name": "in", "labels": {"w": "y"}}}
    )
    await crd.create_namespaced_custom_object(*args, ksvc("out"))
    await crd.patch_namespaced_custom_object(
        *args, "in", {"metadata": {"labels": {"w": "n"}}}, _content_type=MERGE
    )
    await crd.patch_namespaced_custom_object(
        *args, "out", {"metadata": {"labels": {"w": "y"}}}, _content_type=MERGE
    )
    events = await _collect(
        crd.list_namespaced_custom_object,
        *args,
        resource_version=start,
        label_selector="w=y",
        until=lambda es: len(_summary(es)) == 3,
    )
    # leaving the selector is a DELETED, entering it an ADDED
    assert _summary(events) == [("ADDED", "in"), ("DELETED", "in"), ("ADDED", "out")]
    assert isinstance(events[0]["object"], dict)


@pytest.mark.fake_only
async def test_watch_from_before_a_compaction_is_410_expired(kube: KubeTarget):
    assert kube.fake is not None
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    a = await core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    await core.patch_namespaced_config_map("a", ns, {"data": {"n": "2"}})
    kube.fake.compact()
    # on the wire: 200, then one ERROR event whose object is a Status 410 Expired
    response = await core.list_namespaced_config_map(
        ns,
        watch=True,
        resource_version=a.metadata.resource_version,
        timeout_seconds=5,
        _preload_content=False,
    )
    try:
        assert response.status == 200
        line = orjson.loads(await response.content.readline())
    finally:
        response.release()
    assert line["type"] == "ERROR"
    assert line["object"]["kind"] == "Status" and line["object"]["code"] == 410
    assert line["object"]["reason"] == "Expired"
    # kubernetes-asyncio turns it into ApiException(410): at once with timeout_seconds (without,
    # it first reconnects once from the same resourceVersion, then raises)
    for kwargs in ({"timeout_seconds": 5}, {}):
        with pytest.raises(client.ApiException) as info:
            async with watch.Watch() as w:
                async for _ in w.stream(
                    core.list_namespaced_config_map,
                    ns,
                    resource_version=a.metadata.resource_version,
                    **kwargs,
                ):
                    pass
        assert info.value.status == 410
    # a list gives the resume point that works again
    listed = await core.list_namespaced_config_map(ns)
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "b"}})
    events = await _collect(
        core.list_namespaced_config_map,
        ns,
        field_selector=MINE,
        resource_version=listed.metadata.resource_version,
        until=lambda es: bool(_summary(es)),
    )
    assert _summary(events) == [("ADDED", "b")]


# --- selectors -----------------------------------------------------------------------------------


async def test_label_and_field_selectors(kube: KubeTarget):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    for name, labels in (
        ("a", {"app": "a", "tier": "web"}),
        ("b", {"app": "b", "tier": "db"}),
        ("c", {"app": "c"}),
    ):
        await core.create_namespaced_config_map(ns, {"metadata": {"name": name, "labels": labels}})

    async def names(**kwargs: str) -> list[str]:
        listed = await core.list_namespaced_config_map(ns, **kwargs)
        # filtered here, not by MINE: some calls pass a field selector of their own
        return sorted(c.metadata.name for c in listed.items if c.metadata.name != "kube-root-ca.crt")

    assert await names(label_selector="app=a") == ["a"]
    assert await names(label_selector="app==a") == ["a"]
    assert await names(label_selector="app!=a") == ["b", "c"]
    assert await names(label_selector="app in (a,b)") == ["a", "b"]
    assert await names(label_selector="app notin (a)") == ["b", "c"]
    assert await names(label_selector="tier") == ["a", "b"]
    assert await names(label_selector="!tier") == ["c"]
    assert await names(label_selector="app in (a,b),tier=db") == ["b"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b") == ["a", "c"]
    assert await names(field_selector=f"metadata.namespace={ns}", label_selector="tier=web") == ["a"]
    await expect_error(400, core.list_namespaced_config_map(ns, field_selector="data.k=v"))


# --- deletion ------------------------------------------------------------------------------------


async def test_owner_references_garbage_collect_dependents(kube: KubeTarget, crd: Any):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    owner = await crd.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ksvc("owner"))
    ref = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": "owner", "uid": owner["metadata"]["uid"]}
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    other = await core.create_namespaced_config_map(ns, {"metadata": {"name": "other-owner"}})
    other_ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other-owner", "uid": other.metadata.uid}
    await core.create_namespaced_config_map(
        ns, {"metadata": {"name": "shared", "ownerReferences": [ref, other_ref]}}
    )
    await crd.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "owner")
    await gone(lambda: core.read_namespaced_config_map("child", ns), what="the dependent to be collected")
    shared = await eventually(
        lambda: core.read_namespaced_config_map("shared", ns),
        lambda cm: len(cm.metadata.owner_references or []) == 1,
        what="the dangling owner reference to go",
    )
    assert shared.metadata.owner_references[0].uid == other.metadata.uid
    # orphan: the dependent stays, without its owner reference
    await core.delete_namespaced_config_map("other-owner", ns, propagation_policy="Orphan")
    await eventually(
        lambda: core.read_namespaced_config_map("shared", ns),
        lambda cm: not cm.metadata.owner_references,
        what="the orphaned owner reference to go",
    )


async def test_a_finalizer_holds_a_delete(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    hold = "contract.flint.dev/hold"
    await crd.create_namespaced_custom_object(
        *args, {**ksvc("s"), "metadata": {"name": "s", "finalizers": [hold]}}
    )
    try:
        marked = await crd.delete_namespaced_custom_object(*args, "s")
        assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["generation"] == 2
        still = await crd.get_namespaced_custom_object(*args, "s")
        assert still["metadata"]["finalizers"] == [hold] and still["metadata"]["deletionTimestamp"]
        body = await expect_error(
            422,
            crd.patch_namespaced_custom_object(
                *args,
                "s",
                {"metadata": {"finalizers": [hold, "contract.flint.dev/more"]}},
                _content_type=MERGE,
            ),
        )
        assert "no new finalizers" in body["message"]
    finally:
        with contextlib.suppress(client.ApiException):
            await crd.patch_namespaced_custom_object(
                *args, "s", {"metadata": {"finalizers": None}}, _content_type=MERGE
            )
    await gone(lambda: crd.get_namespaced_custom_object(*args, "s"), what="the finalized object to go")


# --- leases and deployments ----------------------------------------------------------------------


async def test_lease_create_and_renew(kube: KubeTarget):
    leases, ns = untyped(client.CoordinationV1Api(kube.api)), kube.namespace
    now = datetime.now(UTC)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="flint-controller"),
        spec=client.V1LeaseSpec(
            holder_identity="a",
            lease_duration_seconds=15,
            acquire_time=now,
            renew_time=now,
            lease_transitions=0,
        ),
    )
    _, code, _ = await leases.create_namespaced_lease_with_http_info(ns, lease)
    assert code == 201
    held = await leases.read_namespaced_lease("flint-controller", ns)
    assert held.spec.holder_identity == "a" and held.spec.renew_time is not None
    held.spec.renew_time = now + timedelta(seconds=5)
    renewed = await leases.replace_namespaced_lease("flint-controller", ns, held)
    assert renewed.spec.renew_time > now
    # a second candidate holding the old copy loses the race
    held.spec.holder_identity = "b"
    await expect_error(409, leases.replace_namespaced_lease("flint-controller", ns, held))


async def test_deployment_scale_subresource(kube: KubeTarget):
    apps, ns = untyped(client.AppsV1Api(kube.api)), kube.namespace
    labels = {"app": "web"}
    await apps.create_namespaced_deployment(
        ns,
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]},
                },
            },
        },
    )
    scale = await apps.read_namespaced_deployment_scale("web", ns)
    assert scale.metadata.name == "web"
    assert scale.spec.replicas == 1 and scale.status.selector == "app=web"
    scale = await apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3
    deployment = await apps.read_namespaced_deployment("web", ns)
    assert deployment.spec.replicas == 3 and deployment.metadata.generation == 2
    written = await apps.patch_namespaced_deployment_status("web", ns, {"status": {"unavailableReplicas": 3}})
    assert written.metadata.generation == 2  # a status write is no spec change
    scale.spec.replicas = 0
    scale.metadata.resource_version = (
        None  # unconditional: the cluster's controller may write status meanwhile
    )
    scale = await apps.replace_namespaced_deployment_scale("web", ns, scale)
    assert scale.spec.replicas == 0
    stale = client.V1Scale(
        metadata=client.V1ObjectMeta(name="web", resource_version=deployment.metadata.resource_version),
        spec=client.V1ScaleSpec(replicas=2),
    )
    await expect_error(409, apps.replace_namespaced_deployment_scale("web", ns, stale))


# --- namespaces, preconditions, foreground deletion ----------------------------------------------


async def test_objects_need_an_existing_namespace(kube: KubeTarget):
    core = untyped(client.CoreV1Api(kube.api))
    body = await expect_error(
        404, core.create_namespaced_config_map(f"{kube.namespace}-missing", {"metadata": {"name": "a"}})
    )
    assert body["reason"] == "NotFound" and body["details"]["kind"] == "namespaces"


async def test_merge_patch_null_removes_and_delete_preconditions(kube: KubeTarget):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    cm = await core.create_namespaced_config_map(
        ns, {"metadata": {"name": "a", "labels": {"keep": "1", "drop": "1"}}, "data": {"k": "v"}}
    )
    patched = await core.patch_namespaced_config_map(
        "a", ns, {"metadata": {"labels": {"drop": None}}}, _content_type=MERGE
    )
    assert patched.metadata.labels == {"keep": "1"}
    stale = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=cm.metadata.resource_version)
    )
    body = await expect_error(409, core.delete_namespaced_config_map("a", ns, body=stale))
    assert body["reason"] == "Conflict"
    fresh = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=cm.metadata.uid))
    status = await core.delete_namespaced_config_map("a", ns, body=fresh)
    assert status.status == "Success" and status.details.uid == cm.metadata.uid  # built-ins: a Status
    await expect_error(404, core.read_namespaced_config_map("a", ns))


async def test_foreground_deletion_waits_for_dependents(kube: KubeTarget, crd: Any):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    owner = await crd.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ksvc("owner"))
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": "owner",
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": True,
    }
    hold = "contract.flint.dev/hold"
    await core.create_namespaced_config_map(
        ns, {"metadata": {"name": "child", "ownerReferences": [ref], "finalizers": [hold]}}
    )
    try:
        await crd.delete_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, "owner", propagation_policy="Foreground"
        )
        marked = await eventually(
            lambda: crd.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "owner"),
            lambda o: "foregroundDeletion" in (o["metadata"].get("finalizers") or []),
            what="the owner to wait for its dependents",
        )
        assert marked["metadata"]["deletionTimestamp"]
        child = await eventually(
            lambda: core.read_namespaced_config_map("child", ns),
            lambda c: c.metadata.deletion_timestamp is not None,
            what="the dependent to be deleted first",
        )
        assert child.metadata.finalizers == [hold]
    finally:
        with contextlib.suppress(client.ApiException):
            await core.patch_namespaced_config_map(
                "child", ns, {"metadata": {"finalizers": None}}, _content_type=MERGE
            )
    await gone(lambda: core.read_namespaced_config_map("child", ns), what="the dependent to go")
    await gone(
        lambda: crd.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "owner"),
        what="the owner to go after its dependents",
    )


async def test_watch_across_namespaces_and_a_secret(kube: KubeTarget):
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace
    listed = await core.list_secret_for_all_namespaces(field_selector=f"metadata.namespace={ns}")
    await core.create_namespaced_secret(
        ns, {"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}}
    )
    events = await _collect(
        core.list_secret_for_all_namespaces,
        field_selector=f"metadata.namespace={ns}",
        resource_version=listed.metadata.resource_version,
        until=lambda es: bool(_summary(es)),
    )
    assert _summary(events) == [("ADDED", "s")] and events[0]["object"].data == {"k": "dg=="}


async def test_custom_object_scale_subresource(kube: KubeTarget, crd: Any):
    args = (GROUP, VERSION, kube.namespace, PLURAL)
    await crd.create_namespaced_custom_object(*args, ksvc("s", replicas=1))
    scale = await crd.get_namespaced_custom_object_scale(*args, "s")
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 1 and scale["status"].get("replicas", 0) == 0
    scale = await crd.patch_namespaced_custom_object_scale(
        *args, "s", {"spec": {"replicas": 4}}, _content_type=MERGE
    )
    assert scale["spec"]["replicas"] == 4
    obj = await crd.get_namespaced_custom_object(*args, "s")
    assert obj["spec"]["replicas"] == 4 and obj["metadata"]["generation"] == 2


@pytest.mark.fake_only
async def test_stopping_the_fake_ends_its_open_watches(kube: KubeTarget):
    assert kube.fake is not None
    core = untyped(client.CoreV1Api(kube.api))
    response = await core.list_namespaced_config_map(kube.namespace, watch=True, _preload_content=False)
    try:
        assert response.status == 200
        await kube.fake.stop()  # the fixture's stop at the end is then a no-op
        assert await response.content.readline() == b""  # the stream ends instead of hanging
    finally:
        response.release()


async def test_deleting_a_namespace_deletes_what_it_holds(kube: KubeTarget, crd: Any):
    core = untyped(client.CoreV1Api(kube.api))
    ns = f"{kube.namespace}-x"
    await core.create_namespace({"metadata": {"name": ns}})
    await core.create_namespaced_config_map(ns, {"metadata": {"name": "a"}})
    await crd.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, ksvc("s"))
    await core.delete_namespace(ns)  # Terminating until its objects are gone (on the fake: at once)
    await gone(lambda: core.read_namespace(ns), deadline_s=60, what="the namespace to terminate")
    await expect_error(404, crd.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "s"))


async def test_deleting_a_crd_stops_serving_its_kind(kube: KubeTarget):
    ext = untyped(client.ApiextensionsV1Api(kube.api))
    custom = untyped(client.CustomObjectsApi(kube.api))
    plural = f"widgets{kube.namespace.rsplit('-', 1)[-1]}"  # a CRD of this test's own
    widget = {
        **CRD,
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            **CRD["spec"],
            "names": {"plural": plural, "kind": f"W{plural}"},
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }
    await ext.create_custom_resource_definition(widget)
    try:
        created = await eventually(
            lambda: _try(
                custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    kube.namespace,
                    plural,
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": f"W{plural}",
                        "metadata": {"name": "w"},
                        "x": 1,
                    },
                )
            ),
            lambda r: r is not None,
            deadline_s=30,
            what="the new kind to be served",
        )
        assert created["x"] == 1  # preserved: the root keeps unknown fields
    finally:
        await ext.delete_custom_resource_definition(f"{plural}.{GROUP}")
    await gone(
        lambda: custom.list_namespaced_custom_object(GROUP, VERSION, kube.namespace, plural),
        deadline_s=60,
        what="the kind to stop being served",
    )


async def _try(call: Any) -> Any:
    """The call's result, or None while it answers 404 (a kind not served yet)."""
    try:
        return await call
    except client.ApiException as e:
        if e.status != 404:
            raise
        return None


async def test_a_bound_pod_is_deleted_gracefully_and_an_unbound_one_at_once(kube: KubeTarget):
    """What the kubelet stand-in (tests/support/kubelet) relies on: a Pod bound to a node stays,
    terminating, until a delete with gracePeriodSeconds=0; binding twice is a 409."""
    core, ns = untyped(client.CoreV1Api(kube.api)), kube.namespace

    def pod(name: str) -> dict[str, Any]:
        return {"metadata": {"name": name},
                "spec": {"terminationGracePeriodSeconds": 7,
                         "schedulerName": "flint-contract-none",  # no scheduler binds it on a cluster
                         "containers": [{"name": "app", "image": "flint.test/apps/echo"}]}}

    await core.create_namespaced_pod(ns, pod("loose"))
    await core.delete_namespaced_pod("loose", ns)
    await expect_error(404, core.read_namespaced_pod("loose", ns))  # no node runs it: gone at once

    await core.create_namespaced_pod(ns, pod("bound"))
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "flint-contract-node"}}
    # the generated client cannot read the Status a binding answers: read it raw
    response = await core.create_namespaced_pod_binding("bound", ns, binding, _preload_content=False)
    assert response.status == 201
    response.release()
    assert (await core.read_namespaced_pod("bound", ns)).spec.node_name == "flint-contract-node"
    body = await expect_error(409, core.create_namespaced_pod_binding("bound", ns, binding))
    assert body["reason"] == "Conflict"

    await core.delete_namespaced_pod("bound", ns)
    terminating = await core.read_namespaced_pod("bound", ns)
    assert terminating.metadata.deletion_timestamp is not None
    assert terminating.metadata.deletion_grace_period_seconds == 7
    await core.delete_namespaced_pod("bound", ns, grace_period_seconds=0)
    await gone(lambda: core.read_namespaced_pod("bound", ns), what="the pod deleted with grace 0")


async def test_endpoint_slices_and_horizontal_pod_autoscalers_are_served(kube: KubeTarget):
    ns = kube.namespace
    discovery = untyped(client.DiscoveryV1Api(kube.api))
    slice_ = {"metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
              "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
              "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}]}
    await discovery.create_namespaced_endpoint_slice(ns, slice_)
    listed = await discovery.list_namespaced_endpoint_slice(ns, label_selector="kubernetes.io/service-name=s")
    assert [e.addresses for s in listed.items for e in s.endpoints] == [["10.0.0.1"]]
    hpas = untyped(client.AutoscalingV2Api(kube.api))
    hpa = {"metadata": {"name": "h"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
                    "minReplicas": 1, "maxReplicas": 3}}
    await hpas.create_namespaced_horizontal_pod_autoscaler(ns, hpa)
    read = await hpas.read_namespaced_horizontal_pod_autoscaler("h", ns)
    assert read.spec.max_replicas == 3 and read.spec.scale_target_ref.name == "d"
