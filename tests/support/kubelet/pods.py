"""The kubelet's stand-in: binds Pods to its node, runs each one's containers, writes Pod status,
stops a deleted Pod's containers within its grace and then deletes it for good."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .addresses import PodIPs
from .client import Informer, Kube, KubeError, collection_path
from .containers import Container, PodInfo, first_port
from .objects import is_terminal, now_rfc3339
from .settings import KubeletSettings

JSON = dict[str, Any]
log = logging.getLogger("flint.tests.kubelet")


def pod_status(containers: list[JSON], done: bool, previous: JSON, ip: str, host_ip: str, now: str) -> JSON:
    """A Pod's status from its containers' (pure): phase, conditions, IPs."""
    ready = bool(containers) and all(c["ready"] for c in containers)
    if done:
        codes = [c["state"].get("terminated", {}).get("exitCode", 0) for c in containers]
        phase = "Succeeded" if all(code == 0 for code in codes) else "Failed"
    elif all("waiting" not in c["state"] or c["lastState"] for c in containers):  # each has run
        phase = "Running"
    else:
        phase = "Pending"
    unready = [c["name"] for c in containers if not c["ready"]]
    why = {} if ready else {
        "reason": "PodCompleted" if done else "ContainersNotReady",
        "message": "" if done else f"containers with unready status: [{' '.join(unready)}]",
    }
    wanted = [
        ("PodReadyToStartContainers", True, {}),
        ("Initialized", True, {}),
        ("Ready", ready, why),
        ("ContainersReady", ready, why),
        ("PodScheduled", True, {}),
    ]
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    conditions = []
    for kind, ok, extra in wanted:
        status = "True" if ok else "False"
        old = before.get(kind)
        since = old.get("lastTransitionTime", now) if old and old.get("status") == status else now
        conditions.append({"type": kind, "status": status, "lastProbeTime": None,
                           "lastTransitionTime": since, **extra})
    return {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": previous.get("startTime") or now,
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    }


class PodWorker:
    """One Pod on this node, from its first sight to its processes' end (and its final delete)."""

    def __init__(
        self, kube: Kube, pod: JSON, ip: str, settings: KubeletSettings, log_dir: Path,
        on_finished: Callable[[], None],
    ) -> None:
        meta, spec = pod["metadata"], pod.get("spec") or {}
        self.kube = kube
        self.pod = pod
        self.ip = ip
        self.settings = settings
        self.namespace, self.name, self.uid = meta["namespace"], meta["name"], meta["uid"]
        self.path = f"{collection_path('', 'v1', 'pods', self.namespace)}/{self.name}"
        info = PodInfo(self.namespace, self.name, self.uid, ip, spec.get("restartPolicy", "Always"),
                       float(spec.get("terminationGracePeriodSeconds", 30)))
        self.containers = [Container(info, c, settings, log_dir, self._changed)
                           for c in spec.get("containers") or []]
        self.finished = asyncio.Event()
        self._on_finished = on_finished
        self._dirty = asyncio.Event()
        self._stop: tuple[float, bool, bool] | None = None  # (grace s, run preStop, delete from the API)
        self._stop_requested = asyncio.Event()
        self._written: JSON = pod.get("status") or {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.namespace}/{self.name}")

    def _changed(self) -> None:
        self._dirty.set()

    def _cap(self, grace: float) -> float:
        cap = self.settings.grace_period_s
        return min(grace, cap) if cap is not None else grace

    def update(self, pod: JSON) -> None:
        """The Pod as the API shows it now; a deletionTimestamp starts the graceful stop."""
        self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and self._stop is None:
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._request(self._cap(float(grace)), pre_stop=True, delete=True)

    def vanish(self) -> None:
        """The Pod is gone from the API (force-deleted, its namespace gone): stop what runs."""
        if self._stop is None or self._stop[2]:
            grace = float((self.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            self._request(self._cap(grace), pre_stop=True, delete=False)

    def shutdown(self, grace: float) -> None:
        """The stand-in stops: SIGTERM now, SIGKILL after `grace`, no preStop, the API untouched."""
        self._request(grace, pre_stop=False, delete=False)

    def _request(self, grace: float, *, pre_stop: bool, delete: bool) -> None:
        self._stop = (grace, pre_stop, delete)
        self._stop_requested.set()

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.containers if c.proc is not None and c.proc.returncode is None]

    async def _run(self) -> None:
        runs = [asyncio.create_task(c.run()) for c in self.containers]
        writer = asyncio.create_task(self._status_loop())
        try:
            await self._stop_requested.wait()
            assert self._stop is not None
            grace, pre_stop, _ = self._stop
            deadline = asyncio.get_running_loop().time() + grace
            await asyncio.gather(*(c.stop(deadline, pre_stop=pre_stop) for c in self.containers))
            await asyncio.gather(*runs, return_exceptions=True)
            writer.cancel()
            if self._stop[2]:  # still in the API: its final status, then gone for good
                with contextlib.suppress(KubeError):
                    await self._write_status(done=True)
                with contextlib.suppress(KubeError):
                    await self.kube.delete(
                        self.path, {"gracePeriodSeconds": "0"},
                        {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                         "preconditions": {"uid": self.uid}},
                    )
        except Exception:
            log.exception("pod %s/%s", self.namespace, self.name)
        finally:
            writer.cancel()
            for run in runs:
                run.cancel()
            for c in self.containers:  # nothing outlives its worker
                await c.stop(asyncio.get_running_loop().time(), pre_stop=False)
            self.finished.set()
            self._on_finished()

    async def _status_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._write_status(done=False)
            except KubeError as e:
                if e.code != 404:
                    log.warning("status of pod %s/%s: %s", self.namespace, self.name, e)
            except Exception:
                log.exception("status of pod %s/%s", self.namespace, self.name)

    async def _write_status(self, done: bool) -> None:
        all_done = done or (bool(self.containers) and all(c.done for c in self.containers))
        status = pod_status([c.status() for c in self.containers], all_done, self._written, self.ip,
                            self.settings.host_ip, now_rfc3339())
        if status == self._written:
            return
        await self.kube.merge_patch(f"{self.path}/status", {"status": status})
        self._written = status


class Node:
    """The kubelet (and the scheduler, binding every unbound Pod here): a PodWorker per Pod."""

    def __init__(self, kube: Kube, pods: Informer, settings: KubeletSettings, log_dir: Path,
                 on_change: Callable[[], None]) -> None:
        self.kube = kube
        self.pods = pods
        self.settings = settings
        self.log_dir = log_dir
        self.on_change = on_change
        self.workers: dict[str, PodWorker] = {}
        self.ips = PodIPs(settings.pod_ip_prefix)

    async def sync(self) -> None:
        seen: set[str] = set()
        for pod in list(self.pods.items.values()):
            meta, spec = pod["metadata"], pod.get("spec") or {}
            uid = meta["uid"]
            seen.add(uid)
            try:
                await self._sync_pod(pod, meta, spec, uid)
            except KubeError as e:
                if e.code not in (404, 409):
                    log.warning("pod %s/%s: %s", meta.get("namespace"), meta.get("name"), e)
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.vanish()
                if worker.finished.is_set():
                    del self.workers[uid]
                    self.ips.release(uid)

    async def _sync_pod(self, pod: JSON, meta: JSON, spec: JSON, uid: str) -> None:
        ns, name = meta["namespace"], meta["name"]
        path = f"{collection_path('', 'v1', 'pods', ns)}/{name}"
        node = spec.get("nodeName")
        if not node:
            if not meta.get("deletionTimestamp"):
                await self.kube.create(f"{path}/binding", {
                    "apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": self.settings.node_name},
                })
            return
        if node != self.settings.node_name:
            return
        worker = self.workers.get(uid)
        if worker is None:
            if meta.get("deletionTimestamp"):  # never ran here: nothing to stop
                await self.kube.delete(path, {"gracePeriodSeconds": "0"})
                return
            if is_terminal(pod):
                return
            ports = [first_port(c) for c in spec.get("containers") or []]
            ip = await asyncio.to_thread(self.ips.allocate, uid, ports)  # lock files: off the loop
            if ip is None:
                log.warning("no pod IP left for %s/%s", ns, name)
                return
            worker = PodWorker(self.kube, pod, ip, self.settings, self.log_dir, self.on_change)
            self.workers[uid] = worker
            worker.start()
        worker.update(pod)

    def pids(self) -> list[int]:
        return [pid for w in self.workers.values() for pid in w.pids()]

    async def stop(self, grace: float) -> None:
        for worker in self.workers.values():
            worker.shutdown(grace)
        await asyncio.gather(*(w.finished.wait() for w in self.workers.values()))
        self.workers.clear()
        self.ips.release_all()

