"""Knative serving annotations beyond autoscaling: rollout-duration rules, and those not honoured here."""

from __future__ import annotations

from typing import Any

from controller.api.autoscaling import get, parse_duration
from controller.api.meta import join
from controller.api.types import FieldError

ROLLOUT_DURATION = ("serving.knative.dev/rollout-duration", "serving.knative.dev/rolloutDuration")
"""A Service's or Route's gradual-rollout duration, keys in priority order (Knative's)."""

UNHONOURED_OBJECT: tuple[tuple[tuple[str, ...], str], ...] = (
    (("networking.knative.dev/ingress.class", "networking.knative.dev/ingress-class"),
     "the embedded engine has one ingress, its gateway"),
    (("networking.knative.dev/certificate.class", "networking.knative.dev/certificate-class"),
     "routes are served over plain HTTP: there are no certificates to provision"),
    (("networking.knative.dev/disable-auto-tls", "networking.knative.dev/disableAutoTLS"),
     "routes are served over plain HTTP: there is no auto-TLS to disable"),
    (("networking.knative.dev/http-option", "networking.knative.dev/http-protocol"),
     "routes are served over plain HTTP: there is no HTTPS redirect"),
)
"""Knative annotations of a Service or Route the embedded engine accepts but does not honour."""

QUEUE_SIDECAR_PREFIX = "queue.sidecar.serving.knative.dev/"
QUEUE_PROXY_PODINFO = "features.knative.dev/queueproxy-podinfo"


def rollout_duration_errors(annotations: Any, path: str = "metadata.annotations") -> list[FieldError]:
    """Knative's ValidateRolloutDurationAnnotation: a Go duration, whole seconds, not negative."""
    if not isinstance(annotations, dict):
        return []
    found = get(annotations, ROLLOUT_DURATION)
    if found is None or not found[1]:
        return []
    key, value = found
    problem = duration_problem(value)
    return [FieldError(join(path, key), problem)] if problem else []


def duration_problem(text: str) -> str:
    """Why `text` is no rollout duration, in Knative's words, or "" when it is one."""
    parsed = parse_duration(text)
    if parsed is None:
        return f"invalid value: {text}"
    if abs(parsed - round(parsed)) > 1e-9:
        return f"rollout-duration={text} is not at second precision"
    if parsed < 0:
        return f"rollout-duration={text} must be positive"
    return ""


def rollout_duration_s(annotations: Any) -> float | None:
    """The annotation's seconds, None when absent (or not valid: validation refuses those)."""
    found = get(annotations, ROLLOUT_DURATION) if isinstance(annotations, dict) else None
    if found is None or duration_problem(found[1]):
        return None
    return parse_duration(found[1])


def object_annotation_warnings(annotations: Any, path: str = "metadata.annotations") -> list[str]:
    """Warnings for a Service's or Route's annotations the embedded engine does not honour."""
    if not isinstance(annotations, dict):
        return []
    out = []
    for keys, why in UNHONOURED_OBJECT:
        found = get(annotations, keys)
        if found is not None:
            out.append(f"{join(path, found[0])} is accepted but not honoured by the embedded "
                       f"engine: {why}")
    return out


def template_annotation_warnings(annotations: Any, path: str) -> list[str]:
    """Warnings for a revision template's queue-proxy annotations: Flint has no queue-proxy."""
    if not isinstance(annotations, dict):
        return []
    return [
        f"{join(path, k)} is accepted but not honoured by the embedded engine: there is no "
        "queue-proxy sidecar (the gateway does its work)"
        for k in sorted(annotations)
        if k.startswith(QUEUE_SIDECAR_PREFIX) or k == QUEUE_PROXY_PODINFO
    ]
