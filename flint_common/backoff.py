"""Retry delays that double with each failure in a row, up to a cap (pure): one shape for every retry loop.

Used by the reconcilers' work queue, the dispatcher (restarting a runner, polling the plan), the
Redis janitor, the gateway's controller link and its worker supervisor, and `flint up`. Each caller
counts its failures and resets the count when the thing it retries has worked (or stayed up).
Knative's delivery backoff (`controller.eventing.delivery`) is not this: uncapped, its own policies.
"""

from __future__ import annotations

__all__ = ["backoff_delay"]

_MAX_DOUBLINGS = 1000
"""`2.0 ** n` raises past 1023; by 1000 doublings any cap has long been reached."""


def backoff_delay(first_s: float, max_s: float, retry: int) -> float:
    """The pause before retry `retry` (0 is the first): `first_s` doubled `retry` times, at most `max_s`."""
    return float(min(max_s, first_s * 2.0 ** min(max(retry, 0), _MAX_DOUBLINGS)))
