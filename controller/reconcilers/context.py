"""What the reconcilers share: the kinds, the caches, and one context per family (serving, eventing)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.api.eventing import ENGINE_EMBEDDED
from controller.autoscaling.kpa import Decision
from controller.builds.artifacts import ArtifactStore
from controller.dispatchhub import DispatchHub
from controller.gatewayhub import GatewayHub
from controller.informer import Informer
from controller.reconcilers.destinations import resolve_destination
from controller.redis_health import RedisView
from controller.redis_logs import RedisLogs
from controller.runtime.base import ProcessRuntime
from controller.settings import ControllerSettings
from controller.snapshot_builder import HostPlanner
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
CORE_SERVICES = Kind("", "services")
"""Core v1 Services: cached on the Kubernetes engine only (a Destination may name one)."""
REDIS_CHANNELS = Kind("messaging.flint.dev", "redischannels")

Key = tuple[str, str]
"""(namespace, name)."""
Obj = dict[str, Any]

LABEL_SERVICE = "serving.knative.dev/service"
LABEL_CONFIGURATION = "serving.knative.dev/configuration"
LABEL_CONFIGURATION_GENERATION = "serving.knative.dev/configurationGeneration"
LABEL_ROUTE = "serving.knative.dev/route"


_LOOKUP_KINDS: dict[tuple[str, str], Kind] = {
    ("serving.knative.dev", "Service"): SERVICES,
    ("serving.knative.dev", "Route"): ROUTES,
    ("eventing.knative.dev", "Broker"): BROKERS,
    ("eventing.knative.dev", "Trigger"): TRIGGERS,
    ("messaging.knative.dev", "Channel"): CHANNELS,
    ("messaging.knative.dev", "InMemoryChannel"): IN_MEMORY_CHANNELS,
    ("messaging.knative.dev", "Subscription"): SUBSCRIPTIONS,
    ("messaging.flint.dev", "RedisChannel"): REDIS_CHANNELS,
    ("", "Service"): CORE_SERVICES,
}
"""The kinds a reference (a Destination, a dead-letter sink) may name, by API group and kind."""
REFERABLE_KINDS = (SERVICES, ROUTES, BROKERS, CHANNELS, IN_MEMORY_CHANNELS, REDIS_CHANNELS, CORE_SERVICES)
"""The addressable kinds a trigger, a subscription or a dead-letter sink may resolve to: their
changes wake whatever may refer to them (Knative's tracker, by namespace). A kind without an
informer (core Services on the embedded engine) has no watch."""


@dataclass(frozen=True)
class Informers:
    """The informers' caches, by kind: what the reconcilers and their watches read (never the
    store: reads are synchronous and current as of the last event)."""

    by_kind: Mapping[Kind, Informer]

    def __getitem__(self, kind: Kind) -> Informer:
        return self.by_kind[kind]

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        """The cached objects of `kind` (of one namespace, or all); none for a kind not cached."""
        informer = self.by_kind.get(kind)
        return [] if informer is None else informer.list(namespace)

    def lookup(self, group: str, kind: str, namespace: str, name: str) -> Obj | None:
        """An object a reference names, by API group and kind (None: not found, or a kind that
        cannot be referred to)."""
        k = _LOOKUP_KINDS.get((group, kind))
        informer = None if k is None else self.by_kind.get(k)
        return None if informer is None else informer.get(namespace, name)

    def resolve(self, destination: Any, namespace: str, engine: str = ENGINE_EMBEDDED
                ) -> tuple[str | None, str]:
        """A Destination's URL on `engine`, or None and why (see `reconcilers.destinations`)."""
        return resolve_destination(destination, namespace, self.lookup, engine=engine)


@dataclass(kw_only=True)
class ReconcilerContext:
    """What every reconciler uses: the store it writes, the settings, the caches, the gateways'
    hub and the request for a new gateway snapshot."""

    store: Store
    settings: ControllerSettings
    informers: Informers
    hub: GatewayHub
    snapshot_dirty: Callable[[], None]
    """Ask for a new gateway snapshot (coalesced)."""
    clock: Callable[[], float] = field(default=time.time)
    """Wall-clock seconds; replaced in tests."""


@dataclass(kw_only=True)
class ServingBase(ReconcilerContext):
    """What the serving reconcilers use on either engine: the serving kinds' caches, and what
    only one engine does beside them."""

    hosts: HostPlanner = field(default_factory=HostPlanner)
    """Which Route owns which host (reused while no Route's hosts change: at 10,000 Routes,
    planning them again for every Route reconciled would cost seconds)."""
    route_services: Callable[[Obj], Awaitable[None]] | None = None
    """Make a Route reachable inside the cluster (the Kubernetes engine's ExternalName Services);
    None on the embedded engine, whose gateway is the only way in."""

    @property
    def services(self) -> Informer:
        return self.informers[SERVICES]

    @property
    def configurations(self) -> Informer:
        return self.informers[CONFIGURATIONS]

    @property
    def revisions(self) -> Informer:
        return self.informers[REVISIONS]

    @property
    def routes(self) -> Informer:
        return self.informers[ROUTES]


@dataclass(kw_only=True)
class ServingContext(ServingBase):
    """The embedded engine's serving reconcilers': replicas as local processes, images as
    snapshotted folders, and the autoscaler's scale."""

    runtime: ProcessRuntime
    artifacts: ArtifactStore
    drain: Callable[[str], None]
    """Take a replica out of routing and stop it once no gateway holds it."""
    publisher_is_draining: Callable[[str], bool]
    desired_scale: Callable[[str], int | None]
    """The autoscaler's desired replicas for a revision key (`ns/name`); None: not decided by
    the KPA (the caller keeps one replica)."""
    scale_decision: Callable[[str], Decision | None] = field(default=lambda _key: None)
    """The autoscaler's last decision for a revision key, if any (for the ScaleClamped condition)."""


@dataclass(kw_only=True)
class EventingContext(ReconcilerContext):
    """The eventing reconcilers' (Broker, Trigger, the channels, Subscription): the dispatch plan
    and Redis."""

    dispatch: DispatchHub
    """The dispatchers' link: which plan they run, who runs what."""
    plan_dirty: Callable[[], None]
    """Ask for a new dispatch plan (coalesced)."""
    redis_view: Callable[[], RedisView] = field(default=RedisView)
    """What the controller last learned of its Redis (durability), when it has one."""
    redis_logs: RedisLogs | None = None
    """Creates the streams and consumer groups of Redis-backed logs (None: no Redis configured)."""
    enqueue: Callable[[Kind, Key], None] = field(default=lambda _kind, _key: None)
    """Put a key of a kind on its reconciler's queue (what a watch does), for a change no object
    shows: a Redis stream made again wakes its consumers."""

    @property
    def brokers(self) -> Informer:
        return self.informers[BROKERS]

    @property
    def triggers(self) -> Informer:
        return self.informers[TRIGGERS]

    @property
    def channels(self) -> Informer:
        return self.informers[CHANNELS]

    @property
    def imcs(self) -> Informer:
        """InMemoryChannels: the channels Flint backs with a log."""
        return self.informers[IN_MEMORY_CHANNELS]

    @property
    def rchans(self) -> Informer:
        """RedisChannels: Flint's channels whose log is a Redis stream."""
        return self.informers[REDIS_CHANNELS]

    @property
    def subscriptions(self) -> Informer:
        return self.informers[SUBSCRIPTIONS]

    def lookup(self, group: str, kind: str, namespace: str, name: str) -> Obj | None:
        return self.informers.lookup(group, kind, namespace, name)

    def resolve(self, destination: Any, namespace: str) -> tuple[str | None, str]:
        return self.informers.resolve(destination, namespace, self.settings.engine)


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
