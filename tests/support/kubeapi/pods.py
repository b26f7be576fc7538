"""What the API server does for Pods alone: graceful deletion and the `binding` subresource."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import errors
from .resources import Resource

if TYPE_CHECKING:
    from .store import Key, Store

JSON = dict[str, Any]
DEFAULT_GRACE_S = 30  # a Pod's spec.terminationGracePeriodSeconds when unset


def is_pod(res: Resource) -> bool:
    return res.group == "" and res.plural == "pods"


def grace_period(current: JSON, options: JSON) -> int | None:
    """The grace a DELETE gives a Pod, or None when it goes at once: a Pod no kubelet runs (not
    bound to a node) or already terminal (Succeeded, Failed), or gracePeriodSeconds=0."""
    spec = current.get("spec") or {}
    phase = (current.get("status") or {}).get("phase")
    if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
        return None
    requested = options.get("gracePeriodSeconds")
    if requested is None:
        requested = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
    grace = int(requested)
    return grace if grace > 0 else None


def start_graceful(store: Store, res: Resource, key: Key, current: JSON, grace: int) -> tuple[JSON, bool]:
    """Mark the Pod terminating (deletionTimestamp = now + grace); the kubelet deletes it with
    gracePeriodSeconds=0 once its containers stopped. A later DELETE may only shorten the grace."""
    meta = current["metadata"]
    if meta.get("deletionTimestamp") and int(meta.get("deletionGracePeriodSeconds") or 0) <= grace:
        return store.view(res, current), False
    new = copy.deepcopy(current)
    new_meta = new["metadata"]
    when = datetime.now(UTC) + timedelta(seconds=grace)
    new_meta["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
    new_meta["deletionGracePeriodSeconds"] = grace
    if "generation" in new_meta:
        new_meta["generation"] += 1
    return store.commit(res, "MODIFIED", key, new, copy.deepcopy(current)), False


def bind(store: Store, res: Resource, namespace: str, name: str, body: JSON) -> JSON:
    """POST pods/{name}/binding: set spec.nodeName (what a scheduler does); 409 if already bound."""
    current = store.get(res, namespace, name)
    target = body.get("target") or {}
    node = target.get("name")
    if not node:
        raise errors.invalid(
            res, name, [errors.cause("FieldValueRequired", "target.name", "Required value")]
        )
    bound = (current.get("spec") or {}).get("nodeName")
    if bound:
        raise errors.conflict(res, name, f"pod {name} is already assigned to node \"{bound}\"")
    if current["metadata"].get("deletionTimestamp"):
        raise errors.conflict(res, name, f"pod {name} is being deleted, cannot be assigned to a host")
    new = copy.deepcopy(current)
    new.setdefault("spec", {})["nodeName"] = node
    store.update(res, namespace, name, new, require_rv=False)
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
