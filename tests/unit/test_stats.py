"""Concurrency accounting with explicit timestamps: time-weighted averages, zeros, pokes."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace

import pytest

import gateway.stats
from flint_common.wire import BucketLoad, LearnedLimits, Poke, Stats
from gateway.stats import (
    REPORT_WINDOW_S,
    Pokes,
    StatsAccumulator,
    learned_limits,
    report_stats,
    stats_message,
)


def test_time_weighted_average_over_one_bucket() -> None:
    acc = StatsAccumulator(now=100.0)
    a = acc.enter("ns/a", 100.0)  # 1 from 100.0
    b = acc.enter("ns/a", 100.25)  # 2 from 100.25
    a.leave(100.5)  # 1 from 100.5
    b.leave(100.75)  # 0 from 100.75
    report = acc.flush(101.0)
    # area = 0.25*1 + 0.25*2 + 0.25*1 + 0.25*0 = 1.0 request·s over 1 s
    assert report["ns/a"].concurrency == pytest.approx(1.0)
    assert report["ns/a"].requests == 2


def test_requests_spanning_buckets_are_split() -> None:
    acc = StatsAccumulator(now=0.0)
    rs = acc.enter("ns/a", 0.5)  # in flight from 0.5 to 2.25
    first = acc.flush(1.0)
    assert first["ns/a"].concurrency == pytest.approx(0.5)
    assert first["ns/a"].requests == 1
    second = acc.flush(2.0)
    assert second["ns/a"].concurrency == pytest.approx(1.0)
    assert second["ns/a"].requests == 0  # arrivals are counted in their own bucket
    rs.leave(2.25)
    third = acc.flush(3.0)
    assert third["ns/a"].concurrency == pytest.approx(0.25)


def test_uneven_bucket_length_is_normalised() -> None:
    acc = StatsAccumulator(now=0.0)
    acc.enter("ns/a", 0.0)
    report = acc.flush(1.1)  # a late tick: the average is still the level held
    assert report["ns/a"].concurrency == pytest.approx(1.0)


def test_idle_revisions_report_zeros_then_are_forgotten() -> None:
    acc = StatsAccumulator(now=0.0)
    acc.enter("ns/a", 0.1).leave(0.2)
    assert acc.flush(1.0)["ns/a"].requests == 1
    t = 1.0
    while t < 1.0 + REPORT_WINDOW_S - 1:
        t += 1.0
        report = acc.flush(t)
        assert report["ns/a"].concurrency == 0.0 and report["ns/a"].requests == 0
    for _ in range(3):
        t += 1.0
        report = acc.flush(t)
    assert "ns/a" not in report


def test_queued_long_requests_keep_a_revision_reported() -> None:
    acc = StatsAccumulator(now=0.0)
    acc.enter("ns/a", 0.0)
    for t in range(1, 200):
        report = acc.flush(float(t))
        assert report["ns/a"].concurrency == pytest.approx(1.0)


def test_wire_messages() -> None:
    acc = StatsAccumulator(now=10.0)
    acc.enter("ns/a", 10.5)
    msg = stats_message(10, acc.flush(11.0))
    assert msg == Stats(10, {"ns/a": BucketLoad(0.5, 1)})
    assert msg.encode() == (
        '{"type":"stats","bucket":10,"revisions":{"ns/a":{"concurrency":0.5,"requests":1}}}')
    assert Poke("ns/a", 3).to_wire() == {"type": "poke", "revision": "ns/a", "waiting": 3}


def test_stats_messages_round_concurrency_to_micro_requests() -> None:
    msg = stats_message(10, {"ns/a": BucketLoad(2 / 3, 2)})
    assert msg.revisions["ns/a"] == BucketLoad(0.666667, 2)


def test_pokes_are_deduplicated_until_ready_or_failed() -> None:
    p = Pokes()
    assert p.should_poke("ns/a")
    assert not p.should_poke("ns/a")
    assert p.should_poke("ns/b")
    p.ready("ns/a")
    assert p.should_poke("ns/a")
    p.failed("ns/a")  # the send was dropped: the next request retries
    assert p.should_poke("ns/a")
    p.retain(["ns/b"])
    assert p.should_poke("ns/a") and not p.should_poke("ns/b")


def test_learned_limits_join_the_limits_and_their_change_counts() -> None:
    limits = learned_limits(
        {"ns/a": {"r1": 2, "r2": 5}},
        {"ns/a": [3, 1], "ns/b": [1, 0]},  # ns/b's replica was replaced: counts only
    )
    assert limits == {
        "ns/a": LearnedLimits({"r1": 2, "r2": 5}, 3, 1),
        "ns/b": LearnedLimits({}, 1, 0),
    }
    assert list(limits) == ["ns/a", "ns/b"]
    assert learned_limits({"ns/c": {"r": 1}}, {}) == {"ns/c": LearnedLimits({"r": 1}, 0, 0)}
    assert learned_limits({}, {}) == {}


def test_stats_message_carries_the_limits() -> None:
    lim = {"ns/a": LearnedLimits({"r1": 2}, 1, 0)}
    msg = stats_message(10, {"ns/a": BucketLoad(0.5, 1)}, lim)
    assert msg == Stats(10, {"ns/a": BucketLoad(0.5, 1)}, lim)
    assert msg.to_wire()["limits"] == {"ns/a": {"replicas": {"r1": 2}, "lowered": 1, "raised": 0}}
    assert stats_message(10, {}).limits == {}


class Stop(Exception):
    """Ends the reporter loop from a callback."""


async def test_the_reporter_sends_a_bucket_without_load_when_there_are_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sleep = asyncio.sleep
    delays: list[float] = []

    async def sleep(delay: float) -> None:  # no wall-clock wait: the tick fires at once
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(gateway.stats, "asyncio", SimpleNamespace(sleep=sleep))
    walls = iter([100.25, 101.0, 102.0, 103.0, 104.0])
    lim = {"ns/a": LearnedLimits({"r1": 3}, 1, 0)}
    plan: list[Mapping[str, LearnedLimits]] = [{}, lim, {}, {}]
    sent: list[Stats] = []

    def limits() -> Mapping[str, LearnedLimits]:
        if not plan:
            raise Stop
        return plan.pop(0)

    async def send(msg: Stats) -> bool:
        sent.append(msg)
        return True

    acc = StatsAccumulator(now=0.0)  # nothing ever arrives: no load to report
    with pytest.raises(Stop):
        await report_stats(
            acc, send, clock=lambda: 0.0, wall=lambda: next(walls), limits=limits
        )
    assert delays == [0.75, 1.0, 1.0, 1.0, 1.0]
    # Tick 1 (bucket 100): no load, no limits, nothing sent. Tick 2 (101): the limits. Tick 3
    # (102): once more without them, so the controller forgets them. Tick 4: nothing.
    assert sent == [Stats(101, {}, lim), Stats(102, {}, {})]
