"""Pure routing decisions of the controller: route hosts (and their collisions) and gateway snapshots."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.api.naming import (
    VISIBILITY_CLUSTER_LOCAL,
    VISIBILITY_LABEL,
    route_host,
    tag_host,
)
from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TagTarget, TrafficSplit

Obj = dict[str, Any]


@dataclass(frozen=True)
class HostPlan:
    """Which route owns which host, and the routes that lost a host to an older one."""

    owners: dict[str, tuple[str, str, str | None]]
    """host → (namespace, route, tag or None)."""
    conflicts: dict[tuple[str, str], str]
    """(namespace, route) → a message naming the colliding host and its owner."""


def _traffic_tags(route: Obj) -> list[str]:
    tags = []
    for t in (route.get("spec") or {}).get("traffic") or []:
        if t.get("tag"):
            tags.append(t["tag"])
    return tags


def is_cluster_local(route: Obj) -> bool:
    """The route carries `networking.knative.dev/visibility: cluster-local` (its Service's
    labels propagate to it): not served on the gateway's `--listen` addresses."""
    labels = route["metadata"].get("labels") or {}
    return labels.get(VISIBILITY_LABEL) == VISIBILITY_CLUSTER_LOCAL


def plan_hosts(routes: Iterable[Obj], domain: str | Callable[[Obj], str]) -> HostPlan:
    """Assign hosts; with `-` in names, `a-b` + route `c` and `a` + route `b-c` share a host:
    the older route (by creationTimestamp, then name) keeps it; the other route loses only the
    colliding host(s) and gets a conflict naming them."""
    return assign_hosts(sorted(
        wanted_hosts(r, domain(r) if callable(domain) else domain) for r in routes))


Wanted = tuple[tuple[str, str, str], tuple[tuple[str, str | None], ...]]
"""A route's age (creationTimestamp, namespace, name) and the hosts it wants, with their tag."""


def wanted_hosts(route: Obj, domain: str) -> Wanted:
    """The hosts `route` asks for under `domain` (its own, then one per traffic tag), and its age."""
    meta = route["metadata"]
    ns, name = meta.get("namespace", "default"), meta["name"]
    hosts: list[tuple[str, str | None]] = [(route_host(name, ns, domain), None)]
    hosts += [(tag_host(t, name, ns, domain), t) for t in _traffic_tags(route)]
    return (meta.get("creationTimestamp", ""), ns, name), tuple(hosts)


def assign_hosts(wanted: Iterable[Wanted]) -> HostPlan:
    """`plan_hosts`'s decision over the routes' `wanted_hosts`, oldest first."""
    owners: dict[str, tuple[str, str, str | None]] = {}
    conflicts: dict[tuple[str, str], str] = {}
    for (_, ns, name), hosts in wanted:
        clashes: list[str] = []
        for h, t in hosts:
            if h in owners:
                ons, oname, otag = owners[h]
                what = f'tag "{otag}" of route' if otag else "route"
                clashes.append(f'host "{h}" is already taken by {what} "{ons}/{oname}"')
            else:
                owners[h] = (ns, name, t)
        if clashes:
            conflicts[(ns, name)] = (
                "; ".join(clashes)
                + ": rename the route or the tag so their names stay unambiguous (the route's other"
                " hosts keep serving)"
            )
    return HostPlan(owners, conflicts)


def revision_target(revision: Obj, endpoints: tuple[Endpoint, ...], failure: str = "") -> RevisionTarget:
    spec = revision.get("spec") or {}
    timeout = float(spec.get("timeoutSeconds") or 300)
    labels = revision["metadata"].get("labels") or {}
    return RevisionTarget(
        namespace=revision["metadata"].get("namespace", "default"),
        name=revision["metadata"]["name"],
        service=labels.get("serving.knative.dev/service", ""),
        timeout_s=timeout,
        response_start_timeout_s=float(spec.get("responseStartTimeoutSeconds") or timeout),
        idle_timeout_s=float(spec.get("idleTimeoutSeconds") or 0),
        container_concurrency=int(spec.get("containerConcurrency") or 0),
        endpoints=endpoints,
        failure=failure,
    )


def route_entry(
    route: Obj, hosts: Iterable[tuple[str, str | None]]
) -> tuple[RouteEntry | None, tuple[tuple[str, str], ...]]:
    """`route`'s entry as its status says (the last fully resolved traffic) with the `hosts` it
    owns (host, tag or None), and the revisions it references; (None, ()) when it has no
    resolved traffic or no host."""
    hosts = list(hosts)
    status_traffic = (route.get("status") or {}).get("traffic") or []
    if not status_traffic or not hosts:
        return None, ()
    ns = route["metadata"].get("namespace", "default")
    split: dict[str, int] = {}
    tags: dict[str, str] = {}
    needed: dict[tuple[str, str], None] = {}
    for t in status_traffic:
        rev = t.get("revisionName")
        if not rev:
            continue
        split[rev] = split.get(rev, 0) + int(t.get("percent") or 0)
        if t.get("tag"):
            tags[t["tag"]] = rev
        needed[(ns, rev)] = None
    default_hosts = tuple(sorted(h for h, tag in hosts if tag is None))
    tag_targets = tuple(
        TagTarget(tag, tags[tag], tuple(sorted(h for h, t in hosts if t == tag)))
        for tag in sorted(tags)
        if any(t == tag for _, t in hosts)
    )
    entry = RouteEntry(
        namespace=ns,
        name=route["metadata"]["name"],
        hosts=default_hosts,
        traffic=tuple(TrafficSplit(rev, pct) for rev, pct in sorted(split.items())),
        tags=tag_targets,
        cluster_local=is_cluster_local(route),
    )
    return entry, tuple(needed)


def build_snapshot(
    routes: Iterable[Obj],
    revisions: Mapping[tuple[str, str], Obj],
    endpoints: Mapping[tuple[str, str], tuple[Endpoint, ...]],
    plan: HostPlan,
    version: int,
    failures: Mapping[tuple[str, str], str] | None = None,
) -> Snapshot:
    """Routes as their status says (the last fully resolved traffic), with their hosts from
    `plan`; every revision a route references, with its ready, non-draining endpoints.
    (`controller.snapshot_builder` gives the same, rebuilding only what changed.)"""
    entries: list[RouteEntry] = []
    needed: set[tuple[str, str]] = set()
    by_route: dict[tuple[str, str], list[tuple[str, str | None]]] = {}
    for host, (ns, name, tag) in plan.owners.items():
        by_route.setdefault((ns, name), []).append((host, tag))
    for r in sorted(routes, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
        key = (r["metadata"].get("namespace", "default"), r["metadata"]["name"])
        entry, refs = route_entry(r, by_route.get(key, ()))
        if entry is not None:
            entries.append(entry)
            needed.update(refs)
    targets = tuple(
        revision_target(revisions[k], endpoints.get(k, ()), (failures or {}).get(k, ""))
        for k in sorted(needed)
        if k in revisions
    )
    return Snapshot(version=version, routes=tuple(entries), revisions=targets)
