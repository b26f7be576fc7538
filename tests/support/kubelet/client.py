"""JSON over kubernetes-asyncio's ApiClient, and a list+watch cache (an informer) of one kind."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

JSON = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
log = logging.getLogger("flint.tests.kubelet")


class KubeError(Exception):
    """A call the API server refused: its HTTP code and Status body."""

    def __init__(self, code: int, body: JSON) -> None:
        super().__init__(f"{code}: {body.get('message', body)}")
        self.code = code
        self.body = body


def collection_path(group: str, version: str, plural: str, namespace: str | None) -> str:
    """`/api/v1/namespaces/ns/pods`, `/apis/apps/v1/deployments` (all namespaces)…"""
    root = f"/apis/{group}/{version}" if group else f"/api/{version}"
    return f"{root}/namespaces/{namespace}/{plural}" if namespace else f"{root}/{plural}"


class Kube:
    """The calls the stand-in makes: any path, JSON bodies, errors as `KubeError`."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: JSON | None = None,
        content_type: str = "application/json",
        timeout_s: float = 10.0,
    ) -> JSON:
        response = await self.api.call_api(
            path,
            method,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(total=timeout_s),
        )
        try:
            data = await response.read()
        finally:
            response.release()
        out: JSON = orjson.loads(data) if data else {}
        if not 200 <= response.status < 300:
            raise KubeError(response.status, out)
        return out

    async def create(self, path: str, body: JSON) -> JSON:
        return await self.call("POST", path, body)

    async def merge_patch(self, path: str, patch: JSON) -> JSON:
        return await self.call("PATCH", path, patch, content_type=MERGE_PATCH)

    async def replace(self, path: str, body: JSON) -> JSON:
        return await self.call("PUT", path, body)

    async def delete(self, path: str, query: JSON | None = None, body: JSON | None = None) -> JSON:
        return await self.call("DELETE", path, body, query)


def key_of(obj: JSON) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


def _rv(obj: JSON) -> int:
    # etcd's revisions are integers; a client may not rely on that, a test stand-in may.
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


class Informer:
    """The objects of one kind (a namespace, or all), kept by list then watch; `on_change` is
    called after every change. Writes may `observe` their answers so the cache is never behind
    the stand-in's own writes (what client-go's controllers do with expectations)."""

    def __init__(self, kube: Kube, path: str, on_change: Callable[[], None]) -> None:
        self.kube = kube
        self.path = path
        self.on_change = on_change
        self.items: dict[tuple[str, str], JSON] = {}
        self.synced = asyncio.Event()
        self._rv = ""
        self._gone: dict[tuple[str, str], int] = {}  # deleted at this resourceVersion (late events lose)

    def observe(self, obj: JSON) -> None:
        key = key_of(obj)
        current = self.items.get(key)
        if (current is None or _rv(obj) > _rv(current)) and _rv(obj) > self._gone.get(key, -1):
            self.items[key] = obj
            self.on_change()

    def forget(self, obj: JSON) -> None:
        key = key_of(obj)
        self._gone[key] = max(self._gone.get(key, 0), _rv(obj))
        if self.items.pop(key, None) is not None:
            self.on_change()

    async def run(self) -> None:
        while True:
            try:
                if not self._rv:
                    await self._list()
                await self._watch()
            except asyncio.CancelledError:
                raise
            except KubeError as e:
                if e.code == 410:
                    self._rv = ""  # too old: list again
                    continue
                log.warning("watch of %s failed: %s", self.path, e)
                await asyncio.sleep(0.2)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                log.info("watch of %s dropped (%r); resuming from %s", self.path, e, self._rv)
                await asyncio.sleep(0.1)

    async def _list(self) -> None:
        listed = await self.kube.call("GET", self.path)
        self._rv = listed["metadata"]["resourceVersion"]
        self.items = {key_of(obj): obj for obj in listed.get("items") or []}
        self._gone.clear()
        self.synced.set()
        self.on_change()

    async def _watch(self) -> None:
        query = {"watch": "true", "allowWatchBookmarks": "true", "resourceVersion": self._rv,
                 "timeoutSeconds": "60"}
        response = await self.kube.api.call_api(
            self.path, "GET", query_params=list(query.items()),
            header_params={"Accept": "application/json"}, _preload_content=False,
            _request_timeout=aiohttp.ClientTimeout(sock_connect=5),
        )
        try:
            if response.status != 200:
                raise KubeError(response.status, orjson.loads(await response.read() or b"{}"))
            while True:
                line = await response.content.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    raise KubeError(int(obj.get("code") or 500), obj)
                rv = (obj.get("metadata") or {}).get("resourceVersion")
                if rv:
                    self._rv = rv
                if kind in ("ADDED", "MODIFIED"):
                    self.observe(obj)
                elif kind == "DELETED":
                    self.forget(obj)
        finally:
            with contextlib.suppress(Exception):
                response.close()
