"""The dispatch plan's subscriptions: channels, their backing InMemoryChannels, replies."""

from __future__ import annotations

from typing import Any

from controller.eventing.plan import DispatchPlan, SqliteLog, broker_log_relpath, build_plan

M = "messaging.knative.dev/v1"


def imc(name: str = "orders", *, uid: str = "imc-uid", delivery: dict[str, Any] | None = None,
        address: bool = True) -> dict[str, Any]:
    status = {"address": {"url": f"http://channel-ingress.localhost/ns/{name}"}} if address else {}
    return {"apiVersion": M, "kind": "InMemoryChannel",
            "metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"delivery": delivery} if delivery else {}, "status": status}


def channel(name: str = "orders", *, backing: str | None = "orders",
            delivery: dict[str, Any] | None = None) -> dict[str, Any]:
    status = {"channel": {"apiVersion": M, "kind": "InMemoryChannel", "name": backing}} if backing else {}
    return {"apiVersion": M, "kind": "Channel", "metadata": {"name": name, "namespace": "ns", "uid": "ch"},
            "spec": {"delivery": delivery} if delivery else {}, "status": status}


def sub(name: str = "s", *, kind: str = "Channel", channel_name: str = "orders",
        physical: dict[str, str] | None = None, delivery: dict[str, Any] | None = None,
        uid: str | None = "sub-uid") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if uid:
        meta["uid"] = uid
    spec: dict[str, Any] = {"channel": {"apiVersion": M, "kind": kind, "name": channel_name}}
    if delivery:
        spec["delivery"] = delivery
    phys = {"subscriberUri": "http://sub"} if physical is None else physical
    return {"apiVersion": M, "kind": "Subscription", "metadata": meta, "spec": spec,
            "status": {"physicalSubscription": phys}}


def plan(**kw: Any) -> DispatchPlan:
    return build_plan([], [], **kw)


def test_a_subscription_to_a_channel_reads_its_backing_channels_log() -> None:
    p = plan(imcs=[imc()], channels=[channel()], subscriptions=[sub()])
    (t,) = p.triggers
    assert t.kind == "subscription" and t.label == "subscription:s"
    assert (t.broker, t.log_uid, t.log) == ("orders", "imc-uid", SqliteLog(broker_log_relpath("imc-uid")))
    assert t.subscriber == "http://sub" and t.reply == ""
    assert t.filter_attributes is None and t.filters is None and not t.ordered
    assert t.delivery == {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}
    assert p.known == ("sub-uid",)


def test_a_subscription_may_name_the_in_memory_channel_itself() -> None:
    (t,) = plan(imcs=[imc()], subscriptions=[sub(kind="InMemoryChannel")]).triggers
    assert t.log_uid == "imc-uid"


def test_reply_is_used_with_a_subscriber_and_is_the_target_without_one() -> None:
    both = sub(physical={"subscriberUri": "http://sub", "replyUri": "http://reply"})
    (t,) = plan(imcs=[imc()], channels=[channel()], subscriptions=[both]).triggers
    assert (t.subscriber, t.reply) == ("http://sub", "http://reply")
    only_reply = sub(physical={"replyUri": "http://reply"})
    (t,) = plan(imcs=[imc()], channels=[channel()], subscriptions=[only_reply]).triggers
    assert (t.subscriber, t.reply) == ("http://reply", "")


def test_unresolved_or_unaddressed_subscriptions_wait_but_stay_known() -> None:
    cases = [
        plan(imcs=[imc()], channels=[channel(backing=None)], subscriptions=[sub()]),  # no backing yet
        plan(imcs=[imc(address=False)], channels=[channel()], subscriptions=[sub()]),
        plan(imcs=[imc()], channels=[channel()], subscriptions=[sub(physical={})]),
        plan(imcs=[imc()], channels=[channel()], subscriptions=[sub(channel_name="other")]),
    ]
    for p in cases:
        assert p.triggers == () and p.known == ("sub-uid",)


def test_delivery_is_the_subscriptions_else_the_channels_and_the_sink_comes_from_status() -> None:
    own = sub(delivery={"retry": 1, "deadLetterSink": {"uri": "http://dls"}},
              physical={"subscriberUri": "http://sub", "deadLetterSinkUri": "http://dls"})
    (t,) = plan(imcs=[imc()], channels=[channel(delivery={"retry": 7})], subscriptions=[own]).triggers
    assert t.delivery == {"retry": 1} and t.dead_letter_uri == "http://dls"
    (t,) = plan(imcs=[imc()], channels=[channel(delivery={"retry": 7})], subscriptions=[sub()]).triggers
    assert t.delivery == {"retry": 7} and t.dead_letter_uri is None
    (t,) = plan(imcs=[imc(delivery={"retry": 3})], subscriptions=[sub(kind="InMemoryChannel")]).triggers
    assert t.delivery == {"retry": 3}


def test_triggers_and_subscriptions_round_trip_on_the_wire() -> None:
    p = plan(imcs=[imc()], channels=[channel()], subscriptions=[sub(), sub("t", uid="u2")])
    assert [t.name for t in p.triggers] == ["s", "t"]
    assert DispatchPlan.from_wire(p.to_wire()) == p
