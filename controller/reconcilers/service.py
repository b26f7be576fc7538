"""Service reconciler: owns one Configuration and one Route and mirrors their status."""

from __future__ import annotations

import copy

from controller.api.serving import configuration_from_service, route_from_service
from controller.reconcilers.children import NotOwned, ensure_child, write_status
from controller.reconcilers.conditions import get_condition, roll_up, set_condition
from controller.reconcilers.context import (
    CONFIGURATIONS,
    LABEL_SERVICE,
    ROUTES,
    SERVICES,
    Key,
    Obj,
    ServingBase,
)
from controller.reconcilers.watches import Reconciler, Watch, itself, named_by_label


def _mirror(status: Obj, type_: str, child: Obj | None, what: str, *, now: float) -> None:
    if child is None:
        set_condition(status, type_, "Unknown", "Creating", f"waiting for the {what}", now=now)
        return
    meta, cstatus = child["metadata"], child.get("status") or {}
    if cstatus.get("observedGeneration") != meta.get("generation"):
        set_condition(
            status, type_, "Unknown", "OutOfDate",
            f'{what} "{meta["name"]}" has not yet observed generation {meta.get("generation")}',
            now=now,
        )
        return
    ready = get_condition(cstatus, "Ready") or {"status": "Unknown"}
    set_condition(
        status, type_, ready["status"], ready.get("reason", ""), ready.get("message", ""),
        now=now,
    )


def service_status(svc: Obj, cfg: Obj | None, route: Obj | None, *, now: float) -> Obj:
    """The Service's status from its children's (pure)."""
    status = copy.deepcopy(svc.get("status") or {})
    status["observedGeneration"] = svc["metadata"].get("generation", 1)
    _mirror(status, "ConfigurationsReady", cfg, "Configuration", now=now)
    _mirror(status, "RoutesReady", route, "Route", now=now)
    roll_up(status, ["ConfigurationsReady", "RoutesReady"], now=now)
    cstatus = (cfg or {}).get("status") or {}
    for field in ("latestCreatedRevisionName", "latestReadyRevisionName"):
        if cstatus.get(field):
            status[field] = cstatus[field]
    rstatus = (route or {}).get("status") or {}
    for field in ("url", "address", "traffic"):
        if rstatus.get(field) is not None:
            status[field] = rstatus[field]
    return status


async def reconcile_service(ctx: ServingBase, key: Key) -> float | None:
    svc = ctx.services.get(*key)
    if svc is None:
        return None
    now = ctx.clock()
    try:
        cfg = await ensure_child(
            ctx, CONFIGURATIONS, ctx.configurations, svc, configuration_from_service(svc)
        )
        route = await ensure_child(ctx, ROUTES, ctx.routes, svc, route_from_service(svc))
    except NotOwned as exc:
        status = copy.deepcopy(svc.get("status") or {})
        status["observedGeneration"] = svc["metadata"].get("generation", 1)
        set_condition(status, "Ready", "False", "NotOwned", str(exc), now=now)
        await write_status(ctx, SERVICES, svc, status)
        return None
    await write_status(ctx, SERVICES, svc, service_status(svc, cfg, route, now=now))
    return None


WATCHES = (
    Watch(SERVICES, itself),
    Watch(CONFIGURATIONS, named_by_label(LABEL_SERVICE)),  # its children, by their label
    Watch(ROUTES, named_by_label(LABEL_SERVICE)),
)
RECONCILER = Reconciler(SERVICES, reconcile_service, WATCHES)
