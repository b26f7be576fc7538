"""Routing snapshots rebuilt from what changed (pure): at 10,000 Services one Service change must
reach every gateway worker within 100 ms (issue 15 §5), and rebuilding every entry took 330 ms.

`SnapshotBuilder.build` gives what `controller.routing.build_snapshot` gives for the same inputs
(tested to be equal), but remembers each entry with the inputs it was made from: a Route whose
object is the same one as last time (an informer replaces an object on every change and never
mutates it) and whose hosts are the same keeps its `RouteEntry`; a Revision whose object,
endpoints and failure are the same keeps its `RevisionTarget`; the host plan is reused while no
Route's name, age, tags or domain changed (`HostPlanner`, which the Route reconciler's
host conflicts use too). So a change costs its own entries plus one pass of
lookups, and untouched entries are the very objects of the last snapshot, which the hub's
comparison and `flint_common.delta.diff` pass over by identity.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from controller.routing import HostPlan, Wanted, assign_hosts, revision_target, route_entry, wanted_hosts
from controller.routing_subsets import owned_target
from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot

Obj = dict[str, Any]
Key = tuple[str, str]
Hosts = tuple[tuple[str, str | None], ...]


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", "default"), meta["name"]


class HostPlanner:
    """`controller.routing.plan_hosts` with memory: a route's wanted hosts are worked out again
    only when its object changed, and the plan only when some route's changed.

    `domain` (a string, or a route's domain by its labels) must answer the same for the same
    route object while it is the same `domain`; a different one forgets every host."""

    def __init__(self) -> None:
        self._domain: object = None
        self._objs: dict[int, Obj] = {}
        """The routes of the last call by id (held: no id is reused while remembered)."""
        self._wanted: dict[Key, Wanted] = {}
        self._plan = HostPlan({}, {})

    def plan(self, routes: Iterable[Obj], domain: str | Callable[[Obj], str]) -> HostPlan:
        """`controller.routing.plan_hosts(routes, domain)`, reused while its inputs stay."""
        fresh = domain is not self._domain and domain != self._domain
        if fresh:  # another domain: every host again
            self._domain, self._objs, self._wanted = domain, {}, {}
        objs = {id(r): r for r in routes}
        gone = [self._objs[i] for i in self._objs.keys() - objs.keys()]
        came = [objs[i] for i in objs.keys() - self._objs.keys()]
        self._objs = objs
        if not gone and not came and not fresh:
            return self._plan
        was = {k: self._wanted.pop(k) for k in map(_key, gone) if k in self._wanted}
        for r in came:
            self._wanted[_key(r)] = wanted_hosts(r, domain(r) if callable(domain) else domain)
        # a route came, went, or wants other hosts (renamed, tagged): plan every host again
        if fresh or any(self._wanted.get(k) != w for k, w in was.items()) or any(
                was.get(k) is None for k in map(_key, came)):
            self._plan = assign_hosts(sorted(self._wanted.values()))
        return self._plan


class SnapshotBuilder:
    """`build_snapshot` with memory of the entries it made (see the module docstring).

    What changed is found by identity with set operations (which run in C, not per entry in
    Python): the route and revision objects given last time (held here, so no id is reused
    while it is remembered), the endpoint tuples per revision (one made again is compared by
    value) and the failures. Only the entries those touch are made again."""

    def __init__(self) -> None:
        self._plan: HostPlan | None = None
        self._hosts: dict[Key, Hosts] = {}
        """The last plan's hosts by route."""
        self._route_objs: dict[int, Obj] = {}
        self._route_by_key: dict[Key, Obj] = {}
        self._entries: dict[Key, tuple[RouteEntry, tuple[Key, ...]]] = {}
        """Each route with an entry: the entry and the revisions it references."""
        self._refs: dict[Key, int] = {}
        """Revision → how many entries reference it."""
        self._rev_objs: dict[int, Obj] = {}
        self._eps: dict[Key, tuple[Endpoint, ...]] = {}
        self._gateways: tuple[str, ...] = ()
        self._fails: dict[Key, str] = {}
        self._targets: dict[Key, RevisionTarget] = {}
        self._route_order: list[Key] = []
        self._target_order: list[Key] = []
        """The keys of the entries, sorted: sorted again only when one comes or goes."""
        self._route_tuple: tuple[RouteEntry, ...] = ()
        self._target_tuple: tuple[RevisionTarget, ...] = ()

    def build(
        self,
        routes: Iterable[Obj],
        revisions: Mapping[Key, Obj],
        endpoints: Mapping[Key, tuple[Endpoint, ...]],
        plan: HostPlan,
        version: int,
        failures: Mapping[Key, str] | None = None,
        gateways: Sequence[str] = (),
    ) -> Snapshot:
        """What `build_snapshot` returns for these inputs, untouched entries reused; with
        `gateways` (sorted ids of the gateways with a peer listener), each limited revision's
        endpoints get their owner (`controller.routing_subsets.owned_target`; the caller sets
        `Snapshot.peers`)."""
        dirty: set[Key] = set()
        if plan is not self._plan:
            by_route: dict[Key, list[tuple[str, str | None]]] = {}
            for host, (ns, name, tag) in plan.owners.items():
                by_route.setdefault((ns, name), []).append((host, tag))
            hosts = {k: tuple(sorted(v, key=_host_order)) for k, v in by_route.items()}
            dirty.update(k for k in hosts.keys() | self._hosts.keys()
                         if hosts.get(k, ()) != self._hosts.get(k, ()))
            self._plan, self._hosts = plan, hosts
        route_objs = {id(r): r for r in routes}
        for i in self._route_objs.keys() - route_objs.keys():
            k = _key(self._route_objs[i])
            if self._route_by_key.get(k) is self._route_objs[i]:
                del self._route_by_key[k]
            dirty.add(k)
        for i in route_objs.keys() - self._route_objs.keys():
            k = _key(route_objs[i])
            self._route_by_key[k] = route_objs[i]
            dirty.add(k)
        self._route_objs = route_objs
        needed_changed: set[Key] = set()
        routes_changed = False
        routes_added_or_removed = False
        for k in dirty:
            old = self._entries.pop(k, None)
            if old is not None:
                routes_changed = True
                needed_changed.update(self._unref(old[1]))
            r = self._route_by_key.get(k)
            entry, refs = (None, ()) if r is None else route_entry(r, self._hosts.get(k, ()))
            if entry is not None:
                routes_changed = True
                self._entries[k] = (entry, refs)
                needed_changed.update(self._ref(refs))
            routes_added_or_removed |= (old is None) != (entry is None)
        if routes_changed:
            if routes_added_or_removed:
                self._route_order = sorted(self._entries)
            self._route_tuple = tuple(self._entries[k][0] for k in self._route_order)

        rev_objs = {id(o): o for o in revisions.values()}
        touched = needed_changed
        touched.update(_key(self._rev_objs[i]) for i in self._rev_objs.keys() - rev_objs.keys())
        touched.update(_key(rev_objs[i]) for i in rev_objs.keys() - self._rev_objs.keys())
        self._rev_objs = rev_objs
        eps, old_eps = dict(endpoints), self._eps
        touched.update(old_eps.keys() - eps.keys())
        # a tuple made again with the same endpoints (the publisher lists them afresh) is equal
        get = old_eps.get
        touched.update(k for k, v in eps.items() if (o := get(k)) is not v and o != v)
        self._eps = eps
        fails = dict(failures or {})
        touched.update(k for k, _ in fails.items() ^ self._fails.items())
        self._fails = fails
        gateways = tuple(gateways)
        if gateways != self._gateways:  # a gateway came or went: every limited revision's owners
            touched.update(k for k, t in self._targets.items() if t.container_concurrency > 0)
            self._gateways = gateways
        targets_changed = targets_added_or_removed = False
        for k in touched:
            rev = revisions.get(k)
            if rev is not None and self._refs.get(k):
                targets_added_or_removed |= k not in self._targets
                self._targets[k] = owned_target(
                    revision_target(rev, eps.get(k, ()), fails.get(k, "")), gateways)
                targets_changed = True
            elif self._targets.pop(k, None) is not None:
                targets_changed = targets_added_or_removed = True
        if targets_changed:
            if targets_added_or_removed:  # sorting 12,000 keys costs more than all the rest
                self._target_order = sorted(self._targets)
            self._target_tuple = tuple(map(self._targets.__getitem__, self._target_order))
        return Snapshot(version=version, routes=self._route_tuple, revisions=self._target_tuple)

    def _ref(self, refs: tuple[Key, ...]) -> list[Key]:
        """Count `refs` once more; returns the revisions that became referenced."""
        came = []
        for k in refs:
            n = self._refs.get(k, 0)
            self._refs[k] = n + 1
            if n == 0:
                came.append(k)
        return came

    def _unref(self, refs: tuple[Key, ...]) -> list[Key]:
        """Count `refs` once less; returns the revisions no longer referenced."""
        gone = []
        for k in refs:
            n = self._refs[k] - 1
            if n:
                self._refs[k] = n
            else:
                del self._refs[k]
                gone.append(k)
        return gone


def _host_order(host: tuple[str, str | None]) -> tuple[str, str]:
    return host[0], host[1] or ""
