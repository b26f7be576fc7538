"""Turns the workers' plain counters into one aggregated Prometheus view, off the hot path."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from gateway.proxy_metrics import LATENCY_BUCKETS_S, Histogram

PREFIX = "flint_gateway_"

_CODE_CLASS = re.compile(r"^(?:requests|responses)_([1-5]xx|other)(?:_total)?$")
_GAUGE_HINT = re.compile(r"^(?:active_|open_|inflight|in_flight|pending_|idle_)|_(?:active|open)$")


@dataclass(frozen=True)
class WorkerStats:
    """What one worker's admin socket reports (JSON): its counters and link state."""

    index: int
    pid: int
    version: int
    """Snapshot version the worker's router serves (0 = none yet)."""
    connected: bool
    """Whether the worker's controller link is up."""
    draining_requests: int = 0
    """Requests in flight to endpoints removed from the snapshot."""
    counters: dict[str, int] = field(default_factory=dict)
    """The worker's `ProxyMetrics`, flattened to name → integer."""
    requests: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(route, revision, code class, count) of the requests this worker answered to clients."""
    latency: dict[str, HistogramData] = field(default_factory=dict)
    """revision → request latency histogram (`LATENCY_BUCKETS_S` counts then +Inf, and sum)."""
    queue_depth: dict[str, int] = field(default_factory=dict)
    """revision → requests waiting in this worker's queue now."""
    inflight: dict[str, int] = field(default_factory=dict)
    """revision → requests this worker has in flight to its replicas now."""
    cold_starts: dict[str, int] = field(default_factory=dict)
    """revision → requests that waited for a replica to start."""
    cold_start_latency: dict[str, HistogramData] = field(default_factory=dict)
    """revision → how long those requests waited."""
    loop_lag_s: float = 0.0
    """How late the worker's last 1-second tick fired (event-loop lag, seconds)."""
    broker_events: list[tuple[str, str, str, int]] = field(default_factory=list)
    """(broker `ns/name`, outcome `accepted|rejected|dropped`, reason, count) at the ingress;
    rejected counts requests, the others events."""
    learned_limits: dict[str, dict[str, int]] = field(default_factory=dict)
    """revision → {replica (endpoint id): its learned in-flight limit in this worker}."""
    limit_changes: dict[str, list[int]] = field(default_factory=dict)
    """revision → [times lowered, times raised] of its replicas' learned limits."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> WorkerStats:
        counters = data.get("counters") or {}
        return WorkerStats(
            index=int(data["index"]),
            pid=int(data["pid"]),
            version=int(data["version"]),
            connected=bool(data["connected"]),
            draining_requests=int(data.get("draining_requests", 0)),
            counters={str(k): int(v) for k, v in counters.items()},
            requests=[
                (str(r), str(v), str(c), int(n)) for r, v, c, n in data.get("requests") or []
            ],
            latency={str(k): _hist(v) for k, v in (data.get("latency") or {}).items()},
            queue_depth={str(k): int(v) for k, v in (data.get("queue_depth") or {}).items()},
            inflight={str(k): int(v) for k, v in (data.get("inflight") or {}).items()},
            cold_starts={str(k): int(v) for k, v in (data.get("cold_starts") or {}).items()},
            cold_start_latency={
                str(k): _hist(v) for k, v in (data.get("cold_start_latency") or {}).items()
            },
            loop_lag_s=float(data.get("loop_lag_s", 0.0)),
            broker_events=[
                (str(b), str(o), str(r), int(n)) for b, o, r, n in data.get("broker_events") or []
            ],
            learned_limits={
                str(k): {str(e): int(n) for e, n in v.items()}
                for k, v in (data.get("learned_limits") or {}).items()
            },
            limit_changes={
                str(k): [int(v[0]), int(v[1])] for k, v in (data.get("limit_changes") or {}).items()
            },
        )


HistogramData = dict[str, Any]
"""A histogram on the wire: {"counts": [per bucket of LATENCY_BUCKETS_S, then +Inf], "sum": s}."""


def _hist(data: Mapping[str, Any]) -> HistogramData:
    return {"counts": [int(c) for c in data["counts"]], "sum": float(data["sum"])}


def histograms_json(hists: Mapping[str, Histogram]) -> dict[str, HistogramData]:
    return {k: {"counts": list(h.counts), "sum": h.sum} for k, h in hists.items()}


def _add_hist(into: dict[str, HistogramData], key: str, h: HistogramData) -> None:
    cur = into.get(key)
    if cur is None:
        into[key] = {"counts": list(h["counts"]), "sum": h["sum"]}
        return
    counts = cur["counts"]
    for i, c in enumerate(h["counts"]):
        if i < len(counts):
            counts[i] += c
    cur["sum"] += h["sum"]


def _prom_buckets(h: HistogramData) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs for `HistogramMetricFamily`."""
    out: list[tuple[str, float]] = []
    acc = 0
    counts = h["counts"]
    for bound, c in zip(LATENCY_BUCKETS_S, counts, strict=False):
        acc += c
        out.append((repr(float(bound)), float(acc)))
    acc += sum(counts[len(LATENCY_BUCKETS_S) :])
    out.append(("+Inf", float(acc)))
    return out


def flatten_counters(metrics: object) -> dict[str, int]:
    """A dataclass of int counters (dict fields of str → int allowed) as name → int."""
    out: dict[str, int] = {}
    if not dataclasses.is_dataclass(metrics):
        return out
    for f in dataclasses.fields(metrics):
        value = getattr(metrics, f.name)
        if isinstance(value, bool):
            out[f.name] = int(value)
        elif isinstance(value, int):
            out[f.name] = value
        elif isinstance(value, Mapping):
            for key, v in value.items():
                if isinstance(key, str) and isinstance(v, int):
                    out[f"{f.name}_{key}"] = int(v)
    return out


_RENAMES = {"requests_total": "requests_received"}
"""Proxy counters whose field name would clash with an exported metric family."""


def _metric_name(field_name: str) -> str:
    name = re.sub(r"[^a-zA-Z0-9_]", "_", _RENAMES.get(field_name, field_name))
    return name if name.startswith(PREFIX) else PREFIX + name


class GatewayCollector:
    """A prometheus_client Collector over the latest stats fetched from every worker.

    The admin server fetches the workers' stats on each scrape, calls `update`, then renders
    the registry; `collect` itself never does I/O.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._stats: list[WorkerStats] = []
        self._restarts = 0

    def update(self, stats: Sequence[WorkerStats | None], restarts: int) -> None:
        self._stats = [s for s in stats if s is not None]
        self._restarts = restarts

    def collect(self) -> Iterable[Metric]:
        stats = self._stats
        requests = CounterMetricFamily(
            PREFIX + "requests", "Requests answered, by status code class.", labels=["code"]
        )
        by_class: dict[str, int] = {}
        sums: dict[str, int] = {}
        for s in stats:
            for name, value in s.counters.items():
                m = _CODE_CLASS.match(name)
                if m:
                    by_class[m.group(1)] = by_class.get(m.group(1), 0) + value
                else:
                    sums[name] = sums.get(name, 0) + value
        for code in ("1xx", "2xx", "3xx", "4xx", "5xx"):
            by_class.setdefault(code, 0)
        for code, value in sorted(by_class.items()):
            requests.add_metric([code], value)
        yield requests

        for name, value in sorted(sums.items()):
            if _GAUGE_HINT.search(name):
                yield GaugeMetricFamily(
                    _metric_name(name), f"Sum over workers of the proxy's {name}.", value=value
                )
            else:
                yield CounterMetricFamily(
                    _metric_name(name),
                    f"Sum over workers of the proxy's {name} counter.",
                    value=value,
                )

        yield GaugeMetricFamily(
            PREFIX + "workers", "Worker processes configured.", value=self.workers
        )
        yield GaugeMetricFamily(
            PREFIX + "workers_up", "Worker processes answering the admin scrape.", value=len(stats)
        )
        yield CounterMetricFamily(
            PREFIX + "worker_restarts", "Worker processes restarted after dying.",
            value=self._restarts,
        )
        yield GaugeMetricFamily(
            PREFIX + "snapshot_version",
            "Routing snapshot version served by every answering worker (the lowest).",
            value=min((s.version for s in stats), default=0),
        )
        yield GaugeMetricFamily(
            PREFIX + "link_connected_workers",
            "Answering workers whose controller link is up.",
            value=sum(1 for s in stats if s.connected),
        )
        yield GaugeMetricFamily(
            PREFIX + "draining_requests",
            "Requests in flight to endpoints no longer in the snapshot.",
            value=sum(s.draining_requests for s in stats),
        )
        yield from self._per_revision(stats)

    def _per_revision(self, stats: Sequence[WorkerStats]) -> Iterable[Metric]:
        routed = CounterMetricFamily(
            PREFIX + "routed_requests",
            "Requests answered to clients, by route, revision and status code class.",
            labels=["route", "revision", "code"],
        )
        by_key: dict[tuple[str, str, str], int] = {}
        for s in stats:
            for route, rev, code, n in s.requests:
                by_key[(route, rev, code)] = by_key.get((route, rev, code), 0) + n
        for (route, rev, code), n in sorted(by_key.items()):
            routed.add_metric([route, rev, code], n)
        yield routed

        for name, attr, doc in (
            ("request_duration_seconds", "latency",
             "Time from a request's head to the end of its response, by revision."),
            ("cold_start_wait_seconds", "cold_start_latency",
             "How long requests waited for a starting replica, by revision."),
        ):
            merged: dict[str, HistogramData] = {}
            for s in stats:
                for key, h in getattr(s, attr).items():
                    _add_hist(merged, key, h)
            fam = HistogramMetricFamily(PREFIX + name, doc, labels=["revision"])
            for key, h in sorted(merged.items()):
                fam.add_metric([key], _prom_buckets(h), sum_value=h["sum"])
            yield fam

        for name, attr, doc, gauge in (
            ("queue_depth_requests", "queue_depth", "Requests waiting for capacity, by revision.",
             True),
            ("revision_inflight_requests", "inflight",
             "Requests in flight to a revision's replicas.", True),
            ("cold_starts", "cold_starts", "Requests that waited for a replica to start.", False),
        ):
            sums: dict[str, int] = {}
            for s in stats:
                for key, n in getattr(s, attr).items():
                    sums[key] = sums.get(key, 0) + n
            family: GaugeMetricFamily | CounterMetricFamily = (
                GaugeMetricFamily(PREFIX + name, doc, labels=["revision"])
                if gauge
                else CounterMetricFamily(PREFIX + name, doc, labels=["revision"])
            )
            for key, n in sorted(sums.items()):
                family.add_metric([key], n)
            yield family

        broker = CounterMetricFamily(
            PREFIX + "broker_events",
            "Broker ingress: events accepted (stored) and dropped (TTL exhausted), requests "
            "rejected, by broker, outcome and reason.",
            labels=["broker", "outcome", "reason"],
        )
        by_broker: dict[tuple[str, str, str], int] = {}
        for s in stats:
            for b, outcome, reason, n in s.broker_events:
                by_broker[(b, outcome, reason)] = by_broker.get((b, outcome, reason), 0) + n
        for (b, outcome, reason), n in sorted(by_broker.items()):
            broker.add_metric([b, outcome, reason], n)
        yield broker

        lowest: dict[tuple[str, str], int] = {}
        for s in stats:
            for key, replicas in s.learned_limits.items():
                for ep_id, n in replicas.items():
                    k = (key, ep_id)
                    lowest[k] = min(n, lowest.get(k, n))
        learned = GaugeMetricFamily(
            PREFIX + "learned_limit_requests",
            "A replica's learned in-flight limit (lowest over the workers): lowered by refused, "
            "reset, stalled or dropped fresh connections, raised by successes.",
            labels=["revision", "replica"],
        )
        for (key, ep_id), n in sorted(lowest.items()):
            learned.add_metric([key, ep_id], n)
        yield learned
        changes = CounterMetricFamily(
            PREFIX + "learned_limit_changes",
            "Changes of the replicas' learned in-flight limits, by revision and direction.",
            labels=["revision", "direction"],
        )
        totals: dict[tuple[str, str], int] = {}
        for s in stats:
            for key, (down, up) in s.limit_changes.items():
                totals[(key, "lowered")] = totals.get((key, "lowered"), 0) + down
                totals[(key, "raised")] = totals.get((key, "raised"), 0) + up
        for (key, direction), n in sorted(totals.items()):
            changes.add_metric([key, direction], n)
        yield changes

        yield GaugeMetricFamily(
            PREFIX + "event_loop_lag_seconds",
            "How late the slowest worker's last 1-second tick fired.",
            value=max((s.loop_lag_s for s in stats), default=0.0),
        )


def make_registry(collector: GatewayCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (format 0.0.4) of `registry`."""
    return generate_latest(registry)
