"""Configuration reconciler: stamps one immutable Revision per generation and tracks the latest ready one."""

from __future__ import annotations

import contextlib
import copy
import logging

from controller.api.serving import revision_from_configuration
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import get_condition, set_condition
from controller.reconcilers.context import (
    CONFIGURATIONS,
    LABEL_CONFIGURATION,
    LABEL_CONFIGURATION_GENERATION,
    REVISIONS,
    Key,
    Obj,
    ServingBase,
    ServingContext,
    owned_by,
)
from controller.reconcilers.gc import collectable
from controller.reconcilers.replica_spec import NotRunnable
from controller.reconcilers.revision import image_snapshot, referenced
from controller.reconcilers.watches import Reconciler, Watch, itself, named_by_label
from controller.store.base import AlreadyExists, NotFound

log = logging.getLogger("flint.configuration")


def _generation(rev: Obj) -> int:
    labels = rev["metadata"].get("labels") or {}
    try:
        return int(labels.get(LABEL_CONFIGURATION_GENERATION, 0))
    except ValueError:
        return 0


def configuration_status(cfg: Obj, latest: Obj | None, revisions: list[Obj], *, now: float) -> Obj:
    """Status from the latest created revision and the newest Ready one (pure)."""
    status = copy.deepcopy(cfg.get("status") or {})
    status["observedGeneration"] = cfg["metadata"].get("generation", 1)
    ready = latest_ready_revision(cfg, latest, revisions)
    if ready is not None:
        status["latestReadyRevisionName"] = ready
    if latest is None:
        set_condition(status, "Ready", "Unknown", "Deploying", "creating the revision", now=now)
        return status
    name = latest["metadata"]["name"]
    status["latestCreatedRevisionName"] = name
    cond = get_condition(latest.get("status") or {}, "Ready") or {"status": "Unknown"}
    if cond["status"] == "True":
        set_condition(status, "Ready", "True", now=now)
    elif cond["status"] == "False":
        set_condition(
            status, "Ready", "False", "RevisionFailed",
            f'Revision "{name}" failed with message: {cond.get("message", "")}',
            now=now,
        )
    else:
        set_condition(
            status, "Ready", "Unknown", cond.get("reason") or "Deploying",
            cond.get("message") or f'waiting for Revision "{name}" to become ready',
            now=now,
        )
    return status


def latest_ready_revision(cfg: Obj, latest: Obj | None, revisions: list[Obj]) -> str | None:
    """Knative's latestReadyRevisionName (pure): the first Ready revision among those from the
    current latest ready one's generation up to the configuration's (plus the latest created one's
    when the template names it), the template's named revision first, then newest generation
    first. So rolling a template back to a named revision's (same name, same spec) makes that
    revision the latest ready again; without a Ready candidate the current one stays."""
    st = cfg.get("status") or {}
    current = st.get("latestReadyRevisionName")
    template = (cfg.get("spec") or {}).get("template") or {}
    byo = (template.get("metadata") or {}).get("name")
    candidates = revisions
    lrr = next((r for r in revisions if r["metadata"]["name"] == current), None)
    if lrr is not None:
        top = int(cfg["metadata"].get("generation", 1))
        generations = set(range(_generation(lrr), top + 1))
        if byo and latest is not None:
            generations.add(_generation(latest))
        candidates = [r for r in revisions if _generation(r) in generations]
    ordered = sorted(candidates, key=lambda r: (
        r["metadata"]["name"] != byo, -_generation(r), r["metadata"]["name"]))
    first = next((r for r in ordered if _is_ready(r)), None)
    return first["metadata"]["name"] if first is not None else current


def _is_ready(rev: Obj) -> bool:
    c = get_condition(rev.get("status") or {}, "Ready")
    return c is not None and c.get("status") == "True"


async def reconcile_configuration(ctx: ServingBase, key: Key) -> float | None:
    cfg = ctx.configurations.get(*key)
    if cfg is None:
        return None
    now = ctx.clock()
    desired = revision_from_configuration(cfg)
    ns, rev_name = key[0], desired["metadata"]["name"]
    latest = ctx.revisions.get(ns, rev_name)
    if latest is None:
        latest = await _create_revision(ctx, desired, now)
    if not owned_by(latest, cfg) or latest.get("spec") != desired.get("spec"):
        status = copy.deepcopy(cfg.get("status") or {})
        status["observedGeneration"] = cfg["metadata"].get("generation", 1)
        set_condition(
            status, "Ready", "False", "RevisionNameTaken",
            f'Revision "{rev_name}" already exists with a different spec; a changed template '
            "needs a new spec.template.metadata.name (or none, to let Flint name it)",
            now=now,
        )
        await write_status(ctx, CONFIGURATIONS, cfg, status)
        return None
    mine = [
        r for r in ctx.revisions.list(ns)
        if (r["metadata"].get("labels") or {}).get(LABEL_CONFIGURATION) == key[1]
        and owned_by(r, cfg)
    ]
    cfg = await write_status(ctx, CONFIGURATIONS, cfg, configuration_status(cfg, latest, mine, now=now))
    await collect_revisions(ctx, cfg, mine, now)
    return None


async def _create_revision(ctx: ServingBase, desired: Obj, now: float) -> Obj:
    """Create the revision; on the embedded engine with its image snapshotted now (the folder
    as it is when it is created), the snapshot pinned against the artifact GC until its digest
    is stored. On Kubernetes an image is the registry's: nothing to snapshot."""
    if not isinstance(ctx, ServingContext):
        return await _store_revision(ctx, desired, {})
    image_status: Obj = {}
    try:
        async with image_snapshot(ctx, desired, image_status, now):
            return await _store_revision(ctx, desired, image_status)
    except NotRunnable:  # raised before anything is pinned; the revision reconciler reports it
        return await _store_revision(ctx, desired, {})


async def _store_revision(ctx: ServingBase, desired: Obj, image_status: Obj) -> Obj:
    try:
        latest = await ctx.store.create(REVISIONS, desired)
    except AlreadyExists:
        meta = desired["metadata"]
        return await ctx.store.get(REVISIONS, meta.get("namespace", "default"), meta["name"])
    if image_status.get("containerStatuses"):
        latest = await ctx.store.update_status(
            REVISIONS, dict(latest, status={"containerStatuses": image_status["containerStatuses"]})
        )
    return latest


async def collect_revisions(ctx: ServingBase, cfg: Obj, mine: list[Obj], now: float) -> None:
    """Delete the configuration's old revisions that Knative's GC rules let go: never the latest
    created or ready one, never one a Route references."""
    ns = cfg["metadata"].get("namespace", "default")
    st = cfg.get("status") or {}
    keep = {st.get("latestCreatedRevisionName"), st.get("latestReadyRevisionName")} - {None}
    routes = list(ctx.routes)
    keep |= {r["metadata"]["name"] for r in mine if referenced(routes, cfg, ns, r["metadata"]["name"])}
    for name in collectable(mine, {str(k) for k in keep}, ctx.settings.gc, now):
        log.info("collecting revision %s/%s (Knative GC rules)", ns, name)
        with contextlib.suppress(NotFound):
            await ctx.store.delete(REVISIONS, ns, name)


WATCHES = (
    Watch(CONFIGURATIONS, itself),
    Watch(REVISIONS, named_by_label(LABEL_CONFIGURATION)),  # its revisions, by their label
)
RECONCILER = Reconciler(CONFIGURATIONS, reconcile_configuration, WATCHES)
