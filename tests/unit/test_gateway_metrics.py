"""The admin server's view of the workers' learned limits (`gateway.metrics`): the JSON a worker
sends over its admin socket and the Prometheus families aggregated over the workers."""

from __future__ import annotations

import orjson

from gateway.metrics import GatewayCollector, WorkerStats, make_registry, render

A = "default/a-1"
B = "default/b-1"


def worker(index: int, learned: dict[str, dict[str, int]], changes: dict[str, list[int]]) -> WorkerStats:
    return WorkerStats(
        index=index, pid=100 + index, version=3, connected=True,
        learned_limits=learned, limit_changes=changes,
    )


def samples(stats: list[WorkerStats | None], family: str) -> dict[tuple[str, ...], float]:
    collector = GatewayCollector(len(stats))
    collector.update(stats, restarts=0)
    out: dict[tuple[str, ...], float] = {}
    for metric in collector.collect():
        for s in metric.samples:
            if s.name == family:
                out[tuple(s.labels[k] for k in sorted(s.labels))] = s.value
    return out


def test_worker_stats_carry_learned_limits_through_json() -> None:
    stats = worker(1, {A: {"r1": 3, "r2": 1}}, {A: [2, 1], B: [1, 0]})
    data = orjson.loads(orjson.dumps(stats.to_json()))
    assert data["learned_limits"] == {A: {"r1": 3, "r2": 1}}
    assert data["limit_changes"] == {A: [2, 1], B: [1, 0]}
    assert WorkerStats.from_json(data) == stats


def test_a_worker_of_before_learned_limits_reads_as_none() -> None:
    old = {"index": 0, "pid": 1, "version": 2, "connected": False}
    got = WorkerStats.from_json(old)
    assert got.learned_limits == {} and got.limit_changes == {}


def test_the_learned_limit_is_the_lowest_over_the_workers() -> None:
    stats: list[WorkerStats | None] = [
        worker(0, {A: {"r1": 5, "r2": 2}}, {A: [1, 0]}),
        worker(1, {A: {"r1": 3}, B: {"r9": 7}}, {A: [2, 3], B: [1, 0]}),
        None,  # a worker that did not answer
    ]
    assert samples(stats, "flint_gateway_learned_limit_requests") == {
        ("r1", A): 3.0,  # labels sorted by name: replica, revision
        ("r2", A): 2.0,
        ("r9", B): 7.0,
    }
    assert samples(stats, "flint_gateway_learned_limit_changes_total") == {
        ("lowered", A): 3.0,
        ("raised", A): 3.0,
        ("lowered", B): 1.0,
        ("raised", B): 0.0,
    }


def test_no_learned_limits_means_empty_families_in_the_exposition() -> None:
    collector = GatewayCollector(1)
    collector.update([worker(0, {}, {})], restarts=0)
    text = render(make_registry(collector)).decode()
    assert "# TYPE flint_gateway_learned_limit_requests gauge" in text
    assert "# TYPE flint_gateway_learned_limit_changes_total counter" in text
    assert "flint_gateway_learned_limit_requests{" not in text
    collector.update([worker(0, {A: {"r1": 4}}, {A: [1, 0]})], restarts=0)
    text = render(make_registry(collector)).decode()
    assert f'flint_gateway_learned_limit_requests{{replica="r1",revision="{A}"}} 4.0' in text
    assert f'flint_gateway_learned_limit_changes_total{{direction="lowered",revision="{A}"}} 1.0' in text
