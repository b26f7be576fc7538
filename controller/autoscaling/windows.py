"""Time windows of the autoscaler: bucketed averages of the gateway's reports and a trailing maximum."""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.api.autoscaling import RPS

GRANULARITY_S = 1.0
"""Bucket size: the gateway reports one bucket per second (Knative's BucketSize)."""
WORKER_LIVENESS_S = 3
"""A worker that reported for a revision within this many seconds before a bucket is expected to
report that bucket too; until it does, the bucket is incomplete (unknown) and skipped."""


def _bucket_count(window_s: float, granularity_s: float) -> int:
    return max(1, math.ceil(window_s / granularity_s - 1e-9))


class TimedBuckets:
    """Values summed into fixed buckets (Knative's `TimedFloat64Buckets`), averaged over a trailing
    window. At `now` the window holds the `ceil(window / granularity)` buckets ending with the one
    that contains `now`. Buckets with no value are unknown: the average skips them, it does not
    count them as 0."""

    def __init__(self, window_s: float, granularity_s: float = GRANULARITY_S) -> None:
        if window_s <= 0 or granularity_s <= 0:
            raise ValueError(f"window ({window_s}) and granularity ({granularity_s}) must be positive")
        self.window_s = window_s
        self.granularity_s = granularity_s
        self._buckets: dict[int, float] = {}

    def _index(self, t: float) -> int:
        return math.floor(t / self.granularity_s)

    def _first(self, now: float) -> int:
        return self._index(now) - _bucket_count(self.window_s, self.granularity_s) + 1

    def record(self, now: float, value: float) -> None:
        """Add `value` to the bucket containing `now`; buckets older than the window are dropped."""
        i = self._index(now)
        self._buckets[i] = self._buckets.get(i, 0.0) + value
        first = self._first(now)
        for old in [b for b in self._buckets if b < first]:
            del self._buckets[old]

    def _in_window(self, now: float) -> list[float]:
        first, last = self._first(now), self._index(now)
        return [v for b, v in self._buckets.items() if first <= b <= last]

    def window_average(self, now: float) -> float | None:
        """Mean of the buckets of the window that hold a value; None when none does."""
        values = self._in_window(now)
        return sum(values) / len(values) if values else None

    def is_empty(self, now: float) -> bool:
        """Whether no bucket of the window at `now` holds a value."""
        return not self._in_window(now)


class TimedMax:
    """The largest value recorded over a trailing window (Knative's `max.TimeWindow`): records are
    indexed by `floor(now / granularity)`, and the window holds `ceil(window / granularity)`
    indexes ending with the current one. Used for scale-down-delay."""

    def __init__(self, window_s: float, granularity_s: float) -> None:
        if window_s <= 0 or granularity_s <= 0:
            raise ValueError(f"window ({window_s}) and granularity ({granularity_s}) must be positive")
        self._size = _bucket_count(window_s, granularity_s)
        self._granularity_s = granularity_s
        self._entries: dict[int, float] = {}

    def record(self, now: float, value: float) -> None:
        """Record `value` at `now`; two values in one index keep the larger (as Knative does)."""
        i = math.floor(now / self._granularity_s)
        self._entries[i] = max(value, self._entries.get(i, value))
        for old in [k for k in self._entries if k <= i - self._size]:
            del self._entries[old]

    def current(self) -> float:
        """The maximum over the window as of the last record (0 before any)."""
        return max(self._entries.values(), default=0.0)


@dataclass(frozen=True)
class WorkerReport:
    """One gateway worker's numbers for one revision and one 1-second bucket."""

    concurrency: float
    """Time-weighted average of requests queued plus in flight in that second."""
    requests: int
    """Requests that arrived in that second."""
    provisional: bool = False
    """A poke's placeholder, replaced by the worker's real report for the same bucket."""


class RevisionMetrics:
    """The reports of every gateway worker for one revision (Knative's `MetricCollector`), keyed by
    (worker, bucket second) so a repeated report overwrites the earlier one.

    The rule for missing reports — unknown, never zero:
    * a bucket's value is the sum over the workers that reported it (each worker sees its own share
      of the revision's traffic);
    * a bucket is *complete*, and takes part in averages, only when every worker that is live for
      the revision has reported it; a worker is live at bucket b when it reported one of the
      `WORKER_LIVENESS_S` buckets before b. An incomplete bucket is skipped, not counted as 0;
      so is a second no worker reported. A worker that stops reporting (it forgot an idle
      revision, or died) stops being expected after `WORKER_LIVENESS_S` seconds;
    * a bucket holding a poke always counts, so a request waiting at zero scale is never lost;
    * no complete bucket in a window → the average is None ("no data"), which is not "zero":
      the gateway reports 0 every second for each revision it has seen recently, so an idle
      revision produces zeros, and the decider keeps the scale on None.

    Bucket seconds are on the same clock as the `now` of the queries (wall-clock seconds).
    """

    def __init__(
        self,
        stable_window_s: float,
        panic_window_s: float,
        *,
        granularity_s: float = GRANULARITY_S,
        worker_liveness_s: int = WORKER_LIVENESS_S,
    ) -> None:
        self.stable_window_s = stable_window_s
        self.panic_window_s = panic_window_s
        self.granularity_s = granularity_s
        self.worker_liveness_s = worker_liveness_s
        self._reports: dict[int, dict[str, WorkerReport]] = {}
        self._newest: int | None = None

    def set_windows(self, stable_window_s: float, panic_window_s: float) -> None:
        """Follow a change of the revision's windows (annotations or global settings)."""
        self.stable_window_s = stable_window_s
        self.panic_window_s = panic_window_s

    def _keep_from(self, newest: int) -> int:
        return newest - _bucket_count(self.stable_window_s, self.granularity_s) - self.worker_liveness_s

    def record_report(self, worker: str, bucket_second: int, concurrency: float, requests: int) -> None:
        """Store one worker's report for one bucket, replacing any earlier one for the same key.
        Reports older than the stable window (plus the liveness horizon) are dropped."""
        self._store(worker, bucket_second, WorkerReport(max(0.0, concurrency), max(0, requests)))

    def record_poke(self, worker: str, bucket_second: int, waiting: int = 1) -> None:
        """A request is waiting at zero ready replicas: record `waiting` (at least 1) as the worker's
        concurrency for the bucket unless it already reported it; its real report replaces the poke."""
        existing = self._reports.get(bucket_second, {}).get(worker)
        if existing is not None and not existing.provisional:
            return
        value = float(max(1, waiting))
        if existing is not None:
            value = max(value, existing.concurrency)
        self._store(worker, bucket_second, WorkerReport(value, 0, provisional=True))

    def _store(self, worker: str, bucket_second: int, report: WorkerReport) -> None:
        if self._newest is not None and bucket_second < self._keep_from(self._newest):
            return
        self._reports.setdefault(bucket_second, {})[worker] = report
        if self._newest is None or bucket_second > self._newest:
            self._newest = bucket_second
            keep = self._keep_from(bucket_second)
            for old in [b for b in self._reports if b < keep]:
                del self._reports[old]

    def _complete_buckets(self, now: float, window_s: float) -> list[dict[str, WorkerReport]]:
        last = math.floor(now / self.granularity_s)
        first = last - _bucket_count(window_s, self.granularity_s) + 1
        out: list[dict[str, WorkerReport]] = []
        for b in range(first, last + 1):
            reports = self._reports.get(b)
            if not reports:
                continue
            if any(r.provisional for r in reports.values()):
                out.append(reports)
                continue
            live: set[str] = set()
            for k in range(1, self.worker_liveness_s + 1):
                live.update(self._reports.get(b - k, {}))
            if live <= reports.keys():
                out.append(reports)
        return out

    def _average(self, now: float, window_s: float, rps: bool) -> float | None:
        buckets = self._complete_buckets(now, window_s)
        if not buckets:
            return None
        if rps:
            total = sum(sum(r.requests for r in b.values()) / self.granularity_s for b in buckets)
        else:
            total = sum(sum(r.concurrency for r in b.values()) for b in buckets)
        return total / len(buckets)

    def stable_average(self, now: float) -> float | None:
        """Mean concurrency over the complete buckets of the stable window; None without any."""
        return self._average(now, self.stable_window_s, rps=False)

    def panic_average(self, now: float) -> float | None:
        """Mean concurrency over the complete buckets of the panic window; None without any."""
        return self._average(now, self.panic_window_s, rps=False)

    def stable_rps(self, now: float) -> float | None:
        """Mean requests per second over the complete buckets of the stable window."""
        return self._average(now, self.stable_window_s, rps=True)

    def panic_rps(self, now: float) -> float | None:
        """Mean requests per second over the complete buckets of the panic window."""
        return self._average(now, self.panic_window_s, rps=True)

    def observed(self, now: float, metric: str) -> tuple[float | None, float | None]:
        """(stable, panic) averages of the revision's scaling metric (`concurrency` or `rps`)."""
        if metric == RPS:
            return self.stable_rps(now), self.panic_rps(now)
        return self.stable_average(now), self.panic_average(now)

    def newest_bucket(self) -> int | None:
        """The latest bucket second any worker reported, None before the first report."""
        return self._newest


__all__ = ["GRANULARITY_S", "RevisionMetrics", "TimedBuckets", "TimedMax", "WorkerReport"]
