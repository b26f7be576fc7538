"""Which objects the controller looks at again when something outside them changed — Redis, the
dispatchers' or gateways' progress — and what a deleted owner leaves behind (pure, over the
informers' caches)."""

from __future__ import annotations

from collections.abc import Iterator

from controller.api.eventing import BACKEND_REDIS, broker_backend
from controller.reconcilers.context import (
    BROKERS,
    CHANNELS,
    IN_MEMORY_CHANNELS,
    REDIS_CHANNELS,
    ROUTES,
    SUBSCRIPTIONS,
    TRIGGERS,
    Informers,
    Key,
    Obj,
    ns_name,
)
from controller.store.base import Kind

__all__ = ["owned", "redis_dependents", "unready_eventing", "unready_routes"]


def _ready(obj: Obj, type_: str = "Ready") -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []
    c = next((c for c in conds if c.get("type") == type_), None)
    return c is not None and c.get("status") == "True"


def redis_dependents(informers: Informers, engine: str) -> Iterator[tuple[Kind, Key]]:
    """What we know of Redis changed: the Redis brokers and RedisChannels (their `Durable`)."""
    for b in informers.list(BROKERS):
        if broker_backend(b, engine) == BACKEND_REDIS:
            yield BROKERS, ns_name(b)
    for ch in informers.list(REDIS_CHANNELS):
        yield REDIS_CHANNELS, ns_name(ch)


def unready_eventing(informers: Informers) -> Iterator[tuple[Kind, Key]]:
    """The dispatcher or the gateways made progress: brokers and channels not yet Ready may be
    now, and every trigger and subscription (its status says how many dispatchers run it, which
    changes when one joins or leaves; an unchanged status is not written again)."""
    for kind in (BROKERS, TRIGGERS, CHANNELS, IN_MEMORY_CHANNELS, REDIS_CHANNELS, SUBSCRIPTIONS):
        consumer = kind in (TRIGGERS, SUBSCRIPTIONS)
        for obj in informers.list(kind):
            if consumer or not _ready(obj):
                yield kind, ns_name(obj)


def unready_routes(informers: Informers) -> Iterator[tuple[Kind, Key]]:
    """The gateways acked: the routes whose `IngressReady` is not True yet may be now."""
    for r in informers.list(ROUTES):
        if not _ready(r, "IngressReady"):
            yield ROUTES, ns_name(r)


def owned(informers: Informers, owner: Obj) -> Iterator[tuple[Kind, Obj]]:
    """The objects (of every kind, in `owner`'s namespace) with an owner reference to it: what
    the embedded engine's garbage collection deletes with it."""
    uid = owner["metadata"].get("uid")
    if not uid:
        return
    ns = owner["metadata"].get("namespace", "default")
    for kind in informers.by_kind:
        for child in informers.list(kind, ns):
            refs = child["metadata"].get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in refs):
                yield kind, child
