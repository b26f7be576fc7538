"""The API server's `/openapi/v3` and `fieldValidation`: Strict refuses unknown fields as Kubernetes
does, Warn drops them with a warning, Ignore drops them; wrong types are refused with the path."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.api import openapi
from controller.api.registry import TYPES
from controller.apiserver import make_api_app
from controller.store.memory import MemoryStore

SERVICES = "/apis/serving.knative.dev/v1/namespaces/default/services"
TRIGGERS = "/apis/eventing.knative.dev/v1/namespaces/default/triggers"


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    store = MemoryStore(history=50)
    async with TestClient(TestServer(make_api_app(store), host="127.0.0.1")) as c:
        yield c
    await store.close()


def service(name: str = "s", **container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{"image": "/srv/app", **container}]}}},
    }


def with_unknown() -> dict[str, Any]:
    svc = service(bogus=1)
    svc["spec"]["template"]["spec"]["foo"] = True
    return svc


async def post(client: TestClient[Any, Any], body: Any, query: str = "", url: str = SERVICES) -> Any:
    return await client.post(
        f"{url}{query}", data=orjson.dumps(body), headers={"Content-Type": "application/json"}
    )


async def test_strict_is_the_default_and_answers_like_kubernetes(client: TestClient[Any, Any]) -> None:
    for query in ("", "?fieldValidation=Strict&fieldManager=kubectl-client-side-apply"):
        r = await post(client, with_unknown(), query)
        body = await r.json()
        assert r.status == 400 and body["reason"] == "BadRequest", body
        assert body["message"] == (
            'Service in version "v1" cannot be handled as a Service: strict decoding error: '
            'unknown field "spec.template.spec.containers[0].bogus", unknown field "spec.template.spec.foo"'
        )
        causes = body["details"]["causes"]
        assert [c["field"] for c in causes] == [
            "spec.template.spec.containers[0].bogus",
            "spec.template.spec.foo",
        ]
    assert (await client.get(f"{SERVICES}/s")).status == 404


async def test_warn_drops_unknown_fields_with_a_warning_each(client: TestClient[Any, Any]) -> None:
    r = await post(client, with_unknown(), "?fieldValidation=Warn")
    assert r.status == 201, await r.text()
    assert r.headers.getall("Warning") == [
        '299 flint "unknown field \\"spec.template.spec.containers[0].bogus\\""',
        '299 flint "unknown field \\"spec.template.spec.foo\\""',
    ]
    stored = await (await client.get(f"{SERVICES}/s")).json()
    assert "foo" not in stored["spec"]["template"]["spec"]
    assert "bogus" not in stored["spec"]["template"]["spec"]["containers"][0]


async def test_ignore_drops_unknown_fields_silently(client: TestClient[Any, Any]) -> None:
    r = await post(client, with_unknown(), "?fieldValidation=Ignore")
    assert r.status == 201 and "Warning" not in r.headers
    patch = {"spec": {"template": {"spec": {"typo": 1}}}}
    r = await client.patch(
        f"{SERVICES}/s?fieldValidation=Ignore",
        data=orjson.dumps(patch),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert r.status == 200 and "typo" not in (await r.json())["spec"]["template"]["spec"]


async def test_a_patch_is_checked_as_the_object_it_makes(client: TestClient[Any, Any]) -> None:
    assert (await post(client, service())).status == 201
    r = await client.patch(
        f"{SERVICES}/s?fieldValidation=Strict",
        data=orjson.dumps({"spec": {"traffic": [{"percent": 100, "latestRevision": True, "weight": 1}]}}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    body = await r.json()
    assert r.status == 400 and 'unknown field "spec.traffic[0].weight"' in body["message"]


async def test_a_wrong_type_is_invalid_whatever_the_directive(client: TestClient[Any, Any]) -> None:
    svc = service()
    svc["spec"]["template"]["spec"]["containerConcurrency"] = "ten"
    for query in ("", "?fieldValidation=Ignore"):
        r = await post(client, svc, query)
        body = await r.json()
        assert r.status == 422 and body["reason"] == "Invalid", body
        assert body["message"] == (
            'Service.serving.knative.dev "s" is invalid: '
            "invalid value: ten; expected an integer: spec.template.spec.containerConcurrency"
        )
        assert body["details"]["causes"][0]["field"] == "spec.template.spec.containerConcurrency"


async def test_fields_the_validators_refuse_keep_knatives_words(client: TestClient[Any, Any]) -> None:
    trigger = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t"},
        "spec": {"broker": "default", "subscriber": {"uri": "http://x.example"}},
    }
    assert (await post(client, trigger, url=TRIGGERS)).status == 201
    svc = service()
    svc["spec"]["template"]["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    body = await (await post(client, svc)).json()
    assert body["code"] == 422 and "spec.template.spec.volumes" in body["message"]


async def test_an_unknown_directive_is_a_bad_request(client: TestClient[Any, Any]) -> None:
    body = await (await post(client, service(), "?fieldValidation=Loud")).json()
    assert body["code"] == 400 and 'Unsupported value: "Loud"' in body["message"]


async def test_openapi_v3_serves_the_index_and_the_documents(client: TestClient[Any, Any]) -> None:
    r = await client.get("/openapi/v3")
    assert r.status == 200
    index = await r.json()
    assert index == openapi.index(openapi.documents(TYPES))
    url = index["paths"]["apis/serving.knative.dev/v1"]["serverRelativeURL"]
    r = await client.get(url)
    assert r.status == 200 and "immutable" in r.headers["Cache-Control"]
    doc = await r.json()
    assert "dev.knative.serving.v1.Service" in doc["components"]["schemas"]
    r = await client.get("/openapi/v3/apis/serving.knative.dev/v1")
    assert r.status == 200 and r.headers["Cache-Control"] == "no-cache, private"
    missing = await client.get("/openapi/v3/apis/nope.dev/v1")
    assert missing.status == 404 and (await missing.json())["kind"] == "Status"
    assert (await client.get("/openapi/v2")).status == 404


async def test_a_stored_status_the_schema_does_not_know_never_blocks_a_write(
    client: TestClient[Any, Any],
) -> None:
    """Only `/status` writes change the status; a write of the main resource is checked
    without it, so what a controller stored there cannot make `kubectl patch` fail."""
    assert (await post(client, service("a"))).status == 201
    merge = {"Content-Type": "application/merge-patch+json"}
    odd = {"status": {"conditions": [{"type": "Ready", "status": "True", "bogus": 1}]}}
    r = await client.patch(f"{SERVICES}/a/status", data=orjson.dumps(odd), headers=merge)
    assert r.status == 200, await r.text()
    label = {"metadata": {"labels": {"x": "y"}}}
    r = await client.patch(f"{SERVICES}/a?fieldValidation=Strict", data=orjson.dumps(label), headers=merge)
    assert r.status == 200, await r.text()
    got = await (await client.get(f"{SERVICES}/a")).json()
    assert got["metadata"]["labels"]["x"] == "y" and got["status"]["conditions"][0]["bogus"] == 1
    r = await client.put(f"{SERVICES}/a?fieldValidation=Strict", data=orjson.dumps(got),
                         headers={"Content-Type": "application/json"})
    assert r.status == 200, await r.text()
