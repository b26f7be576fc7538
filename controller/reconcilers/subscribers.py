"""A channel's `spec.subscribers` and `status.subscribers` from its Subscriptions (pure).

Knative's subscription controller appends each Subscription to its channel's `spec.subscribers`
(eventing conformance, channel/control_plane.go) and owns the entries it adds, by uid. Flint does
the same, level-based, in the channel reconcilers:

* one entry per Subscription that delivers from the channel once its references resolved
  (`uid`, `generation`, `subscriberUri`, `replyUri`, `delivery` with the dead-letter sink as its
  resolved URI), in uid order, after the other entries;
* an entry Flint did not write (its uid is neither a Subscription's of the channel nor recorded
  in `MANAGED_ANNOTATION`) is the user's: kept as written, in place, but not delivered (Flint's
  dispatcher delivers Subscriptions), and reported in `status.subscribers` with ready "False";
* when a Subscription goes, or stops naming the channel, its entry goes (its uid is recorded in
  `MANAGED_ANNOTATION` until then).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

Obj = dict[str, Any]

MANAGED_ANNOTATION = "messaging.flint.dev/subscription-uids"
"""On a channel: the uids (comma-separated) of the `spec.subscribers` entries Flint wrote."""

NOT_DELIVERED = (
    "not delivered: this entry was not written by a Subscription and Flint delivers Subscriptions;"
    " create a Subscription for this subscriber"
)
WAITING = "waiting for the dispatcher to run the subscription"


def subscriber_entry(sub: Obj) -> Obj | None:
    """Knative's SubscriberSpec for a Subscription, from its `status.physicalSubscription`;
    None while neither its subscriber nor its reply has resolved."""
    physical = (sub.get("status") or {}).get("physicalSubscription") or {}
    if not physical.get("subscriberUri") and not physical.get("replyUri"):
        return None
    meta = sub["metadata"]
    entry: Obj = {"uid": meta.get("uid", ""), "generation": meta.get("generation", 1)}
    for field in ("subscriberUri", "replyUri"):
        if physical.get(field):
            entry[field] = physical[field]
    delivery = copy.deepcopy((sub.get("spec") or {}).get("delivery") or {})
    if delivery.get("deadLetterSink") is not None:
        dls = physical.get("deadLetterSinkUri")
        if dls:
            delivery["deadLetterSink"] = {"uri": dls}
        else:
            del delivery["deadLetterSink"]
    if delivery:
        entry["delivery"] = delivery
    return entry


def managed_uids(channel: Obj) -> set[str]:
    """The uids recorded in the channel's `MANAGED_ANNOTATION`."""
    raw = ((channel.get("metadata") or {}).get("annotations") or {}).get(MANAGED_ANNOTATION) or ""
    return {u for u in str(raw).split(",") if u}


def desired_subscribers(channel: Obj, subs: Iterable[Obj]) -> tuple[list[Obj], str]:
    """(`spec.subscribers`, the `MANAGED_ANNOTATION` value) of a channel from the Subscriptions
    that deliver from it: the user's entries as they are, then one entry per ready Subscription."""
    subs = list(subs)
    ours = {str(s["metadata"].get("uid", "")) for s in subs} | managed_uids(channel)
    current = (channel.get("spec") or {}).get("subscribers") or []
    user = [e for e in current if not (isinstance(e, dict) and e.get("uid") in ours)]
    added = sorted(
        (e for e in map(subscriber_entry, subs) if e is not None), key=lambda e: str(e["uid"])
    )
    return user + added, ",".join(str(e["uid"]) for e in added)


def with_subscribers(channel: Obj, subs: Iterable[Obj]) -> Obj | None:
    """A copy of the channel with its desired `spec.subscribers` and annotation, or None when
    the stored ones are already right."""
    entries, managed = desired_subscribers(channel, subs)
    spec = channel.get("spec") or {}
    annotations = (channel.get("metadata") or {}).get("annotations") or {}
    if (spec.get("subscribers") or []) == entries and (annotations.get(MANAGED_ANNOTATION) or "") == managed:
        return None
    out = copy.deepcopy(channel)
    out_spec = out.setdefault("spec", {})
    if entries:
        out_spec["subscribers"] = entries
    else:
        out_spec.pop("subscribers", None)
    out_ann = out["metadata"].setdefault("annotations", {})
    if managed:
        out_ann[MANAGED_ANNOTATION] = managed
    else:
        out_ann.pop(MANAGED_ANNOTATION, None)
        if not out_ann:
            del out["metadata"]["annotations"]
    return out


def subscribers_status(channel: Obj, runs: Callable[[str], bool]) -> list[Obj]:
    """`status.subscribers`: one per `spec.subscribers` entry, in order; Flint's entries are
    ready "True" once the dispatcher runs their Subscription, the user's are "False"."""
    ours = managed_uids(channel)
    out: list[Obj] = []
    for entry in (channel.get("spec") or {}).get("subscribers") or []:
        if not isinstance(entry, dict):
            continue
        uid = str(entry.get("uid") or "")
        item: Obj = {"uid": uid}
        if entry.get("generation") is not None:
            item["observedGeneration"] = entry["generation"]
        if uid not in ours:
            item.update(ready="False", message=NOT_DELIVERED)
        elif runs(uid):
            item["ready"] = "True"
        else:
            item.update(ready="Unknown", message=WAITING)
        out.append(item)
    return out
