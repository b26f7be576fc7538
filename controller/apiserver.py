"""Kubernetes-style REST over the Store, so kubectl-shaped clients (our CLI) manage resources."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import MatchInfoError

from controller.api.printer_columns import columns_for
from controller.api.registry import invalid_status
from controller.api.types import FieldError, Invalid, ResourceType
from controller.apiserver_codec import (
    MERGE_PATCH,
    UNSUPPORTED_PATCH_TYPES,
    ApiError,
    Selector,
    bad_request,
    decode_body,
    failure_status,
    merge_patch,
    respond,
)
from controller.apiserver_discovery import api_group, api_group_list, api_resource_list
from controller.apiserver_openapi import add_routes as add_openapi_routes
from controller.apiserver_openapi import check_fields, field_validation
from controller.apiserver_registry import Registry, default_registry
from controller.apiserver_tables import TableOptions, negotiate, table
from controller.apiserver_watch import WatchOptions, initial_events_end, watch_options
from controller.store.base import Conflict, Gone, Obj, Store, StoreError, WatchEvent
from controller.store.logic import copy_obj

log = logging.getLogger("flint.apiserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVER_FIELDS = ("uid", "resourceVersion", "creationTimestamp", "generation")
"""Metadata the server owns; dropped from create requests."""
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
WRITE_ATTEMPTS = 5
"""Retries of a PUT/PATCH that did not pin a resourceVersion, when a concurrent write wins."""
DISCONNECT_POLL_S = 0.5
"""How often an idle watch checks whether its client went away (aiohttp does not cancel it)."""


def make_api_app(
    store: Store, registry: Registry | None = None, *, guard: Middleware | None = None
) -> web.Application:
    """The API server as an aiohttp application (mount it or run it with an AppRunner); `guard`
    is the credential check every request passes first (`flint_common.httpauth`)."""
    api = _Api(store, registry or default_registry())
    app = web.Application(middlewares=[*([guard] if guard else []), _errors])
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/apis", api.groups)
    app.router.add_get("/apis/{group}", api.group)
    app.router.add_get("/apis/{group}/{version}", api.resources)
    ns_items = "/apis/{group}/{version}/namespaces/{namespace}/{plural}"
    app.router.add_get(ns_items, api.list)
    app.router.add_post(ns_items, api.create)
    item = ns_items + "/{name}"
    app.router.add_get(item, api.get)
    app.router.add_put(item, api.replace)
    app.router.add_patch(item, api.patch)
    app.router.add_delete(item, api.delete)
    app.router.add_get(item + "/status", api.get)
    app.router.add_put(item + "/status", api.replace_status)
    app.router.add_patch(item + "/status", api.patch_status)
    app.router.add_get("/apis/{group}/{version}/{plural}", api.list)
    add_openapi_routes(app, api.registry.TYPES)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as a Kubernetes `Status` object."""
    try:
        return await handler(request)
    except ApiError as e:
        return respond(request, e.status(), e.code)
    except StoreError as e:
        details: Obj = e.details()
        if e.name:
            details["name"] = e.name
        if e.kind is not None:
            details.update(group=e.kind.group, kind=e.kind.plural)
        return respond(request, failure_status(e.code, e.reason, str(e), details), e.code)
    except web.HTTPException as e:
        unrouted = isinstance(request.match_info, MatchInfoError)
        if e.status < 400 or not (unrouted or request.path.startswith("/apis")):
            raise  # routes others add to this app (logs, the gateway link) answer as they like
        error = ApiError(e.status, _http_message(request, e))
        return respond(request, error.status(), e.status)
    except Exception as e:
        log.exception("%s %s failed", request.method, request.path)
        error = ApiError(500, f"internal error: {type(e).__name__}: {e}")
        return respond(request, error.status(), 500)


def _http_message(request: web.Request, e: web.HTTPException) -> str:
    text = (e.text or "").strip()
    if text and text != f"{e.status}: {e.reason}":
        return text
    if e.status == 404:
        return f"the server could not find the requested resource ({request.path})"
    if e.status == 405:
        return f"{request.method} is not supported on {request.path}"
    return e.text or e.reason


def _key_error_message(e: KeyError) -> str:
    return str(e.args[0]) if e.args else str(e)


class _Api:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry

    # -- discovery -------------------------------------------------------------------------

    async def groups(self, request: web.Request) -> web.Response:
        return respond(request, api_group_list(self.registry.TYPES))

    async def group(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        body = api_group(self.registry.TYPES, group)
        if body is None:
            raise ApiError(404, f'the server has no API group "{group}"')
        return respond(request, body)

    async def resources(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        body = api_resource_list(self.registry.TYPES, group, version)
        if body is None:
            raise ApiError(404, f'the server has no API group version "{group}/{version}"')
        return respond(request, body)

    # -- helpers ---------------------------------------------------------------------------

    def _type(self, request: web.Request) -> ResourceType:
        info = request.match_info
        try:
            return self.registry.for_group_version_plural(
                info["group"], info["version"], info["plural"]
            )
        except KeyError as e:
            raise ApiError(404, _key_error_message(e)) from None

    async def _body(self, request: web.Request) -> Obj:
        return decode_body(await request.read(), request.content_type)

    def _check_type(self, rt: ResourceType, obj: Obj) -> None:
        """The body's apiVersion/kind must be the URL's (missing ones are filled from the URL)."""
        api_version = obj.setdefault("apiVersion", rt.api_version)
        kind = obj.setdefault("kind", rt.kind)
        if (api_version, kind) == (rt.api_version, rt.kind):
            return
        if not isinstance(api_version, str) or not isinstance(kind, str):
            raise bad_request("apiVersion and kind must be strings")
        try:
            self.registry.for_api_version_kind(api_version, kind)
        except KeyError as e:
            raise bad_request(_key_error_message(e)) from None
        raise bad_request(
            f"the body is a {kind} ({api_version}) but the URL is for {rt.plural} "
            f"({rt.kind}, {rt.api_version}); send it to that kind's URL or fix apiVersion/kind"
        )

    @staticmethod
    def _check_identity(obj: Obj, namespace: str, name: str | None) -> dict[str, Any]:
        """Fills namespace (and name) from the URL; a different one in the body → 400."""
        md = obj.get("metadata")
        if md is None:
            md = obj["metadata"] = {}
        if not isinstance(md, dict):
            raise bad_request("metadata must be an object")
        if md.get("namespace") and md["namespace"] != namespace:
            raise bad_request(
                f"the namespace of the object ({md['namespace']}) does not match the namespace "
                f"of the URL ({namespace})"
            )
        md["namespace"] = namespace
        if name is not None:
            if md.get("name") and md["name"] != name:
                raise bad_request(
                    f"the name of the object ({md['name']}) does not match the name of the URL "
                    f"({name})"
                )
            md["name"] = name
        return md

    def _admit(
        self, rt: ResourceType, new: Obj, old: Obj | None, fields: str
    ) -> tuple[Obj, list[str]]:
        """Unknown fields and types by the kind's schema (`fields`: the request's
        fieldValidation), then the registry's defaults and validation. The status is not
        checked: a write of the main resource does not change it (only `/status` does, as in
        Kubernetes), and a stored status may hold what a newer controller wrote."""
        try:
            status = new.pop("status", None)
            new, field_warnings = check_fields(rt, new, fields)
            if status is not None:
                new["status"] = status
            admitted, warnings = self.registry.admit(rt, new, old)
            return admitted, field_warnings + warnings
        except Invalid as e:
            name = e.name or str(new.get("metadata", {}).get("name", ""))
            raise _invalid(rt, name, e) from None

    @staticmethod
    def _output(rt: ResourceType, obj: Obj) -> Obj:
        obj["apiVersion"] = rt.api_version
        obj["kind"] = rt.kind
        return obj

    # -- verbs -----------------------------------------------------------------------------

    @staticmethod
    def _table_options(request: web.Request) -> TableOptions | None:
        """What `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (kubectl get) asks for."""
        return negotiate(request.headers.get("Accept", ""), request.query.get("includeObject"))

    @staticmethod
    def _table(rt: ResourceType, objs: Sequence[Obj], options: TableOptions, rv: str) -> Obj:
        now = datetime.now(UTC)
        return table(columns_for(rt.group, rt.kind), objs, options, now, rv)

    async def list(self, request: web.Request) -> web.StreamResponse:
        rt = self._type(request)
        namespace = request.match_info.get("namespace")
        query = request.query
        selector = Selector(query.get("labelSelector", ""), query.get("fieldSelector", ""))
        tables = self._table_options(request)
        if query.get("watch", "").lower() in ("true", "1"):
            return await self._watch(request, rt, namespace, selector, tables)
        items, rv = await self.store.list(rt.store_kind, namespace)
        objs = [self._output(rt, o) for o in items if selector.matches(o)]
        if tables is not None:
            return respond(request, self._table(rt, objs, tables, str(rv)))
        body = {
            "apiVersion": rt.api_version,
            "kind": f"{rt.kind}List",
            "metadata": {"resourceVersion": str(rv)},
            "items": objs,
        }
        return respond(request, body)

    async def get(self, request: web.Request) -> web.Response:
        rt = self._type(request)
        info = request.match_info
        tables = self._table_options(request)
        obj = self._output(rt, await self.store.get(rt.store_kind, info["namespace"], info["name"]))
        if tables is not None:
            rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
            return respond(request, self._table(rt, [obj], tables, rv))
        return respond(request, obj)

    async def create(self, request: web.Request) -> web.Response:
        rt = self._type(request)
        fields = field_validation(request)
        obj = await self._body(request)
        self._check_type(rt, obj)
        md = self._check_identity(obj, request.match_info["namespace"], None)
        for key in SERVER_FIELDS:
            md.pop(key, None)
        obj.pop("status", None)
        _check_name(rt, md)
        admitted, warnings = self._admit(rt, obj, None, fields)
        created = await self.store.create(rt.store_kind, admitted)
        return respond(request, self._output(rt, created), 201, warnings)

    async def delete(self, request: web.Request) -> web.Response:
        rt = self._type(request)
        info = request.match_info
        deleted = await self.store.delete(rt.store_kind, info["namespace"], info["name"])
        return respond(request, self._output(rt, deleted))

    async def replace(self, request: web.Request) -> web.Response:
        return await self._write(request, patch=False, status=False)

    async def patch(self, request: web.Request) -> web.Response:
        return await self._write(request, patch=True, status=False)

    async def replace_status(self, request: web.Request) -> web.Response:
        return await self._write(request, patch=False, status=True)

    async def patch_status(self, request: web.Request) -> web.Response:
        return await self._write(request, patch=True, status=True)

    async def _write(self, request: web.Request, *, patch: bool, status: bool) -> web.Response:
        """PUT/PATCH of an object or its status, retried when a concurrent write wins.

        A body that carries `metadata.resourceVersion` is a conditional write (stale → 409);
        one without is applied to the latest object, re-read and retried on a race.
        """
        rt = self._type(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if patch and request.content_type in UNSUPPORTED_PATCH_TYPES:
            raise ApiError(
                415,
                f'patch type "{request.content_type}" is not supported; use {MERGE_PATCH}',
            )
        fields = field_validation(request)
        body = await self._body(request)
        body_md = body.get("metadata")
        pinned_rv = body_md.get("resourceVersion") if isinstance(body_md, dict) else None
        for _ in range(WRITE_ATTEMPTS):
            old = await self.store.get(rt.store_kind, namespace, name)
            new = merge_patch(old, body) if patch else copy_obj(body)
            self._check_type(rt, new)
            md = self._check_identity(new, namespace, name)
            md["resourceVersion"] = pinned_rv or old["metadata"]["resourceVersion"]
            warnings: list[str] = []
            try:
                if status:
                    result = await self.store.update_status(rt.store_kind, new)
                else:
                    new, warnings = self._admit(rt, new, old, fields)
                    result = await self.store.update(rt.store_kind, new)
            except Conflict:
                if pinned_rv:
                    raise
                continue
            return respond(request, self._output(rt, result), 200, warnings)
        raise ApiError(409, f'{rt.plural}.{rt.group} "{name}" is being modified too often; retry')

    # -- watch -----------------------------------------------------------------------------

    async def _watch(
        self,
        request: web.Request,
        rt: ResourceType,
        namespace: str | None,
        selector: Selector,
        tables: TableOptions | None,
    ) -> web.StreamResponse:
        """Newline-delimited `{"type", "object"}` events, chunked, until the client leaves; a
        watch-list (`sendInitialEvents=true`) first sends the current objects and a BOOKMARK."""
        options = watch_options(request.query)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.timeout_s if options.timeout_s is not None else None
        since, initial = await self._watch_start(rt, namespace, options)
        # Made before the answer starts: a resourceVersion the store refuses is a plain error.
        events = self.store.watch(rt.store_kind, namespace, since)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        first = True

        def encode(kind: str, obj: Obj) -> bytes:
            nonlocal first
            out = self._output(rt, obj)
            if tables is not None:
                now = datetime.now(UTC)
                columns = columns_for(rt.group, rt.kind)
                rv = str((out.get("metadata") or {}).get("resourceVersion", ""))
                out = table(columns, [out], tables, now, rv, definitions=first)
                first = False
            return orjson.dumps({"type": kind, "object": out}) + b"\n"

        try:
            if initial is not None:
                for obj in initial:
                    if selector.matches(obj):
                        await response.write(encode("ADDED", obj))
                end = initial_events_end(rt.api_version, rt.kind, since)
                await response.write(orjson.dumps(end) + b"\n")
            async for event in _until_disconnected(request, events, deadline):
                if not selector.matches(event.object):
                    continue
                await response.write(encode(event.type, event.object))
        except Gone as e:
            error = {"type": "ERROR", "object": failure_status(410, "Expired", str(e))}
            with contextlib.suppress(ConnectionError):
                await response.write(orjson.dumps(error) + b"\n")
        except ConnectionError:
            return response
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _watch_start(
        self, rt: ResourceType, namespace: str | None, options: WatchOptions
    ) -> tuple[str, Sequence[Obj] | None]:
        """Where the store's watch starts, and the objects a watch-list sends first."""
        if options.send_initial_events is None or (
            options.send_initial_events is False and options.since
        ):
            return options.since, None
        items, rv = await self.store.list(rt.store_kind, namespace, not_older_than=options.since)
        return rv, items if options.send_initial_events else None


async def _until_disconnected(
    request: web.Request, events: AsyncIterator[WatchEvent], deadline: float | None
) -> AsyncIterator[WatchEvent]:
    """`events` until they end, the deadline passes or the client disconnects; then closes them."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[WatchEvent] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(events))
            wait = DISCONNECT_POLL_S
            if deadline is not None:
                wait = min(wait, deadline - loop.time())
                if wait <= 0:
                    return
            done, _ = await asyncio.wait({pending}, timeout=wait)
            if not done:
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, StoreError):
                await pending
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def _check_name(rt: ResourceType, md: dict[str, Any]) -> None:
    name, generate = md.get("name"), md.get("generateName")
    if not name and not generate:
        field, message = "metadata.name", "name or generateName is required"
    elif name and (not isinstance(name, str) or not _dns1123(name)):
        field, message = "metadata.name", f'invalid name "{name}": ' + _DNS1123_RULE
    elif not name and (not isinstance(generate, str) or not _dns1123(generate + "x")):
        field, message = "metadata.generateName", f'invalid prefix "{generate}": ' + _DNS1123_RULE
    else:
        return
    raise _invalid(
        rt, str(name or ""), Invalid(rt.kind, str(name or ""), [FieldError(field, message)])
    )


_DNS1123_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character (at most 253 characters)"
)


def _dns1123(name: str) -> bool:
    return len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name) is not None


def _invalid(rt: ResourceType, name: str, e: Invalid) -> ApiError:
    """422 in Kubernetes' words: `Service.serving.knative.dev "hello" is invalid: ...` (the
    admission webhook's denial says the same: `controller.api.registry.invalid_status`)."""
    message, details = invalid_status(rt, name, e.errors)
    return ApiError(422, message, "Invalid", details)
