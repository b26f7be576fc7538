"""The dispatcher's Prometheus metrics: delivered, retried, dead-lettered, dropped, latency, backlog."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["DispatcherMetrics"]

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class DispatcherMetrics:
    """One registry per dispatcher (tests run several in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("namespace", "trigger")
        self.delivered = Counter(
            "flint_dispatcher_events_delivered", "Events a subscriber accepted (replies included).",
            labels, registry=self.registry,
        )
        self.retried = Counter(
            "flint_dispatcher_events_retried", "Failed attempts scheduled for another try.",
            labels, registry=self.registry,
        )
        self.dead_lettered = Counter(
            "flint_dispatcher_events_dead_lettered", "Events sent to the dead-letter sink.",
            labels, registry=self.registry,
        )
        self.dropped = Counter(
            "flint_dispatcher_events_dropped",
            "Events not delivered and kept as dead letters in the dispatcher's database (or replies "
            "dropped for an exhausted TTL), by reason.",
            (*labels, "reason"), registry=self.registry,
        )
        self.latency = Histogram(
            "flint_dispatcher_delivery_latency_seconds", "Time of a successful delivery attempt.",
            labels, buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.backlog = Gauge(
            "flint_dispatcher_backlog_events", "Events of the broker's log not yet handled by the trigger.",
            labels, registry=self.registry,
        )
        self.retention_dropped = Counter(
            "flint_dispatcher_retention_dropped",
            "Entries of a Redis stream trimmed past its age or size cap before every consumer "
            "handled them, by the uid of the broker or channel.",
            ("log_uid",), registry=self.registry,
        )
        self.loop_lag = Gauge(
            "flint_dispatcher_event_loop_lag_seconds", "How late the dispatcher's event loop ran a timer.",
            registry=self.registry,
        )
