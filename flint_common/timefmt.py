"""RFC 3339 UTC timestamps as Flint writes them: whole seconds for resources, microseconds for events (pure).

`rfc3339` is Kubernetes' form (`metadata.creationTimestamp`, a condition's `lastTransitionTime`);
`rfc3339_micros` the broker ingress's `knativearrivaltime`, on the hot path of every event, so
the date-time part is formatted once per second and kept (one formatter for both).
"""

from __future__ import annotations

import time

__all__ = ["rfc3339", "rfc3339_micros"]

_second_cache: list[tuple[int, str]] = [(-1, "")]
"""The last second formatted: (unix second, `YYYY-MM-DDTHH:MM:SS`). A list so that the update is
one item assignment; a thread that loses a race formats its second again, never a wrong one."""


def _date_time(sec: int) -> str:
    cached = _second_cache[0]
    if cached[0] != sec:
        cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        _second_cache[0] = cached
    return cached[1]


def rfc3339(now: float) -> str:
    """Wall-clock seconds → `2026-12-05T23:11:43Z`: UTC, whole seconds, as Kubernetes writes timestamps."""
    return _date_time(int(now)) + "Z"


def rfc3339_micros(now: float) -> str:
    """`2026-12-05T23:11:43.123456Z`; the date-time part is formatted once per second."""
    sec = int(now)
    cached = _second_cache[0]  # `_date_time` inlined: the broker ingress stamps every event with it
    if cached[0] != sec:
        cached = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)))
        _second_cache[0] = cached
    return f"{cached[1]}.{int((now - sec) * 1_000_000):06d}Z"
