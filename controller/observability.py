"""The controller's own visibility: the autoscaler's view per revision and Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from controller.autoscaling.scaler import Scaler
from controller.runtime.base import Runtime


class ControllerCollector(Collector):
    """Reads the scaler's decisions and the runtime's replicas at scrape time (no hot-path cost)."""

    def __init__(self, scaler: Scaler, runtime: Runtime) -> None:
        self._scaler = scaler
        self._runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        desired = GaugeMetricFamily(
            "flint_controller_desired_replicas", "Replicas the autoscaler wants, per revision.",
            labels=["revision"])
        actual = GaugeMetricFamily(
            "flint_controller_actual_replicas", "Ready replicas, per revision.", labels=["revision"])
        panic = GaugeMetricFamily(
            "flint_controller_panic_mode", "1 while the revision's autoscaler is in panic mode.",
            labels=["revision"])
        observed = GaugeMetricFamily(
            "flint_controller_observed_concurrency",
            "Average concurrency (or rps) the autoscaler saw, per revision and window.",
            labels=["revision", "window"])
        clamped = CounterMetricFamily(
            "flint_controller_clamped_decisions",
            "Decisions bounded by min/max scale, max-scale-limit or the machine budget.",
            labels=["revision", "by"])
        for key in self._scaler.revision_keys():
            view = self._scaler.view(key)
            if view is None:
                continue
            desired.add_metric([key], view["desiredScale"])
            panic.add_metric([key], 1.0 if view["mode"] == "panic" else 0.0)
            for window in ("Stable", "Panic"):
                value = view[f"observed{window}"]
                if value is not None:
                    observed.add_metric([key, window.lower()], value)
            for by, count in self._scaler.clamp_counts(key).items():
                clamped.add_metric([key, by], count)
        counts: dict[str, int] = {}
        for r in self._runtime.replicas():
            if r.state == "ready":
                counts[r.revision_key] = counts.get(r.revision_key, 0) + 1
        for key, n in counts.items():
            actual.add_metric([key], n)
        yield from (desired, actual, panic, observed, clamped)


def add_observability_routes(app: web.Application, scaler: Scaler, runtime: Runtime) -> None:
    registry = CollectorRegistry()
    registry.register(ControllerCollector(scaler, runtime))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain", charset="utf-8")

    async def autoscaler(request: web.Request) -> web.Response:
        key = f"{request.match_info['namespace']}/{request.match_info['name']}"
        view = scaler.view(key)
        if view is None:
            raise web.HTTPNotFound(text=f"the autoscaler has no decision for revision {key} yet\n")
        return web.json_response(view)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/internal/autoscaler/{namespace}/{name}", autoscaler)
