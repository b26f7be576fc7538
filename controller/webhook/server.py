"""The webhook's HTTPS face: `/admission/defaulting` and `/admission/validation` on a TLS listener
of its own (aiohttp), 404 for anything else, bodies bounded (`WebhookSettings.max_body_bytes`).

Unauthenticated by design: the API server calling it has authenticated the user already, and the
answer only reads what it is sent (see the package docstring). Each answer is the registry's pure
hooks run on the loop (no I/O, no blocking call); objects are never logged, only their names.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from controller.api.registry import Registry
from controller.api.types import Obj
from controller.webhook.review import AdmissionRequest, MalformedReview, decode, defaulting, validation
from controller.webhook.settings import WebhookSettings
from flint_common.addresses import format_hostport

log = logging.getLogger(__name__)

DEFAULTING_PATH = "/admission/defaulting"
"""The MutatingWebhookConfiguration `flint-defaulting`'s path."""
VALIDATION_PATH = "/admission/validation"
"""The ValidatingWebhookConfiguration `flint-validation`'s path."""

Answer = Callable[[Registry, AdmissionRequest], Obj]


def make_app(registry: Registry, max_body_bytes: int) -> web.Application:
    """The webhook's routes over `registry` (its Kubernetes engine's: `registry_for("kubernetes")`)."""
    app = web.Application(client_max_size=max_body_bytes)
    app.router.add_post(DEFAULTING_PATH, _handler(registry, defaulting))
    app.router.add_post(VALIDATION_PATH, _handler(registry, validation))
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


async def _not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, text=f"not found: {request.method} {request.path} (this port serves "
                                         f"POST {DEFAULTING_PATH} and POST {VALIDATION_PATH} only)\n")


def _handler(registry: Registry, answer: Answer) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handle(request: web.Request) -> web.Response:
        try:
            review = decode(await request.read())  # 413 past client_max_size
        except MalformedReview as e:
            return web.Response(status=400, text=f"malformed AdmissionReview: {e}\n")
        out = answer(registry, review)
        response = out["response"]
        if not response["allowed"]:
            log.info("webhook %s denied %s %s %s/%s", request.path, review.operation, review.kind.kind,
                     review.namespace, review.name or "(generated)")
        return web.Response(body=orjson.dumps(out), content_type="application/json")
    return handle


class WebhookServer:
    """The webhook listener: `start()` binds `settings.host:port` with `ssl_context` (a context the
    caller may reload in place: new connections use the certificate it holds then)."""

    def __init__(self, registry: Registry, settings: WebhookSettings, ssl_context: ssl.SSLContext) -> None:
        self.settings = settings
        self._app = make_app(registry, settings.max_body_bytes)
        self._context = ssl_context
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen; returns the URL (`https://host:port`; the bound port when `port` is 0)."""
        self._runner = web.AppRunner(self._app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port,
                           ssl_context=self._context, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"https://{format_hostport(self.settings.host, port)}"
        log.info("admission webhook on %s (%s, %s)", self.url, DEFAULTING_PATH, VALIDATION_PATH)
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
