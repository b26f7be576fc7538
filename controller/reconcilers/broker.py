"""Broker reconciler: the address, the log in the gateways' snapshot, the dispatcher, the DLS."""

from __future__ import annotations

import copy

from controller.api.eventing import (
    BROKER_CONDITION_ADDRESSABLE,
    BROKER_CONDITION_FILTER,
    BROKER_CONDITION_INGRESS,
    BROKER_CONDITION_TRIGGER_CHANNEL,
    BROKER_CONDITIONS,
    FLINT_BROKER_CLASS,
    broker_address_url,
    broker_class,
)
from controller.eventing.plan import broker_log_relpath
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import roll_up, set_condition
from controller.reconcilers.context import BROKERS, Context, Key
from controller.reconcilers.deadletters import mark_dead_letter_sink


async def reconcile_broker(ctx: Context, key: Key) -> float | None:
    broker = ctx.brokers.get(*key)
    if broker is None:
        ctx.snapshot_dirty()
        ctx.plan_dirty()
        return None
    if broker_class(broker) != FLINT_BROKER_CLASS:
        return None  # another class's controller owns it
    now = ctx.clock()
    ns, name = key
    s = ctx.settings
    status = copy.deepcopy(broker.get("status") or {})
    status["observedGeneration"] = broker["metadata"].get("generation", 1)
    status["address"] = {"url": broker_address_url(ns, name, s.domain, s.gateway_port)}
    set_condition(status, BROKER_CONDITION_ADDRESSABLE, "True", now=now)
    set_condition(
        status, BROKER_CONDITION_TRIGGER_CHANNEL, "True", "ChannelLogReady",
        f"durable SQLite log {broker_log_relpath(broker['metadata']['uid'])}", now=now,
    )
    requeue: float | None = None
    served = any(
        b.kind == "broker" and b.namespace == ns and b.name == name for b in ctx.hub.snapshot.brokers
    )
    if not served:
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
    roll_up(status, list(BROKER_CONDITIONS), now=now)
    await write_status(ctx, BROKERS, broker, status)
    ctx.plan_dirty()
    return requeue
