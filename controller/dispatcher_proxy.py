"""`/internal/dispatcher/…` on the API port: the dispatcher's admin endpoints through the API.

The CLI then needs one endpoint and one credential: a request here (already authenticated by the
API's guard) is forwarded to the dispatcher's admin port with the owner's token, and the answer
comes back as it was. The dispatcher's port stays on loopback.
"""

from __future__ import annotations

import aiohttp
from aiohttp import web
from yarl import URL

from flint_common.secret import Secret
from flint_common.status import failure

PREFIX = "/internal/dispatcher"
TIMEOUT_S = 30.0
"""Seconds to wait for the dispatcher's answer."""
_PASSED_HEADERS = ("Content-Type", "Accept")
"""Request headers passed on (never the caller's Authorization: the proxy sends its own)."""
_ANSWER_HEADERS = ("Content-Type", "Retry-After")
"""Response headers passed back."""


class DispatcherProxy:
    """Forwards requests under `PREFIX` to `base_url`; owns one client session."""

    def __init__(self, base_url: str, token: Secret) -> None:
        self._base = base_url.rstrip("/")
        self._token = token
        self._session: aiohttp.ClientSession | None = None

    def add_routes(self, app: web.Application) -> None:
        app.router.add_route("*", PREFIX + "/{tail:.*}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S, sock_connect=5)
            )
        headers = {h: request.headers[h] for h in _PASSED_HEADERS if h in request.headers}
        headers["Authorization"] = f"Bearer {self._token.reveal()}"
        # The path after the prefix as the client encoded it (a decoded `%3F` must not become a
        # query), on the dispatcher's own origin.
        tail = request.rel_url.raw_path[len(PREFIX):]
        url = URL(self._base + tail, encoded=True).with_query(request.rel_url.query)
        body = await request.read() if request.body_exists else None
        try:
            async with self._session.request(
                request.method, url, data=body, headers=headers
            ) as resp:
                payload = await resp.read()
                answer = {h: resp.headers[h] for h in _ANSWER_HEADERS if h in resp.headers}
                answer.setdefault("Content-Type", "text/plain")
                return web.Response(status=resp.status, body=payload, headers=answer)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return web.json_response(
                failure(503, "ServiceUnavailable",
                       f"the event dispatcher at {self._base} did not answer: {type(exc).__name__}"),
                status=503, headers={"Retry-After": "1"},
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
