"""Knative eventing APIs on dicts: Broker, Trigger, Channel, InMemoryChannel, Subscription,
Destination and DeliverySpec rules in Knative's words, ISO-8601 durations, registry lookups."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from controller.api import duck, eventing, messaging
from controller.api.registry import (
    EVENTING_TYPES,
    SERVING_TYPES,
    Registry,
    UnknownResource,
    admit,
)
from controller.api.registry import lookup as served_lookup
from controller.api.types import FieldError, Invalid

# The API serves the eventing kinds once their reconcilers exist; their definitions are tested
# through a registry that has them.
EVENTING = Registry(SERVING_TYPES + EVENTING_TYPES)
lookup = EVENTING.lookup
for_api_version_kind = EVENTING.for_api_version_kind
for_group_version_plural = EVENTING.for_group_version_plural

Obj = dict[str, Any]

SVC_REF = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "display"}


def broker(**spec: Any) -> Obj:
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": dict(spec),
    }


def trigger(**spec: Any) -> Obj:
    s: Obj = {"broker": "default", "subscriber": {"ref": dict(SVC_REF)}}
    s.update(spec)
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": "t", "namespace": "default"},
        "spec": s,
    }


def subscription(**spec: Any) -> Obj:
    s: Obj = {
        "channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "ch"},
        "subscriber": {"ref": dict(SVC_REF)},
    }
    s.update(spec)
    return {
        "apiVersion": "messaging.knative.dev/v1",
        "kind": "Subscription",
        "metadata": {"name": "s", "namespace": "default"},
        "spec": s,
    }


def channel(kind: str = "Channel", **spec: Any) -> Obj:
    return {
        "apiVersion": "messaging.knative.dev/v1",
        "kind": kind,
        "metadata": {"name": "c", "namespace": "default"},
        "spec": dict(spec),
    }


_HOOKS: dict[str, tuple[Callable[[Obj], None], Callable[[Obj, Obj | None], list[FieldError]]]] = {
    "Broker": (eventing.default_broker, eventing.validate_broker),
    "Trigger": (eventing.default_trigger, eventing.validate_trigger),
    "Channel": (messaging.default_channel, messaging.validate_channel),
    "InMemoryChannel": (messaging.default_in_memory_channel, messaging.validate_in_memory_channel),
    "Subscription": (messaging.default_subscription, messaging.validate_subscription),
}


def defaulted(obj: Obj) -> Obj:
    obj = copy.deepcopy(obj)
    _HOOKS[obj["kind"]][0](obj)
    return obj


def errors_of(obj: Obj, old: Obj | None = None) -> list[FieldError]:
    new = defaulted(obj)
    return _HOOKS[obj["kind"]][1](new, defaulted(old) if old is not None else None)


def only(errs: list[FieldError]) -> FieldError:
    assert len(errs) == 1, errs
    return errs[0]


# ---------------------------------------------------------------------------------------------
# ISO-8601 durations
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT0.2S", 0.2),
        ("PT1M", 60.0),
        ("P1D", 86400.0),
        ("PT1H30M", 5400.0),
        ("PT10S", 10.0),
        ("PT0S", 0.0),
        ("P1W", 7 * 86400.0),
        ("P1DT1S", 86401.0),
        ("PT1H0.5M", 3630.0),
        ("PT0,5S", 0.5),
        ("-PT1S", -1.0),
        ("P1Y", 365.2425 * 86400),
    ],
)
def test_parse_iso8601_duration(text: str, seconds: float) -> None:
    assert duck.parse_iso8601_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "P", "PT", "1s", "PT1", "pt1s", "P1H", "PT1D", "PT1.5H30M", "PT-1S", "PT1S1M", "10", None, 5],
)
def test_parse_iso8601_duration_invalid(text: Any) -> None:
    assert duck.parse_iso8601_duration(text) is None


# ---------------------------------------------------------------------------------------------
# DeliverySpec
# ---------------------------------------------------------------------------------------------

D = "spec.delivery"


def test_full_delivery_is_valid() -> None:
    delivery = {
        "retry": 5,
        "backoffPolicy": "linear",
        "backoffDelay": "PT0.5S",
        "timeout": "PT30S",
        "retryAfterMax": "PT0S",
        "format": "binary",
        "deadLetterSink": {"uri": "http://dls.example.com/events"},
    }
    assert errors_of(trigger(delivery=delivery)) == []
    assert errors_of(trigger(delivery={"retry": 0, "backoffPolicy": "exponential", "format": "json"})) == []


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("retry", -1, "invalid value: -1"),
        ("retry", "3", "invalid value: 3"),
        ("retry", 1.5, "invalid value: 1.5"),
        ("backoffPolicy", "fibonacci", "invalid value: fibonacci"),
        ("backoffDelay", "1s", "invalid value: 1s"),
        ("timeout", "PT0S", "invalid value: PT0S"),
        ("timeout", "-PT1S", "invalid value: -PT1S"),
        ("timeout", "30", "invalid value: 30"),
        ("retryAfterMax", "-PT1S", "invalid value: -PT1S"),
        ("retryAfterMax", "forever", "invalid value: forever"),
        ("format", "xml", "invalid value: xml"),
    ],
)
def test_delivery_rules(field: str, value: Any, message: str) -> None:
    err = only(errors_of(trigger(delivery={field: value})))
    assert err == FieldError(f"{D}.{field}", message)


def test_delivery_unknown_field_and_type() -> None:
    assert only(errors_of(trigger(delivery={"retries": 3}))) == FieldError(
        f"{D}.retries", "must not set the field(s)"
    )
    assert only(errors_of(trigger(delivery="fast"))) == FieldError(
        D, "invalid value: fast; expected an object"
    )


def test_dead_letter_sink_is_a_destination() -> None:
    err = only(errors_of(trigger(delivery={"deadLetterSink": {}})))
    assert err == FieldError(
        f"{D}.deadLetterSink.ref, {D}.deadLetterSink.uri", "expected at least one, got none"
    )
    sink = {"deadLetterSink": {"ref": {"apiVersion": "v1", "kind": "Service"}}}
    assert only(errors_of(trigger(delivery=sink))) == FieldError(
        f"{D}.deadLetterSink.ref.name", "missing field(s)"
    )


def test_dead_letter_sink_ref_namespace_is_defaulted() -> None:
    t = defaulted(trigger(delivery={"deadLetterSink": {"ref": dict(SVC_REF)}}))
    assert t["spec"]["delivery"]["deadLetterSink"]["ref"]["namespace"] == "default"


def test_default_broker_delivery_and_resolution() -> None:
    assert dict(duck.DEFAULT_BROKER_DELIVERY) == {
        "retry": 10,
        "backoffPolicy": "exponential",
        "backoffDelay": "PT0.2S",
    }
    assert duck.resolve_delivery(None, {}) == dict(duck.DEFAULT_BROKER_DELIVERY)
    assert duck.resolve_delivery({"retry": 1}, {"retry": 2}) == {"retry": 1}
    assert duck.resolve_delivery(None, {"retry": 2}) == {"retry": 2}
    got = duck.resolve_delivery()
    got["retry"] = 0  # a copy: the constant is untouched
    assert duck.DEFAULT_BROKER_DELIVERY["retry"] == 10


# ---------------------------------------------------------------------------------------------
# Destination and KReference
# ---------------------------------------------------------------------------------------------

S = "spec.subscriber"


def test_destination_ref_uri_or_both() -> None:
    assert errors_of(trigger(subscriber={"uri": "http://example.com/events"})) == []
    assert errors_of(trigger(subscriber={"ref": dict(SVC_REF), "uri": "/events"})) == []
    assert errors_of(trigger(subscriber={"ref": dict(SVC_REF), "uri": "events?x=1"})) == []


def test_destination_needs_ref_or_uri() -> None:
    expected = FieldError(f"{S}.ref, {S}.uri", "expected at least one, got none")
    assert only(errors_of(trigger(subscriber={}))) == expected
    t = trigger()
    del t["spec"]["subscriber"]
    assert only(errors_of(t)) == expected


def test_destination_uri_with_ref_must_be_relative() -> None:
    err = only(errors_of(trigger(subscriber={"ref": dict(SVC_REF), "uri": "http://other/x"})))
    assert err == FieldError(
        f"{S}.ref, {S}.uri", "Absolute URI is not allowed when Ref or [apiVersion, kind, name] exists"
    )


@pytest.mark.parametrize("uri", ["/events", "example.com/events", "http:///no-host"])
def test_destination_uri_alone_must_be_absolute(uri: str) -> None:
    err = only(errors_of(trigger(subscriber={"uri": uri})))
    assert err == FieldError(
        f"{S}.uri",
        f"invalid value: {uri}; Relative URI is not allowed when Ref and [apiVersion, kind, name] is absent",
    )


def test_destination_ref_fields_and_namespace() -> None:
    err = only(errors_of(trigger(subscriber={"ref": {"name": "x"}})))
    assert err == FieldError(f"{S}.ref.apiVersion, {S}.ref.kind", "missing field(s)")
    ref = dict(SVC_REF, namespace="other")
    err = only(errors_of(trigger(subscriber={"ref": ref})))
    assert err == FieldError(
        f"{S}.ref.namespace",
        'mismatched namespaces; parent namespace: "default" does not match ref: "other"',
    )
    err = only(errors_of(trigger(subscriber={"ref": dict(SVC_REF, port=80)})))
    assert err == FieldError(f"{S}.ref.port", "must not set the field(s)")
    err = only(errors_of(trigger(subscriber={"ref": dict(SVC_REF), "url": "x"})))
    assert err == FieldError(f"{S}.url", "must not set the field(s)")


def test_destination_defaults_ref_namespace() -> None:
    t = defaulted(trigger())
    assert t["spec"]["subscriber"]["ref"]["namespace"] == "default"
    t = trigger()
    t["metadata"]["namespace"] = "team"
    assert defaulted(t)["spec"]["subscriber"]["ref"]["namespace"] == "team"


def test_resolve_uri_against_the_ref_url() -> None:
    base = "http://display.default.localhost"
    assert duck.resolve_uri(base, None) == base
    assert duck.resolve_uri(base, "/events") == base + "/events"
    assert duck.resolve_uri(base + "/a/b", "c") == base + "/a/c"
    assert duck.resolve_uri(base + "/a/", "c?x=1") == base + "/a/c?x=1"


# ---------------------------------------------------------------------------------------------
# Broker
# ---------------------------------------------------------------------------------------------

CLASS = "eventing.knative.dev/broker.class"


def test_broker_defaults() -> None:
    b = broker()
    del b["metadata"]["namespace"]
    b = defaulted(b)
    assert b["metadata"]["namespace"] == "default"
    assert b["metadata"]["annotations"][CLASS] == "Flint" == eventing.FLINT_BROKER_CLASS
    assert "delivery" not in b["spec"]  # the dispatcher applies DEFAULT_BROKER_DELIVERY
    assert errors_of(broker()) == []


def test_broker_keeps_a_chosen_class_and_warns() -> None:
    b = broker()
    b["metadata"]["annotations"] = {CLASS: "MTChannelBasedBroker"}
    d = defaulted(b)
    assert eventing.broker_class(d) == "MTChannelBasedBroker"
    assert errors_of(b) == []
    assert eventing.broker_warnings(d) == [
        f'metadata.annotations.{CLASS}: broker class "MTChannelBasedBroker" is not reconciled by'
        ' Flint (its classes are "Flint", "FlintSQLite", "FlintRedis")'
    ]
    assert eventing.broker_warnings(defaulted(broker())) == []


def test_broker_class_is_immutable() -> None:
    old = broker()
    new = broker()
    new["metadata"]["annotations"] = {CLASS: "MTChannelBasedBroker"}
    err = only(errors_of(new, old))
    assert err.path == f"metadata.annotations.{CLASS}"
    assert err.message.startswith("Immutable fields changed (-old +new)")
    # Unset on update is defaulted back to Flint: no change.
    assert errors_of(broker(), old) == []
    assert errors_of(broker(delivery={"retry": 3}), old) == []


def test_broker_config_is_immutable() -> None:
    """eventing conformance, broker/control_plane.go: Broker.Spec.Config is immutable."""
    config = {"apiVersion": "v1", "kind": "ConfigMap", "name": "br", "namespace": "default"}
    old = broker(config=config)
    err = only(errors_of(broker(config={**config, "name": "other"}), old))
    assert err.path == "spec.config"
    assert err.message.startswith("Immutable fields changed (-old +new)")
    assert '"name": "br"' in err.message and '"name": "other"' in err.message
    assert only(errors_of(broker(), old)).path == "spec.config"  # removing it is a change
    assert only(errors_of(broker(config=config), broker())).path == "spec.config"  # so is adding
    # The defaulted namespace is no change; other fields stay mutable.
    unset_ns = {k: v for k, v in config.items() if k != "namespace"}
    assert errors_of(broker(config=unset_ns, delivery={"retry": 3}), old) == []


def test_broker_config_and_delivery() -> None:
    config = {"apiVersion": "v1", "kind": "ConfigMap", "name": "br", "namespace": "knative-eventing"}
    assert errors_of(broker(config=config)) == []  # a different namespace is allowed for config
    d = defaulted(broker(config={"apiVersion": "v1", "kind": "ConfigMap", "name": "br"}))
    assert d["spec"]["config"]["namespace"] == "default"
    assert only(errors_of(broker(config={"kind": "ConfigMap", "name": "br"}))) == FieldError(
        "spec.config.apiVersion", "missing field(s)"
    )
    assert only(errors_of(broker(delivery={"backoffPolicy": "random"}))) == FieldError(
        "spec.delivery.backoffPolicy", "invalid value: random"
    )
    assert only(errors_of(broker(channel={}))) == FieldError("spec.channel", "must not set the field(s)")


def test_broker_name_rule() -> None:
    b = broker()
    b["metadata"]["name"] = "Bad_Name"
    err = only(errors_of(b))
    assert err.path == "metadata.name"
    assert err.message.startswith("not a DNS 1123 subdomain")


def test_broker_address_url_and_conditions() -> None:
    assert eventing.broker_address_url("default", "b") == "http://broker-ingress.localhost/default/b"
    assert (
        eventing.broker_address_url("ns", "b", "example.com", 8080)
        == "http://broker-ingress.example.com:8080/ns/b"
    )
    assert set(eventing.BROKER_CONDITIONS) >= {
        "Addressable",
        "FilterReady",
        "IngressReady",
        "TriggerChannelReady",
    }
    assert "SubscriberResolved" in eventing.TRIGGER_CONDITIONS
    assert "BrokerReady" in eventing.TRIGGER_CONDITIONS


# ---------------------------------------------------------------------------------------------
# Trigger
# ---------------------------------------------------------------------------------------------


def test_trigger_defaults() -> None:
    t = defaulted(trigger())
    assert t["spec"]["filter"] == {}
    assert t["metadata"]["labels"]["eventing.knative.dev/broker"] == "default"
    assert "delivery" not in t["spec"]
    assert errors_of(trigger()) == []
    kept = defaulted(trigger(filter={"attributes": {"type": "a"}}))
    assert kept["spec"]["filter"] == {"attributes": {"type": "a"}}


def test_trigger_broker_required_and_immutable() -> None:
    t = trigger()
    del t["spec"]["broker"]
    assert only(errors_of(t)) == FieldError("spec.broker", "missing field(s)")
    assert only(errors_of(trigger(broker=""))) == FieldError("spec.broker", "missing field(s)")
    err = only(errors_of(trigger(broker="other"), trigger()))
    assert err.path == "spec.broker"
    assert err.message == 'Immutable fields changed (-old +new); -: "default", +: "other"'
    # Everything else may change.
    assert errors_of(trigger(filter={"attributes": {"type": "x"}}), trigger()) == []


def test_trigger_missing_spec() -> None:
    t = trigger()
    del t["spec"]
    errs = errors_of(t)
    assert FieldError("spec.broker", "missing field(s)") in errs
    assert FieldError("spec.subscriber.ref, spec.subscriber.uri", "expected at least one, got none") in errs


def test_trigger_filter_attributes() -> None:
    ok = {"attributes": {"type": "dev.example.order", "source": "", "myext1": "x"}}
    assert errors_of(trigger(filter=ok)) == []
    bad = {"attributes": {"Type": "a", "1abc": "b", "my-ext": "c", "type": "fine"}}
    msg = "Attribute name must start with a letter and can only contain lowercase alphanumeric"
    assert errors_of(trigger(filter=bad)) == [
        FieldError("spec.filter.attributes[1abc]", f'invalid key name "1abc"; {msg}'),
        FieldError("spec.filter.attributes[Type]", f'invalid key name "Type"; {msg}'),
        FieldError("spec.filter.attributes[my-ext]", f'invalid key name "my-ext"; {msg}'),
    ]
    assert only(errors_of(trigger(filter={"attributes": {"type": 1}}))) == FieldError(
        "spec.filter.attributes[type]", "invalid value: 1; expected a string"
    )
    assert only(errors_of(trigger(filter={"attrs": {}}))) == FieldError(
        "spec.filter.attrs", "must not set the field(s)"
    )


def test_trigger_filters_dialects_are_valid() -> None:
    filters = [
        {"exact": {"type": "com.example.order"}},
        {"prefix": {"source": "/orders/"}},
        {"suffix": {"subject": ".png"}},
        {"all": [{"exact": {"type": "a"}}, {"not": {"prefix": {"type": "b"}}}]},
        {"any": [{"exact": {"type": "a"}}, {"suffix": {"type": "z"}}]},
        {"not": {"exact": {"type": "a"}}},
        {"cesql": "type = 'a' AND source LIKE '/x/%'"},
        {},
    ]
    assert errors_of(trigger(filters=filters)) == []


def test_trigger_filters_rules() -> None:
    F = "spec.filters"
    msg = "Attribute name must start with a letter and can only contain lowercase alphanumeric"
    assert only(errors_of(trigger(filters=[{"exact": {"type": "a", "source": "b"}}]))) == FieldError(
        f"{F}[0].exact", "Multiple items found, can have only one key-value"
    )
    assert only(errors_of(trigger(filters=[{"exact": {"type": "a"}, "prefix": {"source": "b"}}]))) == (
        FieldError(f"{F}[0]", "multiple dialects found, filters can have only one dialect set")
    )
    assert only(errors_of(trigger(filters=[{}, {"suffix": {"Bad": "x"}}]))) == FieldError(
        f"{F}[1].suffix[Bad]", f'invalid key name "Bad"; {msg}'
    )
    nested = [{"all": [{"any": [{"not": {"prefix": {"a": "1", "b": "2"}}}]}]}]
    assert only(errors_of(trigger(filters=nested))) == FieldError(
        f"{F}[0].all[0].any[0].not.prefix", "Multiple items found, can have only one key-value"
    )
    assert only(errors_of(trigger(filters=[{"regex": {"type": "a.*"}}]))) == FieldError(
        f"{F}[0].regex", "must not set the field(s)"
    )
    assert only(errors_of(trigger(filters=[{"cesql": 5}]))) == FieldError(
        f"{F}[0].cesql", "invalid value: 5; expected a string"
    )
    assert only(errors_of(trigger(filters={"exact": {"type": "a"}}))) == FieldError(
        F, 'invalid value: {"exact":{"type":"a"}}; expected a list'
    )
    assert only(errors_of(trigger(filters=[{"all": {"exact": {}}}]))) == FieldError(
        f"{F}[0].all", 'invalid value: {"exact":{}}; expected a list'
    )


def test_trigger_annotations() -> None:
    t = trigger()
    t["metadata"]["annotations"] = {"kafka.eventing.knative.dev/delivery.order": "ordered"}
    assert errors_of(t) == []
    t["metadata"]["annotations"] = {"kafka.eventing.knative.dev/delivery.order": "random"}
    assert only(errors_of(t)) == FieldError(
        "metadata.annotations.kafka.eventing.knative.dev/delivery.order",
        "invalid value: random; expected ordered or unordered",
    )
    dep = '{"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "p"}'
    t["metadata"]["annotations"] = {"knative.dev/dependency": dep}
    assert errors_of(t) == []
    t["metadata"]["annotations"] = {"knative.dev/dependency": '{"kind": "PingSource", "namespace": "x"}'}
    assert errors_of(t) == [
        FieldError(
            "metadata.annotations[knative.dev/dependency].namespace",
            'Namespace must be empty or equal to the trigger namespace "default"',
        ),
        FieldError(
            "metadata.annotations[knative.dev/dependency].apiVersion,"
            " metadata.annotations[knative.dev/dependency].name",
            "missing field(s)",
        ),
    ]
    t["metadata"]["annotations"] = {"knative.dev/dependency": "not json"}
    err = only(errors_of(t))
    assert err.message.startswith('The provided annotation was not a corev1.ObjectReference: "not json"')
    t["metadata"]["annotations"] = {"eventing.knative.dev/injection": "on"}
    assert only(errors_of(t)).message == (
        'The provided injection annotation value can only be "enabled" or "disabled", not "on"'
    )
    t = trigger(broker="other")
    t["metadata"]["annotations"] = {"eventing.knative.dev/injection": "enabled"}
    assert only(errors_of(t)).message == (
        "The provided injection annotation is only used for default broker, but non-default broker"
        ' specified here: "other"'
    )


# ---------------------------------------------------------------------------------------------
# Channel and InMemoryChannel
# ---------------------------------------------------------------------------------------------


def test_channel_defaults() -> None:
    c = defaulted(channel())
    assert c["spec"]["channelTemplate"] == {
        "apiVersion": "messaging.knative.dev/v1",
        "kind": "InMemoryChannel",
    }
    assert c["metadata"]["annotations"]["messaging.knative.dev/subscribable"] == "v1"
    assert errors_of(channel()) == []
    assert messaging.channel_warnings(c) == []


def test_channel_template_rules_and_warning() -> None:
    assert only(errors_of(channel(channelTemplate={"kind": "KafkaChannel"}))) == FieldError(
        "spec.channelTemplate.apiVersion", "missing field(s)"
    )
    kafka = {
        "apiVersion": "messaging.knative.dev/v1beta1",
        "kind": "KafkaChannel",
        "spec": {"numPartitions": 3},
    }
    assert errors_of(channel(channelTemplate=kafka)) == []
    assert messaging.channel_warnings(defaulted(channel(channelTemplate=kafka))) == [
        "spec.channelTemplate: messaging.knative.dev/v1beta1 KafkaChannel is not a channel kind Flint"
        " provides; the Channel stays not ready (use messaging.knative.dev/v1 InMemoryChannel or"
        " messaging.flint.dev/v1 RedisChannel)"
    ]


def test_channel_subscribers_and_immutability() -> None:
    subs = [{"uid": "1", "subscriberUri": "http://s.default.localhost"}]
    assert only(errors_of(channel(subscribers=subs))) == FieldError(
        "spec.subscribers", "must not set the field(s)"
    )
    old = channel()
    assert errors_of(channel(subscribers=subs), old) == []  # the controller fills subscribers
    err = only(errors_of(channel(delivery={"retry": 1}), old))
    assert err.path == "spec"
    assert err.message.startswith("Immutable fields changed (-old +new)")
    assert only(errors_of(channel(delivery={"retry": -2}))) == FieldError(
        "spec.delivery.retry", "invalid value: -2"
    )


def test_in_memory_channel() -> None:
    imc = defaulted(channel("InMemoryChannel"))
    assert imc["metadata"]["annotations"]["messaging.knative.dev/subscribable"] == "v1"
    assert errors_of(channel("InMemoryChannel", delivery={"retry": 3})) == []
    err = only(errors_of(channel("InMemoryChannel", subscribers=[{"uid": "1"}])))
    assert err == FieldError(
        "spec.subscribers[0].replyUri, spec.subscribers[0].subscriberUri",
        "missing field(s); expected at least one of, got none",
    )
    assert only(errors_of(channel("InMemoryChannel", channelTemplate={}))) == FieldError(
        "spec.channelTemplate", "must not set the field(s)"
    )
    c = channel("InMemoryChannel")
    c["metadata"]["annotations"] = {"eventing.knative.dev/scope": "galaxy"}
    assert only(errors_of(c)) == FieldError(
        "metadata.annotations.eventing.knative.dev/scope",
        "invalid value: galaxy; expected either 'cluster' or 'namespace'",
    )


# ---------------------------------------------------------------------------------------------
# Subscription
# ---------------------------------------------------------------------------------------------


def test_subscription_valid_and_defaults() -> None:
    assert errors_of(subscription()) == []
    reply = {"ref": {"apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel", "name": "out"}}
    s = defaulted(subscription(reply=reply, delivery={"deadLetterSink": {"ref": dict(SVC_REF)}}))
    assert s["spec"]["subscriber"]["ref"]["namespace"] == "default"
    assert s["spec"]["reply"]["ref"]["namespace"] == "default"
    assert s["spec"]["delivery"]["deadLetterSink"]["ref"]["namespace"] == "default"
    assert errors_of(subscription(reply=reply)) == []
    only_reply = subscription(reply=reply)
    del only_reply["spec"]["subscriber"]
    assert errors_of(only_reply) == []


def test_subscription_channel_required() -> None:
    s = subscription()
    del s["spec"]["channel"]
    assert only(errors_of(s)) == FieldError(
        "spec.channel", "missing field(s); the Subscription must reference a channel"
    )
    assert only(errors_of(subscription(channel={"kind": "Channel", "name": "c"}))) == FieldError(
        "spec.channel.apiVersion", "missing field(s)"
    )
    ch = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "c", "namespace": "x"}
    assert only(errors_of(subscription(channel=ch))).path == "spec.channel.namespace"


def test_subscription_needs_subscriber_or_reply() -> None:
    s = subscription()
    del s["spec"]["subscriber"]
    assert only(errors_of(s)) == FieldError(
        "spec.reply, spec.subscriber",
        "missing field(s); the Subscription must reference at least one of (reply or a subscriber)",
    )
    assert only(errors_of(subscription(subscriber={"uri": "/x"}))).path == "spec.subscriber.uri"
    assert only(errors_of(subscription(reply={"uri": "nohost"}))).path == "spec.reply.uri"
    assert only(errors_of(subscription(delivery={"format": "xml"}))) == FieldError(
        "spec.delivery.format", "invalid value: xml"
    )


def test_subscription_immutable_but_subscriber_and_reply() -> None:
    old = subscription()
    assert errors_of(subscription(subscriber={"uri": "http://elsewhere.example.com"}), old) == []
    assert errors_of(subscription(reply={"uri": "http://r.example.com"}), old) == []
    moved = {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "other"}
    err = only(errors_of(subscription(channel=moved), old))
    assert err == FieldError("spec", "Immutable fields changed (-old +new); channel")
    err = only(errors_of(subscription(delivery={"retry": 1}), old))
    assert err == FieldError("spec", "Immutable fields changed (-old +new); delivery")
    assert messaging.channel_ref_key(defaulted(old)) == "default/ch"


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("broker", "Broker"),
        ("brokers", "Broker"),
        ("brokers.eventing.knative.dev", "Broker"),
        ("trigger", "Trigger"),
        ("Triggers", "Trigger"),
        ("channel", "Channel"),
        ("ch", "Channel"),
        ("imc", "InMemoryChannel"),
        ("inmemorychannels", "InMemoryChannel"),
        ("sub", "Subscription"),
        ("subscriptions.messaging.knative.dev", "Subscription"),
        ("ksvc", "Service"),
    ],
)
def test_registry_lookup(name: str, kind: str) -> None:
    assert lookup(name).kind == kind


def test_registry_api_version_kind_and_plural() -> None:
    b = for_api_version_kind("eventing.knative.dev/v1", "Broker")
    assert (b.plural, b.short_names, b.namespaced) == ("brokers", (), True)
    assert lookup("trigger").short_names == ()
    assert for_api_version_kind("messaging.knative.dev/v1", "InMemoryChannel").plural == "inmemorychannels"
    assert for_group_version_plural("messaging.knative.dev", "v1", "subscriptions").kind == "Subscription"
    with pytest.raises(UnknownResource, match='unknown kind "Parallel"'):
        for_api_version_kind("messaging.knative.dev/v1", "Parallel")
    assert [rt.kind for rt in EVENTING_TYPES] == [
        "Broker",
        "Trigger",
        "Channel",
        "InMemoryChannel",
        "RedisChannel",
        "Subscription",
    ]


def test_the_api_serves_every_eventing_kind() -> None:
    assert served_lookup("broker").kind == "Broker"
    assert served_lookup("triggers").kind == "Trigger"
    assert served_lookup("channel").kind == "Channel"
    assert served_lookup("imc").kind == "InMemoryChannel"
    assert served_lookup("sub").kind == "Subscription"
    with pytest.raises(UnknownResource):
        served_lookup("parallel")


def test_admit_defaults_and_refuses() -> None:
    obj, warnings = admit(lookup("broker"), {"metadata": {"name": "b"}})
    assert obj["apiVersion"] == "eventing.knative.dev/v1"
    assert obj["metadata"]["annotations"][CLASS] == "Flint"
    assert warnings == []
    with pytest.raises(Invalid) as info:
        admit(lookup("trigger"), {"metadata": {"name": "t"}, "spec": {"subscriber": {"uri": "http://x"}}})
    assert info.value.errors == [FieldError("spec.broker", "missing field(s)")]
    obj, _ = admit(lookup("ch"), {"metadata": {"name": "c"}})
    assert obj["spec"]["channelTemplate"]["kind"] == "InMemoryChannel"
    old, _ = admit(lookup("broker"), {"metadata": {"name": "b"}})
    with pytest.raises(Invalid):
        admit(lookup("broker"), {"metadata": {"name": "b", "annotations": {CLASS: "Other"}}}, old)
