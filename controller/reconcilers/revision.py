"""Revision reconciler: snapshots the image, keeps one replica while routed, reports health."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import shutil
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

from controller.api.autoscaling import parse_duration
from controller.api.naming import (
    ROUTING_STATE_ACTIVE,
    ROUTING_STATE_LABEL,
    ROUTING_STATE_MODIFIED_ANNOTATION,
    ROUTING_STATE_PENDING,
    ROUTING_STATE_RESERVE,
)
from controller.autoscaling.kpa import Decision
from controller.reconcilers.children import write_status
from controller.reconcilers.conditions import get_condition, roll_up, set_condition
from controller.reconcilers.context import (
    CONFIGURATIONS,
    LABEL_CONFIGURATION,
    REVISIONS,
    ROUTES,
    Key,
    Obj,
    ReconcilerContext,
    ServingContext,
)
from controller.reconcilers.replica_spec import (
    NotRunnable,
    is_local_image,
    local_image_path,
    procfile_web,
    replica_spec,
)
from controller.reconcilers.watches import (
    Change,
    Reconciler,
    Watch,
    all_in_namespace,
    itself_even_deleted,
    matching,
)
from controller.runtime.base import ReplicaStatus
from flint_common.timefmt import rfc3339

log = logging.getLogger("flint.revision")

PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"


def referenced(
    routes: list[Obj],
    configuration: Obj | None,
    namespace: str,
    name: str,
) -> bool:
    """A Route sends traffic to (or tags) the revision: by name in spec or status (0 % tags
    included), or through a `latestRevision` target on its configuration while it is that
    configuration's latest created or latest ready revision (so the newest revision keeps its
    replica while the route catches up, and the previous one until the route has moved)."""
    cfg_name = configuration["metadata"]["name"] if configuration else None
    cfg_status = (configuration or {}).get("status") or {}
    latest = {cfg_status.get("latestCreatedRevisionName"), cfg_status.get("latestReadyRevisionName")}
    for r in routes:
        if r["metadata"].get("namespace", "default") != namespace:
            continue
        for t in (r.get("status") or {}).get("traffic") or []:
            if t.get("revisionName") == name:
                return True
        for t in (r.get("spec") or {}).get("traffic") or []:
            if t.get("revisionName") == name:
                return True
            if (
                cfg_name is not None
                and t.get("configurationName") == cfg_name
                and t.get("latestRevision", True)
                and name in latest
            ):
                return True
    return False


def _created_at(rev: Obj) -> float:
    ts = rev["metadata"].get("creationTimestamp")
    if not ts:
        return 0.0
    return datetime.fromisoformat(str(ts).replace("Z", "+00:00")).timestamp()


def _deadline_s(rev: Obj, default: float) -> float:
    """`serving.knative.dev/progress-deadline` as a Go duration (`90s`, `1m30s`), else `default`."""
    raw = (rev["metadata"].get("annotations") or {}).get(PROGRESS_DEADLINE_ANNOTATION)
    if not raw:
        return default
    text = str(raw).strip()
    parsed = parse_duration(text)
    if parsed is not None:
        return float(parsed)
    try:
        return float(text)  # bare seconds, as older Flint manifests wrote it
    except ValueError:
        return default


def ever_ready(rev: Obj) -> bool:
    """Reached readiness once (Knative: initial scale achieved): ResourcesAvailable stays True."""
    status = rev.get("status") or {}
    return (get_condition(status, "ResourcesAvailable") or {}).get("status") == "True"


def failed(rev: Obj) -> bool:
    c = get_condition(rev.get("status") or {}, "Ready") or {}
    return c.get("status") == "False" and c.get("reason") in (
        "ProgressDeadlineExceeded", "ImageNotLocal", "ImageNotFound", "NotRunnable",
        "ImageSnapshotFailed",
    )


def health_conditions(
    status: Obj, replicas: list[ReplicaStatus], desired: int, *, now: float
) -> None:
    """ResourcesAvailable / ContainerHealthy / Ready from the replicas (pure)."""
    ready = [r for r in replicas if r.state == "ready"]
    reached = ever_ready({"status": status})
    crashed = [r for r in replicas if r.state in ("crashed", "failed")]
    status["actualReplicas"] = len(ready)
    status["desiredReplicas"] = desired
    if ready:
        set_condition(status, "ResourcesAvailable", "True", now=now)
        set_condition(status, "ContainerHealthy", "True", now=now)
    elif crashed:
        r = crashed[0]
        code = r.last_exit_code
        set_condition(
            status, "ContainerHealthy", "False", "ExitCode" if code is not None else "Crashed",
            f"Container failed with: {r.message}".strip(), now=now,
        )
        if not reached:
            set_condition(status, "ResourcesAvailable", "Unknown", "Deploying",
                          "waiting for a replica to become ready", now=now)
    elif replicas:
        msg = next((r.message for r in replicas if r.message), "")
        if not reached:
            set_condition(status, "ResourcesAvailable", "Unknown", "Deploying",
                          msg or "waiting for a replica to become ready", now=now)
            set_condition(status, "ContainerHealthy", "Unknown", "Deploying",
                          msg or "waiting for the container to pass its readiness probe", now=now)
    elif desired == 0 and reached:
        set_condition(status, "Active", "False", "NoTraffic",
                      "the revision is not routed, so it runs no replica", now=now)
    if ready:
        set_condition(status, "Active", "True", now=now)
    roll_up(status, ["ResourcesAvailable", "ContainerHealthy"], now=now)


@contextlib.asynccontextmanager
async def image_snapshot(ctx: ServingContext, rev: Obj, status: Obj, now: float) -> AsyncIterator[str | None]:
    """`snapshot_image`, with the snapshot it takes (or reuses) pinned against the artifact GC
    until the block ends: write the digest into the revision's status inside the block."""
    pinned: list[str] = []
    try:
        yield await snapshot_image(ctx, rev, status, now, pinned)
    finally:
        for digest in pinned:
            await asyncio.to_thread(ctx.artifacts.release, digest)


async def snapshot_image(
    ctx: ServingContext, rev: Obj, status: Obj, now: float, pinned: list[str]
) -> str | None:
    """Snapshot the image directory once; the digest lives in status.containerStatuses. The
    Configuration reconciler calls this as it creates the revision (so the revision is the folder
    as it was then); the revision reconciler again only if that was interrupted. A digest taken
    here is pinned in the artifact store and appended to `pinned` (see `image_snapshot`). On
    failure a `Ready=False` condition says why and None is returned."""
    container = ((rev.get("spec") or {}).get("containers") or [{}])[0]
    for cs in status.get("containerStatuses") or []:
        if cs.get("imageDigest"):
            return str(cs["imageDigest"])
    image = str(container.get("image", ""))
    if not is_local_image(image):
        set_condition(
            status, "Ready", "False", "ImageNotLocal",
            f'"{image}" is a registry image; the embedded engine runs local directories: set '
            "image to a directory path (relative paths in a manifest resolve against its folder)",
            now=now,
        )
        return None
    path = local_image_path(image)
    if not await asyncio.to_thread(path.is_dir):
        set_condition(status, "Ready", "False", "ImageNotFound",
                      f"image directory {path} does not exist", now=now)
        return None
    try:
        digest = await ctx.artifacts.asnapshot(path, pin=True)
        pinned.append(digest)
    except ValueError as exc:  # too large, or it would contain the state directory
        set_condition(status, "Ready", "False", "ImageSnapshotFailed", str(exc), now=now)
        return None
    status["containerStatuses"] = [
        {"name": container.get("name") or "user-container", "imageDigest": digest}
    ]
    return digest


def artifact_missing(status: Obj, image: str, digest: str, *, now: float) -> None:
    """The revision's snapshot is gone from the artifact store: Knative's ContainerMissing (pure)."""
    set_condition(
        status, "ContainerHealthy", "False", "ContainerMissing",
        f'Unable to fetch image "{image}": its snapshot {digest} is not in the artifact store '
        "(it was deleted); no replica can start. Change the template (or delete the revision) "
        "to snapshot the folder again",
        now=now,
    )
    roll_up(status, ["ResourcesAvailable", "ContainerHealthy"], now=now)


async def reconcile_revision(ctx: ServingContext, key: Key) -> float | None:
    ns, name = key
    rev_key = f"{ns}/{name}"
    rev = ctx.revisions.get(ns, name)
    replicas = [
        r for r in ctx.runtime.replicas(rev_key) if not ctx.publisher_is_draining(r.id)
    ]
    if rev is None:
        for r in replicas:
            ctx.drain(r.id)
        if ctx.runtime.replicas(rev_key):
            return 1.0  # clean up once the last replica has stopped
        await asyncio.to_thread(_forget_revision_files, ctx, ns, name)
        return None
    now = ctx.clock()
    status = copy.deepcopy(rev.get("status") or {})
    status["observedGeneration"] = rev["metadata"].get("generation", 1)
    labels = rev["metadata"].get("labels") or {}
    if failed(rev):
        for r in replicas:
            ctx.drain(r.id)
        await write_status(ctx, REVISIONS, rev, status)
        return None
    try:
        async with image_snapshot(ctx, rev, status, now) as digest:
            if digest is None:
                await write_status(ctx, REVISIONS, rev, status)
                return None
            if not await asyncio.to_thread(ctx.artifacts.exists, digest):
                container = ((rev.get("spec") or {}).get("containers") or [{}])[0]
                artifact_missing(status, str(container.get("image", "")), digest, now=now)
                await write_status(ctx, REVISIONS, rev, status)
                return None
            if not (rev.get("status") or {}).get("containerStatuses"):
                rev = await write_status(ctx, REVISIONS, rev, copy.deepcopy(status))  # record it
    except NotRunnable as exc:
        set_condition(status, "Ready", "False", "NotRunnable", str(exc), now=now)
        await write_status(ctx, REVISIONS, rev, status)
        return None

    cfg_name = labels.get("serving.knative.dev/configuration", "")
    routed = referenced(list(ctx.routes), ctx.configurations.get(ns, cfg_name), ns, name)
    rev = await label_routing_state(ctx, rev, routed, now)
    deadline = _created_at(rev) + _deadline_s(rev, ctx.settings.progress_deadline_s)
    if not ever_ready(dict(rev, status=status)) and now > deadline:
        for r in replicas:
            ctx.drain(r.id)
        set_condition(
            status, "Ready", "False", "ProgressDeadlineExceeded",
            f"Initial scale was never achieved: no replica became ready within "
            f"{_deadline_s(rev, ctx.settings.progress_deadline_s):g}s; "
            + (
                next((r.message for r in replicas if r.message), "")
                or "the app never passed its readiness probe (by default a TCP connect to $PORT)"
            ),
            now=now,
        )
        await write_status(ctx, REVISIONS, rev, status)
        return None
    desired = desired_replicas(
        routed, ever_ready(dict(rev, status=status)), ctx.desired_scale(rev_key)
    )

    if len(replicas) < desired:
        image_dir = await asyncio.to_thread(ctx.artifacts.materialise, digest, rev_key)
        try:
            procfile = await asyncio.to_thread(_read_procfile, image_dir)
            spec = replica_spec(rev, image_dir, procfile)
        except NotRunnable as exc:
            set_condition(status, "Ready", "False", "NotRunnable", str(exc), now=now)
            await write_status(ctx, REVISIONS, rev, status)
            return None
        started = await asyncio.gather(
            *(ctx.runtime.start_replica(spec) for _ in range(desired - len(replicas)))
        )
        replicas.extend(started)
        log.info(
            "started replicas revision=%s replicas=%s", rev_key, ",".join(r.id for r in started)
        )
    elif len(replicas) > desired:
        # Keep the best ones (ready first), drain the rest.
        ordered = sorted(replicas, key=lambda r: (r.state != "ready", r.id))
        for r in ordered[desired:]:
            ctx.drain(r.id)
        replicas = ordered[:desired]

    health_conditions(status, replicas, desired, now=now)
    clamp_condition(status, ctx.scale_decision(rev_key), now=now)
    await write_status(ctx, REVISIONS, rev, status)
    if not ever_ready(dict(rev, status=status)):
        return max(0.05, min(5.0, deadline - now + 0.01))
    return None


def desired_replicas(routed: bool, was_ready: bool, autoscaled: int | None) -> int:
    """Replicas the revision should run (pure): none once it has been ready and nothing routes
    to it; otherwise the autoscaler's decision (at least one until it has first been ready, so
    a new revision always starts); one when the autoscaler does not drive it."""
    if not routed and was_ready:
        return 0
    if autoscaled is None:
        return 1
    return autoscaled if was_ready else max(1, autoscaled)


BUDGET_CLAMPS = {"max-scale-limit": "MaxScaleLimit", "max-replicas-per-machine": "MachineBudget"}


def clamp_condition(status: Obj, decision: Decision | None, *, now: float) -> None:
    """`ScaleClamped` (informational, not part of Ready): True with the reason when the
    autoscaler wanted more replicas than max-scale-limit or the machine's budget allow (pure)."""
    if decision is not None and decision.clamped_by in BUDGET_CLAMPS:
        set_condition(
            status, "ScaleClamped", "True", BUDGET_CLAMPS[decision.clamped_by],
            f"the autoscaler wanted {decision.unclamped_scale} replicas; {decision.clamped_by} "
            f"allows {decision.desired_scale}",
            now=now,
        )
    elif get_condition(status, "ScaleClamped") is not None:
        set_condition(status, "ScaleClamped", "False", now=now)


def routing_state(current: str | None, routed: bool) -> str:
    """Knative's `serving.knative.dev/routingState`: pending until first routed, then active
    while routed and reserve after (pure)."""
    if routed:
        return ROUTING_STATE_ACTIVE
    if current in (ROUTING_STATE_ACTIVE, ROUTING_STATE_RESERVE):
        return ROUTING_STATE_RESERVE
    return ROUTING_STATE_PENDING


async def label_routing_state(ctx: ReconcilerContext, rev: Obj, routed: bool, now: float) -> Obj:
    """Keep the routingState label and its routingStateModified annotation current (the
    revision GC reads the last time a revision was active from them)."""
    labels = rev["metadata"].get("labels") or {}
    state = routing_state(labels.get(ROUTING_STATE_LABEL), routed)
    if labels.get(ROUTING_STATE_LABEL) == state:
        return rev
    new = copy.deepcopy(rev)
    new["metadata"].setdefault("labels", {})[ROUTING_STATE_LABEL] = state
    new["metadata"].setdefault("annotations", {})[ROUTING_STATE_MODIFIED_ANNOTATION] = rfc3339(now)
    return await ctx.store.update(REVISIONS, new)


def _forget_revision_files(ctx: ServingContext, ns: str, name: str) -> None:
    """A deleted revision's logs go, and artifacts no remaining revision uses (blocking)."""
    shutil.rmtree(ctx.settings.state_dir / "logs" / ns / name, ignore_errors=True)
    keep = {
        str(cs["imageDigest"])
        for r in ctx.revisions
        for cs in (r.get("status") or {}).get("containerStatuses") or []
        if cs.get("imageDigest")
    }
    removed = ctx.artifacts.gc(keep, min_age_s=60.0)
    log.info("forgot revision %s/%s: logs removed, artifacts collected=%d", ns, name, len(removed))


def _read_procfile(image_dir: Path) -> str | None:
    path = image_dir / "Procfile"
    if not path.is_file():
        return None
    return procfile_web(path.read_text(encoding="utf-8", errors="replace"))


def _of_configuration(rev: Obj, change: Change) -> bool:
    return (rev["metadata"].get("labels") or {}).get(LABEL_CONFIGURATION) == change.name


WATCHES = (
    Watch(REVISIONS, itself_even_deleted),  # a deleted revision's replicas are stopped
    Watch(CONFIGURATIONS, matching(REVISIONS, _of_configuration)),  # which one is the latest
    # Traffic names revisions, and the latest-ready rule picks one: every revision of the
    # namespace may have gained or lost a route (an unchanged status is not written again).
    Watch(ROUTES, all_in_namespace(REVISIONS)),
)
RECONCILER = Reconciler(REVISIONS, reconcile_revision, WATCHES)
