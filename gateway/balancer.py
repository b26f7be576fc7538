"""Per-replica in-flight counts, concurrency limits and the load-balancing policy (pure).

Besides a revision's `container_concurrency`, each replica may have a *learned* in-flight
limit: it starts unlimited and is lowered only by hard signals the upstream side reports
(`lower`: a fresh connection refused, reset, timed out, stalled or closed before any response
byte), to what the replica was serving when that happened; it grows by one every
`growth` successes (`succeeded`), never goes below 1, and is forgotten with the replica (a
replaced replica has a new endpoint id). Exchanges that upgraded or stream their response
(`exempt`) do not count against it. With `container_concurrency` > 0 the smaller limit applies.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot

FIRST_AVAILABLE_MAX = 4
"""Revisions with container_concurrency up to this use first-available (like Knative's
activator for small limits, it packs requests onto the fewest replicas); above it round-robin."""


class Balancer:
    """Tracks requests in flight per endpoint and picks an endpoint for each new request."""

    __slots__ = (
        "_draining",
        "_exempt",
        "_grown",
        "_inflight",
        "_promoted",
        "_rev_of",
        "_routable",
        "_rr",
        "_starting",
        "changes",
        "growth",
        "learned",
    )

    def __init__(self, growth: int = 16) -> None:
        """`growth`: successes after which a learned limit grows by one."""
        self.growth = max(1, growth)
        self.learned: dict[str, int] = {}
        """endpoint id → learned in-flight limit (absent: unlimited). Read on the hot path
        (`if learned`): empty unless some replica has refused or stalled a connection."""
        self._grown: dict[str, int] = {}
        """endpoint id → successes since its learned limit last changed."""
        self._exempt: dict[str, int] = {}
        """endpoint id → requests in flight that do not count against its learned limit."""
        self.changes: dict[str, list[int]] = {}
        """revision key → [times lowered, times raised] of its replicas' learned limits."""
        self._inflight: dict[str, int] = {}
        """endpoint id → requests in flight (known endpoints and draining ones)."""
        self._draining: set[str] = set()
        """Endpoints gone from the snapshot that still have requests in flight."""
        self._rr: dict[str, int] = {}
        """revision key → round-robin cursor."""
        self._rev_of: dict[str, str] = {}
        """endpoint id → revision key (endpoints of the current snapshot)."""
        self._starting: dict[str, RevisionTarget] = {}
        """revision key → revision, for revisions with `starting` endpoints."""
        self._promoted: set[str] = set()
        """Starting endpoints that passed the gateway's own probe: routed like ready ones."""
        self._routable: dict[str, tuple[Endpoint, ...]] = {}
        """revision key → endpoints that may be routed, only for revisions in `_starting`."""

    def update(self, snapshot: Snapshot) -> None:
        """Adopt a snapshot's endpoints; removed endpoints with requests in flight drain."""
        current: set[str] = set()
        rev_of: dict[str, str] = {}
        starting: dict[str, RevisionTarget] = {}
        still_starting: set[str] = set()
        for rev in snapshot.revisions:
            key = rev.key
            for ep in rev.endpoints:
                current.add(ep.id)
                rev_of[ep.id] = key
                if ep.starting:
                    starting[key] = rev
                    still_starting.add(ep.id)
        inflight = self._inflight
        for ep_id in list(inflight):
            if ep_id not in current:
                if inflight[ep_id] > 0:
                    self._draining.add(ep_id)
                else:
                    del inflight[ep_id]
        for ep_id in current:
            self._draining.discard(ep_id)
            inflight.setdefault(ep_id, 0)
        keys = {rev.key for rev in snapshot.revisions}
        for key in list(self._rr):
            if key not in keys:
                del self._rr[key]
        for table in (self.learned, self._grown, self._exempt):
            for ep_id in [e for e in table if e not in current]:
                del table[ep_id]
        for key in [k for k in self.changes if k not in keys]:
            del self.changes[key]
        self._rev_of = rev_of
        self._promoted &= still_starting  # ready now, or gone: no longer needed
        self._starting = starting
        self._routable = {key: self._routable_of(rev) for key, rev in starting.items()}

    def update_revisions(self, gone: Iterable[RevisionTarget], new: Iterable[RevisionTarget]) -> None:
        """`update` for a delta: `gone` are the revisions it replaced or removed (as they
        were), `new` the ones it added or changed; the others are left as they are. Ends in
        the state `update` of the new snapshot would."""
        gone, new = list(gone), list(new)
        new_eps = {ep.id for rev in new for ep in rev.endpoints}
        new_keys = {rev.key for rev in new}
        inflight, rev_of = self._inflight, self._rev_of
        for rev in gone:
            self._starting.pop(rev.key, None)
            self._routable.pop(rev.key, None)
            if rev.key not in new_keys:
                self._rr.pop(rev.key, None)
                self.changes.pop(rev.key, None)
            for ep in rev.endpoints:
                if ep.id in new_eps:
                    continue
                rev_of.pop(ep.id, None)
                self._promoted.discard(ep.id)
                if inflight.get(ep.id, 0) > 0:
                    self._draining.add(ep.id)
                else:
                    inflight.pop(ep.id, None)
                for table in (self.learned, self._grown, self._exempt):
                    table.pop(ep.id, None)
        for rev in new:
            key = rev.key
            starting = False
            for ep in rev.endpoints:
                rev_of[ep.id] = key
                self._draining.discard(ep.id)
                inflight.setdefault(ep.id, 0)
                if ep.starting:
                    starting = True
                else:
                    self._promoted.discard(ep.id)  # ready now: no longer needed
            if starting:
                self._starting[key] = rev
        for rev in new:
            if rev.key in self._starting:
                self._routable[rev.key] = self._routable_of(rev)

    def _routable_of(self, rev: RevisionTarget) -> tuple[Endpoint, ...]:
        promoted = self._promoted
        return tuple(ep for ep in rev.endpoints if not ep.starting or ep.id in promoted)

    def promote(self, endpoint_id: str) -> str | None:
        """A starting endpoint passed the gateway's probe: route to it from now on.

        Returns its revision key, or None when it is unknown or already routable.
        """
        key = self._rev_of.get(endpoint_id)
        if key is None or endpoint_id in self._promoted:
            return None
        rev = self._starting.get(key)
        if rev is None:
            return None
        self._promoted.add(endpoint_id)
        self._routable[key] = self._routable_of(rev)
        return key

    def unprobed(self) -> list[Endpoint]:
        """Starting endpoints not yet promoted (the prober's work list)."""
        promoted = self._promoted
        return [
            ep
            for rev in self._starting.values()
            for ep in rev.endpoints
            if ep.starting and ep.id not in promoted
        ]

    def routable(self, rev: RevisionTarget) -> tuple[Endpoint, ...]:
        """`rev`'s endpoints that may be routed: ready ones and promoted starting ones."""
        if self._routable:
            eps = self._routable.get(rev.key)
            if eps is not None:
                return eps
        return rev.endpoints

    def has_ready(self, rev: RevisionTarget) -> bool:
        return bool(self.routable(rev))

    def revision_of(self, endpoint_id: str) -> str | None:
        """The revision key of an endpoint of the current snapshot."""
        return self._rev_of.get(endpoint_id)

    def acquire(
        self,
        rev: RevisionTarget,
        rnd: Callable[[], float],
        exclude: Collection[str] = (),
    ) -> Endpoint | None:
        """Reserve a slot on one of `rev`'s endpoints; None when none is ready or free.

        `rev` must be the current snapshot's (endpoints of an older one may be gone). Starting
        endpoints are skipped until promoted; draining ones always are.
        """
        eps = self.routable(rev)
        if exclude or self._draining:
            draining = self._draining
            eps = tuple(e for e in eps if e.id not in exclude and e.id not in draining)
        n = len(eps)
        if n == 0:
            return None
        inflight = self._inflight
        limit = rev.container_concurrency
        chosen: Endpoint | None = None
        if self.learned:  # rare: some replica of this worker has a learned limit
            # (a method, not a generator expression here: one would make `self` and `limit`
            # closure cells, and every request pay for it)
            eps = self._with_room(eps, limit)
            n = len(eps)
            if n == 0:
                return None
        if limit <= 0:
            if n == 1:
                chosen = eps[0]
            else:
                i = int(rnd() * n) % n
                j = int(rnd() * (n - 1)) % (n - 1)
                if j >= i:
                    j += 1
                a, b = eps[i], eps[j]
                chosen = b if inflight.get(b.id, 0) < inflight.get(a.id, 0) else a
        elif limit <= FIRST_AVAILABLE_MAX:
            for ep in eps:
                if inflight.get(ep.id, 0) < limit:
                    chosen = ep
                    break
        else:
            start = self._rr.get(rev.key, 0)
            for k in range(n):
                idx = (start + k) % n
                ep = eps[idx]
                if inflight.get(ep.id, 0) < limit:
                    chosen = ep
                    self._rr[rev.key] = idx + 1
                    break
        if chosen is not None:
            inflight[chosen.id] = inflight.get(chosen.id, 0) + 1
        return chosen

    def _with_room(self, eps: tuple[Endpoint, ...], limit: int) -> tuple[Endpoint, ...]:
        """Those of `eps` below both `limit` (the revision's, if > 0) and their learned limit."""
        inflight = self._inflight
        learned = self.learned
        exempt = self._exempt
        room: list[Endpoint] = []
        for ep in eps:
            ep_id = ep.id
            n = inflight.get(ep_id, 0)
            if 0 < limit <= n:
                continue
            cap = learned.get(ep_id)
            if cap is None or n - exempt.get(ep_id, 0) < cap:
                room.append(ep)
        return eps if len(room) == len(eps) else tuple(room)

    # -- learned limits ------------------------------------------------------------------------

    def within_learned(self, endpoint_id: str) -> bool:
        """The requests holding slots on `endpoint_id` (this one among them) do not exceed its
        learned limit: slots reserved before the limit was lowered may be over it."""
        learned = self.learned.get(endpoint_id)
        if learned is None:
            return True
        counted = self._inflight.get(endpoint_id, 0) - self._exempt.get(endpoint_id, 0)
        return counted <= learned

    def counted(self, endpoint_id: str) -> int:
        """Requests in flight on `endpoint_id` that count against a learned limit."""
        return self._inflight.get(endpoint_id, 0) - self._exempt.get(endpoint_id, 0)

    def lower(self, endpoint_id: str, serving: int) -> int | None:
        """A hard overload signal from `endpoint_id` while it had `serving` other connections
        open or opening: its learned limit drops to that, less the exempt ones (at least 1).
        Returns the new limit, or None when it was already that low (or the endpoint is not
        current)."""
        key = self._rev_of.get(endpoint_id)
        if key is None:
            return None
        new = max(1, serving - self._exempt.get(endpoint_id, 0))
        old = self.learned.get(endpoint_id)
        self._grown[endpoint_id] = 0
        if old is not None and old <= new:
            return None
        self.learned[endpoint_id] = new
        self.changes.setdefault(key, [0, 0])[0] += 1
        return new

    def succeeded(self, endpoint_id: str) -> None:
        """A response came back from `endpoint_id`: every `growth` of them, its learned limit
        (if it has one) grows by one."""
        limit = self.learned.get(endpoint_id)
        if limit is None:
            return
        wins = self._grown.get(endpoint_id, 0) + 1
        if wins < self.growth:
            self._grown[endpoint_id] = wins
            return
        self._grown[endpoint_id] = 0
        self.learned[endpoint_id] = limit + 1
        key = self._rev_of.get(endpoint_id)
        if key is not None:
            self.changes.setdefault(key, [0, 0])[1] += 1

    def exempt(self, endpoint_id: str) -> None:
        """A request in flight on `endpoint_id` upgraded or streams: it stops counting against
        the learned limit (release it with `exempt=True`)."""
        self._exempt[endpoint_id] = self._exempt.get(endpoint_id, 0) + 1

    def learned_by_revision(self) -> dict[str, dict[str, int]]:
        """revision key → {endpoint id: learned limit} (off the hot path)."""
        out: dict[str, dict[str, int]] = {}
        for ep_id, limit in self.learned.items():
            key = self._rev_of.get(ep_id)
            if key is not None:
                out.setdefault(key, {})[ep_id] = limit
        return out

    # -- release -------------------------------------------------------------------------------

    def release(self, endpoint_id: str, exempt: bool = False) -> bool:
        """Free a slot (one `exempt` earlier if so); True when this was the last request of a
        draining endpoint."""
        if exempt:
            left = self._exempt.get(endpoint_id, 0) - 1
            if left > 0:
                self._exempt[endpoint_id] = left
            else:
                self._exempt.pop(endpoint_id, None)
        count = self._inflight.get(endpoint_id)
        if count is None:
            return False
        count -= 1
        if count > 0:
            self._inflight[endpoint_id] = count
            return False
        if endpoint_id in self._draining:
            self._draining.discard(endpoint_id)
            del self._inflight[endpoint_id]
            return True
        self._inflight[endpoint_id] = 0
        return False

    def inflight(self, endpoint_id: str) -> int:
        return self._inflight.get(endpoint_id, 0)

    def draining(self) -> dict[str, int]:
        """Endpoints no longer in the snapshot that still have requests in flight."""
        return {ep_id: self._inflight[ep_id] for ep_id in self._draining}

    def total_inflight(self) -> int:
        return sum(self._inflight.values())

    def inflight_by_revision(self) -> dict[str, int]:
        """revision key → requests in flight to its current endpoints (off the hot path)."""
        out: dict[str, int] = {}
        for ep_id, key in self._rev_of.items():
            n = self._inflight.get(ep_id, 0)
            if n:
                out[key] = out.get(key, 0) + n
        return out
