"""`flint logs SERVICE` on a cluster: the service's Pods' `pods/log`, merged line by line.

The Kubernetes engine runs a revision as a Deployment whose Pods carry the Service's label
(`serving.knative.dev/service`) and the revision's; the app runs in `user-container`
(`user-container-N` with several containers). Each running Pod's log is read from the API server
(kubelet-backed `pods/log`: `tailLines`, `sinceSeconds`, `follow`) and printed with the same
`[revision/pod] ` prefix the embedded engine gives its replicas' lines. Following covers the Pods
running when it starts (as `kubectl logs -l … -f` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from controller.api.naming import REVISION_LABEL, SERVICE_LABEL
from controller.api.serving_podspec import USER_CONTAINER_NAME

Obj = dict[str, Any]


@dataclass(frozen=True)
class PodLog:
    """One container log to read: its API path and the prefix of its lines."""

    path: str
    container: str
    prefix: str


def pod_selector(service: str) -> str:
    return f"{SERVICE_LABEL}={service}"


def user_containers(pod: Mapping[str, Any]) -> list[str]:
    """The app containers of a Pod (not the sidecars a cluster may inject)."""
    names = [str(c.get("name") or "") for c in (pod.get("spec") or {}).get("containers") or []]
    return [n for n in names if n == USER_CONTAINER_NAME or n.startswith(USER_CONTAINER_NAME + "-")]


def pod_logs(pods: list[Obj]) -> list[PodLog]:
    """The logs to read of `pods` (a PodList's items): each app container of each Pod that has
    started (Pending pods have no log yet), in name order."""
    out: list[PodLog] = []
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        meta = pod.get("metadata") or {}
        if (pod.get("status") or {}).get("phase") in (None, "Pending"):
            continue
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        revision = str((meta.get("labels") or {}).get(REVISION_LABEL) or "")
        containers = user_containers(pod)
        for c in containers:
            tag = name if len(containers) == 1 else f"{name}/{c}"
            out.append(PodLog(f"/api/v1/namespaces/{quote(ns, safe='')}/pods/{quote(name, safe='')}/log",
                              c, f"[{revision}/{tag}] " if revision else f"[{tag}] "))
    return out


def log_params(container: str, tail: int, since_s: float | None, follow: bool) -> dict[str, str]:
    """The `pods/log` query: `tailLines` (-1: all), `sinceSeconds` (whole, at least 1), `follow`."""
    params = {"container": container}
    if tail >= 0:
        params["tailLines"] = str(tail)
    if since_s is not None:
        params["sinceSeconds"] = str(max(1, int(since_s + 0.999)))
    if follow:
        params["follow"] = "true"
    return params


async def merged(streams: list[AsyncIterator[str]]) -> AsyncIterator[str]:
    """The lines of every stream as they come; ends when all have ended (an error in one ends
    all: it is raised here)."""
    queue: asyncio.Queue[tuple[int, str | BaseException | None]] = asyncio.Queue(maxsize=1024)

    async def pump(i: int, stream: AsyncIterator[str]) -> None:
        try:
            async for line in stream:
                await queue.put((i, line))
        except Exception as e:  # surfaced to the reader
            await queue.put((i, e))
            return
        await queue.put((i, None))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    running = len(tasks)
    try:
        while running:
            _, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
