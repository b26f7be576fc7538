"""Which objects carry a Flint finalizer on Kubernetes: those whose state outside the API must go.

A finalizer holds an object's deletion until its owner removes it, so one is only worth its cost
where something outside the API server has to be cleaned up first: a broker or channel whose log
is a Redis stream (its stream and consumer groups). Everything else Flint creates inside the
cluster is a child by owner reference and goes with the garbage collector. The Kubernetes
engine's controller adds the finalizer when it first reconciles such an object and removes it
after deleting the streams; the embedded engine sweeps orphaned streams instead and needs none.
"""

from __future__ import annotations

from controller.api import eventing, messaging
from controller.api.meta import metadata
from controller.api.types import Obj

REDIS_STREAMS_FINALIZER = "eventing.flint.dev/redis-streams"
"""Held by a broker or channel whose log is a Redis stream until its streams are deleted."""


def needs_redis_streams_finalizer(obj: Obj, engine: str = eventing.ENGINE_KUBERNETES) -> bool:
    """A Broker whose backend on `engine` is Redis (class `FlintRedis`, or `Flint` where Redis is
    the default) or a RedisChannel."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if (api_version, kind) == (messaging.FLINT_API_VERSION, messaging.REDIS_CHANNEL_KIND):
        return True
    if (api_version, kind) == (eventing.API_VERSION, "Broker"):
        return eventing.broker_backend(obj, engine) == eventing.BACKEND_REDIS
    return False


def finalizers_for(obj: Obj, engine: str = eventing.ENGINE_KUBERNETES) -> list[str]:
    """`metadata.finalizers` as they should be: the object's own, with Flint's added when it needs
    it and none is being deleted (no finalizer may be added then). Others' are kept as they are."""
    meta = metadata(obj)
    current = [str(f) for f in meta.get("finalizers") or []]
    wanted = needs_redis_streams_finalizer(obj, engine) and not meta.get("deletionTimestamp")
    if wanted and REDIS_STREAMS_FINALIZER not in current:
        return [*current, REDIS_STREAMS_FINALIZER]
    return current


def without_finalizer(obj: Obj, finalizer: str = REDIS_STREAMS_FINALIZER) -> list[str]:
    """`metadata.finalizers` once `finalizer` is done (its cleanup finished)."""
    return [str(f) for f in metadata(obj).get("finalizers") or [] if f != finalizer]
