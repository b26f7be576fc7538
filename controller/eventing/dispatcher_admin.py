"""The dispatcher's admin port: `/healthz`, `/metrics`, a consumer's dead letters and their
redelivery, behind the owner's token (`flint_common.httpauth`). It only reads the dispatcher's
runners: running the plan stays in `controller.eventing.dispatcher`.

It listens on loopback (`admin_host`) and on each `admin_listen` address (in a cluster the pod's
IP, reached through the API server's service proxy, where the token rides in
`X-Flint-Authorization`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controller.eventing.runner import ConsumerRunner
from flint_common.httpauth import auth_middleware
from flint_common.secret import Secret


def admin_app(token: Secret, runners: Callable[[], Iterable[ConsumerRunner]],
              health: Callable[[], dict[str, Any]], registry: CollectorRegistry) -> web.Application:
    """The admin endpoints over the dispatcher's live `runners`, its `health` summary and its
    metrics `registry`."""

    def runner_for(request: web.Request) -> ConsumerRunner:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        kind = request.query.get("kind", "trigger")
        for r in runners():
            if r.plan.namespace == ns and r.plan.name == name and r.plan.kind == kind:
                return r
        raise web.HTTPNotFound(text=f"the dispatcher runs no {kind} {ns}/{name}")

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response(health())

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def dead_letters(request: web.Request) -> web.Response:
        letters = await runner_for(request).state.dead_letters()
        body = [
            {
                "id": d.id,
                "offset": d.offset,
                "event_id": d.event_id,
                "reason": d.reason,
                "status": d.status,
                "detail": d.detail,
                "at": d.at,
                "event": orjson.Fragment(d.event),
            }
            for d in letters
        ]
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def redeliver(request: web.Request) -> web.Response:
        runner = runner_for(request)
        raw = request.query.get("ids")
        try:
            ids = [int(x) for x in raw.split(",") if x] if raw else None
        except ValueError:
            raise web.HTTPBadRequest(text="ids must be a comma-separated list of integers") from None
        count = await runner.state.redeliver(ids, time.time())
        runner.requeued()
        return web.json_response({"requeued": count})

    app = web.Application(middlewares=[auth_middleware(token)])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/dead-letters/{namespace}/{name}", dead_letters)
    app.router.add_post("/redeliver/{namespace}/{name}", redeliver)
    return app


async def start_admin(app: web.Application, addresses: Iterable[tuple[str, int]]) -> web.AppRunner:
    """`app` served on every address (the first is loopback); returns its runner to clean up."""
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    for host, port in addresses:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner
