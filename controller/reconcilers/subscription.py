"""Subscription reconciler: its channel, subscriber, reply and dead-letter sink, the dispatcher;
the consumer group of a RedisChannel's subscription, created here before the subscription enters
the dispatch plan (`redis_marks`)."""

from __future__ import annotations

import copy

from controller.api import messaging
from controller.reconcilers.channels import REDIS_CHANNEL_KIND, backing_imc
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import get_condition, roll_up, run_by, set_condition
from controller.reconcilers.context import REFERABLE_KINDS, SUBSCRIPTIONS, EventingContext, Key
from controller.reconcilers.deadletters import dead_letter_sink
from controller.reconcilers.redis_marks import NotCreated, ensure_group, unmark_group
from controller.reconcilers.watches import Reconciler, Watch, all_in_namespace, itself


async def reconcile_subscription(ctx: EventingContext, key: Key) -> float | None:
    sub = ctx.subscriptions.get(*key)
    if sub is None:
        ctx.plan_dirty()
        return None
    now = ctx.clock()
    ns, _ = key
    spec = sub.get("spec") or {}
    status = copy.deepcopy(sub.get("status") or {})
    status["observedGeneration"] = sub["metadata"].get("generation", 1)
    requeue: float | None = None

    imc, named, channel_err = backing_imc(ctx, ns, spec.get("channel") or {})
    physical: dict[str, str] = {}
    errors: list[str] = [channel_err] if channel_err else []
    for field, target in (("subscriber", "subscriberUri"), ("reply", "replyUri")):
        dest = spec.get(field)
        if not dest:
            continue
        uri, err = ctx.resolve(dest, ns)
        if uri is None:
            errors.append(f"{field}: {err}")
        else:
            physical[target] = uri
    dls, dls_err, configured = dead_letter_sink(ctx, spec.get("delivery"), ns)
    if configured and dls is None:
        errors.append(f"deadLetterSink: {dls_err}")
    elif dls is None and imc is not None:
        dls = (imc.get("status") or {}).get("deadLetterSinkUri")  # the channel's sink
    if dls:
        physical["deadLetterSinkUri"] = dls
    status["physicalSubscription"] = physical
    if errors:
        set_condition(status, "ReferencesResolved", "False", "ReferencesNotResolved", "; ".join(errors),
                      now=now)
        requeue = 5.0
    else:
        set_condition(status, "ReferencesResolved", "True", now=now)

    if named is None:
        set_condition(status, "ChannelReady", "False", "ChannelNotFound", channel_err, now=now)
    else:
        ready = get_condition(named.get("status") or {}, "Ready") or {"status": "Unknown"}
        set_condition(status, "ChannelReady", ready["status"], ready.get("reason", ""),
                      ready.get("message", ""), now=now)

    uid = sub["metadata"].get("uid", "")
    on_redis = (imc is not None and imc.get("kind") == REDIS_CHANNEL_KIND
                and ctx.redis_logs is not None and bool(imc["metadata"].get("uid")))
    if not on_redis:
        unmark_group(status)
    not_created: NotCreated | None = None
    if on_redis and imc is not None and uid and not errors:
        # Before the plan has it (a new subscription starts at the tail, from when it could run).
        not_created = await ensure_group(ctx, status, imc["metadata"]["uid"], uid)
    if errors or imc is None:
        set_condition(status, "AddedToChannel", "Unknown", "NotAdded",
                      "waiting for the channel and the references", now=now)
    elif not_created is not None:
        set_condition(status, "AddedToChannel", "Unknown", *not_created, now=now)
        requeue = requeue or 2.0
    elif n := ctx.dispatch.runners(uid):
        set_condition(status, "AddedToChannel", "True", "", run_by(n), now=now)
    else:
        set_condition(status, "AddedToChannel", "Unknown", "Programming",
                      "waiting for the dispatcher to run the subscription", now=now)
        requeue = requeue or 1.0
    if on_redis and ctx.redis_logs is not None:  # a group Redis lost is made again within this
        requeue = requeue or ctx.redis_logs.recheck_s
    roll_up(status, list(messaging.SUBSCRIPTION_CONDITIONS), now=now)
    await write_status(ctx, SUBSCRIPTIONS, sub, status)
    ctx.plan_dirty()
    return requeue


WATCHES = (
    Watch(SUBSCRIPTIONS, itself),
    # Its channel, subscriber, reply and dead-letter sink may resolve now (or no longer).
    *(Watch(kind, all_in_namespace(SUBSCRIPTIONS)) for kind in REFERABLE_KINDS),
)
RECONCILER = Reconciler(SUBSCRIPTIONS, reconcile_subscription, WATCHES)
