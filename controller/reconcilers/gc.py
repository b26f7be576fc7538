"""Revision garbage collection (Knative's GC v2), pure: which old revisions of a configuration go."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from controller.api.naming import (
    ROUTING_STATE_ACTIVE,
    ROUTING_STATE_LABEL,
    ROUTING_STATE_MODIFIED_ANNOTATION,
)
from controller.settings import GCSettings

Obj = dict[str, Any]

NO_GC_ANNOTATION = "serving.knative.dev/no-gc"
"""`"true"` keeps a revision from ever being collected (Knative's RevisionPreservedAnnotationKey)."""

DISABLED = -1
"""A setting of -1 disables that rule, as Knative's "disabled"."""


def _time(ts: str | None) -> float | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def created_at(rev: Obj) -> float:
    return _time(rev["metadata"].get("creationTimestamp")) or 0.0


def last_active(rev: Obj) -> float:
    """When the revision last stopped being routed (routingStateModified), else its creation."""
    annotations = rev["metadata"].get("annotations") or {}
    return _time(annotations.get(ROUTING_STATE_MODIFIED_ANNOTATION)) or created_at(rev)


def is_stale(rev: Obj, settings: GCSettings, now: float) -> bool:
    since_create, since_active = (
        settings.retain_since_create_time_s,
        settings.retain_since_last_active_time_s,
    )
    if since_create == DISABLED and since_active == DISABLED:
        return False
    if since_create != DISABLED and now - created_at(rev) < since_create:
        return False
    return not (since_active != DISABLED and now - last_active(rev) < since_active)


def collectable(
    revisions: list[Obj], keep: set[str], settings: GCSettings, now: float
) -> list[str]:
    """Names of one configuration's revisions to delete. `keep` holds the names that must stay
    whatever their age (routed ones, the latest created and latest ready). Active revisions
    (routed, or in `keep`) and `serving.knative.dev/no-gc: "true"` ones never count as
    collectable; of the rest, the stale are deleted oldest-active first while more than
    `min_non_active_revisions` remain, then any beyond `max_non_active_revisions`."""
    if len(revisions) <= settings.min_non_active_revisions:
        return []
    candidates = [
        r for r in revisions
        if r["metadata"]["name"] not in keep
        and (r["metadata"].get("labels") or {}).get(ROUTING_STATE_LABEL) != ROUTING_STATE_ACTIVE
        and (r["metadata"].get("annotations") or {}).get(NO_GC_ANNOTATION) != "true"
    ]
    # Newest activity first: the tail is the oldest, collected first.
    candidates.sort(key=lambda r: (last_active(r), created_at(r), r["metadata"]["name"]), reverse=True)
    remaining = len(candidates)
    doomed: list[str] = []
    fresh: list[Obj] = []
    for rev in reversed(candidates):  # oldest first
        if remaining <= settings.min_non_active_revisions:
            fresh.append(rev)
            continue
        if is_stale(rev, settings, now):
            doomed.append(rev["metadata"]["name"])
            remaining -= 1
        else:
            fresh.append(rev)
    limit = settings.max_non_active_revisions
    if limit != DISABLED and len(fresh) > limit:
        fresh.sort(key=lambda r: (last_active(r), created_at(r), r["metadata"]["name"]), reverse=True)
        doomed += [r["metadata"]["name"] for r in fresh[limit:]]
    return doomed


def load_gc_settings(data: dict[str, str], base: GCSettings | None = None) -> GCSettings:
    """`GCSettings` from Knative `config-gc` keys (`retain-since-create-time: 48h`,
    `max-non-active-revisions: disabled`, …); raises ValueError naming the key."""
    from dataclasses import replace

    from controller.api.autoscaling import parse_duration

    out: dict[str, float | int] = {}
    for key, raw in data.items():
        text = str(raw).strip()
        if key in ("retain-since-create-time", "retain-since-last-active-time"):
            seconds = DISABLED if text == "disabled" else parse_duration(text)
            if seconds is None or (seconds != DISABLED and seconds < 0):
                raise ValueError(f"{key}: {text!r} is not a duration like 48h or `disabled`")
            out[key.replace("-", "_") + "_s"] = float(seconds)
        elif key in ("min-non-active-revisions", "max-non-active-revisions"):
            try:
                count = DISABLED if text == "disabled" else int(text)
            except ValueError:
                raise ValueError(f"{key}: {text!r} is not a whole number or `disabled`") from None
            if count < DISABLED or (key.startswith("min") and count == DISABLED):
                raise ValueError(f"{key}: {text!r} must be 0 or more")
            out[key.replace("-", "_")] = count
        else:
            raise ValueError(
                f"{key}: unknown gc setting (known: retain-since-create-time, "
                "retain-since-last-active-time, min-non-active-revisions, max-non-active-revisions)"
            )
    settings = replace(base or GCSettings(), **out)  # type: ignore[arg-type]
    if (
        settings.max_non_active_revisions != DISABLED
        and settings.max_non_active_revisions < settings.min_non_active_revisions
    ):
        raise ValueError("max-non-active-revisions must be at least min-non-active-revisions")
    return settings
