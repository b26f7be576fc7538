"""The Deployment controller's stand-in: Pods straight from Deployments (no ReplicaSets), rolling
updates with maxSurge 25% / maxUnavailable 0, and the Deployment's status."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from .client import Informer, Kube, KubeError, collection_path
from .objects import condition, is_active, is_ready, merge_conditions, now_rfc3339, owned_by
from .settings import KubeletSettings

JSON = dict[str, Any]
HASH_LABEL = "pod-template-hash"
SAFE = "bcdfghjklmnpqrstvwxz2456789"  # the API machinery's rand.SafeEncodeString alphabet
log = logging.getLogger("flint.tests.kubelet")


def template_hash(template: JSON) -> str:
    """A stable 10-character name part for a pod template (the real one is FNV-32a + collisionCount)."""
    digest = hashlib.sha256(orjson.dumps(template, option=orjson.OPT_SORT_KEYS)).digest()
    return "".join(SAFE[b % len(SAFE)] for b in digest[:10])


def replicas_of(dep: JSON) -> int:
    """spec.replicas (1 when unset or null)."""
    replicas = (dep.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _delete_order(pod: JSON) -> tuple[int, str]:
    """Who goes first on a scale-down: unscheduled, then not running, then not ready, then newest."""
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
    rank = 0 if not spec.get("nodeName") else 1 if status.get("phase") != "Running" else 2
    return (
        rank if rank < 2 or not is_ready(pod) else 3,
        "".join(chr(0x10FFFF - ord(c)) for c in created),  # newest first
    )


@dataclass
class Plan:
    """What one pass does: how many Pods to create, which to delete."""

    create: int = 0
    delete: list[JSON] = field(default_factory=list)


def plan(
    desired: int, new: list[JSON], old: list[JSON], recreate: bool = False, old_terminating: int = 0
) -> Plan:
    """The next step towards `desired` Pods of the current template (pure; active Pods only).

    Rolling: at most desired + maxSurge Pods (25%, rounded up, at least 1), an old Pod goes only
    while the ready ones stay at least `desired` (maxUnavailable 0); old Pods that are not ready go
    at once. Recreate: every old Pod goes first, new ones come once none is left."""
    if not old:
        if recreate and old_terminating:
            return Plan()
        if len(new) < desired:
            return Plan(create=desired - len(new))
        return Plan(delete=sorted(new, key=_delete_order)[: len(new) - desired])
    if recreate:
        return Plan(delete=list(old))
    surge = max(1, math.ceil(desired * 0.25)) if desired else 0
    out = Plan(create=max(0, min(desired - len(new), desired + surge - len(new) - len(old))))
    if len(new) > desired:
        out.delete = sorted(new, key=_delete_order)[: len(new) - desired]
        new = [p for p in new if p not in out.delete]
    unready_old = [p for p in old if not is_ready(p)]
    ready_old = sorted((p for p in old if is_ready(p)), key=_delete_order)
    spare = sum(1 for p in new if is_ready(p)) + len(ready_old) - desired
    out.delete += unready_old + ready_old[: max(0, spare)]
    return out


def deployment_status(
    dep: JSON, new: list[JSON], old: list[JSON], rs_name: str, stalled_s: float, deadline_s: float, now: str
) -> JSON:
    """status of a Deployment from its active Pods (pure). `stalled_s`: seconds since the counts
    last changed, against the progress deadline."""
    desired = replicas_of(dep)
    pods = new + old
    ready = sum(1 for p in pods if is_ready(p))
    updated = len(new)
    complete = updated == desired and len(pods) == desired and ready == desired
    previous = (dep.get("status") or {}).get("conditions") or []
    available = condition(
        "Available",
        ready >= desired,
        "MinimumReplicasAvailable" if ready >= desired else "MinimumReplicasUnavailable",
        "Deployment has minimum availability." if ready >= desired
        else "Deployment does not have minimum availability.",
        now,
    )
    if complete:
        progressing = condition("Progressing", True, "NewReplicaSetAvailable",
                                f'ReplicaSet "{rs_name}" has successfully progressed.', now)
    elif stalled_s > deadline_s:
        progressing = condition("Progressing", False, "ProgressDeadlineExceeded",
                                f'ReplicaSet "{rs_name}" has timed out progressing.', now)
    else:
        progressing = condition(
            "Progressing", True, "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', now
        )
    status: JSON = {
        "observedGeneration": (dep.get("metadata") or {}).get("generation", 1),
        "replicas": len(pods),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": merge_conditions(previous, [available, progressing]),
    }
    if len(pods) - ready:
        status["unavailableReplicas"] = len(pods) - ready
    return status


class DeploymentController:
    """Keeps each Deployment's Pods and status (one pass over every Deployment per `sync`)."""

    def __init__(self, kube: Kube, deployments: Informer, pods: Informer, settings: KubeletSettings) -> None:
        self.kube = kube
        self.deployments = deployments
        self.pods = pods
        self.settings = settings
        self._progress: dict[str, tuple[Any, float]] = {}  # uid -> (counts, monotonic time they changed)

    async def sync(self) -> None:
        for dep in list(self.deployments.items.values()):
            try:
                await self._sync_one(dep)
            except KubeError as e:
                if e.code not in (404, 409):
                    log.warning("deployment %s: %s", dep["metadata"]["name"], e)

    async def _sync_one(self, dep: JSON) -> None:
        meta, spec = dep["metadata"], dep.get("spec") or {}
        if meta.get("deletionTimestamp"):
            return  # the garbage collector deletes its Pods
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        template = spec.get("template") or {}
        h = template_hash(template)
        owned = [p for p in self.pods.items.values() if owned_by(p, uid)]
        active = [p for p in owned if is_active(p)]
        new = [p for p in active if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == h]
        old = [p for p in active if p not in new]
        terminating_old = sum(
            1 for p in owned if p not in active and (p["metadata"].get("labels") or {}).get(HASH_LABEL) != h
        )
        desired = replicas_of(dep)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        step = plan(desired, new, old, recreate, terminating_old)
        pods_path = collection_path("", "v1", "pods", ns)
        for pod in step.delete:
            self.pods.observe(await self.kube.delete(f"{pods_path}/{pod['metadata']['name']}"))
        for _ in range(step.create):
            self.pods.observe(await self.kube.create(pods_path, self._pod(dep, template, h)))
        counts = (len(new), len(old), sum(1 for p in active if is_ready(p)), meta.get("generation"))
        seen = self._progress.get(uid)
        now = time.monotonic()
        if seen is None or seen[0] != counts:
            self._progress[uid] = seen = (counts, now)
        deadline = self.settings.progress_deadline_s
        if deadline is None:
            deadline = float(spec.get("progressDeadlineSeconds", 600))
        status = deployment_status(dep, new, old, f"{name}-{h}", now - seen[1], deadline, now_rfc3339())
        if status != dep.get("status"):
            path = f"{collection_path('apps', 'v1', 'deployments', ns)}/{name}/status"
            patch = {"status": _nulls(dep.get("status"), status)}
            self.deployments.observe(await self.kube.merge_patch(path, patch))

    @staticmethod
    def _pod(dep: JSON, template: JSON, h: str) -> JSON:
        meta = dep["metadata"]
        t_meta = template.get("metadata") or {}
        suffix = "".join(secrets.choice(SAFE) for _ in range(5))
        pod_meta: JSON = {
            "name": f"{meta['name']}-{h}-{suffix}",
            "labels": {**(t_meta.get("labels") or {}), HASH_LABEL: h},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if t_meta.get("annotations"):
            pod_meta["annotations"] = t_meta["annotations"]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}


def _nulls(before: JSON | None, after: JSON) -> JSON:
    """`after` as a merge patch over `before`: keys it lost are null."""
    return {**{k: None for k in before or {} if k not in after}, **after}
