"""Knative messaging.knative.dev/v1 Channel, InMemoryChannel and Subscription on dicts.

Defaults, validation and messages follow knative.dev/eventing/pkg/apis/messaging/v1 (channel_*.go,
in_memory_channel_*.go, subscription_*.go); field paths are the manifest's JSON paths. In Flint an
InMemoryChannel is the channel log without fsync (not durable); a Channel's template names the
kind that backs it, InMemoryChannel by default.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from controller.api.duck import (
    delivery_errors,
    destination_errors,
    kreference_errors,
    set_delivery_defaults,
    set_destination_defaults,
)
from controller.api.meta import (
    DEFAULT_NAMESPACE,
    as_dict,
    err_disallowed,
    err_invalid_value,
    err_missing_field,
    index,
    is_set,
    join,
    metadata,
    set_default_namespace,
    validate_object_metadata,
)
from controller.api.types import FieldError, Obj

GROUP = "messaging.knative.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"

SUBSCRIBABLE_DUCK_VERSION_ANNOTATION = "messaging.knative.dev/subscribable"
SUBSCRIBABLE_DUCK_VERSION = "v1"
SCOPE_ANNOTATION = "eventing.knative.dev/scope"
SCOPES = ("cluster", "namespace")

FLINT_GROUP = "messaging.flint.dev"
FLINT_API_VERSION = f"{FLINT_GROUP}/{VERSION}"
IN_MEMORY_CHANNEL_KIND = "InMemoryChannel"
REDIS_CHANNEL_KIND = "RedisChannel"
"""Flint's own channel kind: an InMemoryChannel's spec and status, its log a Redis stream
(`flint up --redis`); a Channel picks it by its `channelTemplate`."""
CHANNEL_KINDS: tuple[tuple[str, str], ...] = (
    (API_VERSION, IN_MEMORY_CHANNEL_KIND),
    (FLINT_API_VERSION, REDIS_CHANNEL_KIND),
)
"""The (apiVersion, kind) of the channels Flint backs a Channel with."""

DEFAULT_CHANNEL_TEMPLATE: Mapping[str, Any] = MappingProxyType(
    {"apiVersion": API_VERSION, "kind": "InMemoryChannel"}
)
"""A Channel's `spec.channelTemplate` when it names none (Knative's default-ch-webhook config)."""
KUBERNETES_CHANNEL_TEMPLATE: Mapping[str, Any] = MappingProxyType(
    {"apiVersion": FLINT_API_VERSION, "kind": REDIS_CHANNEL_KIND}
)
"""The Kubernetes engine's default template: dispatcher pods share no disk, so an InMemoryChannel's
SQLite log (the embedded engine's) has no reader there; Redis is that engine's default backend."""


def default_channel_template(engine: str) -> Mapping[str, Any]:
    """The channel template a Channel naming none gets on `engine` (`embedded`, `kubernetes`)."""
    return KUBERNETES_CHANNEL_TEMPLATE if engine == "kubernetes" else DEFAULT_CHANNEL_TEMPLATE

# Condition types (channel_lifecycle.go, in_memory_channel_lifecycle.go, subscription_lifecycle.go).
CONDITION_READY = "Ready"
CHANNEL_CONDITIONS = ("BackingChannelReady", "Addressable", "DeadLetterSinkResolved")
IN_MEMORY_CHANNEL_CONDITIONS = (
    "DispatcherReady",
    "ServiceReady",
    "EndpointsReady",
    "Addressable",
    "ChannelServiceReady",
    "DeadLetterSinkResolved",
)
REDIS_CHANNEL_CONDITIONS = IN_MEMORY_CHANNEL_CONDITIONS
"""A RedisChannel's: an InMemoryChannel's (`ChannelServiceReady` False `RedisNotConfigured` without
Redis); its `Durable` condition is informational (severity Info), as a Redis broker's."""
SUBSCRIPTION_CONDITIONS = ("ReferencesResolved", "AddedToChannel", "ChannelReady")
"""Dependent conditions of `Ready`. A channel's status has `address.url`, `subscribers` and
`deadLetterSinkUri` (a Channel also `channel`, the backing channel's KReference); a
Subscription's has `physicalSubscription` {`subscriberUri`, `replyUri`, `deadLetterSinkUri`}."""

CHANNEL_SPEC_FIELDS = ("channelTemplate", "subscribers", "delivery")
IN_MEMORY_CHANNEL_SPEC_FIELDS = ("subscribers", "delivery")
SUBSCRIPTION_SPEC_FIELDS = ("channel", "subscriber", "reply", "delivery")
CHANNEL_TEMPLATE_FIELDS = frozenset({"apiVersion", "kind", "spec"})
SUBSCRIBER_SPEC_FIELDS = frozenset(
    {
        "uid",
        "generation",
        "subscriberUri",
        "subscriberCACerts",
        "subscriberAudience",
        "replyUri",
        "replyCACerts",
        "replyAudience",
        "delivery",
        "name",
    }
)


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def channel_address_url(namespace: str, name: str, domain: str = "localhost", port: int | None = None) -> str:
    """An InMemoryChannel's (and its Channel's) `status.address.url`:
    `http://channel-ingress.{domain}[:port]/{namespace}/{name}` (Knative's is a per-channel
    cluster Service host; Flint's channels share the gateway, like its brokers)."""
    host = f"channel-ingress.{domain}" + (f":{port}" if port else "")
    return f"http://{host}/{namespace}/{name}"


def _namespace(obj: Obj) -> str:
    return str(metadata(obj).get("namespace") or DEFAULT_NAMESPACE)


def _spec_for_defaults(obj: Obj) -> dict[str, Any] | None:
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    return spec if isinstance(spec, dict) else None


def _spec(obj: Obj, allowed: tuple[str, ...]) -> tuple[dict[str, Any], list[FieldError]]:
    raw = obj.get("spec")
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        return {}, [err_invalid_value(raw, "spec", "expected an object")]
    return raw, [err_disallowed(join("spec", k)) for k in sorted(raw) if k not in allowed]


def _subscribable_annotation(obj: Obj) -> None:
    meta = obj["metadata"]
    annotations = meta.get("annotations")
    if annotations is None:
        annotations = meta["annotations"] = {}
    if isinstance(annotations, dict) and SUBSCRIBABLE_DUCK_VERSION_ANNOTATION not in annotations:
        annotations[SUBSCRIBABLE_DUCK_VERSION_ANNOTATION] = SUBSCRIBABLE_DUCK_VERSION


def _immutable_spec(new: dict[str, Any], old: Any, mutable: tuple[str, ...]) -> list[FieldError]:
    """`Immutable fields changed (-old +new)` on `spec` when any field but `mutable` changed."""
    before = {k: v for k, v in as_dict(old).items() if k not in mutable and is_set(v)}
    after = {k: v for k, v in new.items() if k not in mutable and is_set(v)}
    if before == after:
        return []
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return [FieldError("spec", f"Immutable fields changed (-old +new); {', '.join(changed)}")]


def subscribers_errors(value: Any, path: str) -> list[FieldError]:
    """SubscribableSpec: each of `subscribers` names a `subscriberUri` or a `replyUri` (or both)."""
    if value is None:
        return []
    if not isinstance(value, list):
        return [err_invalid_value(value, path, "expected a list")]
    errs: list[FieldError] = []
    for i, sub in enumerate(value):
        spath = index(path, i)
        if not isinstance(sub, dict):
            errs.append(err_invalid_value(sub, spath, "expected an object"))
            continue
        errs += [err_disallowed(join(spath, k)) for k in sorted(sub) if k not in SUBSCRIBER_SPEC_FIELDS]
        if not sub.get("subscriberUri") and not sub.get("replyUri"):
            errs.append(
                FieldError(
                    ", ".join(sorted((join(spath, "replyUri"), join(spath, "subscriberUri")))),
                    "missing field(s); expected at least one of, got none",
                )
            )
        errs += delivery_errors(sub.get("delivery"), join(spath, "delivery"))
    return errs


# ---------------------------------------------------------------------------------------------
# Channel
# ---------------------------------------------------------------------------------------------


def default_channel(obj: Obj, template: Mapping[str, Any] = DEFAULT_CHANNEL_TEMPLATE) -> None:
    """Channel.SetDefaults: namespace, the subscribable duck annotation `v1`, the channel
    template (`template`: the engine's default) and the dead-letter sink's ref namespace."""
    set_default_namespace(obj)
    _subscribable_annotation(obj)
    if (spec := _spec_for_defaults(obj)) is not None:
        if spec.get("channelTemplate") is None:
            spec["channelTemplate"] = dict(template)
        set_delivery_defaults(spec.get("delivery"), _namespace(obj))


def channel_template_errors(value: Any, path: str) -> list[FieldError]:
    """IsValidChannelTemplate: `kind` and `apiVersion` required."""
    if value is None:
        return [err_missing_field(path)]
    if not isinstance(value, dict):
        return [err_invalid_value(value, path, "expected an object")]
    errs = [err_disallowed(join(path, k)) for k in sorted(value) if k not in CHANNEL_TEMPLATE_FIELDS]
    missing = [join(path, k) for k in ("kind", "apiVersion") if not value.get(k)]
    if missing:
        errs.append(err_missing_field(*missing))
    if value.get("spec") is not None and not isinstance(value["spec"], dict):
        errs.append(err_invalid_value(value["spec"], join(path, "spec"), "expected an object"))
    return errs


def validate_channel(new: Obj, old: Obj | None) -> list[FieldError]:
    """Channel.Validate: `spec.channelTemplate` (set by defaulting), no user `subscribers`,
    `spec.delivery`; on update only `subscribers` may change."""
    errs = validate_object_metadata(new, name_rule="dns1123-subdomain")
    spec, spec_errs = _spec(new, CHANNEL_SPEC_FIELDS)
    errs += spec_errs
    errs += channel_template_errors(spec.get("channelTemplate"), "spec.channelTemplate")
    if spec.get("subscribers") and old is None:
        # Subscriptions fill `subscribers`; a user creating a Channel may not.
        errs.append(err_disallowed("spec.subscribers"))
    else:
        errs += subscribers_errors(spec.get("subscribers"), "spec.subscribers")
    errs += delivery_errors(spec.get("delivery"), "spec.delivery", parent_namespace=_namespace(new))
    if old is not None:
        errs += _immutable_spec(spec, old.get("spec"), ("subscribers",))
    return errs


def channel_warnings(obj: Obj) -> list[str]:
    """A template naming another channel kind than InMemoryChannel or RedisChannel is not backed
    by Flint."""
    template = as_dict(as_dict(obj.get("spec")).get("channelTemplate"))
    kind, api_version = template.get("kind"), template.get("apiVersion")
    if kind and (api_version, kind) not in CHANNEL_KINDS:
        return [
            f"spec.channelTemplate: {api_version} {kind} is not a channel kind Flint provides;"
            f" the Channel stays not ready (use {API_VERSION} InMemoryChannel or"
            f" {FLINT_API_VERSION} RedisChannel)"
        ]
    return []


# ---------------------------------------------------------------------------------------------
# InMemoryChannel
# ---------------------------------------------------------------------------------------------


def default_in_memory_channel(obj: Obj) -> None:
    """InMemoryChannel.SetDefaults: namespace, the subscribable duck annotation `v1`, the
    dead-letter sink's ref namespace."""
    set_default_namespace(obj)
    _subscribable_annotation(obj)
    if (spec := _spec_for_defaults(obj)) is not None:
        set_delivery_defaults(spec.get("delivery"), _namespace(obj))


def validate_in_memory_channel(new: Obj, old: Obj | None) -> list[FieldError]:
    """InMemoryChannel.Validate: `subscribers` each with a URI, `spec.delivery`, and the scope
    annotation `cluster` or `namespace`."""
    errs = validate_object_metadata(new, name_rule="dns1123-subdomain")
    spec, spec_errs = _spec(new, IN_MEMORY_CHANNEL_SPEC_FIELDS)
    errs += spec_errs
    errs += subscribers_errors(spec.get("subscribers"), "spec.subscribers")
    errs += delivery_errors(spec.get("delivery"), "spec.delivery", parent_namespace=_namespace(new))
    annotations = as_dict(metadata(new).get("annotations"))
    if SCOPE_ANNOTATION in annotations and annotations[SCOPE_ANNOTATION] not in SCOPES:
        errs.append(
            err_invalid_value(
                annotations[SCOPE_ANNOTATION],
                join("metadata.annotations", SCOPE_ANNOTATION),
                "expected either 'cluster' or 'namespace'",
            )
        )
    return errs


default_redis_channel = default_in_memory_channel
"""RedisChannel.SetDefaults: an InMemoryChannel's."""
validate_redis_channel = validate_in_memory_channel
"""RedisChannel.Validate: an InMemoryChannel's (same spec: `subscribers`, `delivery`)."""


# ---------------------------------------------------------------------------------------------
# Subscription
# ---------------------------------------------------------------------------------------------


def default_subscription(obj: Obj) -> None:
    """SubscriptionSpec.SetDefaults: namespace; subscriber's, reply's and dead-letter sink's ref
    namespaces default to the Subscription's."""
    set_default_namespace(obj)
    ns = _namespace(obj)
    if (spec := _spec_for_defaults(obj)) is not None:
        set_destination_defaults(spec.get("subscriber"), ns)
        set_destination_defaults(spec.get("reply"), ns)
        set_delivery_defaults(spec.get("delivery"), ns)


def _empty_destination(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and not any(is_set(v) for v in value.values()))


def validate_subscription(new: Obj, old: Obj | None) -> list[FieldError]:
    """Subscription.Validate: `spec.channel` required (a KReference in the same namespace), at
    least one of `subscriber` and `reply` (Destinations), `spec.delivery`; on update only
    `subscriber` and `reply` may change."""
    ns = _namespace(new)
    errs = validate_object_metadata(new, name_rule="dns1123-subdomain")
    spec, spec_errs = _spec(new, SUBSCRIPTION_SPEC_FIELDS)
    errs += spec_errs
    channel = spec.get("channel")
    if _empty_destination(channel):
        missing = "missing field(s); the Subscription must reference a channel"
        return [*errs, FieldError("spec.channel", missing)]
    errs += kreference_errors(channel, "spec.channel", parent_namespace=ns)
    subscriber, reply = spec.get("subscriber"), spec.get("reply")
    if _empty_destination(subscriber) and _empty_destination(reply):
        errs.append(
            FieldError(
                "spec.reply, spec.subscriber",
                "missing field(s); the Subscription must reference at least one of (reply or a subscriber)",
            )
        )
    if not _empty_destination(subscriber):
        errs += destination_errors(subscriber, "spec.subscriber", parent_namespace=ns)
    if not _empty_destination(reply):
        errs += destination_errors(reply, "spec.reply", parent_namespace=ns)
    errs += delivery_errors(spec.get("delivery"), "spec.delivery", parent_namespace=ns)
    if old is not None:
        errs += _immutable_spec(spec, old.get("spec"), ("subscriber", "reply"))
    return errs


def channel_ref_key(sub: Obj) -> str:
    """`namespace/name` of the channel a Subscription names (for indexes and lookups)."""
    channel = as_dict(as_dict(sub.get("spec")).get("channel"))
    return f"{channel.get('namespace') or _namespace(sub)}/{channel.get('name', '')}"


__all__ = [
    "API_VERSION",
    "CHANNEL_CONDITIONS",
    "CHANNEL_KINDS",
    "CONDITION_READY",
    "DEFAULT_CHANNEL_TEMPLATE",
    "FLINT_API_VERSION",
    "FLINT_GROUP",
    "GROUP",
    "IN_MEMORY_CHANNEL_CONDITIONS",
    "IN_MEMORY_CHANNEL_KIND",
    "REDIS_CHANNEL_CONDITIONS",
    "REDIS_CHANNEL_KIND",
    "SCOPE_ANNOTATION",
    "SUBSCRIBABLE_DUCK_VERSION_ANNOTATION",
    "SUBSCRIPTION_CONDITIONS",
    "VERSION",
    "channel_address_url",
    "channel_ref_key",
    "channel_template_errors",
    "channel_warnings",
    "default_channel",
    "default_in_memory_channel",
    "default_redis_channel",
    "default_subscription",
    "subscribers_errors",
    "validate_channel",
    "validate_in_memory_channel",
    "validate_redis_channel",
    "validate_subscription",
]
