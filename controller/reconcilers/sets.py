"""The reconcilers the controller runs on each engine, and the kinds the dispatch plan is built
from (what a change of which asks for a new plan)."""

from __future__ import annotations

from controller.reconcilers import (
    broker,
    channels,
    configuration,
    revision,
    revision_kubernetes,
    route,
    service,
    subscription,
    trigger,
)
from controller.reconcilers.context import (
    BROKERS,
    CHANNELS,
    IN_MEMORY_CHANNELS,
    REDIS_CHANNELS,
    SUBSCRIPTIONS,
    TRIGGERS,
    EventingContext,
    ServingContext,
)
from controller.reconcilers.revision_kubernetes import KubeServingContext
from controller.reconcilers.watches import Reconciler

__all__ = ["EVENTING", "KUBERNETES_SERVING", "PLAN_KINDS", "SERVING"]

SERVING: tuple[Reconciler[ServingContext], ...] = (
    service.RECONCILER, configuration.RECONCILER, revision.RECONCILER, route.RECONCILER)
"""The embedded engine's serving reconcilers: its revisions run as local processes."""
KUBERNETES_SERVING: tuple[Reconciler[KubeServingContext], ...] = (
    service.RECONCILER, configuration.RECONCILER, revision_kubernetes.RECONCILER, route.RECONCILER)
"""The Kubernetes engine's: its revisions run as Deployments."""
EVENTING: tuple[Reconciler[EventingContext], ...] = (
    broker.RECONCILER, trigger.RECONCILER, channels.CHANNEL, channels.IN_MEMORY_CHANNEL,
    channels.REDIS_CHANNEL, subscription.RECONCILER)
"""Every eventing reconciler, with what wakes it (each module's `WATCHES`)."""
PLAN_KINDS = (BROKERS, TRIGGERS, CHANNELS, IN_MEMORY_CHANNELS, REDIS_CHANNELS, SUBSCRIPTIONS)
"""The kinds the dispatch plan is built from (`build_plan`): a change asks for a new plan."""
