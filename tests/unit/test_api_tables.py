"""Tables (`kubectl get`'s Accept) on list, get and watch, and watch-list (`kubectl wait`'s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from controller.api.printer_columns import columns_for
from controller.apiserver import make_api_app
from controller.apiserver_codec import ApiError
from controller.apiserver_tables import NAME_COLUMN, TableOptions, negotiate, table
from controller.apiserver_watch import INITIAL_EVENTS_END, watch_options
from controller.store.memory import MemoryStore

Obj = dict[str, Any]
SERVICES = "/apis/serving.knative.dev/v1/namespaces/default/services"
KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;"
    "g=meta.k8s.io,application/json"
)
TABLE = {"Accept": KUBECTL_GET}
WATCH_LIST = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"

# -- negotiation (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "include", "wanted"),
    [
        ("", None, None),
        ("application/json", "Object", None),  # includeObject only matters for a Table
        ("application/yaml", None, None),
        ("*/*", None, None),
        (KUBECTL_GET, None, TableOptions("v1", "Metadata")),
        (KUBECTL_GET, "None", TableOptions("v1", "None")),
        (KUBECTL_GET, "Object", TableOptions("v1", "Object")),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", None,
         TableOptions("v1beta1", "Metadata")),
        ("application/json;g=meta.k8s.io;v=v1;as=Table", None, TableOptions("v1", "Metadata")),
        ("application/json;as=Table;v=v1;g=meta.k8s.io;q=0, application/json", None, None),
        ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io, application/json",
         None, None),
        ("application/vnd.kubernetes.protobuf", None, None),
    ],
)
def test_negotiate(accept: str, include: str | None, wanted: TableOptions | None) -> None:
    assert negotiate(accept, include) == wanted


def test_negotiate_refuses_what_it_cannot_serve() -> None:
    with pytest.raises(ApiError) as e:
        negotiate("application/json;as=Table;v=v2;g=meta.k8s.io", None)
    assert e.value.code == 406 and "as=Table;v=v1;g=meta.k8s.io" in e.value.message
    with pytest.raises(ApiError) as e:
        negotiate(KUBECTL_GET, "Everything")
    assert e.value.code == 400 and "None, Metadata, Object" in e.value.message


def test_table_shape_and_include_object() -> None:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    obj = {"apiVersion": "serving.knative.dev/v1", "kind": "Route",
           "metadata": {"name": "r", "namespace": "default"}, "spec": {"traffic": []}}
    columns = columns_for("serving.knative.dev", "Route")
    t = table(columns, [obj], TableOptions("v1", "Metadata"), now, "7")
    assert (t["kind"], t["apiVersion"], t["metadata"]) == ("Table", "meta.k8s.io/v1",
                                                            {"resourceVersion": "7"})
    assert [c["name"] for c in t["columnDefinitions"]] == ["Name", "URL", "Ready", "Reason"]
    assert t["columnDefinitions"][0] == NAME_COLUMN
    assert t["rows"] == [{
        "cells": ["r", None, None, None],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                   "metadata": {"name": "r", "namespace": "default"}},
    }]
    assert table(columns, [obj], TableOptions("v1", "Object"), now)["rows"][0]["object"] == obj
    assert "object" not in table(columns, [obj], TableOptions("v1", "None"), now)["rows"][0]
    beta = table(columns, [obj], TableOptions("v1beta1", "Metadata"), now, definitions=False)
    assert beta["apiVersion"] == "meta.k8s.io/v1beta1" and beta["columnDefinitions"] == []
    assert beta["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"


# -- watch options (pure) -------------------------------------------------------------------------


def test_watch_options() -> None:
    plain = watch_options({"resourceVersion": "5", "timeoutSeconds": "30"})
    assert (plain.since, plain.timeout_s, plain.send_initial_events) == ("5", 30.0, None)
    listed = watch_options({"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan",
                            "allowWatchBookmarks": "true"})
    assert (listed.send_initial_events, listed.bookmarks, listed.since) == (True, True, "")
    no_initial = watch_options({"sendInitialEvents": "false",
                                "resourceVersionMatch": "NotOlderThan"})
    assert no_initial.send_initial_events is False


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"timeoutSeconds": "soon"}, "is not a number"),
        ({"resourceVersionMatch": "NotOlderThan"}, "forbidden for watch unless sendInitialEvents"),
        ({"resourceVersionMatch": "Newest"}, "is not one of NotOlderThan, Exact"),
        ({"sendInitialEvents": "true", "allowWatchBookmarks": "true"},
         "needs resourceVersionMatch=NotOlderThan"),
        ({"sendInitialEvents": "true", "resourceVersionMatch": "Exact",
          "allowWatchBookmarks": "true"}, "needs resourceVersionMatch=NotOlderThan"),
        ({"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"},
         "needs allowWatchBookmarks=true"),
        ({"sendInitialEvents": "maybe"}, "is not true or false"),
    ],
)
def test_bad_watch_options_are_400s_saying_why(query: dict[str, str], words: str) -> None:
    with pytest.raises(ApiError) as e:
        watch_options(query)
    assert e.value.code == 400 and words in e.value.message


# -- over HTTP, with the real kinds ---------------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[TestClient[Any, Any]]:
    store = MemoryStore(history=50)
    async with TestClient(TestServer(make_api_app(store), host="127.0.0.1")) as c:
        yield c
    await store.close()


def _service(name: str) -> Obj:
    return {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"template": {"spec": {"containers": [{"image": "/srv/app"}]}}}}


async def _create(client: TestClient[Any, Any], name: str, ready: bool = False) -> Obj:
    resp = await client.post(SERVICES, data=orjson.dumps(_service(name)),
                             headers={"Content-Type": "application/json"})
    assert resp.status == 201, await resp.text()
    created: Obj = await resp.json()
    if ready:
        created["status"] = {"url": f"http://{name}.default.localhost",
                             "latestCreatedRevisionName": f"{name}-00001",
                             "latestReadyRevisionName": f"{name}-00001",
                             "conditions": [{"type": "Ready", "status": "True"}]}
        resp = await client.put(f"{SERVICES}/{name}/status", data=orjson.dumps(created),
                                headers={"Content-Type": "application/json"})
        assert resp.status == 200, await resp.text()
        created = await resp.json()
    return created


async def _lines(resp: Any, n: int) -> list[Obj]:
    out = []
    for _ in range(n):
        line = await asyncio.wait_for(resp.content.readline(), 5)
        assert line.endswith(b"\n"), line
        out.append(orjson.loads(line))
    return out


async def test_list_as_table(client: TestClient[Any, Any]) -> None:
    await _create(client, "hello", ready=True)
    await _create(client, "pending")
    resp = await client.get(SERVICES, headers=TABLE)
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["kind"] == "Table" and body["metadata"]["resourceVersion"]
    assert [c["name"] for c in body["columnDefinitions"]] == [
        "Name", "URL", "LatestCreated", "LatestReady", "Ready", "Reason"]
    assert [r["cells"] for r in body["rows"]] == [
        ["hello", "http://hello.default.localhost", "hello-00001", "hello-00001", "True", None],
        ["pending", None, None, None, None, None],
    ]
    assert body["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert body["rows"][0]["object"]["metadata"]["namespace"] == "default"
    plain = await (await client.get(SERVICES)).json()
    assert plain["kind"] == "ServiceList"  # without the Accept, objects as before


async def test_get_as_table_and_include_object(client: TestClient[Any, Any]) -> None:
    await _create(client, "hello", ready=True)
    resp = await client.get(f"{SERVICES}/hello?includeObject=Object", headers=TABLE)
    body = await resp.json()
    assert body["kind"] == "Table" and len(body["rows"]) == 1
    assert body["rows"][0]["cells"][0] == "hello"
    assert body["rows"][0]["object"]["kind"] == "Service"
    assert body["rows"][0]["object"]["spec"]["template"]["spec"]["containers"]
    resp = await client.get(f"{SERVICES}/hello?includeObject=All", headers=TABLE)
    assert resp.status == 400 and (await resp.json())["reason"] == "BadRequest"
    resp = await client.get(SERVICES, headers={"Accept": "application/json;as=Table;v=v9;g=x"})
    assert resp.status == 406 and (await resp.json())["reason"] == "NotAcceptable"
    resp = await client.get(f"{SERVICES}/nothing", headers=TABLE)
    assert resp.status == 404 and (await resp.json())["kind"] == "Status"


async def test_watch_as_table_one_row_per_event(client: TestClient[Any, Any]) -> None:
    created = await _create(client, "hello")
    rv = created["metadata"]["resourceVersion"]
    resp = await client.get(f"{SERVICES}?watch=true&resourceVersion={rv}", headers=TABLE)
    await _create(client, "other", ready=True)  # ADDED, then MODIFIED (its status)
    await client.delete(f"{SERVICES}/hello")
    events = await _lines(resp, 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e["object"]["kind"] == "Table" for e in events)
    assert [len(e["object"]["rows"]) for e in events] == [1, 1, 1]
    assert [c["name"] for c in events[0]["object"]["columnDefinitions"]][:2] == ["Name", "URL"]
    assert events[1]["object"]["columnDefinitions"] == []  # only the first event defines them
    assert events[1]["object"]["rows"][0]["cells"][4] == "True"
    assert events[2]["object"]["rows"][0]["cells"][0] == "hello"
    resp.close()


async def test_watch_list_sends_current_objects_then_the_bookmark(
    client: TestClient[Any, Any],
) -> None:
    await _create(client, "a")
    await _create(client, "b")
    listed = await (await client.get(SERVICES)).json()
    rv = int(listed["metadata"]["resourceVersion"])
    resp = await client.get(
        f"{SERVICES}?{WATCH_LIST}&allowWatchBookmarks=true&resourceVersion={rv}"
        "&fieldSelector=metadata.name%3Db")
    assert resp.status == 200
    added, bookmark = await _lines(resp, 2)
    assert (added["type"], added["object"]["metadata"]["name"]) == ("ADDED", "b")
    assert bookmark == {"type": "BOOKMARK", "object": {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"resourceVersion": str(rv), "annotations": {INITIAL_EVENTS_END: "true"}}}}
    await _create(client, "c")  # not b: filtered
    await client.delete(f"{SERVICES}/b")
    [deleted] = await _lines(resp, 1)
    assert (deleted["type"], deleted["object"]["metadata"]["name"]) == ("DELETED", "b")
    resp.close()


async def test_watch_list_of_nothing_is_just_the_bookmark(client: TestClient[Any, Any]) -> None:
    resp = await client.get(f"{SERVICES}?{WATCH_LIST}&allowWatchBookmarks=true&timeoutSeconds=1")
    body = await asyncio.wait_for(resp.content.read(), 5)
    [event] = [orjson.loads(line) for line in body.splitlines()]
    assert event["type"] == "BOOKMARK"
    assert event["object"]["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}


async def test_watch_list_errors(client: TestClient[Any, Any]) -> None:
    resp = await client.get(f"{SERVICES}?{WATCH_LIST}")  # no allowWatchBookmarks
    assert resp.status == 400 and "allowWatchBookmarks" in (await resp.json())["message"]
    resp = await client.get(f"{SERVICES}?{WATCH_LIST}&allowWatchBookmarks=true"
                            "&resourceVersion=999999")
    body = await resp.json()
    assert resp.status == 504 and body["reason"] == "Timeout"
    assert "Too large resource version: 999999" in body["message"]


async def test_watch_without_initial_events_starts_now(client: TestClient[Any, Any]) -> None:
    await _create(client, "old")
    resp = await client.get(f"{SERVICES}?watch=true&sendInitialEvents=false"
                            "&resourceVersionMatch=NotOlderThan")
    await _create(client, "new")
    [event] = await _lines(resp, 1)
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "new")
    resp.close()
