"""A gateway worker process: one uvloop event loop serving the proxy on every listener.

The main process (`gateway.server`) starts N of these with the same settings; each binds its
listeners with SO_REUSEPORT, links to the controller, serves its stats on a unix socket for the
main process's admin port, and drains before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys

from flint_common.secret import Secret
from gateway.admin import (
    bind_unix_socket,
    start_worker_admin,
    worker_socket_path,
)
from gateway.config import GatewaySettings
from gateway.home import proxy_socket_path
from gateway.limits import raise_nofile_limit
from gateway.link import ControllerLink
from gateway.metrics import WorkerStats, flatten_counters, histograms_json
from gateway.proxy_factory import ProxyFactory, make_proxy_factory
from gateway.proxy_metrics import ProxyMetrics
from gateway.router import Router
from gateway.stats import report_stats

log = logging.getLogger("flint.gateway.worker")

LISTEN_BACKLOG = 4096
"""Accept queue length of each worker's listening socket."""
WORKER_DRAIN_S = 5.0
"""Seconds a stopping worker waits for in-flight requests before closing everything."""
PARENT_POLL_S = 1.0
"""How often a worker checks that its parent is alive (fallback to PR_SET_PDEATHSIG)."""

_PR_SET_PDEATHSIG = 1

def listen_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket that shares `port` with the other workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # `[::]` is IPv6 only, as the API's listeners are
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _die_with_parent(parent_pid: int | None) -> None:
    """Ask the kernel for SIGTERM when the parent dies; exit now if it already has."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        sys.exit(0)


def worker_main(
    settings: GatewaySettings,
    index: int,
    gateway_id: str,
    parent_pid: int | None,
    token: Secret,
) -> int:
    """Entry point of worker `index`: a uvloop event loop running the proxy until signalled."""
    import uvloop

    _die_with_parent(parent_pid)
    raise_nofile_limit(settings.nofile_limit)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_worker(settings, index, gateway_id, parent_pid, token))


async def run_worker(
    settings: GatewaySettings, index: int, gateway_id: str, parent_pid: int | None,
    token: Secret,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the main process stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    router = Router()
    metrics = ProxyMetrics()
    link = ControllerLink(settings, router, f"{gateway_id}/{index}", token=token)
    factory = make_proxy_factory(
        router,
        settings,
        metrics,
        controller_connected=lambda: link.connected,
        send_up=link.send_up,
        worker_index=index,
        workers=settings.workers,
    )
    await link.load_persisted()  # serve the last known routes from the first connection on

    internal: asyncio.Server | None = None
    internal_factory: ProxyFactory | None = None
    if settings.workers > 1:
        # The other workers forward requests for revisions this worker is the home of.
        path = proxy_socket_path(settings.state_dir, index)
        unix_sock = await asyncio.to_thread(bind_unix_socket, path)
        internal_factory = ProxyFactory(
            router, settings, ProxyMetrics(), trusted=True, shared=factory
        )
        internal = await loop.create_unix_server(internal_factory, sock=unix_sock, backlog=LISTEN_BACKLOG)

    servers = [
        await loop.create_server(
            factory, sock=listen_socket(settings.host, settings.port), backlog=LISTEN_BACKLOG
        )
    ]
    public_factory: ProxyFactory | None = None
    if settings.listen:
        # The `--listen` addresses get their own factory (the same state): their connections
        # are not served cluster-local routes, which only the loopback listener (and the unix
        # sockets the workers forward on) serves.
        public_factory = ProxyFactory(router, settings, metrics, public=True, shared=factory)
        for host, port in settings.listen:
            servers.append(await loop.create_server(
                public_factory, sock=listen_socket(host, port), backlog=LISTEN_BACKLOG
            ))
    link_task = asyncio.create_task(link.run(load_persisted=False), name="controller-link")
    lag = [0.0]

    def set_lag(value: float) -> None:
        lag[0] = value

    assert factory.stats is not None
    reporter = asyncio.create_task(
        report_stats(factory.stats, link.send_up, clock=loop.time, on_lag=set_lag),
        name="stats-reporter",
    )
    activator = factory.activator
    assert activator is not None

    def stats() -> WorkerStats:
        counters = flatten_counters(metrics)
        counters["queue_rejections"] = activator.rejections
        counters["queue_timeouts"] = activator.timeouts
        return WorkerStats(
            index=index,
            pid=os.getpid(),
            version=router.version,
            connected=link.connected,
            draining_requests=sum(router.draining().values()),
            counters=counters,
            requests=[(r, v, c, n) for (r, v, c), n in metrics.by_route.items()],
            latency=histograms_json(metrics.latency),
            queue_depth=activator.depths(),
            inflight=router.balancer.inflight_by_revision(),
            cold_starts=dict(activator.cold_starts),
            cold_start_latency=histograms_json(activator.cold_start_latency),
            loop_lag_s=lag[0],
            broker_events=factory.ingress.metrics.rows() if factory.ingress is not None else [],
        )

    admin = await start_worker_admin(worker_socket_path(settings.state_dir, index), stats)
    watcher = asyncio.create_task(_watch_parent(parent_pid, stop), name="watch-parent")
    log.info("event=worker_serving worker=%d host=%s port=%d version=%d",
             index, settings.host, settings.port, router.version)
    try:
        await stop.wait()
    finally:
        log.info("event=worker_stopping worker=%d", index)
        for server in servers:
            server.close()  # stop accepting; connections in progress continue
        watcher.cancel()
        activator.reject_all(503, "the gateway worker is stopping")
        await _drain(router, metrics, loop.time() + WORKER_DRAIN_S)
        if internal is not None:
            internal.close()
        reporter.cancel()
        link_task.cancel()
        await asyncio.wait([link_task, reporter])
        if internal_factory is not None:
            internal_factory.close()
        if public_factory is not None:
            public_factory.close()
        await factory.aclose()
        await admin.cleanup()
    log.info("event=worker_stopped worker=%d", index)
    return 0


async def _drain(router: Router, metrics: ProxyMetrics, deadline: float) -> None:
    """Wait (bounded) for the requests in flight (to replicas and to home workers) to finish."""
    loop = asyncio.get_running_loop()
    delay = 0.01
    while loop.time() < deadline and (
        router.balancer.total_inflight() > 0 or metrics.inflight_requests > 0
    ):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.2)


async def _watch_parent(parent_pid: int | None, stop: asyncio.Event) -> None:
    if parent_pid is None:
        return
    while True:
        await asyncio.sleep(PARENT_POLL_S)
        if os.getppid() != parent_pid:
            break
    log.warning("event=parent_gone parent_pid=%d", parent_pid)
    stop.set()

