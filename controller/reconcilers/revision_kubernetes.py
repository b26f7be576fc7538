"""Revision reconciler on the Kubernetes engine: the revision runs as its Deployment (scaled by
whether it is routed and by the autoscaler, or by an HPA for the HPA class) and its private
Service (`KubernetesWorkloads`); its status comes from what the cluster says back — Knative's
`ResourcesAvailable` and `ContainerHealthy` from the Deployment and a pod, `actualReplicas` from
the ready endpoints, `Active` from whether any replica serves.

What the embedded revision reconciler does for local processes (image snapshots, replica starts
and drains, the progress deadline measured here) the cluster does: the Deployment's
`progressDeadlineSeconds` bounds a rollout, pods are started and stopped by its scale, deleting a
Revision deletes its Deployment and Service through their owner references.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from controller.api import autoscaling as ak
from controller.autoscaling.annotations import effective
from controller.autoscaling.kpa import Decision
from controller.gatewayhub import GatewayHub
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import roll_up, set_condition
from controller.reconcilers.context import (
    CONFIGURATIONS,
    LABEL_CONFIGURATION,
    REVISIONS,
    ROUTES,
    Key,
    Obj,
    ServingBase,
)
from controller.reconcilers.revision import (
    clamp_condition,
    desired_replicas,
    ever_ready,
    label_routing_state,
    referenced,
)
from controller.reconcilers.watches import Change, Reconciler, Watch, all_in_namespace, itself, matching
from controller.runtime.kubernetes import KubernetesWorkloads, NotOwned

__all__ = ["RECONCILER", "KubeServingContext", "reconcile_revision_kubernetes"]

log = logging.getLogger("flint.reconcilers.revision")

NOT_READY_REQUEUE_S = 2.0
"""How soon a revision not Ready yet is looked at again (the Deployment and its pods progress
without a change of the Revision itself)."""
HELD_REQUEUE_S = 1.0
"""How soon a revision held at its scale for the gateways (`gateways_let_go`) is looked at again."""


def gateways_let_go(hub: GatewayHub, rev_key: str, routed: bool) -> bool:
    """Whether the revision's last pods may go (to zero replicas): some gateway is linked, every
    linked one acked the current snapshot (none while a new leader's gateways rejoin), and an
    unrouted revision is out of that snapshot. A pod's preStop sleep covers the propagation of a
    snapshot to linked gateways; a gateway that is not linked serves its last snapshot, which
    may still send the revision requests, so its pods stay until the gateways are back."""
    if not hub.connected() or not hub.acked_by_all(hub.version):
        return False
    return routed or all(t.key != rev_key for t in hub.snapshot.revisions)


@dataclass(kw_only=True)
class KubeServingContext(ServingBase):
    """The Kubernetes engine's serving reconcilers': the revisions' workloads in the cluster."""

    workloads: KubernetesWorkloads
    desired_scale: Callable[[str], int | None]
    """The autoscaler's desired replicas for a revision key; None: not decided by the KPA."""
    scale_decision: Callable[[str], Decision | None] = field(default=lambda _key: None)
    held_since: dict[str, float] = field(default_factory=dict)
    """Revision key → when its last pods were first held for the gateways (`gateways_let_go`):
    held at most `drain_timeout_s`, as a drain is (a gateway that never links again must not
    keep them forever)."""


async def reconcile_revision_kubernetes(ctx: KubeServingContext, key: Key) -> float | None:
    ns, name = key
    rev = ctx.revisions.get(ns, name)
    if rev is None:
        ctx.held_since.pop(f"{ns}/{name}", None)
        return None  # its Deployment and Service go by their owner references
    now = ctx.clock()
    status = copy.deepcopy(rev.get("status") or {})
    status["observedGeneration"] = rev["metadata"].get("generation", 1)
    labels = rev["metadata"].get("labels") or {}
    routed = referenced(list(ctx.routes), ctx.configurations.get(ns, labels.get(LABEL_CONFIGURATION, "")),
                        ns, name)
    rev = await label_routing_state(ctx, rev, routed, now)
    rev_key = f"{ns}/{name}"
    scaling = effective(ctx.settings.autoscaler, rev["metadata"].get("annotations") or {},
                        int((rev.get("spec") or {}).get("containerConcurrency") or 0))
    was_ready = ever_ready(dict(rev, status=status))
    desired = desired_replicas(routed, was_ready, ctx.desired_scale(rev_key))
    hpa = scaling.cls == ak.HPA and (routed or not was_ready)
    held = (desired == 0 and bool(ctx.workloads.endpoints(ns, name))
            and not gateways_let_go(ctx.hub, rev_key, routed))
    if not held:
        ctx.held_since.pop(rev_key, None)
    elif now - ctx.held_since.setdefault(rev_key, now) > ctx.settings.drain_timeout_s:
        # kept until the pods are gone (then `held` is False and it goes), so the hold is not
        # started again at the next reconcile
        log.warning("event=scale_down_unheld revision=%s held_s=%.0f: no gateway acked in time; "
                    "scaling to zero anyway", rev_key, now - ctx.held_since[rev_key])
        held = False
    try:
        dep = await ctx.workloads.ensure(rev, None if hpa or held else desired)
        if hpa:
            await ctx.workloads.ensure_hpa(rev, scaling)
        else:
            await ctx.workloads.delete_hpa(rev)
    except NotOwned as exc:
        set_condition(status, "ResourcesAvailable", "False", "NotOwned", str(exc), now=now)
        roll_up(status, ["ResourcesAvailable", "ContainerHealthy"], now=now)
        await write_status(ctx, REVISIONS, rev, status)
        return None
    for type_, c in (await ctx.workloads.conditions(rev, dep)).items():
        set_condition(status, type_, c.status, c.reason, c.message, now=now)
    ready = [e for e in ctx.workloads.endpoints(ns, name) if e.state == "ready"]
    status["actualReplicas"] = len(ready)
    status["desiredReplicas"] = int((dep.get("spec") or {}).get("replicas") or 0)
    if ready:
        set_condition(status, "Active", "True", now=now)
    elif status["desiredReplicas"] == 0 and ever_ready(dict(rev, status=status)):
        set_condition(status, "Active", "False", "NoTraffic",
                      "the revision is not routed, so it runs no replica", now=now)
    clamp_condition(status, ctx.scale_decision(rev_key), now=now)
    roll_up(status, ["ResourcesAvailable", "ContainerHealthy"], now=now)
    await write_status(ctx, REVISIONS, rev, status)
    ready_now = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
    if held:
        return HELD_REQUEUE_S
    return None if ready_now else NOT_READY_REQUEUE_S


def _of_configuration(rev: Obj, change: Change) -> bool:
    return (rev["metadata"].get("labels") or {}).get(LABEL_CONFIGURATION) == change.name


RECONCILER = Reconciler(REVISIONS, reconcile_revision_kubernetes, (
    Watch(REVISIONS, itself),  # a deleted one's workload goes by owner references
    Watch(CONFIGURATIONS, matching(REVISIONS, _of_configuration)),
    Watch(ROUTES, all_in_namespace(REVISIONS)),  # routed or not any more
))
"""The Kubernetes engine's revision reconciler, with the embedded one's watches but for deleted
revisions (their Deployments and Services go by their owner references)."""
