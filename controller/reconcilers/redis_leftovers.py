"""What a deleted object leaves on Redis for the janitor (`controller.redis_janitor`): a Redis
broker's or RedisChannel's whole log (its stream, every group on it, every consumer's state),
or a Trigger's or Subscription's consumer group and state on its log. Read from the caches as
they were when the deletion arrived; the janitor's sweep catches what this misses (the parent
deleted first, say)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.api.eventing import BACKEND_REDIS, broker_backend
from controller.reconcilers.channels import REDIS_CHANNEL_KIND, backing_imc
from controller.reconcilers.context import (
    BROKERS,
    REDIS_CHANNELS,
    SUBSCRIPTIONS,
    TRIGGERS,
    EventingContext,
    Obj,
    ns_name,
)
from controller.store.base import Kind

__all__ = ["Leftovers", "leftovers"]


@dataclass(frozen=True)
class Leftovers:
    """Log uids whose every key goes; (log uid, consumer uid) pairs whose group and state go."""

    logs: tuple[str, ...] = ()
    consumers: tuple[tuple[str, str], ...] = ()


def leftovers(ctx: EventingContext, kind: Kind, obj: Obj) -> Leftovers:
    """What deleting `obj` (of `kind`) leaves on Redis; nothing for what never used Redis."""
    uid = str(obj["metadata"].get("uid") or "")
    if not uid:
        return Leftovers()
    if kind == BROKERS:
        on_redis = broker_backend(obj, ctx.settings.engine) == BACKEND_REDIS
        return Leftovers(logs=(uid,)) if on_redis else Leftovers()
    if kind == REDIS_CHANNELS:
        return Leftovers(logs=(uid,))
    ns = ns_name(obj)[0]
    if kind == TRIGGERS:
        broker = ctx.brokers.get(ns, str((obj.get("spec") or {}).get("broker") or ""))
        if broker is None or broker_backend(broker, ctx.settings.engine) != BACKEND_REDIS:
            return Leftovers()  # a deleted broker's consumers go with its log
        return Leftovers(consumers=((str(broker["metadata"]["uid"]), uid),))
    if kind == SUBSCRIPTIONS:
        channel, _, _ = backing_imc(ctx, ns, (obj.get("spec") or {}).get("channel") or {})
        if channel is None or channel.get("kind") != REDIS_CHANNEL_KIND:
            return Leftovers()
        log_uid = str(channel["metadata"].get("uid") or "")
        return Leftovers(consumers=((log_uid, uid),)) if log_uid else Leftovers()
    return Leftovers()
