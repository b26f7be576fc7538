"""What every reconciler shares: the store, the informers' caches, the runtime and the gateway hub."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.autoscaling.kpa import Decision
from controller.builds.artifacts import ArtifactStore
from controller.dispatchhub import DispatchHub
from controller.gatewayhub import GatewayHub
from controller.informer import Informer
from controller.reconcilers.destinations import resolve_destination
from controller.redis_health import RedisView
from controller.redis_logs import RedisLogs
from controller.runtime.base import Runtime
from controller.settings import ControllerSettings
from controller.store.base import Kind, Store

SERVICES = Kind("serving.knative.dev", "services")
CONFIGURATIONS = Kind("serving.knative.dev", "configurations")
REVISIONS = Kind("serving.knative.dev", "revisions")
ROUTES = Kind("serving.knative.dev", "routes")
BROKERS = Kind("eventing.knative.dev", "brokers")
TRIGGERS = Kind("eventing.knative.dev", "triggers")
CHANNELS = Kind("messaging.knative.dev", "channels")
IN_MEMORY_CHANNELS = Kind("messaging.knative.dev", "inmemorychannels")
SUBSCRIPTIONS = Kind("messaging.knative.dev", "subscriptions")
REDIS_CHANNELS = Kind("messaging.flint.dev", "redischannels")

Key = tuple[str, str]
"""(namespace, name)."""
Obj = dict[str, Any]

LABEL_SERVICE = "serving.knative.dev/service"
LABEL_CONFIGURATION = "serving.knative.dev/configuration"
LABEL_CONFIGURATION_GENERATION = "serving.knative.dev/configurationGeneration"
LABEL_ROUTE = "serving.knative.dev/route"


@dataclass
class Context:
    store: Store
    settings: ControllerSettings
    services: Informer
    configurations: Informer
    revisions: Informer
    routes: Informer
    runtime: Runtime
    artifacts: ArtifactStore
    hub: GatewayHub
    enqueue: Callable[[Kind, Key], None]
    """Put (namespace, name) of a kind on that kind's work queue."""
    snapshot_dirty: Callable[[], None]
    """Ask for a new gateway snapshot (coalesced)."""
    drain: Callable[[str], None]
    """Take a replica out of routing and stop it once no gateway holds it."""
    publisher_is_draining: Callable[[str], bool]
    desired_scale: Callable[[str], int | None]
    """The autoscaler's desired replicas for a revision key (`ns/name`); None: not decided by
    the KPA (the caller keeps one replica)."""
    brokers: Informer
    triggers: Informer
    dispatch: DispatchHub
    """The dispatcher's link: which plan it runs."""
    plan_dirty: Callable[[], None]
    """Ask for a new dispatch plan (coalesced)."""
    channels: Informer
    imcs: Informer
    """InMemoryChannels: the channels Flint backs with a log."""
    subscriptions: Informer
    scale_decision: Callable[[str], Decision | None] = field(default=lambda _key: None)
    """The autoscaler's last decision for a revision key, if any (for the ScaleClamped condition)."""
    clock: Callable[[], float] = field(default=time.time)
    """Wall-clock seconds; replaced in tests."""
    redis_view: Callable[[], RedisView] = field(default=RedisView)
    """What the controller last learned of its Redis (durability), when it has one."""
    rchans: Informer | None = None
    """RedisChannels: Flint's channels whose log is a Redis stream (None: not watched)."""
    redis_logs: RedisLogs | None = None
    """Creates the streams and consumer groups of Redis-backed logs (None: no Redis configured)."""

    def lookup(self, group: str, kind: str, namespace: str, name: str) -> Obj | None:
        """An object of a kind the controller caches, by group and kind (for references)."""
        informers = {
            ("serving.knative.dev", "Service"): self.services,
            ("serving.knative.dev", "Route"): self.routes,
            ("eventing.knative.dev", "Broker"): self.brokers,
            ("eventing.knative.dev", "Trigger"): self.triggers,
            ("messaging.knative.dev", "Channel"): self.channels,
            ("messaging.knative.dev", "InMemoryChannel"): self.imcs,
            ("messaging.knative.dev", "Subscription"): self.subscriptions,
        }
        if self.rchans is not None:
            informers[("messaging.flint.dev", "RedisChannel")] = self.rchans
        informer = informers.get((group, kind))
        return None if informer is None else informer.get(namespace, name)

    def resolve(self, destination: Any, namespace: str) -> tuple[str | None, str]:
        """A Destination's URL, or None and why (see `reconcilers.destinations`)."""
        return resolve_destination(destination, namespace, self.lookup)


def ns_name(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", "default"), meta["name"]


def owned_by(obj: Obj, owner: Obj) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def controller_owner(obj: Obj) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None
