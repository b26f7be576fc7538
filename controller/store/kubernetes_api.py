"""Flint's custom resources through kubernetes-asyncio's CustomObjectsApi, as JSON in and JSON out;
kinds of the core group (`Kind("", "services")`) are read through its CoreV1Api (get, list, watch:
what an informer needs; their writes are refused, the workloads make them with `core_call`).

Every call goes with `_preload_content=False` and this module reads the body itself: the
generated client deserializes only the status codes its OpenAPI lists (a 202 from a delete, a
200 from a create would come back as None) and types bodies as models. Its stubs also omit
`_content_type`, which a merge patch needs (a dict body is otherwise sent as JSON-patch and
refused): the one `Any` of the Kubernetes store is the CustomObjectsApi held here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from controller.store.base import BadRequest, Kind, Obj, StoreError
from controller.store.kubernetes_errors import store_error

MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True, slots=True)
class Served:
    """What the API server calls a kind: its version and its `kind` (the group and plural are the
    store's `Kind`)."""

    version: str
    kind: str


KindVersions = Mapping[Kind, tuple[str, str]]
"""Each Kind's (version, kind name), e.g. `controller.api.registry.served_kinds()` for Flint's."""


class CustomObjects:
    """The custom-object calls the store makes; errors come back as the Store protocol's."""

    def __init__(
        self,
        api: client.ApiClient,
        kinds: KindVersions,
        request_timeout_s: float,
    ) -> None:
        self._api: Any = client.CustomObjectsApi(api)  # see the module docstring
        self._core: Any = client.CoreV1Api(api)
        self._kinds = {k: Served(version, name) for k, (version, name) in kinds.items()}
        self._timeout = aiohttp.ClientTimeout(total=request_timeout_s)

    @property
    def host(self) -> str:
        return str(self._api.api_client.configuration.host)

    def served(self, kind: Kind) -> Served:
        try:
            return self._kinds[kind]
        except KeyError:
            known = ", ".join(sorted(str(k) for k in self._kinds))
            raise BadRequest(f"unknown kind {kind}; this store serves {known}", kind=kind) from None

    def _core_method(self, kind: Kind, namespace: str | None, verb: str) -> str:
        """The CoreV1Api method that `verb`s (`read`, `list`) a core kind, e.g.
        `list_namespaced_service`, `list_service_for_all_namespaces`."""
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", self.served(kind).kind).lower()
        if namespace is None:
            return f"{verb}_{snake}_for_all_namespaces"
        return f"{verb}_namespaced_{snake}"

    async def _call(self, kind: Kind, name: str, method: str, *args: Any, **kwargs: Any) -> Obj:
        kwargs.setdefault("_request_timeout", self._timeout)
        api = self._core if not kind.group else self._api
        try:
            response = await getattr(api, method)(*args, _preload_content=False, **kwargs)
            try:
                data = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise unreachable(self.host, kind, name, e) from e
        if not 200 <= response.status < 300:
            raise store_error(response.status, data, kind=kind, name=name)
        body: Obj = orjson.loads(data)
        return body

    def _where(self, kind: Kind, namespace: str) -> tuple[str, str, str, str]:
        if not kind.group:
            raise BadRequest(f"{kind}: this store only reads the core group's kinds", kind=kind)
        return kind.group, self.served(kind).version, namespace, kind.plural

    async def create(self, kind: Kind, namespace: str, body: Obj, name: str) -> Obj:
        return await self._call(
            kind, name, "create_namespaced_custom_object", *self._where(kind, namespace), body
        )

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        if not kind.group:
            return await self._call(kind, name, self._core_method(kind, namespace, "read"), name, namespace)
        return await self._call(
            kind, name, "get_namespaced_custom_object", *self._where(kind, namespace), name
        )

    async def list(self, kind: Kind, namespace: str | None, **query: Any) -> Obj:
        """A list (all namespaces when `namespace` is None) with query parameters as the
        generated client names them (`resource_version`, `resource_version_match`…)."""
        if not kind.group:
            where = () if namespace is None else (namespace,)
            return await self._call(kind, "", self._core_method(kind, namespace, "list"), *where, **query)
        if namespace is None:
            version = self.served(kind).version
            return await self._call(
                kind, "", "list_cluster_custom_object", kind.group, version, kind.plural, **query
            )
        return await self._call(
            kind, "", "list_namespaced_custom_object", *self._where(kind, namespace), **query
        )

    async def replace(
        self, kind: Kind, namespace: str, name: str, body: Obj, *, status: bool = False
    ) -> Obj:
        method = "replace_namespaced_custom_object" + ("_status" if status else "")
        return await self._call(kind, name, method, *self._where(kind, namespace), name, body)

    async def merge_patch(
        self, kind: Kind, namespace: str, name: str, patch: Obj, *, status: bool = False
    ) -> Obj:
        method = "patch_namespaced_custom_object" + ("_status" if status else "")
        return await self._call(
            kind, name, method, *self._where(kind, namespace), name, patch,
            _content_type=MERGE_PATCH,
        )

    async def scale(self, kind: Kind, namespace: str, name: str, replicas: int) -> Obj:
        """Set `spec.replicas` through the scale subresource (a merge patch of the Scale)."""
        return await self._call(
            kind, name, "patch_namespaced_custom_object_scale", *self._where(kind, namespace), name,
            {"spec": {"replicas": replicas}}, _content_type=MERGE_PATCH,
        )

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        return await self._call(
            kind, name, "delete_namespaced_custom_object", *self._where(kind, namespace), name
        )

    async def watch(
        self,
        kind: Kind,
        namespace: str | None,
        resource_version: str,
        timeout_s: int,
        connect_timeout_s: float,
        field_selector: str | None = None,
    ) -> aiohttp.ClientResponse:
        """The raw response of a watch (200 checked), to read line by line; the caller releases
        it. A refused watch (not 200) raises the store error its Status says. `field_selector`:
        e.g. `metadata.name=X` (one object: RBAC may then grant the watch by resourceNames)."""
        query: dict[str, Any] = {
            "watch": True,
            "allow_watch_bookmarks": True,
            "timeout_seconds": timeout_s,
            "resource_version": resource_version,
            "_preload_content": False,
            "_request_timeout": aiohttp.ClientTimeout(sock_connect=connect_timeout_s),
        }
        if field_selector:
            query["field_selector"] = field_selector
        version = self.served(kind).version
        if not kind.group:
            where = () if namespace is None else (namespace,)
            call = getattr(self._core, self._core_method(kind, namespace, "list"))(*where, **query)
        elif namespace is None:
            call = self._api.list_cluster_custom_object(kind.group, version, kind.plural, **query)
        else:
            call = self._api.list_namespaced_custom_object(
                kind.group, version, namespace, kind.plural, **query
            )
        response: aiohttp.ClientResponse = await call
        if response.status != 200:
            try:
                data = await response.read()
            finally:
                response.release()
            raise store_error(response.status, data, kind=kind)
        return response


def unreachable(host: str, kind: Kind, name: str, error: BaseException) -> StoreError:
    """The API server did not answer (refused, reset, timed out): a 503 naming it."""
    what = f'{kind} "{name}"' if name else str(kind)
    err = StoreError(
        f"the Kubernetes API server at {host} did not answer about {what}: {error!r}; check that "
        "it is up and that the kubeconfig (or the Pod's service account) points at it",
        kind=kind, name=name,
    )
    err.code, err.reason = 503, "ServiceUnavailable"
    return err
