"""The Store protocol over a Kubernetes API server: Flint's kinds as custom resources (deploy/crds).

What maps where (kubernetes-asyncio's CustomObjectsApi, `kubernetes_api.py`):

- `create` POSTs (a client-sent resourceVersion, uid, creationTimestamp or generation is dropped;
  apiVersion and kind are filled in when missing); `get`, `list` as such, `list(...,
  not_older_than=rv)` with `resourceVersion=rv&resourceVersionMatch=NotOlderThan`;
- `update` PUTs the object (the API server keeps `status`, bumps `generation` on a spec change);
  with `metadata.resourceVersion` it is optimistic (a stale one is `Conflict`); without one it is
  unconditional, as the protocol says: read, PUT under the version read, and on `Conflict` read
  again (`retry.mutate`, `settings.retries` attempts). A custom resource cannot be PUT without a
  resourceVersion at all;
- `update_status` PUTs the `status` subresource the same way (never bumping `generation`): with
  a resourceVersion optimistic, without one read-modify-write. A PUT and not a merge patch, since
  the protocol replaces `status` (a merge patch would keep the fields the new status drops);
  `patch` and `patch_status` are the merge patches (`application/merge-patch+json`, named
  explicitly: the client would send a dict as JSON-patch);
- `delete` answers the object as deleted, or as marked (`deletionTimestamp`) while finalizers
  hold it, from the body of any 2xx (a 202 included, which the generated client turns into
  None); the children go by their owner references (the cluster's garbage collector);
- `watch` is `KubeWatch` (`kubernetes_watch.py`): list then watch, resume, bookmarks, 410 as
  `Gone`, reconnection after a drop, an end or `inactivity_s` of silence;
- errors are the API server's Status mapped by `kubernetes_errors.store_error`, naming the kind
  and the object; an API server that does not answer is a 503 `StoreError` naming it.
  resourceVersions are the API server's opaque strings, passed through.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import aiohttp
from kubernetes_asyncio import client

from controller.store import logic
from controller.store.base import BadRequest, Kind, Obj, WatchEvent
from controller.store.kubernetes_api import CustomObjects, KindVersions
from controller.store.kubernetes_config import KubernetesSettings, load_configuration
from controller.store.kubernetes_watch import KubeWatch
from controller.store.retry import mutate

_SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation")
"""Metadata the API server sets on create; a client's copy is dropped."""


class KubernetesStore:
    """A Store whose objects are custom resources on a Kubernetes API server."""

    def __init__(
        self,
        api: client.ApiClient,
        kinds: KindVersions,
        settings: KubernetesSettings | None = None,
        *,
        owns_client: bool = False,
    ) -> None:
        """`api` is used as given (closed by `close` only when `owns_client`); `kinds` maps each
        Kind to its served version and kind name (Flint's: `controller.api.registry.served_kinds()`;
        the store cannot import controller.api, which imports it)."""
        self.settings = settings or KubernetesSettings()
        self._client = api
        self._owns_client = owns_client
        self._api = CustomObjects(
            api, kinds, self.settings.request_timeout_s
        )
        self._closing = asyncio.Event()
        self._watch_responses: set[aiohttp.ClientResponse] = set()

    @classmethod
    async def connect(
        cls, kinds: KindVersions, settings: KubernetesSettings | None = None
    ) -> KubernetesStore:
        """A store on the cluster `settings` name: in-cluster inside a Pod, else the kubeconfig."""
        settings = settings or KubernetesSettings()
        configuration = await load_configuration(settings)
        return cls(client.ApiClient(configuration), kinds, settings, owns_client=True)

    @property
    def api_client(self) -> client.ApiClient:
        """The client it talks through (the engine's other API calls share it)."""
        return self._client

    async def open(self) -> None:
        """Nothing to open; present so every store is started the same way."""

    async def close(self) -> None:
        """End every watch (they stop without an error) and, if it is ours, close the client."""
        self._closing.set()
        for response in list(self._watch_responses):
            response.close()
        if self._owns_client:
            await self._client.close()

    def _namespace(self, obj: Obj) -> str:
        ns = logic.meta(obj).get("namespace")
        return ns if isinstance(ns, str) and ns else self.settings.namespace

    def _typed(self, kind: Kind, obj: Obj) -> Obj:
        """A copy of `obj` with apiVersion and kind (the API server wants both in a body)."""
        served = self._api.served(kind)
        body = logic.copy_obj(obj)
        body.setdefault("apiVersion", f"{kind.group}/{served.version}")
        body.setdefault("kind", served.kind)
        return body

    async def create(self, kind: Kind, obj: Obj) -> Obj:
        body = self._typed(kind, obj)
        md = logic.meta(body)
        name = logic.name_of(body)
        if not name and not md.get("generateName"):
            raise BadRequest(
                f"{kind}: metadata.name: Required value: name or generateName is required",
                kind=kind,
            )
        for key in _SERVER_FIELDS:
            md.pop(key, None)
        md["namespace"] = self._namespace(body)
        return await self._api.create(kind, md["namespace"], body, name)

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        return await self._api.get(kind, namespace, name)

    async def list(
        self, kind: Kind, namespace: str | None = None, *, not_older_than: str = ""
    ) -> tuple[list[Obj], str]:
        query = (
            {"resource_version": not_older_than, "resource_version_match": "NotOlderThan"}
            if not_older_than
            else {}
        )
        listed = await self._api.list(kind, namespace, **query)
        meta = listed.get("metadata") or {}
        return list(listed.get("items") or []), str(meta.get("resourceVersion") or "")

    async def update(self, kind: Kind, obj: Obj) -> Obj:
        return await self._put(kind, obj, status=False)

    async def update_status(self, kind: Kind, obj: Obj) -> Obj:
        return await self._put(kind, obj, status=True)

    async def _put(self, kind: Kind, obj: Obj, *, status: bool) -> Obj:
        namespace, name = self._namespace(obj), logic.name_of(obj)
        if logic.meta(obj).get("resourceVersion") in (None, ""):
            return await mutate(
                self, kind, namespace, name, lambda current: _as_of(obj, current),
                status=status, attempts=self.settings.retries,
            )
        body = self._typed(kind, obj)
        logic.meta(body)["namespace"] = namespace
        return await self._api.replace(kind, namespace, name, body, status=status)

    async def patch(self, kind: Kind, namespace: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch (RFC 7386) of the object (`status` in it is ignored)."""
        return await self._api.merge_patch(kind, namespace, name, patch)

    async def patch_status(self, kind: Kind, namespace: str, name: str, patch: Obj) -> Obj:
        """A JSON merge patch of the status subresource (only `status` is applied)."""
        return await self._api.merge_patch(kind, namespace, name, patch, status=True)

    async def scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> Obj:
        """Set a scalable object's replicas through its scale subresource; the Scale written."""
        return await self._api.scale(kind, namespace, name, replicas)

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        return await self._api.delete(kind, namespace, name)

    def watch(
        self, kind: Kind, namespace: str | None = None, since: str = "", *, name: str | None = None
    ) -> AsyncIterator[WatchEvent]:
        """A `KubeWatch`; a `since` the API server refuses raises at the first event. `name`:
        that one object only (`fieldSelector=metadata.name=…`: RBAC can grant it by name)."""
        return KubeWatch(
            self._api, kind, namespace, since, self.settings, self._closing, self._watch_responses,
            f"metadata.name={name}" if name else None,
        )


def _as_of(obj: Obj, current: Obj) -> Obj:
    """`obj` to be written over `current` (under its resourceVersion)."""
    body = logic.copy_obj(obj)
    logic.meta(body)["resourceVersion"] = logic.meta(current).get("resourceVersion", "")
    return body

if TYPE_CHECKING:
    from controller.store.base import Store

    def _conforms(store: KubernetesStore) -> Store:
        return store
