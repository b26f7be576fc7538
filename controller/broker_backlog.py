"""`GET /internal/eventing/brokers/{namespace}/{name}/backlog`: a broker's backend and how far
behind each of its triggers is (`flint broker describe` shows it). Behind the API's guard: the
owner's credential is required, as for every endpoint that is not the data plane.

A Redis broker's backlog per trigger comes from its stream's consumer groups
(`controller.redis_backlog`); a SQLite broker's positions live in the dispatcher's own database,
so its backlog is the dispatcher's gauge `flint_dispatcher_backlog_events` (read from the
dispatcher's `/metrics` with the owner's token; a gauge, it may lag by a read batch).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from redis.exceptions import RedisError

from controller.api.eventing import BACKEND_REDIS, broker_backend
from controller.informer import Informer
from controller.redis_backlog import GroupBacklog, group_backlogs
from flint_common.redis_keys import stream_key
from flint_common.status import failure

__all__ = ["BACKLOG_PATH", "add_backlog_routes", "backlog_answer", "dispatcher_backlogs",
           "fetch_dispatcher_backlogs"]

BACKLOG_PATH = "/internal/eventing/brokers/{namespace}/{name}/backlog"
SQLITE_NOTE = ("a SQLite broker's positions are in the dispatcher's database: see its metric "
               "flint_dispatcher_backlog_events")
BACKLOG_METRIC = "flint_dispatcher_backlog_events"
METRICS_TIMEOUT_S = 5.0

SqliteBacklogs = dict[tuple[str, str], int]
"""(namespace, trigger name) → events not yet handled, from the dispatcher's gauge."""

Obj = dict[str, Any]


def dispatcher_backlogs(metrics_text: str) -> SqliteBacklogs:
    """The backlog gauge per (namespace, trigger) in the dispatcher's Prometheus text. Pure."""
    out: SqliteBacklogs = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != BACKLOG_METRIC:
            continue
        for sample in family.samples:
            key = (sample.labels.get("namespace", ""), sample.labels.get("trigger", ""))
            out[key] = int(sample.value)
    return out


async def fetch_dispatcher_backlogs(base_url: str, token: str) -> SqliteBacklogs | str:
    """The dispatcher's backlog gauges, or why they could not be read."""
    url = base_url.rstrip("/") + "/metrics"
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=METRICS_TIMEOUT_S)
        ) as session, session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                return f"the dispatcher answered {resp.status}"
            return dispatcher_backlogs(await resp.text())
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return f"the dispatcher did not answer: {type(exc).__name__}"


def backlog_answer(
    broker: Obj, backend: str, triggers: list[Obj], groups: dict[str, GroupBacklog] | None,
    sqlite: SqliteBacklogs | str | None = None,
) -> Obj:
    """The endpoint's answer (pure): one row per trigger of the broker, with its group's backlog
    (`groups` None for a SQLite broker: then `sqlite`, the dispatcher's gauges or why there are
    none; a trigger with no group yet has none: no dispatcher has read for it)."""
    meta = broker["metadata"]
    ns = meta.get("namespace", "default")
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
            known = sqlite.get((ns, row["name"])) if isinstance(sqlite, dict) else None
            row["backlog"] = known
        rows.append(row)
    out: Obj = {"namespace": ns, "name": meta["name"], "backend": backend, "triggers": rows}
    if backend == BACKEND_REDIS:
        out["stream"] = stream_key(str(meta["uid"]))
    elif isinstance(sqlite, str):
        out["note"] = f"{SQLITE_NOTE} ({sqlite})"
    else:
        out["note"] = "the dispatcher's gauge flint_dispatcher_backlog_events (it may lag a little)"
    return out


def add_backlog_routes(
    app: web.Application, brokers: Informer, triggers: Informer, *, engine: str,
    redis: Callable[[], aioredis.Redis | None],
    sqlite: Callable[[], Awaitable[SqliteBacklogs | str]] | None = None,
) -> None:
    """`redis()`: the controller's Redis client, None when it has no Redis; `sqlite()`: the
    dispatcher's backlog gauges (`fetch_dispatcher_backlogs`)."""

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
        gauges: SqliteBacklogs | str | None = None
        if backend != BACKEND_REDIS and sqlite is not None and mine:
            gauges = await sqlite()
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
        return web.json_response(backlog_answer(broker, backend, mine, groups, gauges))

    app.router.add_get(BACKLOG_PATH, backlog)
