"""`GET /internal/eventing/brokers/{namespace}/{name}/backlog`: a broker's backend and how far
behind each of its triggers is (`flint broker describe` shows it). Behind the API's guard: the
owner's credential is required, as for every endpoint that is not the data plane.

A Redis broker's backlog per trigger comes from its stream's consumer groups
(`controller.redis_backlog`); a SQLite broker's positions live in the dispatcher's own database,
so the answer names the dispatcher's metric instead (`flint_dispatcher_backlog_events`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from controller.api.eventing import BACKEND_REDIS, broker_backend
from controller.informer import Informer
from controller.redis_backlog import GroupBacklog, group_backlogs
from flint_common.redis_keys import stream_key
from flint_common.status import failure

__all__ = ["BACKLOG_PATH", "add_backlog_routes", "backlog_answer"]

BACKLOG_PATH = "/internal/eventing/brokers/{namespace}/{name}/backlog"
SQLITE_NOTE = ("a SQLite broker's positions are in the dispatcher's database: see its metric "
               "flint_dispatcher_backlog_events")

Obj = dict[str, Any]


def backlog_answer(
    broker: Obj, backend: str, triggers: list[Obj], groups: dict[str, GroupBacklog] | None
) -> Obj:
    """The endpoint's answer (pure): one row per trigger of the broker, with its group's backlog
    (`groups` None for a SQLite broker; a trigger with no group yet has none: no dispatcher
    has read for it)."""
    meta = broker["metadata"]
    rows: list[Obj] = []
    for t in sorted(triggers, key=lambda t: str(t["metadata"]["name"])):
        uid = str(t["metadata"].get("uid") or "")
        row: Obj = {"name": t["metadata"]["name"], "uid": uid}
        g = (groups or {}).get(uid)
        if g is not None:
            row.update(g.to_wire())
        elif groups is not None:
            row.update({"group": None, "backlog": None})
        else:
            row["backlog"] = None
        rows.append(row)
    out: Obj = {"namespace": meta.get("namespace", "default"), "name": meta["name"],
                "backend": backend, "triggers": rows}
    if backend == BACKEND_REDIS:
        out["stream"] = stream_key(str(meta["uid"]))
    else:
        out["note"] = SQLITE_NOTE
    return out


def add_backlog_routes(
    app: web.Application, brokers: Informer, triggers: Informer, *, engine: str,
    redis: Callable[[], aioredis.Redis | None],
) -> None:
    """`redis()`: the controller's Redis client, None when it has no Redis."""

    async def backlog(request: web.Request) -> web.Response:
        ns, name = request.match_info["namespace"], request.match_info["name"]
        broker = brokers.get(ns, name)
        if broker is None:
            return web.json_response(failure(404, "NotFound", f'brokers "{name}" not found'),
                                     status=404)
        backend = broker_backend(broker, engine)
        if backend is None:
            return web.json_response(failure(
                404, "NotFound", f'broker "{name}" is of a class Flint does not reconcile'),
                status=404)
        mine = [t for t in triggers.list(ns) if (t.get("spec") or {}).get("broker") == name]
        groups: dict[str, GroupBacklog] | None = None
        if backend == BACKEND_REDIS:
            client = redis()
            if client is None:
                return web.json_response(failure(
                    409, "RedisNotConfigured", "this Flint has no Redis (flint up --redis URL)"),
                    status=409)
            try:
                groups = await group_backlogs(client, stream_key(broker["metadata"]["uid"]))
            except (RedisError, OSError) as exc:
                return web.json_response(failure(
                    503, "ServiceUnavailable", f"Redis did not answer: {type(exc).__name__}: {exc}"),
                    status=503, headers={"Retry-After": "1"})
        return web.json_response(backlog_answer(broker, backend, mine, groups))

    app.router.add_get(BACKLOG_PATH, backlog)
