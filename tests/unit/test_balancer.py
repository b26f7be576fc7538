"""Balancer policies: power of two choices, first-available, round-robin, draining."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot
from gateway.balancer import Balancer
from gateway.router import Router


def rev(cc: int, *ids: str, name: str = "r-1") -> RevisionTarget:
    return RevisionTarget(
        namespace="default",
        name=name,
        service="r",
        timeout_s=300.0,
        response_start_timeout_s=0.0,
        idle_timeout_s=0.0,
        container_concurrency=cc,
        endpoints=tuple(Endpoint(i, "127.0.0.1", 1000 + n) for n, i in enumerate(ids)),
    )


def snap(version: int, *revs: RevisionTarget) -> Snapshot:
    return Snapshot(version=version, routes=(), revisions=revs)


def cycle(*values: float) -> Callable[[], float]:
    it = itertools.cycle(values)
    return lambda: next(it)


def test_no_endpoints_is_none() -> None:
    b = Balancer()
    r = rev(0)
    b.update(snap(1, r))
    assert b.acquire(r, cycle(0.5)) is None


def test_power_of_two_choices_prefers_less_loaded() -> None:
    b = Balancer()
    r = rev(0, "a", "b", "c")
    b.update(snap(1, r))
    # Draws (0.0, 0.0) compare a (i=0) with b (j=0 → 1): tie → a.
    first = b.acquire(r, cycle(0.0, 0.0))
    assert first is not None and first.id == "a"
    # Same pair again: a has 1 in flight, b has 0 → b.
    second = b.acquire(r, cycle(0.0, 0.0))
    assert second is not None and second.id == "b"
    # Over many random picks the load stays balanced.
    import random

    rnd = random.Random(7).random
    for _ in range(300):
        assert b.acquire(r, rnd) is not None
    counts = [b.inflight(i) for i in "abc"]
    assert max(counts) - min(counts) <= 1
    assert sum(counts) == 302


def test_single_endpoint_unlimited() -> None:
    b = Balancer()
    r = rev(0, "a")
    b.update(snap(1, r))
    for _ in range(100):
        ep = b.acquire(r, cycle(0.3))
        assert ep is not None and ep.id == "a"
    assert b.inflight("a") == 100


def test_first_available_for_small_limits() -> None:
    b = Balancer()
    r = rev(2, "a", "b", "c")
    b.update(snap(1, r))
    got = [b.acquire(r, cycle(0.9)) for _ in range(6)]
    assert [e.id if e else None for e in got] == ["a", "a", "b", "b", "c", "c"]
    assert b.acquire(r, cycle(0.9)) is None
    b.release("b")
    ep = b.acquire(r, cycle(0.9))
    assert ep is not None and ep.id == "b"


def test_round_robin_for_larger_limits() -> None:
    b = Balancer()
    r = rev(5, "a", "b", "c")
    b.update(snap(1, r))
    got = [b.acquire(r, cycle(0.0)) for _ in range(6)]
    assert [e.id if e else None for e in got] == ["a", "b", "c", "a", "b", "c"]
    for _ in range(9):
        assert b.acquire(r, cycle(0.0)) is not None
    assert [b.inflight(i) for i in "abc"] == [5, 5, 5]
    assert b.acquire(r, cycle(0.0)) is None
    # Only endpoints with a free slot take part in the rotation.
    b.release("b")
    b.release("b")
    got = [b.acquire(r, cycle(0.0)) for _ in range(2)]
    assert [e.id if e else None for e in got] == ["b", "b"]
    assert b.acquire(r, cycle(0.0)) is None


def test_exclude_picks_another_endpoint() -> None:
    b = Balancer()
    r = rev(1, "a", "b")
    b.update(snap(1, r))
    ep = b.acquire(r, cycle(0.0), exclude=("a",))
    assert ep is not None and ep.id == "b"
    assert b.acquire(r, cycle(0.0), exclude=("a",)) is None
    r0 = rev(0, "a", "b")
    ep0 = b.acquire(r0, cycle(0.0), exclude={"b"})
    assert ep0 is not None and ep0.id == "a"
    assert b.acquire(r0, cycle(0.0), exclude={"a", "b"}) is None


def test_draining_endpoints_get_no_new_requests_and_report_until_zero() -> None:
    b = Balancer()
    r = rev(0, "a", "b")
    b.update(snap(1, r))
    assert b.acquire(r, cycle(0.0, 0.0)) is not None  # a
    assert b.acquire(r, cycle(0.0, 0.0)) is not None  # b
    assert b.acquire(r, cycle(0.0, 0.0)) is not None  # a (tie)
    assert b.inflight("a") == 2 and b.inflight("b") == 1
    r2 = rev(0, "b", "c")
    b.update(snap(2, r2))
    assert b.draining() == {"a": 2}
    # A stale target still naming "a" does not get it.
    for _ in range(10):
        ep = b.acquire(r, cycle(0.0, 0.0))
        assert ep is not None and ep.id == "b"
    assert b.release("a") is False
    assert b.draining() == {"a": 1}
    assert b.release("a") is True
    assert b.draining() == {}
    assert b.inflight("a") == 0
    assert b.release("a") is False  # unknown now: ignored


def test_removed_idle_endpoint_is_not_draining_and_can_come_back() -> None:
    b = Balancer()
    r = rev(0, "a")
    b.update(snap(1, r))
    b.update(snap(2))
    assert b.draining() == {}
    ep = b.acquire(r, cycle(0.0))
    assert ep is not None  # a target outside the snapshot still works (e.g. mid-update)
    b.update(snap(3, r))
    assert b.inflight("a") == 1
    b.release("a")
    assert b.inflight("a") == 0


def test_router_calls_on_drained_once() -> None:
    calls: list[int] = []
    r = rev(0, "a")
    router = Router(snap(1, r), rnd=cycle(0.0), on_drained=lambda: calls.append(1))
    ep = router.acquire(r)
    assert ep is not None
    router.apply(snap(2))
    assert router.draining() == {"a": 1}
    router.release("a")
    assert calls == [1]
    assert router.draining() == {}
