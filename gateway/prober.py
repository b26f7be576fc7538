"""The starting-replica prober: a spawned replica is routed from its first accepted connect.

The controller marks a replica ready only after its own readiness probe; a scale from zero
would wait for that round trip. Each worker instead connects to every `starting` endpoint of
its snapshot every few milliseconds and promotes it (`Router.mark_ready`) at the first
successful TCP connect, which wakes the requests waiting in the activator.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

from flint_common.snapshot import Endpoint, Snapshot
from gateway.router import Router

__all__ = ["StartingProber"]


class StartingProber:
    """Probes `starting` endpoints with a TCP connect every few milliseconds, one task each.

    The first successful connect promotes the endpoint (routed at once); a probe stops when
    its endpoint leaves the snapshot or arrives as ready.
    """

    def __init__(
        self,
        router: Router,
        loop: asyncio.AbstractEventLoop,
        *,
        interval_s: float = 0.005,
        connect_timeout_s: float = 2.0,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        self._router = router
        self._loop = loop
        self.interval_s = interval_s
        self.connect_timeout_s = connect_timeout_s
        self.on_ready = on_ready
        self._tasks: dict[str, tuple[Endpoint, asyncio.Task[None]]] = {}
        self.sync()

    @property
    def probing(self) -> list[str]:
        return sorted(self._tasks)

    def sync(self, _: Snapshot | None = None) -> None:
        """Probe the router's unprobed starting endpoints, stop the probes of the others (after
        every snapshot)."""
        wanted = {ep.id: ep for ep in self._router.unprobed()}
        for ep_id in list(self._tasks):
            ep, task = self._tasks[ep_id]
            if wanted.get(ep_id) != ep:
                del self._tasks[ep_id]
                task.cancel()
        for ep_id, ep in wanted.items():
            if ep_id not in self._tasks:
                task = self._loop.create_task(self._probe(ep), name=f"probe-{ep_id}")
                self._tasks[ep_id] = (ep, task)

    async def _probe(self, ep: Endpoint) -> None:
        while True:
            if await self._connects(ep):
                break
            await asyncio.sleep(self.interval_s)  # polling a port: no event to wait for
        entry = self._tasks.get(ep.id)
        if entry is not None and entry[0] == ep:
            del self._tasks[ep.id]
        key = self._router.mark_ready(ep.id)
        if key is not None and self.on_ready is not None:
            self.on_ready(key)

    async def _connects(self, ep: Endpoint) -> bool:
        try:
            if _is_ip(ep.host):
                family = socket.AF_INET6 if ":" in ep.host else socket.AF_INET
                addr: Any = (ep.host, ep.port)
            else:
                infos = await self._loop.getaddrinfo(ep.host, ep.port, type=socket.SOCK_STREAM)
                family, addr = infos[0][0], infos[0][4]
            sock = socket.socket(family, socket.SOCK_STREAM)
        except (OSError, IndexError):
            return False
        try:
            sock.setblocking(False)
            async with asyncio.timeout(self.connect_timeout_s):
                await self._loop.sock_connect(sock, addr)
            return True
        except (OSError, TimeoutError):
            return False
        finally:
            sock.close()

    def close(self) -> None:
        for _, task in self._tasks.values():
            task.cancel()
        self._tasks.clear()


def _is_ip(host: str) -> bool:
    with contextlib.suppress(OSError):
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        return True
    return False
