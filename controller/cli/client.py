"""The CLI's HTTP client for Flint's Kubernetes-style API: discovery, CRUD and errors."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from controller.cli.endpoint import DEFAULT_API, Endpoint
from controller.cli.errors import CliError
from controller.cli.kinds import (
    BUILTIN,
    ResourceInfo,
    by_kind,
    parse_resource_list,
    preferred_versions,
)
from controller.cli.kinds import resolve as resolve_name

Obj = dict[str, Any]
CONFLICT_RETRIES = 5
"""How many times a read-modify-write is retried after a 409 Conflict."""

_WARNING = re.compile(r'^\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')
__all__ = ["DEFAULT_API", "ApiClient", "ApiError", "CliError", "Endpoint", "Unreachable"]

_discovery: dict[str, list[ResourceInfo]] = {}
"""Discovered resources per API base URL, cached for the life of the process."""
_clusters: dict[str, bool] = {}
"""Whether each API base URL is a Kubernetes API server's, asked once per process."""


def is_cluster_answer(doc: Obj) -> bool:
    """Whether a `GET /api` answer is a Kubernetes API server's (the core group's APIVersions);
    Flint's own API serves no core group (it answers 404)."""
    return doc.get("kind") == "APIVersions" and "v1" in (doc.get("versions") or [])


class Unreachable(CliError):
    def __init__(self, api: str) -> None:
        super().__init__(f"cannot reach the Flint API at {api}: is 'flint up' running?")


class Unauthorized(CliError):
    def __init__(self, endpoint: Endpoint) -> None:
        had = "a token" if endpoint.token is not None else "no token"
        super().__init__(
            f"the Flint API at {endpoint.server} refused the request: 401 Unauthorized (sent "
            f"{had}, from {endpoint.source}). `flint up` writes a kubeconfig with the owner's "
            "token to <state-dir>/kubeconfig (and, for the default state dir, to "
            "~/.config/flint/kubeconfig): use --kubeconfig, KUBECONFIG or FLINT_TOKEN"
        )


class ApiError(CliError):
    """The server refused: `status` is its Kubernetes Status object."""

    def __init__(self, status: Obj, http_status: int) -> None:
        self.status = status
        self.code_http = int(status.get("code") or http_status)
        self.reason = str(status.get("reason") or "")
        super().__init__(format_status(status, http_status))


def format_status(status: Obj, http_status: int) -> str:
    """`Error from server (Invalid): message` then one line per cause naming its field path."""
    reason = status.get("reason") or f"HTTP {http_status}"
    message = str(status.get("message") or "").strip() or "(no message)"
    lines = [f"Error from server ({reason}): {message}"]
    for cause in (status.get("details") or {}).get("causes") or []:
        text = str(cause.get("message") or cause.get("reason") or "").strip()
        where = cause.get("field")
        lines.append(f"  {where}: {text}" if where else f"  {text}")
    return "\n".join(lines)


def parse_warning(header: str) -> str:
    """The text of a `299 flint "text"` Warning header (the header itself if not in that form)."""
    m = _WARNING.match(header)
    if not m:
        return header.strip()
    return re.sub(r"\\(.)", r"\1", m.group(1))


class ApiClient:
    """One API endpoint; use as `async with ApiClient(endpoint) as api:` (a URL string is an
    endpoint without a credential)."""

    def __init__(self, endpoint: Endpoint | str = DEFAULT_API, request_timeout: float = 30.0) -> None:
        self.endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint(endpoint)
        self.base_url = self.endpoint.server.rstrip("/")
        self.warnings: list[str] = []
        self.on_warning: Callable[[str], None] | None = None
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=5)
        self._stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("ApiClient used outside 'async with'")
        return self._session

    # -- raw HTTP --------------------------------------------------------------------------

    def auth_headers(self) -> dict[str, str]:
        """The credential, for a request to this endpoint (or the dispatcher it fronts) only."""
        token = self.endpoint.token
        return {"Authorization": f"Bearer {token.reveal()}"} if token is not None else {}

    def transport(self) -> dict[str, Any]:
        """aiohttp request options for this endpoint's TLS."""
        options: dict[str, Any] = {}
        if self.endpoint.ssl is not None:
            options["ssl"] = self.endpoint.ssl
        if self.endpoint.server_hostname:
            options["server_hostname"] = self.endpoint.server_hostname
        if self.endpoint.proxy:
            options["proxy"] = self.endpoint.proxy
        return options

    def connection_error(self, e: BaseException, url: str | None = None) -> CliError:
        """What to say when `url` (default: the API) could not be talked to: an untrusted
        certificate is not "is flint up running?"."""
        where = url or self.base_url
        if isinstance(e, aiohttp.ClientConnectorCertificateError):
            return CliError(f"the TLS certificate of {where} is not trusted "
                            f"({self.endpoint.source}): {e.certificate_error}")
        if isinstance(e, aiohttp.ClientSSLError):
            return CliError(f"TLS with {where} failed ({self.endpoint.source}): {e}")
        return Unreachable(where)

    def _refused(self, status: int) -> None:
        if status == 401:
            raise Unauthorized(self.endpoint)

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        """A JSON request; a non-2xx answer raises ApiError, a dead endpoint Unreachable."""
        data = orjson.dumps(body) if body is not None else None
        headers = {"Accept": "application/json", **self.auth_headers()}
        if data is not None:
            headers["Content-Type"] = content_type
        try:
            async with self.session.request(
                method,
                self.base_url + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self._timeout,
                **self.transport(),
            ) as resp:
                raw = await resp.read()
                self._collect_warnings(resp)
                self._refused(resp.status)
                if resp.status >= 400:
                    raise ApiError(_status_from(raw, resp.status, resp.reason), resp.status)
                return _json_obj(raw)
        except (TimeoutError, aiohttp.ClientConnectionError) as e:
            raise self.connection_error(e) from e

    async def stream(self, path: str, params: dict[str, str] | None = None) -> AsyncIterator[bytes]:
        """The body of a streaming GET in chunks as they arrive."""
        try:
            async with self.session.get(
                self.base_url + path, params=params, timeout=self._stream_timeout,
                headers=self.auth_headers(), **self.transport(),
            ) as resp:
                self._collect_warnings(resp)
                self._refused(resp.status)
                if resp.status >= 400:
                    raw = await resp.read()
                    raise ApiError(_status_from(raw, resp.status, resp.reason), resp.status)
                async for chunk in resp.content.iter_any():
                    yield chunk
        except (TimeoutError, aiohttp.ClientConnectionError) as e:
            raise self.connection_error(e) from e

    def _collect_warnings(self, resp: aiohttp.ClientResponse) -> None:
        for header in resp.headers.getall("Warning", []):
            text = parse_warning(header)
            self.warnings.append(text)
            if self.on_warning is not None:
                self.on_warning(text)

    # -- discovery -------------------------------------------------------------------------

    async def resources(self) -> list[ResourceInfo]:
        """Every served resource, from discovery (once per process); the built-ins if it fails."""
        cached = _discovery.get(self.base_url)
        if cached is not None:
            return cached
        found: list[ResourceInfo] = []
        try:
            groups = await self.request("GET", "/apis")
            for gv in preferred_versions(groups):
                found.extend(parse_resource_list(gv, await self.request("GET", f"/apis/{gv}")))
        except ApiError:
            found = []
        if not found:
            found = list(BUILTIN)
        _discovery[self.base_url] = found
        return found

    async def resolve(self, name: str) -> ResourceInfo:
        return resolve_name(name, await self.resources())

    async def on_cluster(self) -> bool:
        """Whether this endpoint is a Kubernetes cluster's API server (the Kubernetes engine)
        rather than Flint's own API (`flint up`), asked once per process."""
        known = _clusters.get(self.base_url)
        if known is None:
            try:
                doc = await self.request("GET", "/api")
                known = is_cluster_answer(doc)
            except ApiError:
                known = False
            _clusters[self.base_url] = known
        return known

    async def resolve_manifest(self, obj: Obj) -> ResourceInfo:
        api_version, kind = str(obj.get("apiVersion") or ""), str(obj.get("kind") or "")
        found = by_kind(api_version, kind, await self.resources())
        if found is None:
            raise CliError(f'no kind "{kind}" is registered for version "{api_version}"')
        return found

    # -- resources -------------------------------------------------------------------------

    @staticmethod
    def path(info: ResourceInfo, namespace: str | None, name: str | None = None) -> str:
        """`/apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}]`."""
        base = f"/apis/{info.api_version}" if info.group else f"/api/{info.version}"
        if namespace is not None and info.namespaced:
            base += f"/namespaces/{namespace}"
        base += f"/{info.plural}"
        return f"{base}/{name}" if name else base

    async def get(self, info: ResourceInfo, namespace: str, name: str) -> Obj:
        return await self.request("GET", self.path(info, namespace, name))

    async def get_or_none(self, info: ResourceInfo, namespace: str, name: str) -> Obj | None:
        try:
            return await self.get(info, namespace, name)
        except ApiError as e:
            if e.code_http == 404:
                return None
            raise

    async def list(
        self, info: ResourceInfo, namespace: str | None, label_selector: str = ""
    ) -> Obj:
        """A `...List`; `namespace=None` lists every namespace."""
        params = {"labelSelector": label_selector} if label_selector else None
        return await self.request("GET", self.path(info, namespace), params=params)

    async def create(self, info: ResourceInfo, namespace: str, obj: Obj) -> Obj:
        return await self.request("POST", self.path(info, namespace), obj)

    async def replace(self, info: ResourceInfo, namespace: str, obj: Obj) -> Obj:
        name = str(obj["metadata"]["name"])
        return await self.request("PUT", self.path(info, namespace, name), obj)

    async def patch(self, info: ResourceInfo, namespace: str, name: str, patch: Obj) -> Obj:
        return await self.request(
            "PATCH",
            self.path(info, namespace, name),
            patch,
            content_type="application/merge-patch+json",
        )

    async def delete(self, info: ResourceInfo, namespace: str, name: str) -> Obj:
        return await self.request("DELETE", self.path(info, namespace, name))

    async def update(
        self,
        info: ResourceInfo,
        namespace: str,
        name: str,
        mutate: Callable[[Obj], Obj],
        retries: int = CONFLICT_RETRIES,
    ) -> Obj:
        """GET, `mutate` (pure: returns the new object), PUT with the read resourceVersion;
        a 409 Conflict re-reads and tries again up to `retries` times."""
        for attempt in range(retries + 1):
            current = await self.get(info, namespace, name)
            desired = mutate(current)
            desired.setdefault("metadata", {})["resourceVersion"] = current.get("metadata", {}).get(
                "resourceVersion"
            )
            try:
                return await self.replace(info, namespace, desired)
            except ApiError as e:
                if e.code_http != 409 or attempt == retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def watch(
        self, info: ResourceInfo, namespace: str, resource_version: str | None = None
    ) -> AsyncIterator[Obj]:
        """Watch events `{"type", "object"}` of one kind in one namespace as they arrive."""
        params = {"watch": "true"}
        if resource_version:
            params["resourceVersion"] = resource_version
        buf = b""
        async for chunk in self.stream(self.path(info, namespace), params):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.strip():
                    yield _json_obj(line)

    async def lines(self, path: str, params: dict[str, str] | None = None) -> AsyncIterator[str]:
        """A streamed text body line by line."""
        buf = b""
        async for chunk in self.stream(path, params):
            buf += chunk
            *done, buf = buf.split(b"\n")
            for line in done:
                yield line.decode("utf-8", "replace")
        if buf:
            yield buf.decode("utf-8", "replace")


def _json_obj(raw: bytes) -> Obj:
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise CliError(f"the API answered with something that is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise CliError("the API answered with JSON that is not an object")
    return value


def _status_from(raw: bytes, http_status: int, reason: str | None) -> Obj:
    """The Status object of an error answer, or one made up from a non-JSON body."""
    try:
        value = orjson.loads(raw)
        if isinstance(value, dict) and ("message" in value or value.get("kind") == "Status"):
            return value
    except orjson.JSONDecodeError:
        pass
    text = raw.decode("utf-8", "replace").strip() or (reason or "")
    return {
        "kind": "Status",
        "status": "Failure",
        "message": text,
        "reason": reason or "",
        "code": http_status,
    }
