"""What the cluster says of a revision's pods, in the terms Flint uses: the endpoints its gateways
route to (from the `<revision>-private` Service's EndpointSlices) and the revision's
`ResourcesAvailable` and `ContainerHealthy` conditions (from its Deployment and a pod), as
Knative's revision reconciler derives them. Pure.

Endpoints: an address of a slice's endpoint, with the slice's port named `http` (the private
Service's; a slice's ports are the target ports), is **ready** when `conditions.ready` is true or
absent (the API's rule: nil means ready), **starting** when it is not ready and not terminating
(the gateway probes it itself and forwards from its first connect, without waiting for the
kubelet's probe period), and **draining** when `terminating` is true (no new requests: its
`preStop` sleep lets what was routed to it finish). An address in several slices (they overlap
while the EndpointSlice controller moves it) counts once, its best state winning.

Conditions (Knative's `PropagateDeploymentStatus` and `reconcileDeployment`):
`ResourcesAvailable` follows the Deployment's readiness (its `Progressing` condition, and
`ReplicaFailure`); while replicas are wanted and none is available, the first pod says more: not
schedulable → `ResourcesAvailable=False` with the scheduler's reason; a container that exited →
`ContainerHealthy=False`, reason `ExitCode<N>`, message `Container failed with: …`; a container
waiting → `ResourcesAvailable=False` with the kubelet's reason and message once the Deployment's
progress deadline passed — and at once, Flint's addition, when it waits for an image that cannot be
pulled (`ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`, `CreateContainerConfigError`: a
user should not wait ten minutes to learn of a typo; it clears when the pod starts). Any ready
replica makes `ContainerHealthy=True`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Condition", "PodEndpoint", "endpoints", "revision_conditions"]

Obj = dict[str, Any]
EndpointState = Literal["ready", "starting", "draining"]
_RANK: dict[str, int] = {"ready": 0, "starting": 1, "draining": 2}
PORT_NAME = "http"
IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName",
                            "CreateContainerConfigError"})


@dataclass(frozen=True, slots=True)
class PodEndpoint:
    """One pod address the gateways may route to."""

    pod: str
    """The pod's name (the endpoint's `targetRef`), or its address when the slice names none."""
    ip: str
    port: int
    state: EndpointState


def _state(conditions: Obj) -> EndpointState:
    if conditions.get("terminating") is True:
        return "draining"
    return "starting" if conditions.get("ready") is False else "ready"


def _port(slice_: Obj, name: str) -> int | None:
    for p in slice_.get("ports") or []:
        if (p.get("name") or "") == name and p.get("port"):
            return int(p["port"])
    return None


def endpoints(slices: Iterable[Obj], port_name: str = PORT_NAME) -> list[PodEndpoint]:
    """The endpoints of a Service's EndpointSlices, by address (see the module docstring)."""
    best: dict[tuple[str, int], PodEndpoint] = {}
    for s in slices:
        if s.get("addressType") not in ("IPv4", "IPv6"):
            continue  # FQDN slices name no pod
        port = _port(s, port_name)
        if port is None:
            continue
        for e in s.get("endpoints") or []:
            state = _state(e.get("conditions") or {})
            pod = str(((e.get("targetRef") or {}).get("name")) or "")
            for ip in e.get("addresses") or []:
                found = PodEndpoint(pod or str(ip), str(ip), port, state)
                old = best.get((found.ip, port))
                if old is None or _RANK[found.state] < _RANK[old.state]:
                    best[(found.ip, port)] = found
    return sorted(best.values(), key=lambda p: (p.ip, p.port))


@dataclass(frozen=True, slots=True)
class Condition:
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""


def _cond(obj: Obj, type_: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c.get("type") == type_), None)


def _deployment_ready(deployment: Obj) -> Condition:
    """Knative's `TransformDeploymentStatus`: ready when progressing and no replica failure."""
    progressing = Condition("Unknown", "Deploying")
    p = _cond(deployment, "Progressing")
    if p is not None:
        status = str(p.get("status"))
        if status == "True":
            progressing = Condition("True")
        elif status == "False":
            progressing = Condition("False", str(p.get("reason") or ""), str(p.get("message") or ""))
        else:
            progressing = Condition("Unknown", str(p.get("reason") or ""), str(p.get("message") or ""))
    replica_set = Condition("True")
    f = _cond(deployment, "ReplicaFailure")
    if f is not None and str(f.get("status")) == "True":
        replica_set = Condition("False", str(f.get("reason") or ""), str(f.get("message") or ""))
    elif f is not None and str(f.get("status")) == "Unknown":
        replica_set = Condition("Unknown", str(f.get("reason") or ""), str(f.get("message") or ""))
    for c in (replica_set, progressing):
        if c.status == "False":
            return c
    for c in (replica_set, progressing):
        if c.status == "Unknown":
            return c
    return Condition("True")


def _timed_out(deployment: Obj) -> bool:
    p = _cond(deployment, "Progressing")
    return bool(p and str(p.get("status")) == "False" and p.get("reason") == "ProgressDeadlineExceeded")


def revision_conditions(deployment: Obj | None, pods: list[Obj],
                        user_containers: Iterable[str] = ()) -> dict[str, Condition]:
    """`ResourcesAvailable` and `ContainerHealthy` (only those it can tell) of a revision whose
    Deployment is `deployment` (None: not created yet) and whose pods include `pods`;
    `user_containers` names the containers to look at (all when empty)."""
    if deployment is None:
        return {"ResourcesAvailable": Condition("Unknown", "Deploying"),
                "ContainerHealthy": Condition("Unknown", "Deploying")}
    out = {"ResourcesAvailable": _deployment_ready(deployment)}
    spec, status = deployment.get("spec") or {}, deployment.get("status") or {}
    wanted = {str(n) for n in user_containers}
    if int(spec.get("replicas") or 0) > 0 and int(status.get("availableReplicas") or 0) == 0 and pods:
        pod = pods[0]
        scheduled = next((c for c in (pod.get("status") or {}).get("conditions") or []
                          if c.get("type") == "PodScheduled"), None)
        if scheduled is not None and str(scheduled.get("status")) == "False":
            out["ResourcesAvailable"] = Condition(
                "False", str(scheduled.get("reason") or ""), str(scheduled.get("message") or ""))
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if wanted and cs.get("name") not in wanted:
                continue
            terminated = ((cs.get("lastState") or {}).get("terminated")) or None
            waiting = ((cs.get("state") or {}).get("waiting")) or None
            if terminated is not None:
                code = int(terminated.get("exitCode") or 0)
                message = str(terminated.get("message") or "")
                if code == 0 and not message:
                    message = "container exited with no error"
                out["ContainerHealthy"] = Condition("False", f"ExitCode{code}",
                                                    f"Container failed with: {message}")
                break
            if waiting is not None and (_timed_out(deployment) or waiting.get("reason") in IMAGE_FAILURES):
                out["ResourcesAvailable"] = Condition(
                    "False", str(waiting.get("reason") or ""), str(waiting.get("message") or ""))
                break
    if int(status.get("readyReplicas") or 0) > 0:
        out["ContainerHealthy"] = Condition("True")
    return out
