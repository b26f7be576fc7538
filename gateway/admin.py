"""Admin endpoints: each worker's stats on a unix socket; /healthz, /readyz, /metrics over them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from aiohttp import web

from flint_common.addresses import is_loopback
from flint_common.httpauth import auth_middleware
from flint_common.secret import Secret
from gateway.metrics import GatewayCollector, WorkerStats, make_registry, render

log = logging.getLogger("flint.gateway.admin")

STATS_PATH = "/stats"
"""Path of a worker's stats document on its unix socket."""
WORKER_FETCH_TIMEOUT_S = 1.0
"""Seconds the main process waits for one worker's stats before counting it as not answering."""
SHUTDOWN_TIMEOUT_S = 2.0
"""Seconds an admin server waits for requests in progress when it stops."""
MAX_UNIX_PATH_BYTES = 107
"""Longest unix socket path (sun_path is 108 bytes including the NUL)."""


def worker_socket_path(state_dir: Path, index: int) -> Path:
    """Where worker `index` serves its stats."""
    return state_dir / "gateway" / f"worker-{index}.sock"


# ---------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------


async def start_worker_admin(path: Path, stats: Callable[[], WorkerStats]) -> web.AppRunner:
    """Serve `GET /stats` (the worker's `WorkerStats` as JSON) on the unix socket `path`."""
    if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
        raise ValueError(f"unix socket path too long ({len(os.fsencode(path))} bytes): {path}")

    async def handle_stats(_: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(stats().to_json()), content_type="application/json")

    app = web.Application()
    app.router.add_get(STATS_PATH, handle_stats)
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S
    )
    await runner.setup()
    site = web.SockSite(runner, await asyncio.to_thread(bind_unix_socket, path))
    await site.start()
    return runner


def bind_unix_socket(path: Path) -> socket.socket:
    """A non-blocking unix stream socket bound at `path`, for a server to listen on. File-system
    work (the folder made, a stale socket left by an earlier process removed, the bind): run it
    in a thread. (`create_unix_server(path)` would stat the path on the loop.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(os.fspath(path))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# ---------------------------------------------------------------------------------------------
# Main-process side
# ---------------------------------------------------------------------------------------------


class WorkerClient:
    """Fetches one worker's stats over its unix socket."""

    def __init__(self, index: int, path: Path) -> None:
        self.index = index
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self) -> WorkerStats | None:
        """The worker's stats, or None when it does not answer in time."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.path)),
                timeout=aiohttp.ClientTimeout(total=WORKER_FETCH_TIMEOUT_S),
            )
        try:
            async with self._session.get("http://worker" + STATS_PATH) as resp:
                if resp.status != 200:
                    return None
                return WorkerStats.from_json(orjson.loads(await resp.read()))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError, TypeError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class AdminServer:
    """The gateway's TCP admin port: /healthz, /readyz and /metrics aggregated over workers."""

    def __init__(
        self,
        host: str,
        port: int,
        state_dir: Path,
        workers: int,
        restarts: Callable[[], int] = lambda: 0,
        token: Secret | None = None,
        probe: tuple[str, int] | None = None,
    ) -> None:
        if token is None and not is_loopback(host):
            raise ValueError(f"admin address {host} is not loopback: its /metrics needs a token")
        self._token = token
        self._host = host
        self._port = port
        self._clients = [
            WorkerClient(i, worker_socket_path(state_dir, i)) for i in range(workers)
        ]
        self._restarts = restarts
        self._collector = GatewayCollector(workers)
        self._registry = make_registry(self._collector)
        self._runner: web.AppRunner | None = None
        self.port = port
        """The bound port (differs from the requested one when that was 0)."""
        self._probe = probe
        """(host, port) of the probes' listener (/healthz, /readyz only, no token), or None."""
        self._probe_runner: web.AppRunner | None = None
        self.probe_port: int | None = None
        """The probes' listener's bound port, once started (None without one)."""

    async def start(self) -> int:
        app = web.Application(middlewares=[auth_middleware(self._token)] if self._token else [])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner, self.port = await _serve_on(app, self._host, self._port)
        if self._probe is not None:
            # only the two probes: nothing there needs the token, nothing there reveals a metric
            probes = web.Application()
            probes.router.add_get("/healthz", self._healthz)
            probes.router.add_get("/readyz", self._readyz)
            try:
                self._probe_runner, self.probe_port = await _serve_on(probes, *self._probe)
            except OSError:
                await self.stop()
                raise
        return self.port

    async def stop(self) -> None:
        for runner in (self._probe_runner, self._runner):
            if runner is not None:
                await runner.cleanup()
        self._runner = self._probe_runner = None
        for c in self._clients:
            await c.close()

    async def fetch_all(self) -> list[WorkerStats | None]:
        """Every worker's stats (None for a worker that does not answer), concurrently."""
        return list(await asyncio.gather(*(c.fetch() for c in self._clients)))

    async def not_ready_reason(self) -> str | None:
        """Why the gateway is not ready, or None when every worker answers with a snapshot."""
        reasons: list[str] = []
        for i, s in enumerate(await self.fetch_all()):
            if s is None:
                reasons.append(f"worker {i} not answering")
            elif s.version <= 0:
                reasons.append(f"worker {i} has no routing snapshot")
        return "; ".join(reasons) or None

    async def _healthz(self, _: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, _: web.Request) -> web.Response:
        reason = await self.not_ready_reason()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def _metrics(self, _: web.Request) -> web.Response:
        self._collector.update(await self.fetch_all(), self._restarts())
        return web.Response(
            body=render(self._registry),
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
        )


async def _serve_on(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """`app` served on (host, port): its runner and the bound port (another when `port` is 0)."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        await runner.cleanup()
        raise
    bound = int(sock.getsockname()[1])
    await web.SockSite(runner, sock).start()
    return runner, bound
