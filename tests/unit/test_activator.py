"""The activator's wait queues without sockets: FIFO, limits, expiry, disconnects, budget."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot
from gateway.activator import Activator, Rejection, Ticket
from gateway.config import GatewaySettings
from gateway.home import HomeRouter, home_index
from gateway.router import Router

KEY = "default/r-1"


def rev(cc: int, *eps: Endpoint, failure: str = "", timeout_s: float = 10.0) -> RevisionTarget:
    return RevisionTarget(
        namespace="default",
        name="r-1",
        service="r",
        timeout_s=timeout_s,
        response_start_timeout_s=0.0,
        idle_timeout_s=0.0,
        container_concurrency=cc,
        endpoints=tuple(eps),
        failure=failure,
    )


def ep(i: str, starting: bool = False) -> Endpoint:
    return Endpoint(i, "127.0.0.1", 1000, starting)


def snap(version: int, r: RevisionTarget) -> Snapshot:
    return Snapshot(version=version, routes=(), revisions=(r,))


@dataclass
class W:
    """A waiter that records what the activator told it."""

    name: str
    log: list[str] = field(default_factory=list)
    eps: list[str] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    forwarded: int = 0

    def granted(self, rev: RevisionTarget, ep: Endpoint, ticket: Ticket, now: float) -> None:
        self.log.append(self.name)
        self.eps.append(ep.id)

    def forward(self, ticket: Ticket, now: float) -> None:
        self.forwarded += 1

    def rejected(self, status: int, message: str) -> None:
        self.failures.append((status, message))


def make(
    r: RevisionTarget, *, connected: bool = True, pokes: list[tuple[str, int]] | None = None, **kw: int
) -> tuple[Router, Activator]:
    # The router's capacity events, wired as `gateway.worker.build_context` does.
    router = Router(
        snap(1, r),
        on_release=lambda endpoint_id: act.on_release(endpoint_id),
        listeners=(lambda snapshot: act.on_snapshot(snapshot),),
    )
    settings = GatewaySettings(**kw)  # type: ignore[arg-type]
    act = Activator(
        router,
        settings,
        clock=lambda: 0.0,
        controller_connected=lambda: connected,
        poke=(lambda k, n: pokes.append((k, n))) if pokes is not None else None,
    )
    return router, act


def test_fifo_as_slots_are_released() -> None:
    r = rev(1, ep("a"))
    router, act = make(r)
    held = router.acquire(r)
    assert held is not None and router.acquire(r) is None
    log: list[str] = []
    waiters = [W(str(i), log) for i in range(5)]
    for w in waiters:
        assert isinstance(act.enqueue(r, w, 0.0, deadline=10.0), Ticket)
    assert act.waiting(KEY) == 5
    router.release("a")  # the capacity event dispatches the head at once
    assert log == ["0"]
    for _ in range(4):
        router.release("a")
    assert log == ["0", "1", "2", "3", "4"]
    assert act.waiting(KEY) == 0 and not act.has_waiters(KEY)
    assert act.used == 0


def test_snapshot_adding_an_endpoint_dispatches_all() -> None:
    r0 = rev(0)
    router, act = make(r0)
    log: list[str] = []
    ws = [W(str(i), log) for i in range(3)]
    for w in ws:
        act.enqueue(r0, w, 0.0)
    assert log == []
    router.apply(snap(2, rev(0, ep("a"))))
    assert log == ["0", "1", "2"]
    assert router.inflight("a") == 3


def test_starting_endpoint_is_not_routed_until_promoted() -> None:
    r = rev(0, ep("s", starting=True))
    router, act = make(r)
    assert router.acquire(r) is None
    assert not router.has_ready(r)
    assert [e.id for e in router.unprobed()] == ["s"]
    w = W("w")
    act.enqueue(r, w, 0.0)
    assert router.mark_ready("s") == KEY
    act.on_promoted(KEY)
    assert w.log == ["w"] and w.eps == ["s"]
    assert router.unprobed() == []
    # the controller later sends it as ready: still routable, nothing left to probe
    router.apply(snap(2, rev(0, ep("s"))))
    assert router.has_ready(router.snapshot.revisions[0])
    assert router.unprobed() == []


def test_queue_limit_overflow_is_503() -> None:
    r = rev(0)
    _, act = make(r, queue_limit_per_revision=2)
    assert isinstance(act.enqueue(r, W("a"), 0.0), Ticket)
    assert isinstance(act.enqueue(r, W("b"), 0.0), Ticket)
    res = act.enqueue(r, W("c"), 0.0)
    assert isinstance(res, Rejection) and res.status == 503
    assert "queue limit" in res.message and KEY in res.message


def test_memory_budget_counts_requests_and_bodies() -> None:
    r = rev(0)
    _, act = make(r, queue_memory_budget_bytes=10_000, queue_request_cost_bytes=1_000)
    tickets = [act.enqueue(r, W(str(i)), 0.0) for i in range(8)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert act.used == 8_000
    big = act.enqueue(r, W("big"), 0.0, body_bytes=1_500)
    assert isinstance(big, Rejection) and "memory budget" in big.message
    assert isinstance(act.enqueue(r, W("small"), 0.0, body_bytes=500), Ticket)
    assert act.used == 9_500
    t0 = tickets[0]
    assert isinstance(t0, Ticket)
    act.cancel(t0)
    assert act.used == 8_500


def test_memory_budget_is_split_among_workers() -> None:
    router = Router(snap(1, rev(0)))
    act = Activator(router, GatewaySettings(queue_memory_budget_bytes=8_000), workers=4)
    assert act.budget == 2_000


def test_expiry_with_now_passed_in() -> None:
    r = rev(0)
    _, act = make(r)
    a, b = W("a"), W("b")
    act.enqueue(r, a, 0.0, deadline=5.0)
    act.enqueue(r, b, 1.0, deadline=6.0)
    assert act.next_deadline() == 5.0
    assert act.expire(4.9) == 0
    assert act.expire(5.0) == 1
    assert a.failures and a.failures[0][0] == 504
    assert "timed out" in a.failures[0][1] and "waiting for capacity" in a.failures[0][1]
    assert b.failures == [] and act.waiting(KEY) == 1
    assert act.next_deadline() == 6.0
    assert act.expire(100.0) == 1 and b.failures[0][0] == 504
    assert act.waiting(KEY) == 0 and act.used == 0 and act.timeouts == 2


def test_disconnect_removes_from_queue_without_leak() -> None:
    r = rev(1, ep("a"))
    router, act = make(r)
    assert router.acquire(r) is not None
    log: list[str] = []
    tickets = [act.enqueue(r, W(str(i), log), 0.0) for i in range(200)]
    for t in tickets[:150]:  # most of them go away while waiting
        assert isinstance(t, Ticket)
        act.cancel(t)
        act.cancel(t)  # idempotent
    assert act.waiting(KEY) == 50
    assert act.used == 50 * GatewaySettings().queue_request_cost_bytes
    router.release("a")
    assert log == ["150"]
    for t in tickets[151:]:
        assert isinstance(t, Ticket)
        act.cancel(t)
    assert not act.has_waiters(KEY) and act.used == 0 and act.depths() == {}


def test_failure_fails_fast_and_fails_the_waiters() -> None:
    r = rev(0, ep("s", starting=True))
    router, act = make(r)
    w = W("w")
    act.enqueue(r, w, 0.0)
    failed = rev(0, failure="replica exited before becoming ready (exit code 3)")
    router.apply(snap(2, failed))
    reason = "replica exited before becoming ready (exit code 3)"
    assert w.failures == [(503, f"revision {KEY} cannot serve: {reason}")]
    refusal = act.refuse(failed)
    assert refusal is not None and refusal.status == 503 and "exit code 3" in refusal.message


def test_no_endpoint_and_controller_down_fails_fast() -> None:
    r = rev(0)
    _, act = make(r, connected=False)
    refusal = act.refuse(r)
    assert refusal is not None and "controller is unreachable" in refusal.message
    _, act2 = make(r, connected=True)
    assert act2.refuse(r) is None
    # with a (starting) endpoint the request may wait even with the controller down
    _, act3 = make(rev(0, ep("s", starting=True)), connected=False)
    assert act3.refuse(rev(0, ep("s", starting=True))) is None


def test_revision_leaving_the_snapshot_fails_its_waiters() -> None:
    r = rev(0)
    router, act = make(r)
    w = W("w")
    act.enqueue(r, w, 0.0)
    router.apply(Snapshot(version=2, routes=(), revisions=()))
    assert w.failures and w.failures[0][0] == 503 and act.depths() == {}


def test_queued_requests_never_go_to_a_draining_endpoint() -> None:
    r = rev(1, ep("old"))
    router, act = make(r)
    assert router.acquire(r) is not None  # "old" busy
    w = W("w")
    act.enqueue(r, w, 0.0)
    # "old" leaves the snapshot (scale down) and "new" is starting
    router.apply(snap(2, rev(1, ep("old2", starting=True))))
    assert router.draining() == {"old": 1}
    router.release("old")  # the draining endpoint frees its slot: not a capacity event
    assert w.log == [] and act.waiting(KEY) == 1
    router.mark_ready("old2")
    act.on_promoted(KEY)
    assert w.eps == ["old2"]


def test_pokes_once_per_revision_until_ready() -> None:
    pokes: list[tuple[str, int]] = []
    r = rev(0)
    router, act = make(r, pokes=pokes)
    for i in range(5):
        act.enqueue(r, W(str(i)), 0.0)
    assert pokes == [(KEY, 1)]
    router.apply(snap(2, rev(0, ep("a"))))  # ready: all dispatched, dedupe reset
    router.apply(snap(3, rev(0)))  # back to zero
    act.enqueue(router.snapshot.revisions[0], W("x"), 0.0)
    assert pokes == [(KEY, 1), (KEY, 1)]
    # busy (not cold) revisions do not poke
    r1 = rev(1, ep("b"))
    router.apply(snap(4, r1))
    assert router.inflight("b") == 1  # "x" was dispatched onto it
    act.enqueue(r1, W("y"), 0.0)
    assert len(pokes) == 2


def test_home_worker_is_stable_and_spread() -> None:
    keys = [f"ns/rev-{i}" for i in range(200)]
    homes = [home_index(k, 2) for k in keys]
    assert homes == [home_index(k, 2) for k in keys]
    assert 50 < sum(homes) < 150
    assert home_index("x/y", 1) == 0
    h0 = HomeRouter(0, 2, GatewaySettings().state_dir)
    h1 = HomeRouter(1, 2, GatewaySettings().state_dir)
    for k in keys[:20]:
        # exactly one of the two workers is home; the other forwards over a unix socket
        assert (h0.endpoint_for(k) is None) != (h1.endpoint_for(k) is None)
        other = h0.endpoint_for(k) or h1.endpoint_for(k)
        assert other is not None and other.host.startswith("unix:")
        assert other.host.endswith(f"worker-{home_index(k, 2)}.proxy.sock")


def test_reject_all_on_shutdown() -> None:
    r = rev(0)
    _, act = make(r)
    ws = [W(str(i)) for i in range(3)]
    for w in ws:
        act.enqueue(r, w, 0.0)
    act.reject_all(503, "stopping")
    assert all(w.failures == [(503, "stopping")] for w in ws)
    assert act.used == 0


def test_timeout_zero_never_expires() -> None:
    r = replace(rev(0), timeout_s=0.0)
    _, act = make(r)
    w = W("w")
    act.enqueue(r, w, 0.0)
    assert act.expire(1e9) == 0 and w.failures == []


def test_a_request_queued_again_waits_at_the_front() -> None:
    r = rev(1, ep("a"))
    router, act = make(r)
    assert router.acquire(r) is not None
    log: list[str] = []
    for name in ("0", "1"):
        assert isinstance(act.enqueue(r, W(name, log), 0.0, deadline=10.0), Ticket)
    again = act.enqueue(r, W("again", log), 0.0, deadline=9.0, front=True)
    assert isinstance(again, Ticket) and act.waiting(KEY) == 3
    for _ in range(3):
        router.release("a")
    assert log == ["again", "0", "1"]
    assert act.used == 0 and not act.has_waiters(KEY)


def test_a_request_at_the_front_still_expires_first() -> None:
    r = rev(1, ep("a"))
    router, act = make(r)
    assert router.acquire(r) is not None
    late, early = W("late"), W("early")
    act.enqueue(r, late, 1.0, deadline=11.0)
    act.enqueue(r, early, 1.0, deadline=10.0, front=True)  # it arrived before `late`
    assert act.next_deadline() == 10.0
    assert act.expire(10.5) == 1
    assert early.failures and early.failures[0][0] == 504 and not late.failures
    assert act.waiting(KEY) == 1


def test_dispatch_now_dispatches_at_the_clocks_time_without_a_release() -> None:
    r = rev(1, ep("a"))
    router = Router(snap(1, r))  # no capacity events wired: only `dispatch_now` moves the queue
    grants: list[tuple[str, float]] = []

    class Timed(W):
        def granted(self, rev: RevisionTarget, ep: Endpoint, ticket: Ticket, now: float) -> None:
            grants.append((ep.id, now))

    act = Activator(router, GatewaySettings(), clock=lambda: 42.0, controller_connected=lambda: True)
    assert router.acquire(r) is not None
    act.enqueue(r, Timed("w"), 0.0, deadline=100.0, front=True)
    act.dispatch_now(KEY)
    assert grants == [] and act.waiting(KEY) == 1  # still full
    router.release("a")
    assert act.waiting(KEY) == 1  # nobody told the activator
    act.dispatch_now(KEY)
    assert grants == [("a", 42.0)] and act.waiting(KEY) == 0
    act.dispatch_now(KEY)  # nothing waits: nothing happens
    assert grants == [("a", 42.0)] and router.inflight("a") == 1


def test_a_learned_limit_holds_queued_requests_back() -> None:
    r = rev(0, ep("a"))
    router, act = make(r)
    assert router.acquire(r) is not None and router.acquire(r) is not None
    assert router.lower("a", 1) == 1
    log: list[str] = []
    act.enqueue(r, W("0", log), 0.0, deadline=10.0)
    act.enqueue(r, W("1", log), 0.0, deadline=10.0)
    router.release("a")  # 1 in flight, limit 1: no room yet
    assert log == []
    router.release("a")
    assert log == ["0"] and act.waiting(KEY) == 1
