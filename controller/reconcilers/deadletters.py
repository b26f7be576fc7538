"""The dead-letter sink of a `delivery`, resolved into status the way every eventing kind shows it."""

from __future__ import annotations

from typing import Any

from controller.reconcilers.conditions import set_condition
from controller.reconcilers.context import EventingContext, Obj

CONDITION = "DeadLetterSinkResolved"


def dead_letter_sink(ctx: EventingContext, delivery: object, namespace: str) -> tuple[str | None, str, bool]:
    """(uri, error, configured) for a delivery's deadLetterSink."""
    if not isinstance(delivery, dict) or not delivery.get("deadLetterSink"):
        return None, "", False
    uri, err = ctx.resolve(delivery["deadLetterSink"], namespace)
    return uri, err, True


def mark_dead_letter_sink(
    ctx: EventingContext, status: Obj, delivery: Any, namespace: str, *, now: float
) -> bool:
    """Set `status.deadLetterSinkUri` and the DeadLetterSinkResolved condition (Knative's words);
    False when a configured sink does not resolve (the caller retries later)."""
    uri, err, configured = dead_letter_sink(ctx, delivery, namespace)
    if not configured:
        status.pop("deadLetterSinkUri", None)
        set_condition(status, CONDITION, "True", "DeadLetterSinkNotConfigured",
                      "No dead letter sink is configured.", now=now)
        return True
    if uri is None:
        status.pop("deadLetterSinkUri", None)
        set_condition(status, CONDITION, "False", "Unable to get the dead letter sink's URI", err, now=now)
        return False
    status["deadLetterSinkUri"] = uri
    set_condition(status, CONDITION, "True", now=now)
    return True
