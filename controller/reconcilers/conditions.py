"""Knative-style status conditions: set, read and roll up, with the time passed in (pure)."""

from __future__ import annotations

from typing import Any, Literal

from flint_common.timefmt import rfc3339

Status = Literal["True", "False", "Unknown"]


def get_condition(status: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def is_true(status: dict[str, Any], type_: str) -> bool:
    c = get_condition(status, type_)
    return c is not None and c.get("status") == "True"


def set_condition(
    status: dict[str, Any],
    type_: str,
    value: Status,
    reason: str = "",
    message: str = "",
    *,
    now: float,
    severity: str = "",
) -> None:
    """Set one condition in place; `lastTransitionTime` changes only when the status flips.

    `severity`: "" for `Ready` and its dependents (knative.dev/pkg's Error), `Info` or `Warning`
    for a condition that is only informative (not rolled up into `Ready`)."""
    conditions: list[dict[str, Any]] = list(status.get("conditions") or [])
    old = next((c for c in conditions if c.get("type") == type_), None)
    new: dict[str, Any] = {"type": type_, "status": value}
    if severity:
        new["severity"] = severity
    if reason:
        new["reason"] = reason
    if message:
        new["message"] = message
    if old is not None and old.get("status") == value and old.get("lastTransitionTime"):
        new["lastTransitionTime"] = old["lastTransitionTime"]
    else:
        new["lastTransitionTime"] = rfc3339(now)
    conditions = [c for c in conditions if c.get("type") != type_] + [new]
    conditions.sort(key=lambda c: (c["type"] != "Ready", c["type"]))
    status["conditions"] = conditions


def remove_condition(status: dict[str, Any], type_: str) -> None:
    """Drop the condition `type_` (if any) in place."""
    if any(c.get("type") == type_ for c in status.get("conditions") or []):
        status["conditions"] = [c for c in status["conditions"] if c.get("type") != type_]


def roll_up(
    status: dict[str, Any], dependents: list[str], *, now: float, happy: str = "Ready"
) -> None:
    """Set `happy` from its dependents the way knative.dev/pkg's ConditionSet does: False if any
    is False (with its reason and message), Unknown if any is Unknown, True when all are True."""
    worst: dict[str, Any] | None = None
    for type_ in dependents:
        c = get_condition(status, type_) or {"type": type_, "status": "Unknown"}
        if c["status"] == "False":
            worst = c
            break
        if c["status"] == "Unknown" and worst is None:
            worst = c
    if worst is None:
        set_condition(status, happy, "True", now=now)
    else:
        set_condition(
            status,
            happy,
            worst["status"],
            worst.get("reason", ""),
            worst.get("message", ""),
            now=now,
        )


def run_by(dispatchers: int) -> str:
    """A consumer's dispatcher condition message: how many dispatchers run it."""
    return f"run by {dispatchers} dispatcher{'' if dispatchers == 1 else 's'}"
