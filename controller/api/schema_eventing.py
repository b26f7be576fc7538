"""Schemas of eventing.knative.dev/v1 Broker, Trigger and messaging.knative.dev/v1 Channel,
InMemoryChannel, Subscription, with Knative's duck types (KReference, Destination, DeliverySpec)."""

from __future__ import annotations

from controller.api import eventing, messaging
from controller.api.schema import Schema, array, integer, map_of, obj, preserve, string, string_map
from controller.api.schema_common import addressable, kind, status

DUCK = "dev.knative.pkg.apis.duck.v1"
EVENTING_DUCK = "dev.knative.eventing.pkg.apis.duck.v1"


def kreference(description: str) -> Schema:
    ref = obj(
        "A reference to an object of any kind (Knative's duck KReference).",
        {
            "kind": string("Kind of the referent."),
            "namespace": string("Namespace of the referent (defaults to the referring object's)."),
            "name": string("Name of the referent."),
            "apiVersion": string("API version of the referent."),
            "group": string("API group of the referent (instead of apiVersion, the served version)."),
            "address": string("The name of one of the referent's addresses."),
        },
        name=f"{DUCK}.KReference",
    )
    return ref.described(description)


def destination(description: str) -> Schema:
    dest = obj(
        "Where events go: an object's address (ref), a URI, or a URI relative to the object's.",
        {
            "ref": kreference("An addressable object; uri is then resolved against its URL."),
            "uri": string("An absolute URI, or one relative to ref's URL."),
            "CACerts": string("CA certificates to trust for the destination, PEM."),
            "audience": string("The OIDC audience of the destination."),
        },
        name=f"{DUCK}.Destination",
    )
    return dest.described(description)


def delivery(description: str = "How events are delivered: retries, backoff, dead letters.") -> Schema:
    spec = obj(
        "Delivery options: retries, backoff, timeout and where undeliverable events go.",
        {
            "deadLetterSink": destination("Where an event goes once every retry failed."),
            "retry": integer("How many times to retry after the first attempt fails.", fmt="int32"),
            "timeout": string("How long one attempt may take, an ISO-8601 duration (PT10S)."),
            "backoffPolicy": string("How the wait between retries grows.", enum=("linear", "exponential")),
            "backoffDelay": string("The first wait between retries, an ISO-8601 duration (PT0.2S)."),
            "retryAfterMax": string("The longest Retry-After honoured, an ISO-8601 duration."),
            "format": string("How events are sent: json (structured) or binary.", enum=("json", "binary")),
        },
        name=f"{EVENTING_DUCK}.DeliverySpec",
    )
    return spec.described(description)


def _filter() -> Schema:
    nested = "nested filters (each with one dialect)"
    return obj(
        "A filter with one dialect; every event passes `{}`.",
        {
            "exact": string_map("One attribute whose value must be exactly this."),
            "prefix": string_map("One attribute whose value must start with this."),
            "suffix": string_map("One attribute whose value must end with this."),
            "all": array(preserve("A filter."), f"All of these {nested} must pass."),
            "any": array(preserve("A filter."), f"One of these {nested} must pass."),
            "not": preserve("A filter that must not pass."),
            "cesql": string("A CloudEvents SQL expression that must be true."),
        },
        name="dev.knative.eventing.v1.SubscriptionsAPIFilter",
    )


def _addressable_status(description: str, properties: dict[str, Schema]) -> Schema:
    return status(
        description,
        {
            "address": addressable("Where the resource accepts events."),
            "deadLetterSinkUri": string("The resolved URI of the dead-letter sink."),
            **properties,
        },
    )


def broker() -> Schema:
    spec = obj(
        "A broker's configuration and delivery defaults.",
        {
            "config": kreference("A configuration object of the broker's class."),
            "delivery": delivery("Delivery defaults for the broker's triggers."),
        },
    )
    st = _addressable_status("The broker's state, written by the controller.", {})
    return kind(eventing.GROUP, eventing.VERSION, "Broker", "A Knative Broker: an event mesh.", spec, st)


def trigger() -> Schema:
    spec = obj(
        "The broker, filters and subscriber of a trigger.",
        {
            "broker": string("The broker whose events this trigger filters (immutable)."),
            "filter": obj(
                "Exact matches on event attributes.",
                {"attributes": string_map('Attribute name → value it must have ("" is any).')},
            ),
            "filters": array(_filter(), "Filters every one of which an event must pass."),
            "subscriber": destination("Where the trigger's events go."),
            "delivery": delivery(),
        },
    )
    st = status(
        "The trigger's state, written by the controller.",
        {
            "subscriberUri": string("The resolved URI of the subscriber."),
            "deadLetterSinkUri": string("The resolved URI of the dead-letter sink."),
        },
    )
    return kind(
        eventing.GROUP,
        eventing.VERSION,
        "Trigger",
        "A Knative Trigger: a broker's events to a subscriber.",
        spec,
        st,
    )


def _subscribers(description: str) -> Schema:
    subscriber = obj(
        "A channel's subscriber, filled in from a Subscription.",
        {
            "uid": string("The Subscription's UID."),
            "generation": integer("The Subscription's generation."),
            "name": string("The Subscription's name."),
            "subscriberUri": string("Where events go."),
            "subscriberCACerts": string("CA certificates of the subscriber, PEM."),
            "subscriberAudience": string("The OIDC audience of the subscriber."),
            "replyUri": string("Where the subscriber's replies go."),
            "replyCACerts": string("CA certificates of the reply, PEM."),
            "replyAudience": string("The OIDC audience of the reply."),
            "delivery": delivery(),
        },
        name=f"{EVENTING_DUCK}.SubscriberSpec",
    )
    return array(subscriber, description)


def _channel_status(description: str, properties: dict[str, Schema]) -> Schema:
    return _addressable_status(
        description,
        {"subscribers": array(preserve("A subscriber's state."), "The subscribers' states."), **properties},
    )


def _messaging(name: str, description: str, spec: Schema, st: Schema) -> Schema:
    return kind(messaging.GROUP, messaging.VERSION, name, description, spec, st)


def channel() -> Schema:
    template = obj(
        "The kind of channel that backs this one, and its spec.",
        {
            "apiVersion": string("API version of the backing channel kind."),
            "kind": string("The backing channel kind: InMemoryChannel, or RedisChannel "
                           "(apiVersion messaging.flint.dev/v1)."),
            "spec": preserve("The backing channel's spec."),
        },
    )
    spec = obj(
        "A channel's backing kind, subscribers and delivery.",
        {
            "channelTemplate": template,
            "subscribers": _subscribers("The channel's subscribers (filled in from Subscriptions)."),
            "delivery": delivery(),
        },
    )
    st = _channel_status(
        "The channel's state, written by the controller.",
        {"channel": kreference("The backing channel.")},
    )
    return _messaging("Channel", "A Knative Channel, backed by a channel kind.", spec, st)


def in_memory_channel() -> Schema:
    spec = obj(
        "An InMemoryChannel's subscribers and delivery.",
        {
            "subscribers": _subscribers("The channel's subscribers (filled in from Subscriptions)."),
            "delivery": delivery(),
        },
    )
    st = _channel_status("The channel's state, written by the controller.", {})
    return _messaging("InMemoryChannel", "A Knative InMemoryChannel: a channel without durability.", spec, st)


def redis_channel() -> Schema:
    spec = obj(
        "A RedisChannel's subscribers and delivery.",
        {
            "subscribers": _subscribers("The channel's subscribers (filled in from Subscriptions)."),
            "delivery": delivery(),
        },
    )
    st = _channel_status("The channel's state, written by the controller.", {})
    return kind(messaging.FLINT_GROUP, messaging.VERSION, "RedisChannel",
                "A Flint RedisChannel: a channel whose log is a Redis stream (flint up --redis).", spec, st)


def subscription() -> Schema:
    spec = obj(
        "The channel, subscriber and reply of a subscription.",
        {
            "channel": kreference("The channel to subscribe to (immutable)."),
            "subscriber": destination("Where the channel's events go."),
            "reply": destination("Where the subscriber's replies go."),
            "delivery": delivery(),
        },
    )
    physical = map_of(string(), "The resolved subscriber, reply and dead-letter URIs.")
    st = status("The subscription's state, written by the controller.", {"physicalSubscription": physical})
    return _messaging("Subscription", "A Knative Subscription: a channel's events to a subscriber.", spec, st)


def schemas() -> tuple[Schema, ...]:
    return (broker(), trigger(), channel(), in_memory_channel(), redis_channel(), subscription())
