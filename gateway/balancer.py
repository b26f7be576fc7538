"""Per-replica in-flight counts, concurrency limits and the load-balancing policy (pure)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from gateway.config import Endpoint, RevisionTarget, Snapshot

FIRST_AVAILABLE_MAX = 4
"""Revisions with container_concurrency up to this use first-available (like Knative's
activator for small limits, it packs requests onto the fewest replicas); above it round-robin."""


class Balancer:
    """Tracks requests in flight per endpoint and picks an endpoint for each new request."""

    __slots__ = ("_draining", "_inflight", "_promoted", "_rev_of", "_routable", "_rr", "_starting")

    def __init__(self) -> None:
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
        self._rev_of = rev_of
        self._promoted &= still_starting  # ready now, or gone: no longer needed
        self._starting = starting
        self._routable = {key: self._routable_of(rev) for key, rev in starting.items()}

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

    def release(self, endpoint_id: str) -> bool:
        """Free a slot; True when this was the last request of a draining endpoint."""
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
