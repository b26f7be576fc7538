"""`Kubelet`: the informers, the controllers' loops and the node, started and stopped together."""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from .client import Informer, Kube, collection_path
from .deployments import DeploymentController
from .endpointslices import EndpointSliceController
from .objects import wait_event
from .pods import Node
from .settings import KubeletSettings

log = logging.getLogger("flint.tests.kubelet")


class _Loop:
    """Runs `sync` whenever something changed (and every `resync_s`), never two at once."""

    def __init__(self, name: str, sync: Callable[[], Awaitable[None]], resync_s: float) -> None:
        self.name = name
        self.sync = sync
        self.resync_s = resync_s
        self.dirty = asyncio.Event()

    async def run(self) -> None:
        while True:
            await wait_event(self.dirty, self.resync_s)
            self.dirty.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("%s sync failed", self.name)
                await asyncio.sleep(0.1)


class Kubelet:
    """Deployment and EndpointSlice controllers and a kubelet over one API (a namespace, or all).

    `async with Kubelet(api, namespace=ns, settings=KubeletSettings(...)) as k:` — or `start()`
    and `stop()`. Every process it started is gone when `stop()` returns."""

    def __init__(
        self, api: client.ApiClient, namespace: str | None = None, settings: KubeletSettings | None = None
    ) -> None:
        self.kube = Kube(api)
        self.namespace = namespace
        self.settings = settings or KubeletSettings()
        self.log_dir = Path()
        self._tasks: list[asyncio.Task[Any]] = []
        self.node: Node | None = None

    def _informer(self, group: str, version: str, plural: str, on_change: Callable[[], None]) -> Informer:
        return Informer(self.kube, collection_path(group, version, plural, self.namespace), on_change)

    async def start(self) -> None:
        self.log_dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="flint-kubelet-"))
        resync = self.settings.resync_s
        loops: list[_Loop] = []

        def changed() -> None:
            for loop in loops:
                loop.dirty.set()

        deployments = self._informer("apps", "v1", "deployments", changed)
        pods = self._informer("", "v1", "pods", changed)
        services = self._informer("", "v1", "services", changed)
        slices = self._informer("discovery.k8s.io", "v1", "endpointslices", changed)
        self.node = Node(self.kube, pods, self.settings, self.log_dir, changed)
        deploy = DeploymentController(self.kube, deployments, pods, self.settings)
        endpoints = EndpointSliceController(self.kube, services, pods, slices)
        loops += [
            _Loop("deployments", deploy.sync, resync),
            _Loop("endpointslices", endpoints.sync, resync),
            _Loop("kubelet", self.node.sync, resync),
        ]
        informers = [deployments, pods, services, slices]
        self._tasks = [asyncio.create_task(i.run(), name=f"informer {i.path}") for i in informers]
        async with asyncio.timeout(10):
            for informer in informers:
                await informer.synced.wait()
        self._tasks += [asyncio.create_task(loop.run(), name=loop.name) for loop in loops]

    async def stop(self) -> None:
        """Stop the loops, then every container (SIGTERM, SIGKILL after `shutdown_grace_s`)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self.node is not None:
            await self.node.stop(self.settings.shutdown_grace_s)
        if self.log_dir != Path():
            await asyncio.to_thread(shutil.rmtree, self.log_dir, True)

    async def __aenter__(self) -> Kubelet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def pids(self) -> list[int]:
        """The live container processes (main process of each container)."""
        return self.node.pids() if self.node is not None else []

    def logs(self, pod: str, container: str | None = None) -> str:
        """What a Pod's containers printed (blocking read of small files; for test failures)."""
        out = []
        for path in sorted(self.log_dir.glob(f"*_{pod}_{container or '*'}.log")):
            out.append(path.read_text(errors="replace"))
        return "".join(out)
