"""Per-revision wait queues: requests wait here while a revision scales from zero or is full.

With subsetting (`gateway.subsets`), a limited revision's requests that wait here when a
snapshot gives all of its replicas to other gateways are handed back to their owners, which
forward them to one of those gateways (`Waiter.forward`).

A request for a revision with no routable replica, or with every replica at its
`container_concurrency`, is queued (FIFO per revision, per worker) and forwarded the moment
capacity appears: a slot released (`Router.on_release`), an endpoint added by a snapshot
(`Router.listeners`), a starting endpoint passing the gateway's own probe
(`gateway.prober.StartingProber`).

The queue logic is synchronous and takes `now`; only the expiry timer touches the event loop.
Owners (each connection's `gateway.exchange.Exchange`) implement `Waiter`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot
from gateway.config import GatewaySettings
from gateway.proxy_metrics import Histogram
from gateway.router import Router
from gateway.stats import Pokes

INF = math.inf


class Waiter(Protocol):
    """What a queued request's owner is told: a slot was reserved for it, or it failed."""

    def granted(self, rev: RevisionTarget, ep: Endpoint, ticket: Ticket, now: float) -> None: ...
    def forward(self, ticket: Ticket, now: float) -> None: ...
    def rejected(self, status: int, message: str) -> None: ...


class Ticket:
    """One queued request."""

    __slots__ = ("cold", "cost", "deadline", "enqueued", "key", "live", "owner")

    def __init__(
        self, owner: Waiter, key: str, deadline: float, cost: int, enqueued: float, cold: bool
    ) -> None:
        self.owner = owner
        self.key = key
        self.deadline = deadline
        self.cost = cost
        self.enqueued = enqueued
        self.cold = cold
        """Queued while the revision had no routable replica (a cold start)."""
        self.live = True
        """Still waiting (False once granted, rejected or cancelled)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a request was not queued: answer `status` (503, with Retry-After) and `message`."""

    status: int
    message: str


class _Queue:
    __slots__ = ("entries", "live")

    def __init__(self) -> None:
        self.entries: deque[Ticket] = deque()
        self.live = 0

    def popleft_live(self) -> Ticket | None:
        entries = self.entries
        while entries:
            t = entries.popleft()
            if t.live:
                return t
        return None

    def front(self) -> Ticket | None:
        entries = self.entries
        while entries and not entries[0].live:
            entries.popleft()
        return entries[0] if entries else None


class Activator:
    """The wait queues of one worker."""

    def __init__(
        self,
        router: Router,
        settings: GatewaySettings,
        *,
        workers: int = 1,
        clock: Callable[[], float] = time.monotonic,
        loop: asyncio.AbstractEventLoop | None = None,
        controller_connected: Callable[[], bool] = lambda: False,
        poke: Callable[[str, int], None] | None = None,
        pokes: Pokes | None = None,
    ) -> None:
        """Tell it about capacity: `on_release`, `on_snapshot` and `on_promoted` (the router's
        and the prober's events, wired by `gateway.worker.build_context`). `poke(key, waiting)`
        asks the autoscaler for a replica of a revision at zero; `pokes` deduplicates them."""
        self._router = router
        self.queue_limit = settings.queue_limit_per_revision
        self.budget = settings.queue_memory_budget_bytes // max(1, workers)
        """This worker's share of the gateway's queue memory budget (bytes)."""
        self.request_cost = settings.queue_request_cost_bytes
        self.used = 0
        """Bytes of the budget held by queued requests."""
        self._clock = clock
        self._loop = loop
        self.controller_connected = controller_connected
        self._poke = poke
        self.pokes = pokes if pokes is not None else Pokes()
        self._queues: dict[str, _Queue] = {}
        self._busy: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = INF
        # metrics (read by the admin scrape)
        self.rejections = 0
        """Requests refused a place in a queue (limit or memory budget)."""
        self.timeouts = 0
        """Queued requests that expired (504)."""
        self.cold_starts: dict[str, int] = {}
        """revision key → requests that waited for a replica to start (queued with none ready)."""
        self.cold_start_latency: dict[str, Histogram] = {}
        """revision key → how long those requests waited (seconds)."""

    # -- queries -----------------------------------------------------------------------------

    def has_waiters(self, key: str) -> bool:
        return key in self._queues

    def waiting(self, key: str) -> int:
        q = self._queues.get(key)
        return q.live if q is not None else 0

    def depths(self) -> dict[str, int]:
        return {key: q.live for key, q in self._queues.items()}

    # -- admission ---------------------------------------------------------------------------

    def refuse(self, rev: RevisionTarget) -> Rejection | None:
        """Why requests for `rev` must fail fast instead of waiting, or None."""
        if rev.failure:
            return Rejection(503, f"revision {rev.key} cannot serve: {rev.failure}")
        if not rev.endpoints and not self.controller_connected():
            return Rejection(
                503,
                f"revision {rev.key} has no ready replica and the controller is unreachable "
                "to start one",
            )
        return None

    def enqueue(
        self,
        rev: RevisionTarget,
        owner: Waiter,
        now: float,
        *,
        deadline: float = INF,
        body_bytes: int = 0,
        front: bool = False,
    ) -> Ticket | Rejection:
        """Queue a request for `rev` (call only when `acquire` failed or others wait already).

        `deadline` (same clock as `now`) is when it fails with 504; `body_bytes` is what it
        may buffer while waiting. Pokes the autoscaler when `rev` has no routable replica.
        `front`: a request that had a slot already and must wait again (a busy replica did not
        take it); it arrived before every waiting one, so deadlines still grow along the queue.
        """
        key = rev.key
        cold = not self._router.has_ready(rev)
        q = self._queues.get(key)
        n = q.live if q is not None else 0
        if cold and self._poke is not None and self.pokes.should_poke(key):
            self._poke(key, n + 1)
        if n >= self.queue_limit:
            return Rejection(
                503,
                f"revision {key} has {n} requests waiting for capacity, its queue limit "
                f"(queue_limit_per_revision={self.queue_limit})",
            )
        cost = self.request_cost + body_bytes
        if self.used + cost > self.budget:
            return Rejection(
                503,
                f"the gateway's wait queues are full (memory budget of {self.budget} bytes per "
                "worker); try again shortly",
            )
        if q is None:
            q = self._queues[key] = _Queue()
        ticket = Ticket(owner, key, deadline, cost, now, cold)
        if front:
            q.entries.appendleft(ticket)
        else:
            q.entries.append(ticket)
        q.live += 1
        self.used += cost
        if deadline < self._timer_when:
            self._arm(deadline)
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Remove a waiting request (its client went away, or the worker stops). Idempotent."""
        if not ticket.live:
            return
        ticket.live = False
        self.used -= ticket.cost
        q = self._queues.get(ticket.key)
        if q is None:
            return
        q.live -= 1
        if q.live <= 0:
            if ticket.key not in self._busy:
                del self._queues[ticket.key]
        elif len(q.entries) > 2 * q.live + 64:
            q.entries = deque(t for t in q.entries if t.live)

    def count_cold_start(self, key: str, waited: float) -> None:
        self.cold_starts[key] = self.cold_starts.get(key, 0) + 1
        hist = self.cold_start_latency.get(key)
        if hist is None:
            hist = self.cold_start_latency[key] = Histogram()
        hist.observe(waited)

    def _take(self, q: _Queue, t: Ticket) -> None:
        t.live = False
        q.live -= 1
        self.used -= t.cost

    # -- capacity ----------------------------------------------------------------------------

    def dispatch(self, key: str, now: float) -> int:
        """Forward waiting requests of `key` while slots can be reserved; returns how many."""
        q = self._queues.get(key)
        if q is None or key in self._busy:
            return 0
        rev = self._router.current(key)
        if rev is None:
            self._reject_all(key, 503, f"revision {key} is no longer in the routing snapshot")
            return 0
        if rev.failure:
            self._reject_all(key, 503, f"revision {key} cannot serve: {rev.failure}")
            return 0
        if rev.container_concurrency > 0 and self._router.forwarded(key):
            self._forward_all(key, q, now)
            return 0
        granted = 0
        self._busy.add(key)
        try:
            while q.live > 0:
                ep = self._router.acquire(rev)
                if ep is None:
                    break
                t = q.popleft_live()
                if t is None:  # pragma: no cover - live > 0 guarantees one
                    self._router.release(ep.id)
                    break
                self._take(q, t)
                granted += 1
                t.owner.granted(rev, ep, t, now)
        finally:
            self._busy.discard(key)
            if q.live <= 0 and self._queues.get(key) is q:
                del self._queues[key]
        return granted

    def _forward_all(self, key: str, q: _Queue, now: float) -> None:
        """Every waiting request of `key` to its owner, to be forwarded to another gateway."""
        victims = [t for t in q.entries if t.live]
        for t in victims:
            self._take(q, t)
        if self._queues.get(key) is q:
            del self._queues[key]
        for t in victims:
            t.owner.forward(t, now)

    def dispatch_now(self, key: str) -> None:
        """`dispatch` at the clock's now (a timer's callback)."""
        self.dispatch(key, self._clock())

    def expire(self, now: float) -> int:
        """Fail (504) the waiting requests whose deadline has passed; returns how many.

        Deadlines grow along a queue (one timeout per revision), so only fronts are checked.
        """
        expired: list[Ticket] = []
        for key in list(self._queues):
            q = self._queues[key]
            while True:
                t = q.front()
                if t is None or t.deadline > now:
                    break
                q.entries.popleft()
                self._take(q, t)
                expired.append(t)
            if q.live <= 0 and key not in self._busy:
                del self._queues[key]
        self.timeouts += len(expired)
        for t in expired:
            t.owner.rejected(
                504,
                f"revision {t.key}: the request timed out after {now - t.enqueued:.3g} s "
                "waiting for capacity (no replica became ready or free in time)",
            )
        return len(expired)

    def next_deadline(self) -> float:
        """The earliest deadline among the queues' fronts (inf when nothing waits)."""
        best = INF
        for q in self._queues.values():
            t = q.front()
            if t is not None and t.deadline < best:
                best = t.deadline
        return best

    def on_snapshot(self, snapshot: Snapshot) -> None:
        """A newer snapshot: fail queues of failed or vanished revisions, dispatch the others."""
        router = self._router
        ready = [rev.key for rev in snapshot.revisions if router.has_ready(rev)]
        for key in ready:
            self.pokes.ready(key)
        self.pokes.retain(rev.key for rev in snapshot.revisions)
        if not self._queues:
            return
        now = self._clock()
        for key in list(self._queues):
            self.dispatch(key, now)

    def on_promoted(self, key: str) -> None:
        """A starting endpoint of `key` passed the probe."""
        self.pokes.ready(key)
        if key in self._queues:
            self.dispatch(key, self._clock())

    def on_release(self, endpoint_id: str) -> None:
        """A slot of `endpoint_id` was released: its revision's queue may move."""
        if not self._queues:
            return
        key = self._router.revision_of(endpoint_id)
        if key is not None and key in self._queues:
            self.dispatch(key, self._clock())

    def reject_all(self, status: int, message: str) -> None:
        """Fail every waiting request (worker shutdown)."""
        for key in list(self._queues):
            self._reject_all(key, status, message)

    def _reject_all(self, key: str, status: int, message: str) -> None:
        q = self._queues.pop(key, None)
        if q is None:
            return
        victims = [t for t in q.entries if t.live]
        for t in victims:
            self._take(q, t)
        for t in victims:
            t.owner.rejected(status, message)

    # -- expiry timer (one per worker) -------------------------------------------------------

    def _arm(self, when: float) -> None:
        loop = self._loop
        if loop is None or when == INF:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = INF
        self.expire(self._clock())
        nxt = self.next_deadline()
        if nxt < INF:
            self._arm(nxt)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_when = INF
