"""One worker's routing state: the table and balancer of the latest snapshot behind one facade."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from flint_common.delta import DeltaMismatch, SnapshotDelta, apply_delta, replaced
from flint_common.snapshot import Endpoint, RevisionTarget, Snapshot
from gateway.balancer import Balancer
from gateway.subsets import PeerChoice, local_revision, local_view, normal_ip
from gateway.table import RoutingTable, pick

MissReason = Literal["unknown-host", "missing-revision", "no-traffic"]


@dataclass(frozen=True, slots=True)
class RouteMiss:
    """Why a request could not be routed: 404 for an unknown host, 503 otherwise."""

    reason: MissReason
    host: str
    route: str = ""
    """`namespace/name` of the matched route, empty for an unknown host."""
    revision: str = ""
    """The revision the route points at but the snapshot lacks."""

    @property
    def message(self) -> str:
        if self.reason == "unknown-host":
            return f"no route for host {self.host!r}"
        if self.reason == "no-traffic":
            return f"route {self.route} has no traffic target with a percent above 0"
        return f"route {self.route} targets revision {self.revision!r}, which is not ready"


ROUTE_CACHE_SIZE = 4096
"""Distinct (Host, tag) header values whose routing is remembered per snapshot."""


class Routed:
    """Where a request routes: the matched route and the picked revision."""

    __slots__ = ("cluster_local", "route", "target")

    def __init__(self, route: str, target: RevisionTarget, cluster_local: bool = False) -> None:
        self.route = route
        """`namespace/name` of the matched route."""
        self.target = target
        self.cluster_local = cluster_local
        """The route is cluster-local: a connection accepted on a `--listen` address must get
        the unknown host's 404 instead (the proxy checks; the router knows no listeners)."""


class Router:
    """Resolves hosts to revisions and reserves replica slots for one gateway worker."""

    __slots__ = (
        "_balancer",
        "_cache",
        "_forwards",
        "_gateway_id",
        "_listeners",
        "_on_drained",
        "_on_release",
        "_received",
        "_rnd",
        "_snapshot",
        "_table",
        "learned",
        "peer_hosts",
    )

    def __init__(
        self,
        snapshot: Snapshot | None = None,
        rnd: Callable[[], float] = random.random,
        *,
        on_release: Callable[[str], None] | None = None,
        listeners: Sequence[Callable[[Snapshot], None]] = (),
        on_drained: Callable[[], None] | None = None,
        learned_growth: int = 16,
        gateway_id: str | None = None,
    ) -> None:
        """`snapshot` is applied at once (before any listener is told). The callbacks are the
        router's events, wired once by `gateway.worker.build_context`:

        - `on_release(endpoint_id)` after every released slot (the activator's capacity event);
        - `listeners`, in this order, after a newer snapshot is applied;
        - `on_drained()` when a draining endpoint's in-flight count reaches 0 (the link re-acks).

        `learned_growth`: successes per step up of a replica's learned limit (`Balancer`).

        `gateway_id`: this gateway's id when it has a peer listener (it takes part in
        subsetting: it routes by its share of each snapshot, `gateway.subsets.local_view`);
        None: owners are ignored.
        """
        self._gateway_id = gateway_id
        self._forwards: dict[str, PeerChoice] = {}
        self.peer_hosts: frozenset[str] = frozenset()
        """Addresses that may connect to the peer listener: the peers of the current snapshot and
        of the one before it."""
        self._rnd = rnd
        self._balancer = Balancer(learned_growth)
        self.learned = self._balancer.learned
        """endpoint id → learned in-flight limit (the balancer's; empty unless one was learned)."""
        self._table = RoutingTable.empty()
        self._snapshot = Snapshot.empty()
        self._received = self._snapshot
        """The last snapshot as the controller sent it (before `local_view`): what a delta
        applies to."""
        self._cache: dict[bytes | tuple[bytes, bytes], Routed] = {}
        """Raw Host header (and tag) → where it routes, for routes with a single target revision;
        emptied by every snapshot."""
        self._on_release = on_release
        self._listeners: tuple[Callable[[Snapshot], None], ...] = ()
        self._on_drained = on_drained
        if snapshot is not None:
            self.apply(snapshot)
        self._listeners = tuple(listeners)

    @property
    def version(self) -> int:
        return self._snapshot.version

    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    @property
    def received(self) -> Snapshot:
        """The current snapshot as the controller sent it (with subsetting, all gateways')."""
        return self._received

    def apply(self, snapshot: Snapshot) -> None:
        """Switch to a newer snapshot; versions not above the current one are ignored. With
        subsetting, this gateway's share of it is what is routed and what `snapshot` returns."""
        if snapshot.version <= self._snapshot.version and self._snapshot.version != 0:
            return
        self._received = snapshot
        if snapshot.peers:
            view = local_view(snapshot, self._gateway_id)
            previous = frozenset(normal_ip(p.host) for p in self._snapshot.peers)
            # The previous snapshot's peers too: a gateway still on it forwards to us a while.
            snapshot, self._forwards = view.snapshot, view.forwards
            self.peer_hosts = view.peer_hosts | previous
        elif self._forwards or self.peer_hosts:
            self._forwards, self.peer_hosts = {}, frozenset()
        self._table = RoutingTable.from_snapshot(snapshot)
        self._cache = {}
        self._balancer.update(snapshot)
        self._snapshot = snapshot
        for listener in self._listeners:
            listener(snapshot)

    def apply_delta(self, delta: SnapshotDelta) -> bool:
        """Switch to the snapshot `delta` makes of the current one, rebuilding only what it
        touches (with subsetting, the delta's revisions cut to this gateway's share: the same
        as `local_view` of the whole; when the peers change, the whole local view is made
        again: `apply`). False when `delta` is for another version than the current one (a gap:
        nothing changes); a delta to a version not above the current one is ignored (True)."""
        current = self._received
        if delta.version <= current.version and current.version != 0:
            return True
        try:
            snapshot = apply_delta(current, delta)
        except DeltaMismatch:
            return False
        if delta.peers is not None and (snapshot.peers or current.peers):
            self.apply(snapshot)
            return True
        local = delta
        if snapshot.peers and self._gateway_id is not None:
            peers = {p.gateway: p for p in snapshot.peers}
            forwards = dict(self._forwards)
            revisions = []
            for rev in delta.revisions:
                mine, choice = local_revision(rev, self._gateway_id, peers)
                revisions.append(mine)
                if choice is None:
                    forwards.pop(rev.key, None)
                else:
                    forwards[rev.key] = choice
            for ns, name in delta.removed_revisions:
                forwards.pop(f"{ns}/{name}", None)
            self._forwards = forwards
            local = replace(delta, base=self._snapshot.version, revisions=tuple(revisions))
        if snapshot.peers:  # unchanged: the one before has the same
            self.peer_hosts = frozenset(normal_ip(p.host) for p in snapshot.peers)
        view = apply_delta(self._snapshot, local)
        was = self._snapshot
        gone_routes, new_routes = replaced(was.routes, local.routes, local.removed_routes)
        gone_revs, new_revs = replaced(was.revisions, local.revisions, local.removed_revisions)
        self._table = self._table.updated(gone_routes, new_routes, gone_revs, new_revs)
        self._cache = {}
        self._balancer.update_revisions(gone_revs, new_revs)
        self._received, self._snapshot = snapshot, view
        for listener in self._listeners:
            listener(view)
        return True

    def resolve(self, host: str, tag: str | None = None) -> RevisionTarget | RouteMiss:
        """`route_raw` for str values, without the route."""
        found = self.route_raw(host.encode("latin-1"), tag.encode("latin-1") if tag else None)
        return found if isinstance(found, RouteMiss) else found.target

    def route_raw(self, host: bytes, tag: bytes | None = None) -> Routed | RouteMiss:
        """Where a request with these Host and tag header values (latin-1) goes: the matched
        route and the revision picked by its traffic split. Cached per snapshot for routes with
        a single target revision (the same answer every time)."""
        ck: bytes | tuple[bytes, bytes] = host if not tag else (host, tag)
        hit = self._cache.get(ck)
        if hit is not None:
            return hit
        host_s = host.decode("latin-1")
        res = self._table.resolve(host_s, tag.decode("latin-1") if tag else None)
        if res is None:
            return RouteMiss("unknown-host", host_s)
        if not res.candidates:
            return RouteMiss("no-traffic", host_s, res.key)
        name = pick(res, self._rnd())
        rev = self._table.revision(res.namespace, name)
        if rev is None:
            return RouteMiss("missing-revision", host_s, res.key, name)
        routed = Routed(res.key, rev, res.cluster_local)
        if len(res.candidates) == 1:  # the same answer every time until the next snapshot
            cache = self._cache
            if len(cache) >= ROUTE_CACHE_SIZE:
                cache.clear()
            cache[ck] = routed
        return routed

    def forward_for(self, key: str) -> Endpoint | None:
        """The peer gateway to forward a request of limited revision `key` to (round-robin over
        its owners), or None when this gateway serves it (it owns replicas of it, or nobody
        does yet: it waits here for one)."""
        choice = self._forwards.get(key)
        return None if choice is None else choice.next()

    def owned(self) -> tuple[str, ...]:
        """The replica ids the current snapshot gives this gateway (subsetting), sorted: told to
        the controller in `Hello.owned`."""
        gid = self._gateway_id
        if gid is None or not self._snapshot.peers:
            return ()
        return tuple(sorted(ep.id for rev in self._snapshot.revisions for ep in rev.endpoints
                            if ep.owner == gid))

    def forwarded(self, key: str) -> bool:
        """Whether limited revision `key`'s replicas are all owned by other gateways."""
        return key in self._forwards

    def current(self, key: str) -> RevisionTarget | None:
        """The current snapshot's revision `namespace/name`, or None."""
        ns, _, name = key.partition("/")
        return self._table.revision(ns, name)

    def has_ready(self, rev: RevisionTarget) -> bool:
        """Whether `rev` has an endpoint that may be routed (ready, or starting and probed)."""
        return self._balancer.has_ready(rev)

    def mark_ready(self, endpoint_id: str) -> str | None:
        """A starting endpoint passed the gateway's probe; returns its revision key if it changed."""
        return self._balancer.promote(endpoint_id)

    def acquire(self, rev: RevisionTarget, exclude: Collection[str] = ()) -> Endpoint | None:
        return self._balancer.acquire(rev, self._rnd, exclude)

    def release(self, endpoint_id: str, exempt: bool = False) -> None:
        """Free a slot of `endpoint_id` (`exempt`: one marked by `exempt` earlier)."""
        if self._balancer.release(endpoint_id, exempt) and self._on_drained is not None:
            self._on_drained()
        if self._on_release is not None:
            self._on_release(endpoint_id)

    def lower(self, endpoint_id: str, serving: int) -> int | None:
        """A hard overload signal from a replica serving `serving` other requests: lower its
        learned limit (`Balancer.lower`); the new limit, or None if unchanged."""
        return self._balancer.lower(endpoint_id, serving)

    def counted(self, endpoint_id: str) -> int:
        """`Balancer.counted`: in flight there, less the exempt (upgraded, streaming)."""
        return self._balancer.counted(endpoint_id)

    def within_learned(self, endpoint_id: str) -> bool:
        """`Balancer.within_learned`: the slots held there do not exceed its learned limit."""
        return self._balancer.within_learned(endpoint_id)

    def succeeded(self, endpoint_id: str) -> None:
        """A response came back from a replica with a learned limit (`Balancer.succeeded`)."""
        self._balancer.succeeded(endpoint_id)

    def exempt(self, endpoint_id: str) -> None:
        """An upgraded or streaming exchange stops counting against the learned limit."""
        self._balancer.exempt(endpoint_id)

    def learned_by_revision(self) -> dict[str, dict[str, int]]:
        """revision key → {endpoint id: learned limit} (off the hot path)."""
        return self._balancer.learned_by_revision()

    def limit_changes(self) -> dict[str, list[int]]:
        """revision key → [times lowered, times raised] of its replicas' learned limits."""
        return self._balancer.changes

    def revision_of(self, endpoint_id: str) -> str | None:
        """The revision key of an endpoint of the current snapshot."""
        return self._balancer.revision_of(endpoint_id)

    def unprobed(self) -> list[Endpoint]:
        """Starting endpoints not yet promoted (the prober's work list)."""
        return self._balancer.unprobed()

    def inflight(self, endpoint_id: str) -> int:
        return self._balancer.inflight(endpoint_id)

    def total_inflight(self) -> int:
        """Requests in flight to replicas (the current endpoints and draining ones)."""
        return self._balancer.total_inflight()

    def inflight_by_revision(self) -> dict[str, int]:
        """revision key → requests in flight to its current endpoints (off the hot path)."""
        return self._balancer.inflight_by_revision()

    def draining(self) -> dict[str, int]:
        return self._balancer.draining()
