"""Trigger reconciler: the broker, the subscriber's URI, the dead-letter sink, the dispatcher; the
consumer group of a Redis broker's trigger, created here before the trigger enters the dispatch
plan (`redis_marks`)."""

from __future__ import annotations

import copy
import json

from controller.api.eventing import (
    BACKEND_REDIS,
    DEPENDENCY_ANNOTATION,
    TRIGGER_CONDITION_BROKER,
    TRIGGER_CONDITION_DEPENDENCY,
    TRIGGER_CONDITION_SUBSCRIBED,
    TRIGGER_CONDITION_SUBSCRIBER_RESOLVED,
    TRIGGER_CONDITIONS,
    broker_backend,
)
from controller.eventing.filters import UnsupportedFilter, compile_trigger_filter
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import get_condition, roll_up, run_by, set_condition
from controller.reconcilers.context import (
    BROKERS,
    REFERABLE_KINDS,
    TRIGGERS,
    EventingContext,
    Key,
    Obj,
)
from controller.reconcilers.deadletters import mark_dead_letter_sink
from controller.reconcilers.redis_marks import NotCreated, ensure_group, unmark_group
from controller.reconcilers.watches import (
    Change,
    Reconciler,
    Watch,
    all_in_namespace,
    itself,
    matching,
)


def _dependency(ctx: EventingContext, trigger: Obj, ns: str) -> tuple[str, str, str]:
    """(status, reason, message) of DependencyReady from the `knative.dev/dependency` annotation."""
    raw = (trigger["metadata"].get("annotations") or {}).get(DEPENDENCY_ANNOTATION)
    if not raw:
        return "True", "", ""
    ref = json.loads(raw)
    group = str(ref.get("apiVersion") or "").partition("/")[0]
    obj = ctx.lookup(group, str(ref.get("kind") or ""), ns, str(ref.get("name") or ""))
    what = f"dependency {ref.get('kind')} {ns}/{ref.get('name')}"
    if obj is None:
        return "False", "DependencyDoesNotExist", f"{what} not found"
    ready = get_condition(obj.get("status") or {}, "Ready") or {}
    if ready.get("status") == "True":
        return "True", "", ""
    return "Unknown", "DependencyNotReady", f"{what} is not ready"


async def reconcile_trigger(ctx: EventingContext, key: Key) -> float | None:
    trigger = ctx.triggers.get(*key)
    if trigger is None:
        ctx.plan_dirty()
        return None
    now = ctx.clock()
    ns, _ = key
    spec = trigger.get("spec") or {}
    status = copy.deepcopy(trigger.get("status") or {})
    status["observedGeneration"] = trigger["metadata"].get("generation", 1)
    requeue: float | None = None

    broker = ctx.brokers.get(ns, str(spec.get("broker") or ""))
    if broker is None:
        set_condition(status, TRIGGER_CONDITION_BROKER, "False", "BrokerDoesNotExist",
                      f'Broker "{spec.get("broker")}" does not exist', now=now)
    else:
        ready = get_condition(broker.get("status") or {}, "Ready") or {"status": "Unknown"}
        set_condition(status, TRIGGER_CONDITION_BROKER, ready["status"], ready.get("reason", ""),
                      ready.get("message", ""), now=now)

    uri, err = ctx.resolve(spec.get("subscriber"), ns)
    if uri is None:
        status.pop("subscriberUri", None)
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBER_RESOLVED, "False",
                      "Unable to get the Subscriber's URI", err, now=now)
        requeue = 5.0
    else:
        status["subscriberUri"] = uri
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBER_RESOLVED, "True", now=now)

    if not mark_dead_letter_sink(ctx, status, spec.get("delivery"), ns, now=now):
        requeue = 5.0

    dep_status, dep_reason, dep_message = _dependency(ctx, trigger, ns)
    set_condition(status, TRIGGER_CONDITION_DEPENDENCY, dep_status, dep_reason, dep_message, now=now)  # type: ignore[arg-type]

    try:
        compile_trigger_filter((spec.get("filter") or {}).get("attributes"), spec.get("filters"))
        filter_error = ""
    except UnsupportedFilter as exc:
        filter_error = str(exc)
    uid = trigger["metadata"].get("uid", "")
    on_redis = (broker is not None and ctx.redis_logs is not None
                and broker_backend(broker, ctx.settings.engine) == BACKEND_REDIS)
    if not on_redis:
        unmark_group(status)
    not_created: NotCreated | None = None
    if on_redis and broker is not None and uid and not filter_error and uri is not None:
        # Before the plan has it (a new trigger starts at the tail, from when it could run).
        not_created = await ensure_group(ctx, status, broker["metadata"]["uid"], uid)
    if filter_error:
        set_condition(
            status, TRIGGER_CONDITION_SUBSCRIBED, "False", "UnsupportedFilter", filter_error, now=now
        )
    elif uri is None or broker is None:
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBED, "Unknown", "NotSubscribed",
                      "waiting for the broker and the subscriber", now=now)
    elif not_created is not None:
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBED, "Unknown", *not_created, now=now)
        requeue = requeue or 2.0
    elif not ctx.dispatch.connected():
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBED, "Unknown", "NoDispatcher",
                      "the dispatcher is not connected to the controller", now=now)
        requeue = requeue or 2.0
    elif n := ctx.dispatch.runners(uid):
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBED, "True", "", run_by(n), now=now)
    else:
        set_condition(status, TRIGGER_CONDITION_SUBSCRIBED, "Unknown", "Programming",
                      "waiting for the dispatcher to run the trigger", now=now)
        requeue = requeue or 1.0
    if on_redis and ctx.redis_logs is not None:  # a group Redis lost is made again within this
        requeue = requeue or ctx.redis_logs.recheck_s
    roll_up(status, list(TRIGGER_CONDITIONS), now=now)
    await write_status(ctx, TRIGGERS, trigger, status)
    ctx.plan_dirty()
    return requeue


def _of_broker(trigger: Obj, change: Change) -> bool:
    return (trigger.get("spec") or {}).get("broker") == change.name


WATCHES = (
    Watch(TRIGGERS, itself),
    Watch(BROKERS, matching(TRIGGERS, _of_broker)),  # its broker: address, backend, stream
    # Its subscriber and dead-letter sink may resolve now (or no longer).
    *(Watch(kind, all_in_namespace(TRIGGERS)) for kind in REFERABLE_KINDS),
)
RECONCILER = Reconciler(TRIGGERS, reconcile_trigger, WATCHES)
