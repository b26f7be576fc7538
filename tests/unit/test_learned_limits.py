"""Learned per-replica in-flight limits (`gateway.balancer`, through `gateway.router`): lowered by
hard signals to what the replica was serving, raised by successes, exempt slots not counted,
min(CC, learned) with a container concurrency, forgotten with the replica."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot
from gateway.balancer import Balancer
from gateway.router import Router

KEY = "default/r-1"


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


def balancer(r: RevisionTarget, growth: int = 16) -> Balancer:
    b = Balancer(growth)
    b.update(snap(1, r))
    return b


def fill(b: Balancer, r: RevisionTarget, rnd: Callable[[], float] | None = None) -> list[str]:
    """Acquire until nothing is free (bounded): the endpoint ids in order."""
    rnd = rnd or cycle(0.0)
    got: list[str] = []
    for _ in range(100):
        ep = b.acquire(r, rnd)
        if ep is None:
            break
        got.append(ep.id)
    return got


# -- lower ---------------------------------------------------------------------------------------


def test_no_learned_limit_means_unlimited_with_cc_zero() -> None:
    r = rev(0, "a")
    b = balancer(r)
    assert len(fill(b, r)) == 100 and b.learned == {}
    assert b.within_learned("a")


def test_lower_sets_the_limit_to_what_was_served_and_acquire_obeys_it() -> None:
    r = rev(0, "a")
    b = balancer(r)
    for _ in range(5):
        assert b.acquire(r, cycle(0.0)) is not None
    assert b.lower("a", 3) == 3
    assert b.learned == {"a": 3}
    # 5 held, limit 3: those reserved before are over it, no new one is given.
    assert not b.within_learned("a")
    assert b.acquire(r, cycle(0.0)) is None
    b.release("a")
    b.release("a")
    assert b.inflight("a") == 3 and b.within_learned("a")
    assert b.acquire(r, cycle(0.0)) is None  # 3 of 3
    b.release("a")
    ep = b.acquire(r, cycle(0.0))
    assert ep is not None and ep.id == "a" and b.inflight("a") == 3
    assert b.changes == {KEY: [1, 0]}


def test_lower_never_goes_below_one() -> None:
    r = rev(0, "a")
    b = balancer(r)
    assert b.lower("a", 0) == 1
    assert fill(b, r) == ["a"]


def test_lower_to_the_same_or_a_higher_value_changes_nothing() -> None:
    r = rev(0, "a")
    b = balancer(r)
    assert b.lower("a", 4) == 4
    assert b.lower("a", 4) is None
    assert b.lower("a", 9) is None
    assert b.learned == {"a": 4} and b.changes == {KEY: [1, 0]}
    assert b.lower("a", 2) == 2
    assert b.learned == {"a": 2} and b.changes == {KEY: [2, 0]}


def test_lower_of_an_unknown_endpoint_is_ignored() -> None:
    r = rev(0, "a")
    b = balancer(r)
    assert b.lower("zz", 1) is None
    assert b.learned == {} and b.changes == {}


# -- succeeded: growth --------------------------------------------------------------------------


def test_the_limit_grows_by_one_every_growth_successes() -> None:
    r = rev(0, "a")
    b = balancer(r, growth=3)
    b.lower("a", 2)
    b.succeeded("a")
    b.succeeded("a")
    assert b.learned == {"a": 2}
    b.succeeded("a")
    assert b.learned == {"a": 3} and b.changes == {KEY: [1, 1]}
    for _ in range(6):
        b.succeeded("a")
    assert b.learned == {"a": 5} and b.changes == {KEY: [1, 3]}


def test_a_hard_signal_restarts_the_count_towards_growth() -> None:
    r = rev(0, "a")
    b = balancer(r, growth=3)
    b.lower("a", 5)
    b.succeeded("a")
    b.succeeded("a")
    assert b.lower("a", 7) is None  # not lower, but the replica refused again
    b.succeeded("a")
    b.succeeded("a")
    assert b.learned == {"a": 5}
    b.succeeded("a")
    assert b.learned == {"a": 6}


def test_success_without_a_learned_limit_learns_nothing() -> None:
    r = rev(0, "a")
    b = balancer(r, growth=1)
    for _ in range(10):
        b.succeeded("a")
    assert b.learned == {} and b.changes == {}


def test_growth_below_one_is_one() -> None:
    b = Balancer(0)
    assert b.growth == 1
    r = rev(0, "a")
    b.update(snap(1, r))
    b.lower("a", 1)
    b.succeeded("a")
    assert b.learned == {"a": 2}


# -- exempt --------------------------------------------------------------------------------------


def test_exempt_requests_do_not_count_against_the_learned_limit() -> None:
    r = rev(0, "a")
    b = balancer(r)
    b.lower("a", 1)
    assert b.acquire(r, cycle(0.0)) is not None
    assert b.acquire(r, cycle(0.0)) is None
    b.exempt("a")  # it streams now
    assert b.acquire(r, cycle(0.0)) is not None and b.inflight("a") == 2
    assert b.within_learned("a")
    assert b.acquire(r, cycle(0.0)) is None
    # Releasing the exempt one: the counted one still holds the only counted slot.
    b.release("a", exempt=True)
    assert b.inflight("a") == 1
    assert b.acquire(r, cycle(0.0)) is None
    b.release("a")
    assert b.acquire(r, cycle(0.0)) is not None


def test_release_exempt_without_exempt_slots_does_not_go_negative() -> None:
    r = rev(0, "a")
    b = balancer(r)
    b.lower("a", 1)
    assert b.acquire(r, cycle(0.0)) is not None
    b.release("a", exempt=True)  # nothing was exempt
    assert b.inflight("a") == 0
    # A negative exempt count would let two in under a limit of 1.
    assert fill(b, r) == ["a"]


# -- with container concurrency, and several endpoints ------------------------------------------


def test_with_container_concurrency_the_smaller_limit_applies() -> None:
    r = rev(3, "a")  # first-available
    b = balancer(r)
    assert fill(b, r) == ["a"] * 3
    for _ in range(3):
        b.release("a")
    b.lower("a", 2)
    assert fill(b, r) == ["a"] * 2
    for _ in range(2):
        b.release("a")
    b.learned["a"] = 10  # a learned limit above CC: CC applies
    assert fill(b, r) == ["a"] * 3


def test_round_robin_skips_an_endpoint_at_its_learned_limit() -> None:
    r = rev(10, "a", "b")
    b = balancer(r)
    b.lower("a", 1)
    got = fill(b, r)
    assert got.count("a") == 1 and got.count("b") == 10


def test_p2c_only_picks_endpoints_under_their_learned_limit() -> None:
    r = rev(0, "a", "b")
    b = balancer(r)
    b.lower("a", 2)
    # (0.0, 0.0) compares a with b; a wins ties, so a fills to its limit first.
    picks = [b.acquire(r, cycle(0.0, 0.0)) for _ in range(6)]
    ids = [p.id for p in picks if p is not None]
    assert len(ids) == 6
    assert ids.count("a") == 2 and ids.count("b") == 4
    b.lower("b", 4)
    assert b.acquire(r, cycle(0.0, 0.0)) is None  # both at their learned limit


def test_exclude_and_learned_limits_combine() -> None:
    r = rev(0, "a", "b")
    b = balancer(r)
    b.lower("b", 1)
    assert b.acquire(r, cycle(0.0), exclude=("a",)) is not None
    assert b.acquire(r, cycle(0.0), exclude=("a",)) is None  # b is full, a excluded


# -- forgetting ----------------------------------------------------------------------------------


def test_a_replaced_replica_starts_unlimited_again() -> None:
    r1 = rev(0, "a", "b")
    b = balancer(r1)
    b.lower("a", 1)
    b.lower("b", 2)
    b.exempt("a")
    r2 = rev(0, "b", "c")  # a replaced by c
    b.update(snap(2, r2))
    assert b.learned == {"b": 2}
    assert b.within_learned("a") and b.within_learned("c")
    b.update(snap(3, rev(0, "c", "d", name="r-2")))  # the revision itself is gone
    assert b.learned == {} and b.changes == {}


def test_learned_by_revision_groups_current_endpoints() -> None:
    r1 = rev(0, "a", "b")
    r2 = rev(0, "c", name="r-2")
    b = Balancer()
    b.update(snap(1, r1, r2))
    b.lower("a", 3)
    b.lower("c", 1)
    assert b.learned_by_revision() == {KEY: {"a": 3}, "default/r-2": {"c": 1}}
    assert b.changes == {KEY: [1, 0], "default/r-2": [1, 0]}


def test_lowering_does_not_break_draining() -> None:
    r1 = rev(0, "a")
    b = balancer(r1)
    assert b.acquire(r1, cycle(0.0)) is not None
    b.lower("a", 1)
    b.update(snap(2, rev(0, "b")))
    assert b.draining() == {"a": 1} and b.learned == {}
    assert b.release("a") is True and b.draining() == {}


# -- through the router --------------------------------------------------------------------------


def test_the_router_exposes_the_balancers_learned_limits() -> None:
    r = rev(0, "a")
    released: list[str] = []
    router = Router(snap(1, r), rnd=cycle(0.0), on_release=released.append, learned_growth=2)
    assert router.learned == {}
    assert router.acquire(r) is not None and router.acquire(r) is not None
    assert router.lower("a", 1) == 1
    assert router.learned == {"a": 1}  # the same dict the hot path reads
    assert not router.within_learned("a")
    assert router.acquire(r) is None
    router.exempt("a")
    assert router.within_learned("a")
    router.release("a", exempt=True)
    assert released == ["a"] and router.inflight("a") == 1
    assert router.acquire(r) is None
    router.succeeded("a")
    router.succeeded("a")
    assert router.learned == {"a": 2}
    assert router.learned_by_revision() == {KEY: {"a": 2}}
    assert router.limit_changes() == {KEY: [1, 1]}
    ep = router.acquire(r)
    assert ep is not None and ep.id == "a"
    # A newer snapshot without `a` forgets its limit (the router's `learned` follows).
    router.apply(snap(2, rev(0, "b")))
    assert router.learned == {} and router.learned_by_revision() == {}
