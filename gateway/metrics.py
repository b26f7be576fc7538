"""Turns the workers' plain counters into one aggregated Prometheus view, off the hot path."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

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
        )


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
                if isinstance(v, int):
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


def make_registry(collector: GatewayCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition (format 0.0.4) of `registry`."""
    return generate_latest(registry)
