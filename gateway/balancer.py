"""Per-replica in-flight counts, concurrency limits and the load-balancing policy (pure)."""

from __future__ import annotations

from collections.abc import Callable, Collection

from gateway.config import Endpoint, RevisionTarget, Snapshot

FIRST_AVAILABLE_MAX = 4
"""Revisions with container_concurrency up to this use first-available (like Knative's
activator for small limits, it packs requests onto the fewest replicas); above it round-robin."""


class Balancer:
    """Tracks requests in flight per endpoint and picks an endpoint for each new request."""

    __slots__ = ("_draining", "_inflight", "_rr")

    def __init__(self) -> None:
        self._inflight: dict[str, int] = {}
        """endpoint id → requests in flight (known endpoints and draining ones)."""
        self._draining: set[str] = set()
        """Endpoints gone from the snapshot that still have requests in flight."""
        self._rr: dict[str, int] = {}
        """revision key → round-robin cursor."""

    def update(self, snapshot: Snapshot) -> None:
        """Adopt a snapshot's endpoints; removed endpoints with requests in flight drain."""
        current: set[str] = set()
        for rev in snapshot.revisions:
            for ep in rev.endpoints:
                current.add(ep.id)
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

    def acquire(
        self,
        rev: RevisionTarget,
        rnd: Callable[[], float],
        exclude: Collection[str] = (),
    ) -> Endpoint | None:
        """Reserve a slot on one of `rev`'s endpoints; None when none is ready or free."""
        eps = rev.endpoints
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
