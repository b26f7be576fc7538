"""Who may ask: the owner's bearer token on every endpoint but the open ones, for aiohttp servers.

One middleware guards the API, the gateway link, the dispatch plan, logs, and the admin ports of
the gateway and the dispatcher. The rules, per path:

- `/healthz`, `/readyz`: open (probes carry no credential).
- `/metrics`: open when the request came in on a loopback address or a unix socket *and* its
  `Host` names a loopback address or `localhost` (so a web page whose name was rebound to
  127.0.0.1 cannot read it); it names namespaces, services and revisions, so anywhere else it
  needs the token.
- everything else: `Authorization: Bearer <token>` (compared in constant time), else 401 with a
  Kubernetes `Status` (`reason: Unauthorized`) that reveals nothing about what is served.
- through a Kubernetes API server's service proxy (`services/proxy`, which `flint` uses for the
  dispatcher's dead letters on a cluster) the caller's `Authorization` is the API server's — it
  authenticates and authorizes the caller, then removes the header — so the owner's token of this
  server rides in `X-Flint-Authorization: Bearer <token>`, read only when `Authorization` is absent.
- `alternate_paths` (none unless given): a bearer token that is not the owner's is handed to
  `alternate`, which lets the request through (None) or answers it (401, 503...). The Kubernetes
  engine's controller checks the gateways' and dispatchers' service-account tokens there
  (`controller.link_auth`); every other path still needs the owner's token.

It also refuses what a browser page could send on the owner's behalf: a request whose `Origin`
is not the server's own origin gets 403, and a request with a body must say it is JSON, YAML or a
merge patch (`Content-Type`), else 415: no form post or `text/plain` body is ever decoded.
Credentials are taken from the header only, never from a cookie or the query string.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from flint_common.addresses import host_of, is_loopback
from flint_common.secret import Secret
from flint_common.status import failure

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AlternateAuth = Callable[[str, web.Request], Awaitable[web.StreamResponse | None]]
"""Checks a bearer token that is not the owner's: None lets the request through, else the answer.
It must not log the token nor put it in its answer."""

PROXIED_AUTHORIZATION = "X-Flint-Authorization"
"""The header of the owner's token on a request the Kubernetes API server proxies (it consumes
`Authorization`)."""
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
"""Answered without a credential anywhere."""
LOOPBACK_OPEN_PATHS = frozenset({"/metrics"})
"""Answered without a credential on loopback addresses and unix sockets only."""
BODY_TYPES = frozenset(
    {
        "application/json",
        "text/json",
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "text/x-yaml",
        "application/merge-patch+json",
        # refused later with their own message (the API names the patch types it supports):
        "application/json-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    }
)
"""Content-Types a request body may have; the empty and octet-stream cases are refused."""


def _answer(code: int, reason: str, message: str, **headers: str) -> web.Response:
    return web.Response(
        status=code,
        body=orjson.dumps(failure(code, reason, message)),
        content_type="application/json",
        headers=headers,
    )


def unauthorized() -> web.Response:
    """The 401 of a missing or refused credential (the same whatever was wrong)."""
    return _answer(401, "Unauthorized", "Unauthorized", **{"WWW-Authenticate": 'Bearer realm="flint"'})


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    value = value.strip()
    return value or None


def is_loopback_address(sockname: Any) -> bool:
    """Whether a socket's local address is loopback (127.0.0.0/8, ::1, v4-mapped) or a unix path."""
    if isinstance(sockname, str | bytes):
        return True  # AF_UNIX: only processes that may open the path reach it
    if not isinstance(sockname, tuple) or not sockname:
        return False
    return is_loopback(str(sockname[0])) and str(sockname[0]).lower() != "localhost"


def came_in_on_loopback(request: web.Request) -> bool:
    """The request reached a loopback (or unix) socket and names a loopback host."""
    transport = request.transport
    if transport is None or not is_loopback_address(transport.get_extra_info("sockname")):
        return False
    return is_loopback(host_of(request.headers.get("Host", "")))


def own_origin(request: web.Request) -> str:
    """`scheme://host[:port]` of this server as the request addressed it."""
    return f"{request.scheme}://{request.host}".lower()


def foreign_origin(request: web.Request) -> str | None:
    """The request's `Origin` when it is not this server's own (a page elsewhere sent it)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    return None if origin.strip().lower() == own_origin(request) else origin


def describe_error(exc: BaseException) -> str:
    """An HTTP client error for a log line: its type and status, never its request (aiohttp's
    `repr` of a response error carries the request's headers, the bearer token among them)."""
    status = getattr(exc, "status", None)
    return type(exc).__name__ + (f" status={status}" if isinstance(status, int) else "")


def auth_middleware(
    token: Secret,
    *,
    open_paths: Collection[str] = OPEN_PATHS,
    loopback_open_paths: Collection[str] = LOOPBACK_OPEN_PATHS,
    alternate: AlternateAuth | None = None,
    alternate_paths: Collection[str] = (),
) -> Middleware:
    """The middleware described in the module docstring, for one server."""
    alternate_paths = frozenset(alternate_paths) if alternate is not None else frozenset()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in open_paths or (path in loopback_open_paths and came_in_on_loopback(request)):
            return await handler(request)
        if foreign_origin(request) is not None:
            return _answer(403, "Forbidden", "requests from another origin are not accepted")
        authorization = request.headers.get("Authorization")
        if authorization is None:
            authorization = request.headers.get(PROXIED_AUTHORIZATION)
        given = bearer_token(authorization)
        if not token.matches(given):
            if given is None or path not in alternate_paths or alternate is None:
                return unauthorized()
            refused = await alternate(given, request)
            if refused is not None:
                return refused
        if request.body_exists and request.content_type not in BODY_TYPES:
            given = (request.headers.get("Content-Type") or "none").encode(
                "ascii", "backslashreplace").decode("ascii")[:100]
            return _answer(
                415,
                "UnsupportedMediaType",
                f"unsupported Content-Type ({given}): send application/json, application/yaml "
                "or application/merge-patch+json",
            )
        return await handler(request)

    return guard
