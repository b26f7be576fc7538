"""A channel's spec.subscribers and status.subscribers from its Subscriptions (eventing conformance,
channel/control_plane.go: "Spec.Subscribers MUST be appended by the subscription")."""

from __future__ import annotations

import copy
from typing import Any

from controller.reconcilers.subscribers import (
    MANAGED_ANNOTATION,
    NOT_DELIVERED,
    desired_subscribers,
    subscriber_entry,
    subscribers_status,
    with_subscribers,
)

Obj = dict[str, Any]


def sub(uid: str, *, generation: int = 1, resolved: bool = True, **spec: Any) -> Obj:
    status: Obj = {}
    if resolved:
        status["physicalSubscription"] = {"subscriberUri": f"http://{uid}.example/"}
    meta = {"name": f"s-{uid}", "uid": uid, "generation": generation}
    return {"metadata": meta, "spec": spec, "status": status}


def channel(subscribers: list[Obj] | None = None, managed: str | None = None) -> Obj:
    ch: Obj = {"metadata": {"name": "orders", "namespace": "default"}, "spec": {}}
    if subscribers is not None:
        ch["spec"]["subscribers"] = subscribers
    if managed is not None:
        ch["metadata"]["annotations"] = {MANAGED_ANNOTATION: managed}
    return ch


def test_each_resolved_subscription_is_an_entry_in_uid_order() -> None:
    subs = [sub("b", generation=3), sub("a"), sub("c", resolved=False)]
    entries, managed = desired_subscribers(channel(), subs)
    assert entries == [
        {"uid": "a", "generation": 1, "subscriberUri": "http://a.example/"},
        {"uid": "b", "generation": 3, "subscriberUri": "http://b.example/"},
    ]
    assert managed == "a,b"


def test_entry_carries_reply_and_delivery_with_the_resolved_dead_letter_sink() -> None:
    s = sub("a", delivery={"retry": 2, "deadLetterSink": {"ref": {"kind": "Service", "name": "dls"}}})
    s["status"]["physicalSubscription"] = {
        "subscriberUri": "http://a/",
        "replyUri": "http://r/",
        "deadLetterSinkUri": "http://dls/",
    }
    assert subscriber_entry(s) == {
        "uid": "a",
        "generation": 1,
        "subscriberUri": "http://a/",
        "replyUri": "http://r/",
        "delivery": {"retry": 2, "deadLetterSink": {"uri": "http://dls/"}},
    }
    only_reply = sub("b")
    only_reply["status"]["physicalSubscription"] = {"replyUri": "http://r/"}
    assert subscriber_entry(only_reply) == {"uid": "b", "generation": 1, "replyUri": "http://r/"}
    unresolved_dls = sub("c", delivery={"deadLetterSink": {"uri": "http://x/"}})
    assert "delivery" not in (subscriber_entry(unresolved_dls) or {})


def test_user_entries_are_kept_in_place_and_reported_not_delivered() -> None:
    user = {"uid": "mine", "subscriberUri": "http://mine/"}
    ch = channel([user])
    updated = with_subscribers(ch, [sub("a")])
    assert updated is not None and ch["spec"]["subscribers"] == [user]  # the input is not changed
    assert [e["uid"] for e in updated["spec"]["subscribers"]] == ["mine", "a"]
    assert updated["metadata"]["annotations"][MANAGED_ANNOTATION] == "a"
    assert subscribers_status(updated, lambda uid: True) == [
        {"uid": "mine", "ready": "False", "message": NOT_DELIVERED},
        {"uid": "a", "observedGeneration": 1, "ready": "True"},
    ]


def test_a_removed_subscription_takes_its_entry_with_it() -> None:
    user = {"uid": "mine", "subscriberUri": "http://mine/"}
    ch = with_subscribers(channel([user]), [sub("a"), sub("b")])
    assert ch is not None
    after = with_subscribers(ch, [sub("b")])
    assert after is not None
    assert [e["uid"] for e in after["spec"]["subscribers"]] == ["mine", "b"]
    assert after["metadata"]["annotations"][MANAGED_ANNOTATION] == "b"
    last = with_subscribers(after, [])
    assert last is not None
    assert last["spec"]["subscribers"] == [user] and "annotations" not in last["metadata"]
    assert with_subscribers(channel(), []) is None


def test_an_entry_is_rewritten_when_its_subscription_changes_and_left_alone_otherwise() -> None:
    ch = with_subscribers(channel(), [sub("a")])
    assert ch is not None
    assert with_subscribers(ch, [sub("a")]) is None  # nothing to write
    changed = with_subscribers(ch, [sub("a", generation=2)])
    assert changed is not None and changed["spec"]["subscribers"][0]["generation"] == 2
    # An entry a user edited under a Subscription's uid is put back as the Subscription says.
    edited = copy.deepcopy(ch)
    edited["spec"]["subscribers"][0]["subscriberUri"] = "http://elsewhere/"
    fixed = with_subscribers(edited, [sub("a")])
    assert fixed is not None and fixed["spec"]["subscribers"] == ch["spec"]["subscribers"]


def test_status_waits_for_the_dispatcher() -> None:
    ch = with_subscribers(channel(), [sub("a", generation=4)])
    assert ch is not None
    assert subscribers_status(ch, lambda uid: False) == [
        {
            "uid": "a",
            "observedGeneration": 4,
            "ready": "Unknown",
            "message": "waiting for the dispatcher to run the subscription",
        }
    ]
