"""The proxy's counters: plain integers and lists on the hot path, added up at scrape time."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)
"""Upper bounds (seconds) of the latency histograms; fixed so workers' counts add up."""


class Histogram:
    """Counts per fixed bucket (`LATENCY_BUCKETS_S`, then +Inf) and the sum of observations."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, value)] += 1
        self.sum += value

    def to_json(self) -> dict[str, object]:
        return {"counts": list(self.counts), "sum": self.sum}


_STATUS_CLASS = ("other", "1xx", "2xx", "3xx", "4xx", "5xx", "other")


class RouteCounter:
    """Answers of one revision through one route: counts per status class and latency."""

    __slots__ = ("counts", "hist", "revision", "route")

    def __init__(self, route: str, revision: str, hist: Histogram) -> None:
        self.route = route
        self.revision = revision
        self.counts = [0] * len(_STATUS_CLASS)
        """Indexed like `_STATUS_CLASS` (status // 100, capped at 6)."""
        self.hist = hist
        """The revision's latency histogram (shared by its routes)."""

    def count(self, status: int, seconds: float) -> None:
        index = status // 100
        self.counts[index if index < 6 else 6] += 1  # not min(): a builtin call costs more
        hist = self.hist
        hist.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        hist.sum += seconds


@dataclass(slots=True)
class ProxyMetrics:
    """Plain counters of one worker; exported to Prometheus elsewhere (not in the hot path)."""

    requests_total: int = 0
    responses_1xx: int = 0
    responses_2xx: int = 0
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    upstream_errors: int = 0
    """Upstream failures of any kind: connect, reset, malformed response, timeouts."""
    upstream_connect_errors: int = 0
    upstream_timeouts: int = 0
    upstream_retries: int = 0
    """Requests sent again over a fresh connection after a reused one failed."""
    upstream_requeues: int = 0
    """Requests put back in their revision's queue after a fresh connection to a busy replica
    failed before any response byte (then sent to a replica with room)."""
    learned_limit_lowered: int = 0
    """Hard overload signals that lowered a replica's learned in-flight limit."""
    client_errors: int = 0
    """Malformed or oversized requests, header timeouts."""
    active_connections: int = 0
    active_upgrades: int = 0
    home_forwards: int = 0
    """Requests for a limited revision forwarded to its home worker (see `gateway.home`)."""
    peer_forwards: int = 0
    """Requests for a limited revision forwarded to an owner gateway (see `gateway.subsets`)."""
    peer_refusals: int = 0
    """Connections to the peer listener refused: not from a peer of the snapshot."""
    inflight_requests: int = 0
    """Exchanges under way (queued, forwarded or answering), over all revisions."""
    latency: dict[str, Histogram] = field(default_factory=dict)
    """revision `ns/name` → time from the request head to the end of the response."""
    counters: dict[tuple[str, str], RouteCounter] = field(default_factory=dict, repr=False)
    """(route, revision) → its answer counts; the hot path keeps a reference (no dict work)."""

    @property
    def by_route(self) -> dict[tuple[str, str, str], int]:
        """(route `ns/name`, revision `ns/name`, status class "2xx"…) → requests answered."""
        out: dict[tuple[str, str, str], int] = {}
        for (route, revision), counter in self.counters.items():
            for index, n in enumerate(counter.counts):
                if n:
                    key = (route, revision, _STATUS_CLASS[index])
                    out[key] = out.get(key, 0) + n
        return out

    def counter(self, route: str, revision: str) -> RouteCounter:
        """The counter of answers of `revision` through `route` (created on first use)."""
        c = self.counters.get((route, revision))
        if c is None:
            hist = self.latency.get(revision)
            if hist is None:
                hist = self.latency[revision] = Histogram()
            c = self.counters[(route, revision)] = RouteCounter(route, revision, hist)
        return c

    def count_status(self, status: int) -> None:
        if status < 300:
            if status >= 200:
                self.responses_2xx += 1
            else:
                self.responses_1xx += 1
        elif status < 400:
            self.responses_3xx += 1
        elif status < 500:
            self.responses_4xx += 1
        else:
            self.responses_5xx += 1
