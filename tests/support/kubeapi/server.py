"""The fake's HTTP face: Kubernetes API paths on an aiohttp server on 127.0.0.1, an ephemeral port."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from . import errors, node_paths, patches, pods, resources, scale
from .admission import Admission, AdmittedWrites
from .clock import Clock
from .errors import ApiError
from .resources import Resource
from .selectors import field_matcher, label_matcher
from .store import Event, Store, Watcher
from .tokens import Tokens

JSON = dict[str, Any]
_TRUE = ("true", "True", "TRUE", "t", "T", "1")  # Go's strconv.ParseBool; kubernetes-asyncio sends "True"


def _json(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    response = web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
    for warning in warnings or []:
        response.headers.add("Warning", '299 - "' + warning.replace('"', '\\"') + '"')
    return response


@dataclass
class _Target:
    """What a resource path names."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None


class KubeApiFake:
    """The contract fake of the Kubernetes API (see the package docstring for what it copies)."""

    def __init__(
        self, bookmark_interval: float = 0.5, webhook_addresses: dict[str, str] | None = None
    ) -> None:
        self.store = Store()
        self.webhook_addresses: dict[str, str] = dict(webhook_addresses or {})
        """Where a webhook configuration's `clientConfig.service` `<namespace>/<name>` listens
        (`host:port`); admission.py calls it there, verifying the name `<name>.<namespace>.svc`."""
        self.admission = Admission(self.store, self.webhook_addresses)
        self._writes = AdmittedWrites(self.store, self.admission)
        self.bookmark_interval = bookmark_interval
        self.kubelet_logs: Path | None = None
        """The kubelet stand-in's log directory, which `pods/log` reads (None: no node)."""
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.watch_requests = 0
        """Watch requests served so far (each reconnection of a client is one more)."""
        self._live: dict[Watcher, web.Request] = {}
        self._hung: set[Watcher] = set()
        self.clock = Clock()
        """What issued tokens expire by (`advance_clock`); objects' timestamps keep the real time."""
        self.tokens = Tokens(self.clock)

    # --- lifecycle and test controls ------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self.store.close_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubeApiFake:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def compact(self) -> int:
        """Forget the watch history up to now; a watch from an older resourceVersion then gets 410."""
        return self.store.compact()

    @property
    def open_watches(self) -> int:
        """Watches being served now (hung ones included)."""
        return len(self._live)

    def drop_watches(self) -> int:
        """Cut the connection of every open watch, mid-stream, without the chunked encoding's end
        (what a client sees when a proxy or the server dies); returns how many were cut."""
        live = list(self._live.items())
        for watcher, request in live:
            if request.transport is not None:
                request.transport.abort()
            watcher.queue.put_nowait(None)
        return len(live)

    def hang_watches(self) -> int:
        """Make every open watch go silent: it stays connected but sends nothing more, neither
        events nor BOOKMARKs, until the client gives up on it (watches opened later are served
        as usual); returns how many."""
        self._hung.update(self._live)
        return len(self._live)

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock forward: tokens issued earlier may now have expired."""
        self.clock.advance(seconds)

    # --- routing --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as e:
            return _json(e.status(), status=e.code)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        store = self.store
        if request.method == "GET":
            if parts == ["api"]:
                return _json(resources.api_versions(request.host))
            if parts == ["apis"]:
                return _json(resources.api_group_list(store.groups()))
            if parts == ["version"]:
                return _json({"major": "1", "minor": "34", "gitVersion": "v1.34.0-flint-kubeapi-fake"})
            if len(parts) == 2 and parts[0] == "api":
                return _json(self._resource_list("", parts[1]))
            if len(parts) == 2 and parts[0] == "apis":
                versions = store.groups().get(parts[1])
                if not versions:
                    raise _no_path()
                return _json(resources.api_group(parts[1], versions))
            if len(parts) == 3 and parts[0] == "apis":
                return _json(self._resource_list(parts[1], parts[2]))
        if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4:7:2] == ["pods", "log"]:
            if request.method != "GET":
                raise _not_allowed()
            return await node_paths.pod_log(request, store, self.kubelet_logs, parts[3], parts[5])
        if len(parts) >= 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "services" \
                and parts[6] == "proxy":
            return await node_paths.service_proxy(request, store, parts[3], parts[5], parts[7:])
        if parts == ["apis", "authentication.k8s.io", "v1", "tokenreviews"]:
            if request.method != "POST":
                raise _not_allowed()
            return _json(self.tokens.review(await self._object_body(request), self._account), status=201)
        target = self._target(parts)
        method = request.method
        if target.name is None:
            if method == "GET":
                if request.query.get("watch") in _TRUE:
                    return await self._watch(request, target)
                return self._list(request, target)
            if method == "POST":
                return await self._create(request, target)
            if method == "DELETE":
                return self._delete_collection(request, target)
        elif target.sub == "binding":
            if method == "POST":
                body = await self._object_body(request)
                return _json(
                    pods.bind(self.store, target.res, target.namespace or "", target.name, body), status=201
                )
        elif target.sub == "token":
            if method == "POST":
                account = self.store.get(target.res, target.namespace or "", target.name)
                return _json(self.tokens.request(account, await self._object_body(request)), status=201)
        else:
            if method == "GET":
                return self._get(target)
            if method == "PUT":
                return await self._replace(request, target)
            if method == "PATCH":
                return await self._patch(request, target)
            if method == "DELETE":
                return await self._delete(request, target)
        raise _not_allowed()

    def _account(self, namespace: str, name: str) -> JSON | None:
        """The ServiceAccount `namespace/name`, or None (what a TokenReview checks a token against)."""
        try:
            return self.store.get(self.store.resource("", "v1", "serviceaccounts"), namespace, name)
        except ApiError:
            return None

    def _resource_list(self, group: str, version: str) -> JSON:
        served = self.store.by_group_version(group, version)
        if not served:
            raise _no_path()
        return resources.api_resource_list(f"{group}/{version}" if group else version, served)

    def _target(self, parts: list[str]) -> _Target:
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise _no_path()
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            candidate = self.store.served.get((group, version, rest[2]))
            if candidate is not None and candidate.namespaced:
                namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise _no_path()
        res = self.store.resource(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if (res.namespaced and name is not None and namespace is None) or (
            sub is not None
            and not (
                (sub == "status" and res.status)
                or (sub == "scale" and res.scale)
                or (sub == "binding" and pods.is_pod(res))
                or (sub == "token" and res.token)
            )
        ):
            raise _no_path()
        return _Target(res, namespace, name, sub)

    # --- reads ----------------------------------------------------------------------------------

    def _get(self, target: _Target) -> web.Response:
        assert target.name is not None
        obj = self.store.get(target.res, target.namespace or "", target.name)
        if target.sub == "scale":
            return _json(scale.to_scale(target.res, obj))
        return _json(obj)

    def _matcher(self, request: web.Request, res: Resource) -> Any:
        labels = label_matcher(request.query.get("labelSelector"))
        fields = field_matcher(request.query.get("fieldSelector"), res.plural)
        return lambda obj: labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)

    def _list(self, request: web.Request, target: _Target) -> web.Response:
        if request.query.get("resourceVersionMatch") == "NotOlderThan":
            wanted = request.query.get("resourceVersion") or "0"
            try:
                requested = int(wanted)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{wanted}"') from None
            if requested > self.store.rv:
                raise errors.too_large(requested, self.store.rv)
        items, rv = self.store.list_objects(target.res, target.namespace, self._matcher(request, target.res))
        return _json(
            {
                "kind": f"{target.res.kind}List",
                "apiVersion": target.res.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, target: _Target) -> web.StreamResponse:
        self.watch_requests += 1
        res = target.res
        match = self._matcher(request, res)
        bookmarks = request.query.get("allowWatchBookmarks") in _TRUE
        timeout = request.query.get("timeoutSeconds")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(timeout) if timeout else None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher, backlog = self.store.watch(res, target.namespace, request.query.get("resourceVersion"))
        except ApiError as e:
            if e.code != 410:
                raise
            await response.prepare(request)  # a real server answers 200, then an ERROR event
            await response.write(orjson.dumps({"type": "ERROR", "object": e.status()}) + b"\n")
            await response.write_eof()
            return response
        self._live[watcher] = request
        try:
            await response.prepare(request)
            for owed in backlog:
                await self._send(response, res, owed, match)
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        break
                    wait = left if wait is None else min(wait, left)
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), wait)
                except TimeoutError:
                    if bookmarks and watcher not in self._hung:
                        mark = {
                            "kind": res.kind,
                            "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": str(self.store.rv)},
                        }
                        await response.write(orjson.dumps({"type": "BOOKMARK", "object": mark}) + b"\n")
                    continue
                if event is None:
                    break
                if watcher not in self._hung:
                    await self._send(response, res, event, match)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            self.store.unwatch(watcher)
            self._live.pop(watcher, None)
            self._hung.discard(watcher)
        return response

    async def _send(self, response: web.StreamResponse, res: Resource, event: Event, match: Any) -> None:
        now, before = match(event.obj), event.old is not None and match(event.old)
        kind = event.type
        if kind == "MODIFIED" and event.old is not None:
            if now and not before:
                kind = "ADDED"
            elif before and not now:
                kind, now = "DELETED", True
        if not now:
            return
        line = {"type": kind, "object": self.store.view(res, event.obj)}
        await response.write(orjson.dumps(line) + b"\n")

    # --- writes ---------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return None
        try:
            if request.content_type == patches.APPLY:
                return yaml.safe_load(raw)
            return orjson.loads(raw)
        except (orjson.JSONDecodeError, yaml.YAMLError) as e:
            raise errors.bad_request(f"the body of the request could not be decoded: {e}") from None

    async def _object_body(self, request: web.Request) -> JSON:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON object")
        return body

    async def _create(self, request: web.Request, target: _Target) -> web.Response:
        body = await self._object_body(request)
        obj, warnings = await self._writes.create(
            target.res, target.namespace or "", body, request.query.get("fieldValidation")
        )
        return _json(obj, status=201, warnings=warnings)

    async def _replace(self, request: web.Request, target: _Target) -> web.Response:
        assert target.name is not None
        body = await self._object_body(request)
        namespace = target.namespace or ""
        if target.sub == "scale":
            current = self.store.get(target.res, namespace, target.name)
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise errors.conflict(target.res, target.name)
            new = scale.with_replicas(target.res, current, (body.get("spec") or {}).get("replicas", 0))
            obj, _ = self.store.update(target.res, namespace, target.name, new, require_rv=False)
            return _json(scale.to_scale(target.res, obj))
        obj, warnings = await self._writes.update(
            target.res, namespace, target.name, body, target.sub, request.query.get("fieldValidation")
        )
        return _json(obj, warnings=warnings)

    async def _patch(self, request: web.Request, target: _Target) -> web.Response:
        assert target.name is not None
        res, namespace, name = target.res, target.namespace or "", target.name
        kind = request.content_type
        accepted = [patches.JSON_PATCH, patches.MERGE, patches.APPLY] + (
            [] if res.custom else [patches.STRATEGIC]
        )
        if kind not in accepted:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(accepted)}",
            )
        patch = await self._body(request)
        validation = request.query.get("fieldValidation")
        if kind == patches.APPLY:
            if not request.query.get("fieldManager"):
                raise errors.bad_request("PATCH /apply requires fieldManager to be set")
            if not isinstance(patch, dict):
                raise errors.bad_request("the apply configuration must be an object")
            try:
                current = self.store.get(res, namespace, name)
            except ApiError as e:
                if e.code != 404 or target.sub is not None:
                    raise
                obj, warnings = await self._writes.create(
                    res,
                    namespace,
                    {**patch, "metadata": {**(patch.get("metadata") or {}), "name": name}},
                    validation,
                )
                return _json(obj, status=201, warnings=warnings)
        else:
            current = self.store.get(res, namespace, name)
        if target.sub == "scale":
            view = scale.to_scale(res, current)
            new_scale = self._patched(kind, view, patch)
            if (new_scale.get("metadata") or {}).get("resourceVersion") != current["metadata"][
                "resourceVersion"
            ]:
                raise errors.conflict(res, name)
            new = scale.with_replicas(res, current, (new_scale.get("spec") or {}).get("replicas", 0))
            obj, _ = self.store.update(res, namespace, name, new, require_rv=False)
            return _json(scale.to_scale(res, obj))
        new = self._patched(kind, current, patch)
        if "resourceVersion" not in (new.get("metadata") or {}):
            new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
        obj, warnings = await self._writes.update(res, namespace, name, new, target.sub, validation,
                                                  require_rv=False)
        return _json(obj, warnings=warnings)

    @staticmethod
    def _patched(kind: str, current: JSON, patch: Any) -> JSON:
        if kind == patches.JSON_PATCH:
            out = patches.json_patch(current, patch)
        elif kind == patches.APPLY:
            out = patches.apply_merge(current, patch)
        else:
            if not isinstance(patch, dict):
                raise errors.bad_request("a merge patch must be a JSON object")
            out = patches.merge_patch(current, patch)
        if not isinstance(out, dict):
            raise errors.bad_request("the patched object is not a JSON object")
        return out

    async def _delete_options(self, request: web.Request) -> JSON:
        body = await self._body(request)
        options: JSON = dict(body) if isinstance(body, dict) else {}
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            try:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            except ValueError:
                raise errors.bad_request(
                    f'invalid gracePeriodSeconds "{query["gracePeriodSeconds"]}"'
                ) from None
        if "orphanDependents" in query:
            options["orphanDependents"] = query["orphanDependents"] in _TRUE
        return options

    async def _delete(self, request: web.Request, target: _Target) -> web.Response:
        assert target.name is not None
        res = target.res
        obj, deleted = self.store.delete(
            res, target.namespace or "", target.name, await self._delete_options(request)
        )
        if deleted and not res.returns_deleted:
            details: JSON = {"name": target.name, "kind": res.plural, "uid": obj["metadata"]["uid"]}
            if res.group:
                details["group"] = res.group
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        return _json(obj)

    def _delete_collection(self, request: web.Request, target: _Target) -> web.Response:
        res = target.res
        items, _ = self.store.list_objects(res, target.namespace, self._matcher(request, res))
        out = []
        for item in items:
            meta = item["metadata"]
            with contextlib.suppress(ApiError):
                out.append(self.store.delete(res, meta.get("namespace", ""), meta["name"], {})[0])
        return _json(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": out,
            }
        )


def _not_allowed() -> ApiError:
    return ApiError(
        405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
    )


def _no_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})
