"""Per-revision concurrency accounting for the autoscaler (pure: `now` is always passed in).

What is counted is what Knative's activator counts: requests *queued plus in flight* in this
worker. Each 1-second bucket reports the time-weighted average of that number and the requests
that arrived. The link sends the report as the `stats` up message (`flint_common.wire.Stats`).

`report_stats` at the end is the worker's loop around the accumulator (asyncio); the rest is pure.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from flint_common.wire import BucketLoad, LearnedLimits, Stats

REPORT_WINDOW_S = 60.0
"""A revision seen (active or with arrivals) within this many seconds is reported, with zeros
when idle: the autoscaler's stable window. A missing report means unknown, never zero."""


class RevStats:
    """One revision's accounting in the current bucket; the hot path calls `enter`/`leave`."""

    __slots__ = ("area", "cur", "key", "last", "requests", "seen")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.cur = 0
        """Requests queued or in flight right now."""
        self.last = now
        """When `cur` last changed (or the bucket started)."""
        self.area = 0.0
        """Integral of `cur` over time since the bucket started (request·seconds)."""
        self.requests = 0
        """Arrivals in the current bucket."""
        self.seen = now
        """Last time anything happened (for `REPORT_WINDOW_S`)."""

    def enter(self, now: float) -> None:
        """A request arrived (it is queued or forwarded from now on)."""
        self.area += self.cur * (now - self.last)
        self.last = now
        self.cur += 1
        self.requests += 1

    def leave(self, now: float) -> None:
        """A request counted by `enter` is over (answered, failed or abandoned)."""
        self.area += self.cur * (now - self.last)
        self.last = self.seen = now
        self.cur -= 1


class StatsAccumulator:
    """All revisions of one worker; `flush` closes a bucket and opens the next."""

    __slots__ = ("_revs", "_start")

    def __init__(self, now: float) -> None:
        self._revs: dict[str, RevStats] = {}
        self._start = now

    def revision(self, key: str, now: float) -> RevStats:
        rs = self._revs.get(key)
        if rs is None:
            rs = self._revs[key] = RevStats(key, now)
            rs.last = max(now, self._start)
        return rs

    def enter(self, key: str, now: float) -> RevStats:
        """Count an arrival for `key`; call `leave(now)` on the result when it is over."""
        rs = self._revs.get(key)
        if rs is None:
            rs = self.revision(key, now)
        rs.enter(now)
        return rs

    def flush(self, now: float) -> dict[str, BucketLoad]:
        """Close the bucket [previous flush, now): the report of every revision seen recently."""
        span = now - self._start
        self._start = now
        out: dict[str, BucketLoad] = {}
        horizon = now - REPORT_WINDOW_S
        for key in list(self._revs):
            rs = self._revs[key]
            area = rs.area + rs.cur * (now - rs.last)
            if rs.cur > 0 or rs.requests > 0:
                rs.seen = now
            elif rs.seen < horizon:
                del self._revs[key]  # idle for a whole window: forgotten
                continue
            out[key] = BucketLoad(area / span if span > 0 else float(rs.cur), rs.requests)
            rs.area = 0.0
            rs.requests = 0
            rs.last = now
        return out

    def current(self, key: str) -> int:
        rs = self._revs.get(key)
        return rs.cur if rs is not None else 0

    def keys(self) -> Iterable[str]:
        return self._revs.keys()


def stats_message(
    bucket: int,
    report: Mapping[str, BucketLoad],
    limits: Mapping[str, LearnedLimits] | None = None,
) -> Stats:
    """The `stats` up message for `bucket` (the unix second that just ended)."""
    return Stats(bucket, {
        key: BucketLoad(round(r.concurrency, 6), r.requests) for key, r in report.items()
    }, dict(limits or {}))


def learned_limits(
    by_revision: Mapping[str, Mapping[str, int]], changes: Mapping[str, Sequence[int]]
) -> dict[str, LearnedLimits]:
    """The router's learned limits and their change counts as the `stats` message's `limits`."""
    return {
        key: LearnedLimits(
            dict(by_revision.get(key, {})), *(changes.get(key) or (0, 0))
        )
        for key in sorted({*by_revision, *changes})
    }


class Pokes:
    """Deduplicates pokes: one per revision until it has a ready endpoint again."""

    __slots__ = ("_sent",)

    def __init__(self) -> None:
        self._sent: set[str] = set()

    def should_poke(self, key: str) -> bool:
        """True once for `key` (then False until `ready(key)` or `failed(key)`)."""
        if key in self._sent:
            return False
        self._sent.add(key)
        return True

    def ready(self, key: str) -> None:
        """`key` has a ready endpoint: the next cold request pokes again."""
        self._sent.discard(key)

    def failed(self, key: str) -> None:
        """The poke for `key` could not be sent (link down): the next request retries."""
        self._sent.discard(key)

    def retain(self, keys: Iterable[str]) -> None:
        """Forget revisions not in `keys` (they left the snapshot)."""
        self._sent &= set(keys)


# ---------------------------------------------------------------------------------------------
# Reporting (the worker's loop)
# ---------------------------------------------------------------------------------------------


async def report_stats(
    acc: StatsAccumulator,
    send: Callable[[Stats], Awaitable[bool]],
    *,
    clock: Callable[[], float],
    wall: Callable[[], float] = time.time,
    on_lag: Callable[[float], None] | None = None,
    limits: Callable[[], Mapping[str, LearnedLimits]] = dict,
) -> None:
    """Every wall-clock second: close the bucket that just ended and send it (until cancelled).

    `clock` is the loop's clock (the one the proxy passes to `enter`/`leave`). `on_lag` gets
    how late each tick fired (the event loop's lag, seconds). `limits` gives the learned limits
    sent with each bucket (a bucket with no load is sent when there are some).
    """
    had_limits = False
    while True:
        w = wall()
        boundary = math.floor(w) + 1
        delay = boundary - w
        target = clock() + delay
        await asyncio.sleep(delay)
        now = clock()
        if on_lag is not None:
            on_lag(max(0.0, now - target))
        report = acc.flush(now)
        learned = limits()
        if report or learned or had_limits:  # once more when the last limit goes
            await send(stats_message(int(boundary) - 1, report, learned))
        had_limits = bool(learned)
