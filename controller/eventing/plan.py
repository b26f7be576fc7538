"""The dispatch plan: what the dispatcher delivers, built from Brokers, Triggers, channels and
Subscriptions (pure).

The controller builds it from its caches and serves it to the dispatcher process (a long poll
on `/internal/dispatch/plan`, `controller/dispatchhub.py`); the dispatcher needs nothing
else from the API. Each entry is a *consumer* (`ConsumerPlan`): a Trigger of a broker, or a
Subscription of a channel, reading one log (`log`: its backend and key). Only consumers that
can deliver are in it: a trigger's broker exists and is of one of Flint's classes and its
subscriber resolved (`status.subscriberUri`); a subscription's channel has an address and its
references resolved. A trigger reads its broker's backend (`broker_backend`): a SQLite file, or
the broker's Redis stream through a consumer group named by the trigger's uid (only when this
Flint has Redis: else the broker is not Ready, `RedisNotConfigured`). A consumer of a Redis
stream is in the plan only once its reconciler created its group (its status says on which
stream: `CONSUMER_GROUP_ANNOTATION`), so no dispatcher ever waits long for a group, and none
creates one (`controller.redis_logs`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from controller.api.duck import resolve_delivery
from controller.api.eventing import (
    BACKEND_REDIS,
    CONSUMER_GROUP_ANNOTATION,
    DELIVERY_ORDER_ANNOTATION,
    DELIVERY_ORDERED,
    ENGINE_EMBEDDED,
    broker_backend,
    status_annotation,
)
from flint_common.redis_keys import stream_key

__all__ = [
    "LOG_BACKENDS",
    "PLAN_PATH",
    "ConsumerPlan",
    "DispatchPlan",
    "LogRef",
    "RedisLog",
    "SqliteLog",
    "UnknownLogBackend",
    "broker_log",
    "broker_log_relpath",
    "build_plan",
    "dispatcher_id",
    "log_from_wire",
]

Obj = dict[str, Any]

PLAN_PATH = "/internal/dispatch/plan"
"""Path of the controller's long poll that serves the plan to the dispatcher."""


def dispatcher_id(state_dir: Path, host: str) -> str:
    """The id a dispatcher sends with each poll of the plan: `<host>/<hash of its state dir>`
    (`host`: the machine's hostname; `state_dir` absolute and resolved, as both entry points pass
    it: hashing it as given keeps this pure).

    Stable across restarts (one dispatcher per state dir holds its lock) and unique per host and
    state dir. The controller computes the same id for its own state dir: the dispatcher with it
    is the embedded one (`flint up` starts it on that state dir), the only one that can read the
    SQLite logs there."""
    digest = hashlib.sha256(str(state_dir).encode()).hexdigest()[:16]
    return f"{host}/{digest}"


def broker_log_relpath(uid: str) -> str:
    """A broker's channel log, relative to the state dir: one SQLite file per broker uid."""
    return f"eventing/logs/{uid}.db"


class UnknownLogBackend(ValueError):
    """A plan names a log backend this dispatcher does not have."""


@dataclass(frozen=True, slots=True)
class SqliteLog:
    """A SQLite channel log: one file per broker or channel, written by the gateway's home
    worker and read by the one dispatcher of the state dir (positions are its offsets)."""

    path: str
    """The log file, relative to the state dir (`broker_log_relpath`)."""

    backend: ClassVar[str] = "sqlite"

    def to_wire(self) -> dict[str, Any]:
        return {"backend": self.backend, "path": self.path}


@dataclass(frozen=True, slots=True)
class RedisLog:
    """A Redis stream shared by every gateway (any worker appends) and read by every dispatcher
    that runs the consumer, through the consumer's group (`flint_common.redis_keys`)."""

    stream: str
    """The stream key (`stream_key(log uid)`)."""
    group: str
    """The consumer group: the consumer's uid."""

    backend: ClassVar[str] = "redis"

    def to_wire(self) -> dict[str, Any]:
        return {"backend": self.backend, "stream": self.stream, "group": self.group}


LogRef = SqliteLog | RedisLog
"""Where a consumer's events are: one of the backends' references."""

LOG_BACKENDS: tuple[str, ...] = (SqliteLog.backend, RedisLog.backend)


def broker_log(broker_uid: str, backend: str, consumer_uid: str) -> LogRef:
    """Where a consumer of the broker `broker_uid` on `backend` reads: its SQLite file, or its
    Redis stream through the consumer's group (named by the consumer's uid)."""
    if backend == BACKEND_REDIS:
        return RedisLog(stream_key(broker_uid), consumer_uid)
    return SqliteLog(broker_log_relpath(broker_uid))


def log_from_wire(data: Any) -> LogRef:
    """The log reference a plan carries; `UnknownLogBackend` for a backend not in `LOG_BACKENDS`."""
    if not isinstance(data, Mapping):
        raise ValueError(f"a consumer's log must be an object with a backend, got {data!r}")
    backend = data.get("backend")
    if backend == SqliteLog.backend:
        path = data.get("path")
        if not isinstance(path, str) or not path:
            raise ValueError(f"a sqlite log needs a path, got {path!r}")
        return SqliteLog(path)
    if backend == RedisLog.backend:
        stream, group = data.get("stream"), data.get("group")
        if not isinstance(stream, str) or not stream or not isinstance(group, str) or not group:
            raise ValueError(f"a redis log needs a stream and a group, got {stream!r}, {group!r}")
        return RedisLog(stream, group)
    raise UnknownLogBackend(
        f"unknown log backend {backend!r} (this dispatcher knows {', '.join(LOG_BACKENDS)})"
    )


@dataclass(frozen=True, slots=True)
class ConsumerPlan:
    """One consumer of a log as the dispatcher runs it: a trigger, or a subscription."""

    uid: str
    namespace: str
    name: str
    broker: str
    """The broker's name (a subscription: its InMemoryChannel's)."""
    log_uid: str
    """The uid of the broker or channel whose log this is (the gateway's wake-ups name it)."""
    log: LogRef
    """The log's backend and key."""
    subscriber: str
    """The resolved subscriber URI (`status.subscriberUri`)."""
    reply: str
    """Where replies go: the broker's address."""
    filter_attributes: dict[str, str] | None
    filters: list[dict[str, Any]] | None
    delivery: dict[str, Any]
    """The delivery that applies (the trigger's, else its broker's, else Knative's default)."""
    dead_letter_uri: str | None
    ordered: bool
    kind: str = "trigger"
    """`trigger` (of a broker: filters, replies back into the broker with the TTL one less) or
    `subscription` (of a channel: no filter, replies to `reply` when set, else dropped)."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def label(self) -> str:
        """The name in metrics and logs: the trigger's, or `subscription:<name>`."""
        return self.name if self.kind == "trigger" else f"{self.kind}:{self.name}"

    def to_wire(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self)}, "log": self.log.to_wire()}

    @staticmethod
    def from_wire(data: Mapping[str, Any]) -> ConsumerPlan:
        return ConsumerPlan(**{**data, "log": log_from_wire(data.get("log"))})


@dataclass(frozen=True, slots=True)
class DispatchPlan:
    version: int
    triggers: tuple[ConsumerPlan, ...] = field(default_factory=tuple)
    known: tuple[str, ...] = ()
    """The uid of every trigger that exists, runnable or not: the dispatcher forgets the state
    (position, retries, dead letters) of the others, which were deleted."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "triggers": [t.to_wire() for t in self.triggers],
            "known": list(self.known),
        }

    @staticmethod
    def from_wire(data: Mapping[str, Any]) -> DispatchPlan:
        return DispatchPlan(
            version=int(data["version"]),
            triggers=tuple(ConsumerPlan.from_wire(t) for t in data.get("triggers") or ()),
            known=tuple(str(u) for u in data.get("known") or ()),
        )


def _meta(obj: Obj) -> Obj:
    meta: Obj = obj.get("metadata") or {}
    return meta


def _has_group(consumer: Obj, log_uid: str) -> bool:
    """The consumer's group exists on the stream of the log `log_uid` (its status says so), or
    the consumer comes from a Flint before the marks and was Ready then (its group made by the
    dispatchers: kept in the plan across the upgrade until its reconciler marks it)."""
    mark = status_annotation(consumer, CONSUMER_GROUP_ANNOTATION)
    if mark:
        return mark == stream_key(log_uid)
    status = consumer.get("status") or {}
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or [])


def build_plan(
    brokers: Iterable[Obj],
    triggers: Iterable[Obj],
    *,
    imcs: Iterable[Obj] = (),
    channels: Iterable[Obj] = (),
    subscriptions: Iterable[Obj] = (),
    rchans: Iterable[Obj] = (),
    version: int = 0,
    engine: str = ENGINE_EMBEDDED,
    redis: bool = False,
) -> DispatchPlan:
    """The plan of `engine`'s brokers (`broker_backend`); with `redis` False (no Redis
    configured) the triggers of Redis brokers are left out (those brokers are not Ready), and so
    are, with Redis, the consumers of Redis streams whose group was not created yet."""
    by_key: dict[tuple[str, str], tuple[Obj, str]] = {}
    for b in brokers:
        backend = broker_backend(b, engine)
        if (backend is None or (backend == BACKEND_REDIS and not redis)
                or not _meta(b).get("uid") or _meta(b).get("deletionTimestamp")):
            continue
        by_key[(_meta(b).get("namespace", "default"), _meta(b)["name"])] = (b, backend)
    out: list[ConsumerPlan] = []
    known: list[str] = []
    for t in triggers:
        meta = _meta(t)
        if meta.get("uid"):
            known.append(str(meta["uid"]))
        ns = meta.get("namespace", "default")
        spec: Obj = t.get("spec") or {}
        status: Obj = t.get("status") or {}
        found = by_key.get((ns, spec.get("broker", "")))
        subscriber = status.get("subscriberUri")
        if found is None or not subscriber or not meta.get("uid"):
            continue
        broker, backend = found
        if backend == BACKEND_REDIS and not _has_group(t, _meta(broker)["uid"]):
            continue  # the trigger reconciler has not created its group yet
        bstatus: Obj = broker.get("status") or {}
        reply = ((bstatus.get("address") or {}).get("url")) or ""
        if not reply:  # the broker has no address yet: replies would have nowhere to go
            continue
        own_delivery = spec.get("delivery")
        delivery = resolve_delivery(own_delivery, (broker.get("spec") or {}).get("delivery"))
        # The trigger's dead-letter sink, else its broker's (Knative's trigger reconciler).
        own_sink = isinstance(own_delivery, dict) and bool(own_delivery.get("deadLetterSink"))
        dead_letter = status.get("deadLetterSinkUri") if own_sink else None
        dead_letter = dead_letter or bstatus.get("deadLetterSinkUri")
        delivery.pop("deadLetterSink", None)
        annotations = meta.get("annotations") or {}
        filt = spec.get("filter") or {}
        out.append(
            ConsumerPlan(
                uid=meta["uid"],
                namespace=ns,
                name=meta["name"],
                broker=spec["broker"],
                log_uid=_meta(broker)["uid"],
                log=broker_log(_meta(broker)["uid"], backend, meta["uid"]),
                subscriber=str(subscriber),
                reply=reply,
                filter_attributes=dict(filt.get("attributes") or {}) or None,
                filters=list(spec.get("filters") or []) or None,
                delivery=delivery,
                dead_letter_uri=str(dead_letter) if dead_letter else None,
                ordered=annotations.get(DELIVERY_ORDER_ANNOTATION) == DELIVERY_ORDERED,
            )
        )
    subs, sub_uids = _subscription_plans(imcs, channels, subscriptions, rchans if redis else ())
    out += subs
    known += sub_uids
    out.sort(key=lambda p: (p.namespace, p.kind, p.name))
    return DispatchPlan(version=version, triggers=tuple(out), known=tuple(sorted(known)))


def _subscription_plans(
    imcs: Iterable[Obj], channels: Iterable[Obj], subscriptions: Iterable[Obj], rchans: Iterable[Obj] = ()
) -> tuple[list[ConsumerPlan], list[str]]:
    """Subscriptions whose channel has a log and an address and whose references resolved; the
    log of an InMemoryChannel is its SQLite file, a RedisChannel's its stream (`rchans` empty: no
    Redis configured, their subscriptions are left out)."""
    by_kind: dict[str, dict[tuple[str, str], Obj]] = {
        kind: {(_meta(c).get("namespace", "default"), _meta(c)["name"]): c
               for c in objs if _meta(c).get("uid")}
        for kind, objs in (("InMemoryChannel", imcs), ("RedisChannel", rchans))
    }
    by_channel = {(_meta(c).get("namespace", "default"), _meta(c)["name"]): c for c in channels}
    out: list[ConsumerPlan] = []
    known: list[str] = []
    for sub in subscriptions:
        meta = _meta(sub)
        ns = meta.get("namespace", "default")
        if meta.get("uid"):
            known.append(str(meta["uid"]))
        spec: Obj = sub.get("spec") or {}
        ref: Obj = spec.get("channel") or {}
        imc: Obj | None = None
        channel_delivery: Any = None
        log_kind = str(ref.get("kind") or "")
        if log_kind in by_kind:
            imc = by_kind[log_kind].get((ns, ref.get("name", "")))
        elif log_kind == "Channel":
            ch = by_channel.get((ns, ref.get("name", "")))
            backing = ((ch or {}).get("status") or {}).get("channel") or {}
            log_kind = str(backing.get("kind") or "InMemoryChannel")
            imc = by_kind.get(log_kind, {}).get((ns, backing.get("name", ""))) if backing else None
            channel_delivery = ((ch or {}).get("spec") or {}).get("delivery")
        physical: Obj = (sub.get("status") or {}).get("physicalSubscription") or {}
        subscriber, reply = physical.get("subscriberUri"), physical.get("replyUri")
        address = (((imc or {}).get("status") or {}).get("address") or {}).get("url")
        if imc is None or not address or not meta.get("uid") or not (subscriber or reply):
            continue
        if log_kind == "RedisChannel" and not _has_group(sub, _meta(imc)["uid"]):
            continue  # the subscription reconciler has not created its group yet
        if channel_delivery is None:
            channel_delivery = (imc.get("spec") or {}).get("delivery")
        delivery = resolve_delivery(spec.get("delivery"), channel_delivery)
        delivery.pop("deadLetterSink", None)
        dead_letter = physical.get("deadLetterSinkUri")
        out.append(
            ConsumerPlan(
                uid=meta["uid"],
                namespace=ns,
                name=meta["name"],
                broker=_meta(imc)["name"],
                log_uid=_meta(imc)["uid"],
                log=(RedisLog(stream_key(_meta(imc)["uid"]), meta["uid"]) if log_kind == "RedisChannel"
                     else SqliteLog(broker_log_relpath(_meta(imc)["uid"]))),
                # No subscriber: the events go straight to `reply` (Knative's rule).
                subscriber=str(subscriber or reply),
                reply=str(reply) if subscriber and reply else "",
                filter_attributes=None,
                filters=None,
                delivery=delivery,
                dead_letter_uri=str(dead_letter) if dead_letter else None,
                ordered=False,
                kind="subscription",
            )
        )
    return out, known
