"""Routing table: maps a request's host and tag header to weighted revision targets (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from flint_common.snapshot import RevisionTarget, RouteEntry, Snapshot


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where one host (+ tag) routes: a route and its weighted candidate revisions."""

    namespace: str
    route: str
    candidates: tuple[tuple[str, int], ...]
    """(revision name, percent) with percent > 0, in snapshot order."""
    total: int
    """Sum of the candidates' percents (100 for a well-formed route)."""
    tag: str | None = None
    """The tag this resolution addresses, None for the route's default traffic."""
    cluster_local: bool = False
    """The route is cluster-local (`RouteEntry.cluster_local`): loopback listener only."""
    key: str = field(init=False, default="", compare=False)
    """`namespace/route` (computed once)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.route}")


def pick(resolution: Resolution, r: float) -> str:
    """Choose a revision by cumulative percent; `r` in [0, 1). 0 % entries are never picked."""
    cands = resolution.candidates
    if len(cands) == 1:
        return cands[0][0]
    if not cands:
        raise ValueError(f"route {resolution.namespace}/{resolution.route} has no traffic")
    point = r * resolution.total
    acc = 0
    for name, percent in cands:
        acc += percent
        if point < acc:
            return name
    return cands[-1][0]


def normalize_host(host: str) -> str:
    """Lowercase and strip a `:port` (IPv6 literals keep their brackets) and a trailing dot."""
    h = host.strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end != -1:
            return h[: end + 1]
        return h
    colon = h.rfind(":")
    if colon != -1:
        h = h[:colon]
    if h.endswith("."):
        h = h[:-1]
    return h


def _resolution(entry: RouteEntry, tag: str | None, splits: list[tuple[str, int]]) -> Resolution:
    positive = tuple((rev, pct) for rev, pct in splits if pct > 0)
    return Resolution(
        entry.namespace, entry.name, positive, sum(p for _, p in positive), tag, entry.cluster_local
    )


def _add_route(
    entry: RouteEntry,
    by_host: dict[str, tuple[Resolution, str]],
    tags_by_route: dict[tuple[str, str], dict[str, Resolution]],
) -> None:
    default = _resolution(entry, None, [(t.revision, t.percent) for t in entry.traffic])
    for host in entry.hosts:
        by_host[normalize_host(host)] = (default, "route")
    tags: dict[str, Resolution] = {}
    for tag in entry.tags:
        res = _resolution(entry, tag.tag, [(tag.revision, 100)])
        tags[tag.tag] = res
        for host in tag.hosts:
            by_host[normalize_host(host)] = (res, "tag")
    tags_by_route[(entry.namespace, entry.name)] = tags


class RoutingTable:
    """Immutable lookup structure built once per snapshot; `resolve` is a couple of dict hits."""

    __slots__ = ("_by_host", "_revisions", "_tags_by_route")

    def __init__(
        self,
        by_host: dict[str, tuple[Resolution, str]],
        tags_by_route: dict[tuple[str, str], dict[str, Resolution]],
        revisions: dict[tuple[str, str], RevisionTarget],
    ) -> None:
        self._by_host = by_host
        """host → (resolution, kind) where kind is "route" or "tag"."""
        self._tags_by_route = tags_by_route
        self._revisions = revisions

    @staticmethod
    def empty() -> RoutingTable:
        return RoutingTable({}, {}, {})

    @staticmethod
    def from_snapshot(snapshot: Snapshot) -> RoutingTable:
        by_host: dict[str, tuple[Resolution, str]] = {}
        tags_by_route: dict[tuple[str, str], dict[str, Resolution]] = {}
        for entry in snapshot.routes:
            _add_route(entry, by_host, tags_by_route)
        revisions = {(r.namespace, r.name): r for r in snapshot.revisions}
        return RoutingTable(by_host, tags_by_route, revisions)

    def updated(
        self,
        gone_routes: Iterable[RouteEntry],
        new_routes: Iterable[RouteEntry],
        gone_revisions: Iterable[RevisionTarget],
        new_revisions: Iterable[RevisionTarget],
    ) -> RoutingTable:
        """A new table with `gone_*` (the entries a delta replaced or removed) taken out and
        `new_*` put in; the untouched entries are shared with this one (which stays as it was:
        requests in progress may still hold it). Equal to `from_snapshot` of the new snapshot
        (`flint_common.delta.replaced` gives both lists)."""
        by_host = dict(self._by_host)
        tags_by_route = dict(self._tags_by_route)
        revisions = dict(self._revisions)
        for entry in gone_routes:
            key = (entry.namespace, entry.name)
            tags_by_route.pop(key, None)
            for host in (*entry.hosts, *(h for tag in entry.tags for h in tag.hosts)):
                h = normalize_host(host)
                found = by_host.get(h)
                if found is not None and (found[0].namespace, found[0].route) == key:
                    del by_host[h]
        for entry in new_routes:
            _add_route(entry, by_host, tags_by_route)
        for rev in gone_revisions:
            revisions.pop((rev.namespace, rev.name), None)
        for rev in new_revisions:
            revisions[(rev.namespace, rev.name)] = rev
        return RoutingTable(by_host, tags_by_route, revisions)

    def resolve(self, host: str, tag: str | None = None) -> Resolution | None:
        """Resolution for a Host header value (port and case ignored) and a tag header, or None.

        A tag host routes to its tag whatever the header says; a route host with a known tag
        header routes to that tag; an unknown tag header falls back to the default traffic.
        """
        found = self._by_host.get(host)
        if found is None:
            found = self._by_host.get(normalize_host(host))
            if found is None:
                return None
        res, kind = found
        if tag and kind == "route":
            tags = self._tags_by_route.get((res.namespace, res.route))
            if tags:
                tagged = tags.get(tag)
                if tagged is not None:
                    return tagged
        return res

    def revision(self, namespace: str, name: str) -> RevisionTarget | None:
        return self._revisions.get((namespace, name))

    @property
    def hosts(self) -> list[str]:
        return sorted(self._by_host)
