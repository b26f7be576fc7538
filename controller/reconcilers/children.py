"""Create-or-update of owned child objects, shared by the reconcilers that own children."""

from __future__ import annotations

import copy

from controller.informer import Informer
from controller.reconcilers.context import Obj, ReconcilerContext, ns_name, owned_by
from controller.store.base import AlreadyExists, Kind


class NotOwned(Exception):
    """A child's name is taken by an object this owner does not control."""


def needs_update(existing: Obj, desired: Obj) -> bool:
    em, dm = existing["metadata"], desired["metadata"]
    return (
        existing.get("spec") != desired.get("spec")
        or (em.get("labels") or {}) != (dm.get("labels") or {})
        or (em.get("annotations") or {}) != (dm.get("annotations") or {})
        or (em.get("ownerReferences") or []) != (dm.get("ownerReferences") or [])
    )


async def ensure_child(
    ctx: ReconcilerContext, kind: Kind, informer: Informer, owner: Obj, desired: Obj
) -> Obj:
    """Make the child look like `desired` (spec, labels, annotations); return what is stored."""
    ns, name = ns_name(desired)
    existing = informer.get(ns, name)
    if existing is None:
        try:
            return await ctx.store.create(kind, desired)
        except AlreadyExists:
            existing = await ctx.store.get(kind, ns, name)
    if not owned_by(existing, owner):
        raise NotOwned(
            f'{kind.plural[:-1]} "{name}" already exists and is not owned by '
            f'{owner["kind"]} "{owner["metadata"]["name"]}"'
        )
    if not needs_update(existing, desired):
        return existing
    updated = copy.deepcopy(existing)
    updated["spec"] = desired.get("spec")
    for field in ("labels", "annotations", "ownerReferences"):
        if desired["metadata"].get(field) is not None:
            updated["metadata"][field] = desired["metadata"][field]
        else:
            updated["metadata"].pop(field, None)
    return await ctx.store.update(kind, updated)


async def write_status(ctx: ReconcilerContext, kind: Kind, obj: Obj, status: Obj) -> Obj:
    """Write `status` if it differs from the stored one (a stale object → Conflict → retry)."""
    if obj.get("status") == status:
        return obj
    new = dict(obj)
    new["status"] = status
    return await ctx.store.update_status(kind, new)
