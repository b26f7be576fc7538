"""Route reconciler: resolves traffic targets to revisions, publishes URLs, waits for the gateways."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

from controller.api.naming import route_host, tag_host
from controller.api.naming import url as url_for
from controller.api.serving_annotations import rollout_duration_s as rollout_duration
from controller.reconcilers import rollout
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import get_condition, roll_up, set_condition
from controller.reconcilers.context import (
    CONFIGURATIONS,
    REVISIONS,
    ROUTES,
    Key,
    Obj,
    ServingBase,
)
from controller.reconcilers.watches import (
    ADDED,
    DELETED,
    Change,
    Reconciler,
    Watch,
    all_in_namespace,
    every,
    itself,
    matching,
    on,
)
from controller.routing import is_cluster_local
from flint_common.snapshot import Snapshot

log = logging.getLogger("flint.route")

Lookup = Callable[[str, str], Obj | None]


@dataclass(frozen=True)
class Resolution:
    traffic: list[Obj] | None
    """status.traffic when every target resolved, else None (the last good one is kept)."""
    status: str
    reason: str = ""
    message: str = ""


def _ready(obj: Obj) -> dict[str, str]:
    c = get_condition(obj.get("status") or {}, "Ready")
    return c if c is not None else {"status": "Unknown"}


def resolve_traffic(route: Obj, configurations: Lookup, revisions: Lookup) -> Resolution:
    """Turn spec.traffic into concrete revisions (pure). `latestRevision` targets follow the
    configuration's latest *ready* revision."""
    ns = route["metadata"].get("namespace", "default")
    resolved: list[Obj] = []
    pending: Resolution | None = None
    for target in (route.get("spec") or {}).get("traffic") or []:
        out: Obj = {}
        if target.get("tag"):
            out["tag"] = target["tag"]
        cfg_name = target.get("configurationName")
        rev_name = target.get("revisionName")
        if target.get("latestRevision", not rev_name) and cfg_name:
            cfg = configurations(ns, cfg_name)
            if cfg is None:
                return Resolution(
                    None, "False", "ConfigurationMissing",
                    f'Configuration "{cfg_name}" referenced in traffic not found',
                )
            rev_name = (cfg.get("status") or {}).get("latestReadyRevisionName")
            if not rev_name:
                cond = _ready(cfg)
                if cond["status"] == "False":
                    return Resolution(
                        None, "False", "RevisionMissing",
                        f'Configuration "{cfg_name}" does not have any ready Revision: '
                        f'{cond.get("message", "")}',
                    )
                pending = pending or Resolution(
                    None, "Unknown", "RevisionMissing",
                    f'Configuration "{cfg_name}" does not have any ready Revision yet',
                )
                continue
            out["latestRevision"] = True
        else:
            if not rev_name:
                return Resolution(None, "False", "RevisionMissing", "traffic target names no revision")
            rev = revisions(ns, rev_name)
            if rev is None:
                return Resolution(
                    None, "False", "RevisionMissing",
                    f'Revision "{rev_name}" referenced in traffic not found',
                )
            cond = _ready(rev)
            if cond["status"] == "False":
                return Resolution(
                    None, "False", "RevisionFailed",
                    f'Revision "{rev_name}" failed: {cond.get("message", "")}',
                )
            if cond["status"] != "True":
                pending = pending or Resolution(
                    None, "Unknown", "RevisionMissing",
                    f'Revision "{rev_name}" is not ready yet',
                )
                continue
            out["latestRevision"] = False
        out["revisionName"] = rev_name
        out["percent"] = int(target.get("percent") or 0)
        resolved.append(out)
    if pending is not None:
        return pending
    return Resolution(resolved, "True")


def _with_urls(traffic: list[Obj], name: str, ns: str, domain: str, port: int) -> list[Obj]:
    out = []
    for t in traffic:
        t = dict(t)
        if t.get("tag"):
            t["url"] = url_for(tag_host(t["tag"], name, ns, domain), port)
        out.append(t)
    return out


def published_in(snapshot: Snapshot, route: Obj) -> bool:
    """`snapshot` carries this route's status.traffic and its visibility (pure)."""
    ns, name = route["metadata"].get("namespace", "default"), route["metadata"]["name"]
    want: dict[str, int] = {}
    for t in (route.get("status") or {}).get("traffic") or []:
        want[t["revisionName"]] = want.get(t["revisionName"], 0) + int(t.get("percent") or 0)
    for entry in snapshot.routes:
        if entry.namespace == ns and entry.name == name:
            return (
                {s.revision: s.percent for s in entry.traffic} == want
                and entry.cluster_local == is_cluster_local(route)
            )
    return False


def rollout_duration_s(route: Obj, default_s: float) -> float:
    """`serving.knative.dev/rollout-duration` on the route (a Service's propagates), else the
    global setting (Knative's config-network `rollout-duration`)."""
    own = rollout_duration(route["metadata"].get("annotations"))
    return default_s if own is None else own


def _roll_out(
    ctx: ServingBase, route: Obj, resolved: list[Obj], status: Obj, now: float
) -> tuple[list[Obj], rollout.Rollout]:
    """status.traffic with `latestRevision` targets moved over the rollout duration, and the
    rollout state kept in status.annotations (Knative keeps it on the route's Ingress)."""
    configs = [
        t.get("configurationName") if r.get("latestRevision") else None
        for t, r in zip((route.get("spec") or {}).get("traffic") or [], resolved, strict=True)
    ]
    goal = rollout.baseline([
        (cfg, str(r["revisionName"]), int(r.get("percent") or 0))
        for r, cfg in zip(resolved, configs, strict=True) if cfg and not r.get("tag")
    ])
    duration = rollout_duration_s(route, ctx.settings.network.rollout_duration_s)
    effective = goal
    if duration > 0:
        prev = rollout.decode((status.get("annotations") or {}).get(rollout.STATE_ANNOTATION))
        if prev is not None and not prev.done and published_in(ctx.hub.snapshot, route) \
                and ctx.hub.acked_by_all(ctx.hub.version):
            prev = rollout.observe_ready(prev, now, duration)
        effective = rollout.step(goal, prev, now)
    annotations = dict(status.get("annotations") or {})
    annotations[rollout.STATE_ANNOTATION] = effective.encode()
    status["annotations"] = annotations
    return rollout.status_traffic(resolved, configs, effective), effective


async def reconcile_route(ctx: ServingBase, key: Key) -> float | None:
    route = ctx.routes.get(*key)
    if route is None:
        ctx.snapshot_dirty()
        return None
    now = ctx.clock()
    ns, name = key
    s = ctx.settings
    status = copy.deepcopy(route.get("status") or {})
    status["observedGeneration"] = route["metadata"].get("generation", 1)
    domain = s.domains.of_route(route)
    status["url"] = url_for(route_host(name, ns, domain), s.gateway_port)
    status["address"] = {"url": status["url"]}
    res = resolve_traffic(route, ctx.configurations.get, ctx.revisions.get)
    rolling: rollout.Rollout | None = None
    if res.traffic is not None:
        traffic, rolling = _roll_out(ctx, route, res.traffic, status, now)
        status["traffic"] = _with_urls(traffic, name, ns, domain, s.gateway_port)
    set_condition(status, "AllTrafficAssigned", res.status, res.reason, res.message, now=now)  # type: ignore[arg-type]

    conflict = ctx.hosts.plan(ctx.routes, s.domains.of_route).conflicts.get(key)
    requeue: float | None = None
    if rolling is not None and (due := rolling.next_step_time()) is not None:
        requeue = max(0.05, due - now)
    if conflict:
        set_condition(status, "IngressReady", "False", "HostConflict", conflict, now=now)
    elif rolling is not None and not rolling.done:
        set_condition(status, "IngressReady", "Unknown", rollout.IN_PROGRESS_REASON,
                      rollout.IN_PROGRESS_MESSAGE, now=now)
        if not published_in(ctx.hub.snapshot, dict(route, status=status)):
            ctx.snapshot_dirty()
    elif not status.get("traffic"):
        set_condition(
            status, "IngressReady", "Unknown", "NoTraffic", "no traffic target resolved yet",
            now=now,
        )
    else:
        candidate = dict(route, status=status)
        if published_in(ctx.hub.snapshot, candidate) and ctx.hub.acked_by_all(ctx.hub.version):
            if ctx.hub.connected():
                set_condition(status, "IngressReady", "True", now=now)
            else:
                set_condition(
                    status, "IngressReady", "Unknown", "NoGateway",
                    "no gateway worker is connected to the controller", now=now,
                )
                requeue = 1.0
        else:
            set_condition(
                status, "IngressReady", "Unknown", "Programming",
                "waiting for every gateway worker to apply the route", now=now,
            )
            ctx.snapshot_dirty()
    if ctx.route_services is not None:  # the Kubernetes engine: reachable inside the cluster too
        try:
            await ctx.route_services(dict(route, status=status))
        except Exception as exc:  # the API server refused or is away: the gateway still routes
            log.warning("event=route_services_failed route=%s/%s error=%s", ns, name, exc)
            requeue = min(requeue or 5.0, 5.0)
    roll_up(status, ["AllTrafficAssigned", "IngressReady"], now=now)
    await write_status(ctx, ROUTES, route, status)
    return requeue


def _sends_traffic_to(route: Obj, change: Change) -> bool:
    """The route names the changed configuration in its traffic."""
    return any(t.get("configurationName") == change.name
               for t in (route.get("spec") or {}).get("traffic") or [])


WATCHES = (
    Watch(ROUTES, itself),
    Watch(ROUTES, on((ADDED, DELETED), every(ROUTES))),  # host conflicts may appear or clear
    Watch(CONFIGURATIONS, matching(ROUTES, _sends_traffic_to)),
    Watch(REVISIONS, all_in_namespace(ROUTES)),  # a revision became ready, or went
)
RECONCILER = Reconciler(ROUTES, reconcile_route, WATCHES)
