"""Small readings of Kubernetes objects the controllers share (pure: readiness, ownership,
conditions), and one wait."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait for `event` at most `seconds`; whether it is set. (Not `asyncio.wait_for`: on 3.11 a
    cancellation arriving as its timeout fires can be lost, and a stopping stand-in then hangs.)"""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        pass
    return event.is_set()


def is_ready(pod: JSON) -> bool:
    """The Pod's Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def is_terminal(pod: JSON) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def is_active(pod: JSON) -> bool:
    """Counted by its controller: neither terminating nor terminal (controller.IsPodActive)."""
    return not (pod.get("metadata") or {}).get("deletionTimestamp") and not is_terminal(pod)


def owned_by(obj: JSON, uid: str) -> bool:
    """`uid` is the object's controller (the ownerReference with controller: true)."""
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


def selects(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    """A map selector (a Service's spec.selector, matchLabels) matches the labels."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def condition(kind: str, ok: bool, reason: str, message: str, now: str) -> JSON:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def merge_conditions(previous: list[JSON], new: list[JSON]) -> list[JSON]:
    """`new`, each keeping its previous times when nothing in it changed (and its
    lastTransitionTime when only the reason or message did)."""
    before = {c.get("type"): c for c in previous}
    out = []
    for c in new:
        old = before.get(c["type"])
        c = dict(c)
        if old is not None and old.get("status") == c["status"]:
            c["lastTransitionTime"] = old.get("lastTransitionTime", c["lastTransitionTime"])
            if (old.get("reason"), old.get("message")) == (c.get("reason"), c.get("message")):
                c["lastUpdateTime"] = old.get("lastUpdateTime", c.get("lastUpdateTime"))
        out.append(c)
    return out
