"""Broker reconciler: the backend, the address, the log in the gateways' snapshot, the
dispatcher, the DLS; a Redis broker's stream, created here before the gateways get the broker
(`redis_marks`), and its durability (informative: it does not make `Ready`)."""

from __future__ import annotations

import copy
from typing import Any

from controller.api.eventing import (
    BACKEND_ANNOTATION,
    BACKEND_REDIS,
    BROKER_CLASS_ANNOTATION,
    BROKER_CONDITION_ADDRESSABLE,
    BROKER_CONDITION_DURABLE,
    BROKER_CONDITION_FILTER,
    BROKER_CONDITION_INGRESS,
    BROKER_CONDITION_TRIGGER_CHANNEL,
    BROKER_CONDITIONS,
    ENGINE_EMBEDDED,
    ENGINE_KUBERNETES,
    FLINT_REDIS_BROKER_CLASS,
    broker_address_url,
    broker_backend,
)
from controller.eventing.plan import broker_log_relpath
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import Status, remove_condition, roll_up, set_condition
from controller.reconcilers.context import (
    BROKERS,
    REFERABLE_KINDS,
    TRIGGERS,
    EventingContext,
    Key,
    Obj,
    ns_name,
)
from controller.reconcilers.deadletters import mark_dead_letter_sink
from controller.reconcilers.redis_marks import NotCreated, ensure_stream
from controller.reconcilers.watches import Change, Reconciler, Watch, itself, matching
from controller.redis_health import RedisView
from flint_common.redis_keys import stream_key


def redis_not_configured(subject: str, engine: str = ENGINE_EMBEDDED) -> str:
    """Why an object whose log is on Redis is not Ready without one, and what to do on `engine`
    (`subject`: what keeps it there, e.g. "the broker's class is FlintRedis")."""
    if engine == ENGINE_KUBERNETES:
        return (f"{subject} but this Flint has no Redis: set FLINT_REDIS_URL on the controller, the "
                "gateways and the dispatcher (`kubectl apply -k deploy/overlays/redis` does, with a "
                "Redis of its own)")
    return (f"{subject} but this Flint has no Redis: start it with `flint up --redis "
            "redis://HOST:PORT/DB` (or set FLINT_REDIS_URL, or `redis: {url: …}` in the settings file)")


REDIS_NOT_CONFIGURED = redis_not_configured(
    f"the broker's class is {FLINT_REDIS_BROKER_CLASS}") + (
    ", or create the broker with another class (its class cannot change)")
"""The embedded engine's message for a broker of class FlintRedis."""


def broker_needs_redis(broker: Obj, engine: str) -> str:
    """`redis_not_configured` for `broker` (of class FlintRedis, or of class Flint on the
    Kubernetes engine, whose log is on Redis there)."""
    cls = ((broker.get("metadata") or {}).get("annotations") or {}).get(BROKER_CLASS_ANNOTATION, "")
    if engine == ENGINE_EMBEDDED:
        return REDIS_NOT_CONFIGURED
    return redis_not_configured(f"the broker's class {cls or '(default)'} keeps its log on Redis here",
                                engine)


def durable_condition(view: RedisView) -> tuple[Status, str, str]:
    """(status, reason, message) of a Redis broker's `Durable` condition. Pure."""
    d = view.durability
    if d is not None:
        return ("True", "AOFEnabled", d.message) if d.reason is None else ("False", d.reason, d.message)
    if view.error:
        return "Unknown", "RedisUnreachable", f"Redis did not answer: {view.error}"
    return "Unknown", "Checking", "waiting for Redis to answer the first durability check"


def channel_condition(
    backend: str, uid: str, *, redis: bool, view: RedisView, not_created: NotCreated | None = None,
    no_redis: str = REDIS_NOT_CONFIGURED,
) -> tuple[Status, str, str, tuple[Status, str, str] | None]:
    """The `TriggerChannelReady` condition of a broker on `backend`, and its `Durable` one (None:
    it has none, a SQLite broker or a Redis one without Redis); `not_created`: why a Redis
    broker's stream does not exist yet (`redis_marks.ensure_stream`); `no_redis`: the message
    without Redis (`redis_not_configured`). Pure."""
    if backend != BACKEND_REDIS:
        return "True", "ChannelLogReady", f"durable SQLite log {broker_log_relpath(uid)}", None
    if not redis:
        return "False", "RedisNotConfigured", no_redis, None
    if not_created is not None:
        return "Unknown", not_created[0], not_created[1], durable_condition(view)
    return "True", "StreamReady", f"Redis stream {stream_key(uid)}", durable_condition(view)


async def reconcile_broker(ctx: EventingContext, key: Key) -> float | None:
    broker = ctx.brokers.get(*key)
    if broker is None:
        ctx.snapshot_dirty()
        ctx.plan_dirty()
        return None
    s = ctx.settings
    backend = broker_backend(broker, s.engine)
    if backend is None:
        return None  # another class's controller owns it
    now = ctx.clock()
    ns, name = key
    status = copy.deepcopy(broker.get("status") or {})
    status["observedGeneration"] = broker["metadata"].get("generation", 1)
    annotations: dict[str, Any] = dict(status.get("annotations") or {})
    annotations[BACKEND_ANNOTATION] = backend
    status["annotations"] = annotations
    status["address"] = {"url": broker_address_url(ns, name, s.domain, s.gateway_port)}
    set_condition(status, BROKER_CONDITION_ADDRESSABLE, "True", now=now)
    uid = broker["metadata"]["uid"]
    on_redis = backend == BACKEND_REDIS and ctx.redis_logs is not None
    def wake_triggers() -> None:  # the stream was made again: so must their groups be, now
        for t in ctx.triggers.list(ns):
            if (t.get("spec") or {}).get("broker") == name:
                ctx.enqueue(TRIGGERS, ns_name(t))

    not_created = await ensure_stream(ctx, status, uid, wake_triggers) if on_redis else None
    ch_status, ch_reason, ch_message, durable = channel_condition(
        backend, uid, redis=s.redis is not None, view=ctx.redis_view(), not_created=not_created,
        no_redis=broker_needs_redis(broker, s.engine))
    set_condition(status, BROKER_CONDITION_TRIGGER_CHANNEL, ch_status, ch_reason, ch_message, now=now)
    if durable is None:
        remove_condition(status, BROKER_CONDITION_DURABLE)
    else:
        set_condition(status, BROKER_CONDITION_DURABLE, *durable, now=now, severity="Info")
    requeue: float | None = 2.0 if not_created is not None else None
    served = any(
        b.kind == "broker" and b.namespace == ns and b.name == name for b in ctx.hub.snapshot.brokers
    )
    if ch_status != "True":  # not served until its channel can be (no Redis, no stream yet)
        set_condition(status, BROKER_CONDITION_INGRESS, "Unknown", ch_reason,
                      "the gateways serve the broker once its channel is ready", now=now)
    elif not served:
        ctx.snapshot_dirty()
        set_condition(status, BROKER_CONDITION_INGRESS, "Unknown", "Programming",
                      "waiting for the gateway snapshot to carry the broker", now=now)
    elif not ctx.hub.connected():
        set_condition(status, BROKER_CONDITION_INGRESS, "Unknown", "NoGateway",
                      "no gateway worker is connected to the controller", now=now)
        requeue = 1.0
    elif ctx.hub.acked_by_all(ctx.hub.version):
        set_condition(status, BROKER_CONDITION_INGRESS, "True", now=now)
    else:
        set_condition(status, BROKER_CONDITION_INGRESS, "Unknown", "Programming",
                      "waiting for every gateway worker to apply the broker", now=now)
    if ctx.dispatch.connected():
        set_condition(status, BROKER_CONDITION_FILTER, "True", now=now)
    else:
        set_condition(status, BROKER_CONDITION_FILTER, "Unknown", "NoDispatcher",
                      "the dispatcher is not connected to the controller", now=now)
        requeue = 2.0
    if not mark_dead_letter_sink(ctx, status, (broker.get("spec") or {}).get("delivery"), ns, now=now):
        requeue = requeue or 5.0
    if on_redis and ctx.redis_logs is not None:  # what Redis lost is made again within this
        requeue = requeue or ctx.redis_logs.recheck_s
    roll_up(status, list(BROKER_CONDITIONS), now=now)
    await write_status(ctx, BROKERS, broker, status)
    ctx.plan_dirty()
    return requeue


def _has_dead_letter_sink(broker: Obj, change: Change) -> bool:
    return bool(((broker.get("spec") or {}).get("delivery") or {}).get("deadLetterSink"))


WATCHES = (
    Watch(BROKERS, itself),
    # Its dead-letter sink may resolve now (or no longer).
    *(Watch(kind, matching(BROKERS, _has_dead_letter_sink)) for kind in REFERABLE_KINDS),
)
RECONCILER = Reconciler(BROKERS, reconcile_broker, WATCHES)
