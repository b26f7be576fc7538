"""Channel and InMemoryChannel reconcilers: a Channel is backed by an InMemoryChannel, which has a log.

An InMemoryChannel is what the gateway serves (`channel-ingress.{domain}/{ns}/{name}`) and what
the dispatcher reads: the same log as a broker's, without fsync (Knative's name, documented as
not durable). A Channel creates and owns an InMemoryChannel of its name from its
`channelTemplate` (InMemoryChannel by default, or RedisChannel below), passes it its
`delivery`, and mirrors its address and readiness.

Both keep `spec.subscribers` as Knative's subscription controller does (`subscribers.py`): an
InMemoryChannel lists every Subscription that delivers from it, a Channel those that name it;
`status.subscribers` reports each entry. The InMemoryChannel reconciler is the one writer of an
InMemoryChannel's `subscribers` (a Channel passes them through when it updates its child).

A RedisChannel (messaging.flint.dev/v1, Flint's kind) is an InMemoryChannel whose log is a Redis
stream (`flint up --redis`): the same spec, status and address, reconciled by the same code, plus
the backend annotation `redis`, a `Durable` condition (Info) and, without Redis configured,
`ChannelServiceReady=False` (`RedisNotConfigured`); its stream is created here before the gateways
get the channel (`redis_marks`). A Channel whose template names it creates and owns a
RedisChannel instead of an InMemoryChannel.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from controller.api import messaging
from controller.api.eventing import BACKEND_ANNOTATION, BACKEND_REDIS, ENGINE_KUBERNETES
from controller.informer import Informer
from controller.reconcilers.broker import channel_condition, redis_not_configured
from controller.reconcilers.children import NotOwned, ensure_child, write_status
from controller.reconcilers.conditions import get_condition, remove_condition, roll_up, set_condition
from controller.reconcilers.context import (
    CHANNELS,
    IN_MEMORY_CHANNELS,
    REDIS_CHANNELS,
    SUBSCRIPTIONS,
    EventingContext,
    Key,
    Obj,
    ns_name,
)
from controller.reconcilers.deadletters import mark_dead_letter_sink
from controller.reconcilers.redis_marks import NotCreated, ensure_stream
from controller.reconcilers.subscribers import MANAGED_ANNOTATION, subscribers_status, with_subscribers
from controller.reconcilers.watches import Reconciler, Watch, all_in_namespace, itself, owners
from controller.store.base import Kind

IMC_KIND = messaging.IN_MEMORY_CHANNEL_KIND
IMC_ON_KUBERNETES = (
    "an InMemoryChannel's log is a SQLite file of the embedded engine, which no dispatcher pod reads: "
    f"use a {messaging.REDIS_CHANNEL_KIND} ({messaging.FLINT_API_VERSION}), a Channel's default "
    "template on this engine")
REDIS_CHANNEL_KIND = messaging.REDIS_CHANNEL_KIND


def _log_channel(ctx: EventingContext, kind: str, namespace: str, name: str) -> Obj | None:
    """The InMemoryChannel or RedisChannel of that name."""
    if kind == IMC_KIND:
        return ctx.imcs.get(namespace, name)
    if kind == REDIS_CHANNEL_KIND:
        return ctx.rchans.get(namespace, name)
    return None


def backing_imc(ctx: EventingContext, namespace: str, channel_ref: Obj) -> tuple[Obj | None, Obj | None, str]:
    """(the InMemoryChannel or RedisChannel, the object the ref names, why not) for a
    Subscription's `channel`."""
    kind = str(channel_ref.get("kind") or "")
    name = str(channel_ref.get("name") or "")
    if kind in (IMC_KIND, REDIS_CHANNEL_KIND):
        imc = _log_channel(ctx, kind, namespace, name)
        return imc, imc, "" if imc is not None else f'{kind} "{name}" not found'
    if kind == "Channel":
        ch = ctx.channels.get(namespace, name)
        if ch is None:
            return None, None, f'Channel "{name}" not found'
        backing = (ch.get("status") or {}).get("channel") or {}
        imc = (_log_channel(ctx, str(backing.get("kind") or IMC_KIND), namespace,
                            str(backing.get("name") or "")) if backing else None)
        return imc, ch, "" if imc is not None else f'Channel "{name}" has no backing channel yet'
    return None, None, (f"channel kind {kind!r} is not supported: use Channel, InMemoryChannel or "
                        "RedisChannel")


def delivering_from(ctx: EventingContext, imc: Obj) -> list[Obj]:
    """Every Subscription that delivers from an InMemoryChannel or RedisChannel (naming it or its
    Channel)."""
    ns = imc["metadata"].get("namespace", "default")
    out = []
    for sub in ctx.subscriptions.list(ns):
        ref = (sub.get("spec") or {}).get("channel") or {}
        found, _, _ = backing_imc(ctx, ns, ref)
        if found is not None and found["metadata"].get("uid") == imc["metadata"].get("uid"):
            out.append(sub)
    return out


def naming(ctx: EventingContext, channel: Obj) -> list[Obj]:
    """The Subscriptions whose `spec.channel` names a Channel."""
    ns, name = channel["metadata"].get("namespace", "default"), channel["metadata"]["name"]
    return [
        sub
        for sub in ctx.subscriptions.list(ns)
        if ((sub.get("spec") or {}).get("channel") or {}).get("kind") == "Channel"
        and ((sub.get("spec") or {}).get("channel") or {}).get("name") == name
    ]


async def reconcile_in_memory_channel(ctx: EventingContext, key: Key) -> float | None:
    return await _reconcile_log_channel(ctx, key, IN_MEMORY_CHANNELS, ctx.imcs, redis_backed=False)


async def reconcile_redis_channel(ctx: EventingContext, key: Key) -> float | None:
    return await _reconcile_log_channel(ctx, key, REDIS_CHANNELS, ctx.rchans, redis_backed=True)


async def _reconcile_log_channel(
    ctx: EventingContext, key: Key, kind: Kind, informer: Informer, *, redis_backed: bool
) -> float | None:
    """An InMemoryChannel's (or a RedisChannel's, `redis_backed`) status."""
    imc = informer.get(*key)
    if imc is None:
        ctx.snapshot_dirty()
        ctx.plan_dirty()
        return None
    updated = with_subscribers(imc, delivering_from(ctx, imc))
    if updated is not None:
        imc = await ctx.store.update(kind, updated)
    now = ctx.clock()
    ns, name = key
    s = ctx.settings
    status = copy.deepcopy(imc.get("status") or {})
    status["observedGeneration"] = imc["metadata"].get("generation", 1)
    status["address"] = {"url": messaging.channel_address_url(ns, name, s.domain, s.gateway_port)}
    set_condition(status, "Addressable", "True", now=now)
    set_condition(status, "EndpointsReady", "True", now=now)
    ch_status, ch_reason = "True", ""
    not_created: NotCreated | None = None
    if redis_backed:
        annotations: dict[str, Any] = dict(status.get("annotations") or {})
        annotations[BACKEND_ANNOTATION] = BACKEND_REDIS
        status["annotations"] = annotations
        uid = imc["metadata"].get("uid", "")
        if ctx.redis_logs is not None and uid:
            def wake_subscriptions() -> None:  # their groups must be made again now too
                for sub in delivering_from(ctx, imc):
                    ctx.enqueue(SUBSCRIPTIONS, ns_name(sub))

            not_created = await ensure_stream(ctx, status, uid, wake_subscriptions)
        ch_status, ch_reason, ch_message, durable = channel_condition(
            BACKEND_REDIS, uid, redis=s.redis is not None, view=ctx.redis_view(),
            not_created=not_created, no_redis=redis_not_configured(
                "a RedisChannel keeps its log on Redis", s.engine))
        set_condition(status, "ChannelServiceReady", ch_status, ch_reason, ch_message, now=now)
        if durable is None:
            remove_condition(status, "Durable")
        else:
            set_condition(status, "Durable", *durable, now=now, severity="Info")
    elif s.engine == ENGINE_KUBERNETES:
        ch_status, ch_reason = "False", "EmbeddedOnly"
        set_condition(status, "ChannelServiceReady", "False", ch_reason, IMC_ON_KUBERNETES, now=now)
    else:
        set_condition(status, "ChannelServiceReady", "True", now=now)
    requeue: float | None = 2.0 if not_created is not None else None
    served = any(
        b.kind == "channel" and b.namespace == ns and b.name == name for b in ctx.hub.snapshot.brokers
    )
    if ch_reason == "EmbeddedOnly":
        set_condition(status, "ServiceReady", "False", ch_reason, IMC_ON_KUBERNETES, now=now)
    elif ch_status != "True":  # not served until Redis is configured and the stream exists
        set_condition(status, "ServiceReady", "Unknown", ch_reason,
                      "the gateways serve the channel once its Redis stream exists", now=now)
    elif not served:
        ctx.snapshot_dirty()
        set_condition(status, "ServiceReady", "Unknown", "Programming",
                      "waiting for the gateway snapshot to carry the channel", now=now)
    elif not ctx.hub.connected():
        set_condition(status, "ServiceReady", "Unknown", "NoGateway",
                      "no gateway worker is connected to the controller", now=now)
        requeue = 1.0
    elif ctx.hub.acked_by_all(ctx.hub.version):
        set_condition(status, "ServiceReady", "True", now=now)
    else:
        set_condition(status, "ServiceReady", "Unknown", "Programming",
                      "waiting for every gateway worker to apply the channel", now=now)
    if ctx.dispatch.connected():
        set_condition(status, "DispatcherReady", "True", now=now)
    else:
        set_condition(status, "DispatcherReady", "Unknown", "NoDispatcher",
                      "the dispatcher is not connected to the controller", now=now)
        requeue = 2.0
    if not mark_dead_letter_sink(ctx, status, (imc.get("spec") or {}).get("delivery"), ns, now=now):
        requeue = requeue or 5.0
    status["subscribers"] = subscribers_status(imc, ctx.dispatch.runs)
    if not status["subscribers"]:
        del status["subscribers"]
    if redis_backed and ctx.redis_logs is not None:  # what Redis lost is made again within this
        requeue = requeue or ctx.redis_logs.recheck_s
    conditions = (messaging.REDIS_CHANNEL_CONDITIONS if redis_backed
                  else messaging.IN_MEMORY_CHANNEL_CONDITIONS)
    roll_up(status, list(conditions), now=now)
    await write_status(ctx, kind, imc, status)
    ctx.plan_dirty()
    return requeue


def template_of(channel: Obj, default: Mapping[str, Any] = messaging.DEFAULT_CHANNEL_TEMPLATE) -> Obj:
    """A Channel's `channelTemplate`, else the engine's `default` (a Channel the webhook did
    not default, e.g. written before it was installed)."""
    return dict((channel.get("spec") or {}).get("channelTemplate") or default)


def backing_kind(channel: Obj, default: Mapping[str, Any] = messaging.DEFAULT_CHANNEL_TEMPLATE
                 ) -> tuple[str, str] | None:
    """(apiVersion, kind) of the channel a Channel's template names, if Flint provides it."""
    template = template_of(channel, default)
    pair = (str(template.get("apiVersion", messaging.API_VERSION)), str(template.get("kind", IMC_KIND)))
    return pair if pair in messaging.CHANNEL_KINDS else None


def backing_manifest(channel: Obj, existing: Obj | None = None,
                     default: Mapping[str, Any] = messaging.DEFAULT_CHANNEL_TEMPLATE) -> Obj:
    """The InMemoryChannel (or RedisChannel, as the template says) a Channel owns: its name, the
    template's spec, the Channel's delivery; the `subscribers` (and their annotation) of the
    `existing` one, which are its own to keep."""
    meta = channel["metadata"]
    spec = channel.get("spec") or {}
    template = template_of(channel, default)
    api_version, kind = backing_kind(channel, default) or (messaging.API_VERSION, IMC_KIND)
    imc_spec = copy.deepcopy(template.get("spec") or {})
    imc_spec.pop("subscribers", None)
    if spec.get("delivery"):
        imc_spec["delivery"] = copy.deepcopy(spec["delivery"])
    manifest: Obj = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace", "default"),
            "labels": {"messaging.knative.dev/channel": meta["name"]},
            "ownerReferences": [{
                "apiVersion": messaging.API_VERSION, "kind": "Channel", "name": meta["name"],
                "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": imc_spec,
    }
    if existing is not None:
        if (existing.get("spec") or {}).get("subscribers"):
            imc_spec["subscribers"] = copy.deepcopy(existing["spec"]["subscribers"])
        managed = (existing["metadata"].get("annotations") or {}).get(MANAGED_ANNOTATION)
        if managed:
            manifest["metadata"]["annotations"] = {MANAGED_ANNOTATION: managed}
    return manifest


async def reconcile_channel(ctx: EventingContext, key: Key) -> float | None:
    ch = ctx.channels.get(*key)
    if ch is None:
        return None
    updated = with_subscribers(ch, naming(ctx, ch))
    if updated is not None:
        ch = await ctx.store.update(CHANNELS, updated)
    now = ctx.clock()
    status = copy.deepcopy(ch.get("status") or {})
    status["observedGeneration"] = ch["metadata"].get("generation", 1)
    default = messaging.default_channel_template(ctx.settings.engine)
    template = template_of(ch, default)
    imc: Obj | None = None
    backing = backing_kind(ch, default)
    if backing is None:
        set_condition(
            status, "BackingChannelReady", "False", "ChannelTemplateUnsupported",
            f"Flint backs channels with {messaging.API_VERSION} InMemoryChannel or "
            f"{messaging.FLINT_API_VERSION} RedisChannel, not "
            f"{template.get('apiVersion')} {template.get('kind')}", now=now,
        )
    else:
        child_kind, informer = ((REDIS_CHANNELS, ctx.rchans) if backing[1] == REDIS_CHANNEL_KIND
                                else (IN_MEMORY_CHANNELS, ctx.imcs))
        assert informer is not None
        try:
            existing = informer.get(*key)
            imc = await ensure_child(ctx, child_kind, informer, ch,
                                     backing_manifest(ch, existing, default))
        except NotOwned as exc:
            set_condition(status, "BackingChannelReady", "False", "NotOwned", str(exc), now=now)
    if imc is not None:
        status["channel"] = {
            "apiVersion": imc.get("apiVersion", messaging.API_VERSION), "kind": imc.get("kind", IMC_KIND),
            "name": imc["metadata"]["name"], "namespace": imc["metadata"].get("namespace", "default"),
        }
        istatus = imc.get("status") or {}
        ready = get_condition(istatus, "Ready") or {"status": "Unknown", "reason": "Creating"}
        set_condition(status, "BackingChannelReady", ready["status"], ready.get("reason", ""),
                      ready.get("message", ""), now=now)
        if istatus.get("address"):
            status["address"] = istatus["address"]
            set_condition(status, "Addressable", "True", now=now)
        else:
            set_condition(status, "Addressable", "Unknown", "NoAddress",
                          "the backing channel has no address yet", now=now)
        dls = get_condition(istatus, "DeadLetterSinkResolved") or {"status": "Unknown"}
        set_condition(status, "DeadLetterSinkResolved", dls["status"], dls.get("reason", ""),
                      dls.get("message", ""), now=now)
        if istatus.get("deadLetterSinkUri"):
            status["deadLetterSinkUri"] = istatus["deadLetterSinkUri"]
        else:
            status.pop("deadLetterSinkUri", None)
    else:
        set_condition(status, "Addressable", "Unknown", "NoBackingChannel", "", now=now)
        set_condition(status, "DeadLetterSinkResolved", "Unknown", "NoBackingChannel", "", now=now)
    status["subscribers"] = subscribers_status(ch, ctx.dispatch.runs)
    if not status["subscribers"]:
        del status["subscribers"]
    roll_up(status, list(messaging.CHANNEL_CONDITIONS), now=now)
    await write_status(ctx, CHANNELS, ch, status)
    return None


CHANNEL_WATCHES = (
    Watch(CHANNELS, itself),
    Watch(IN_MEMORY_CHANNELS, owners("Channel")),  # its backing channel: address, readiness
    Watch(REDIS_CHANNELS, owners("Channel")),
    Watch(SUBSCRIPTIONS, all_in_namespace(CHANNELS)),  # spec.subscribers passes through
)
CHANNEL = Reconciler(CHANNELS, reconcile_channel, CHANNEL_WATCHES)
IN_MEMORY_CHANNEL = Reconciler(IN_MEMORY_CHANNELS, reconcile_in_memory_channel, (
    Watch(IN_MEMORY_CHANNELS, itself),
    Watch(SUBSCRIPTIONS, all_in_namespace(IN_MEMORY_CHANNELS)),  # spec and status.subscribers
))
REDIS_CHANNEL = Reconciler(REDIS_CHANNELS, reconcile_redis_channel, (
    Watch(REDIS_CHANNELS, itself),
    Watch(SUBSCRIPTIONS, all_in_namespace(REDIS_CHANNELS)),
))
