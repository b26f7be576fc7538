"""A gateway worker process: one uvloop event loop serving the proxy on every listener.

The main process (`gateway.server`) starts N of these with the same settings, and hands worker
i the listening sockets of slot i, which it owns (`gateway.slots`); each worker serves them,
links to the controller, serves its stats on a unix socket for the main process's admin port,
and drains before it exits.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from flint_common.channellog.wake import WakeSender
from flint_common.lifetime import die_with_parent
from flint_common.redis_config import RedisSettings
from flint_common.secret import Secret
from flint_common.snapshot import Snapshot
from flint_common.wire import UpMessage
from gateway.activator import Activator
from gateway.admin import start_worker_admin, worker_socket_path
from gateway.channels.redis_writer import open_redis_writer
from gateway.client import ClientConnection, PeerConnection
from gateway.config import GatewaySettings
from gateway.context import PokeSender, SendUp, WorkerContext
from gateway.home import HomeRouter
from gateway.ingress import BrokerIngress
from gateway.limits import raise_nofile_limit
from gateway.link import ControllerLink
from gateway.metrics import WorkerStats, flatten_counters, histograms_json
from gateway.prober import StartingProber
from gateway.proxy_metrics import ProxyMetrics
from gateway.router import Router
from gateway.slots import LISTEN_BACKLOG, SlotSockets
from gateway.stats import Pokes, StatsAccumulator, learned_limits, report_stats
from gateway.upstream import UpstreamPool

log = logging.getLogger("flint.gateway.worker")

WORKER_DRAIN_S = 5.0
"""Seconds a stopping worker waits for in-flight requests before closing everything."""
PARENT_POLL_S = 1.0
"""How often a worker checks that its parent is alive (fallback to PR_SET_PDEATHSIG)."""

HOME_SIDE_COUNTERS = (
    "upstream_errors", "upstream_connect_errors", "upstream_timeouts", "upstream_retries",
    "upstream_requeues", "learned_limit_lowered", "peer_forwards",
)
"""Counters of requests forwarded by the other workers that the forwarding worker cannot see
(it gets an answer): added to this worker's on `/metrics`. Its requests and answers are not,
since the forwarding worker counts those already."""

async def _unlinked(_: UpMessage) -> bool:
    """`send_up` without a controller link: nothing is sent."""
    return False


def build_context(
    settings: GatewaySettings,
    loop: asyncio.AbstractEventLoop,
    *,
    index: int = 0,
    redis: RedisSettings | None = None,
    snapshot: Snapshot | None = None,
    send_up: SendUp = _unlinked,
    controller_connected: Callable[[], bool] = lambda: False,
    on_drained: Callable[[], None] | None = None,
    gateway_id: str = "",
) -> WorkerContext:
    """Worker `index`'s proxy state, with every callback between its parts wired here.

    The router is built first, since the others read it; its events name them late, and run
    in this order:

    1. a released slot → the activator dispatches that revision's queue;
    2. a newer snapshot → the ingress opens the logs this worker writes (and retires the
       others), then the activator fails the queues of failed or vanished revisions and
       dispatches the rest, then the prober starts and stops probes;
    3. the last request of a draining endpoint → `on_drained` (the link re-acks);
    4. a starting endpoint passing the prober's connect → the activator dispatches.

    `redis`: where Redis-backed brokers are appended to (the worker's writer is made on the
    first of them); None: such brokers are answered 503.

    `snapshot`, when given, is applied last (through the same events); a worker gets its own
    from the link (`ControllerLink.load_persisted`).

    `gateway_id`: with a peer listener (`settings.peer_listen`), the router routes by this
    gateway's share of each snapshot (`gateway.subsets`); without one, owners are ignored.
    """
    workers = settings.workers
    router = Router(
        on_release=lambda endpoint_id: activator.on_release(endpoint_id),
        listeners=(
            lambda snap: ingress.apply(snap),
            lambda snap: activator.on_snapshot(snap),
            lambda snap: prober.sync(snap),
        ),
        on_drained=on_drained,
        learned_growth=settings.learned_limit_growth,
        gateway_id=gateway_id if settings.peer_listen else None,
    )
    ingress = BrokerIngress(
        settings.state_dir,
        settings.domain,
        worker_index=index,
        workers=workers,
        max_event_bytes=settings.max_event_bytes,
        max_age_s=settings.log_max_age_s,
        max_records=settings.log_max_records,
        compact_every_s=settings.log_compact_interval_s,
        wake=WakeSender(settings.state_dir),
        open_stream_writer=None if redis is None else (
            lambda: open_redis_writer(redis, role=f"gateway-worker-{index}")),
    )
    pokes = Pokes()
    poke = PokeSender(loop, send_up, pokes)
    activator = Activator(
        router,
        settings,
        workers=workers,
        clock=loop.time,
        loop=loop,
        controller_connected=controller_connected,
        poke=poke,
        pokes=pokes,
    )
    prober = StartingProber(
        router,
        loop,
        interval_s=settings.probe_interval_s,
        connect_timeout_s=settings.upstream_connect_timeout_s,
        on_ready=activator.on_promoted,
    )
    ctx = WorkerContext(
        settings=settings,
        loop=loop,
        router=router,
        pool=UpstreamPool(loop, settings),
        activator=activator,
        prober=prober,
        stats=StatsAccumulator(loop.time()),
        ingress=ingress,
        home=HomeRouter(index, workers, settings.state_dir) if workers > 1 else None,
        metrics=ProxyMetrics(),
        home_metrics=ProxyMetrics(),
        send_up=send_up,
        poke=poke,
    )
    if snapshot is not None:
        router.apply(snapshot)
    return ctx


def protocol_factory(
    ctx: WorkerContext, *, trusted: bool = False, public: bool = False, peer: bool = False
) -> Callable[[], asyncio.Protocol]:
    """The `loop.create_server` factory of one kind of listener: the loopback one (the
    default), the unix socket on which the other workers forward requests (`trusted`), a
    `--listen` address (`public`: cluster-local routes answer 404 there) or the peer listener
    (`peer`: other gateways' forwarded requests, `gateway.client.PeerConnection`)."""
    if peer:
        return lambda: PeerConnection(ctx)
    return lambda: ClientConnection(ctx, trusted=trusted, public=public)


def worker_main(
    settings: GatewaySettings,
    index: int,
    gateway_id: str,
    parent_pid: int | None,
    token: Secret,
    sockets: SlotSockets,
    redis: RedisSettings | None = None,
) -> int:
    """Entry point of worker `index`: a uvloop event loop serving `sockets` until signalled."""
    import uvloop

    die_with_parent(parent_pid)
    raise_nofile_limit(settings.nofile_limit)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run_worker(settings, index, gateway_id, parent_pid, token, sockets, redis))


async def run_worker(
    settings: GatewaySettings, index: int, gateway_id: str, parent_pid: int | None,
    token: Secret, sockets: SlotSockets, redis: RedisSettings | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Ctrl-C reaches the whole process group: the main process stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # The link feeds the router that the context builds, so the context reaches it late.
    ctx = build_context(
        settings,
        loop,
        index=index,
        redis=redis,
        send_up=lambda message: link.send_up(message),
        controller_connected=lambda: link.connected,
        on_drained=lambda: link.endpoint_drained(),
        gateway_id=gateway_id,
    )
    router, metrics, activator = ctx.router, ctx.metrics, ctx.activator
    link = ControllerLink(settings, router, f"{gateway_id}/{index}", token=token, settle_heap=True)
    await link.load_persisted()  # serve the last known routes from the first connection on

    # Closing a server closes this process's copy of its socket only: the main process keeps
    # the slot's sockets listening until the next incarnation of this worker serves them.
    internal: asyncio.Server | None = None
    if sockets.internal is not None:
        # The other workers forward requests for revisions this worker is the home of.
        internal = await loop.create_unix_server(
            protocol_factory(ctx, trusted=True), sock=sockets.internal, backlog=LISTEN_BACKLOG
        )

    servers = [
        await loop.create_server(
            protocol_factory(ctx), sock=sockets.loopback, backlog=LISTEN_BACKLOG
        )
    ]
    # The `--listen` addresses: their connections are not served cluster-local routes, which
    # only the loopback listener (and the unix sockets the workers forward on) serves.
    public = protocol_factory(ctx, public=True)
    n_public = len(settings.listen)
    for sock in sockets.public[:n_public]:
        servers.append(await loop.create_server(public, sock=sock, backlog=LISTEN_BACKLOG))
    # The peer listener (`--peer-listen`, after the `--listen` ones): other gateways' forwards.
    for sock in sockets.public[n_public:]:
        servers.append(await loop.create_server(
            protocol_factory(ctx, peer=True), sock=sock, backlog=LISTEN_BACKLOG))
    link_task = asyncio.create_task(link.run(load_persisted=False), name="controller-link")
    lag = [0.0]

    def set_lag(value: float) -> None:
        lag[0] = value

    reporter = asyncio.create_task(
        report_stats(
            ctx.stats, ctx.send_up, clock=loop.time, on_lag=set_lag,
            limits=lambda: learned_limits(router.learned_by_revision(), router.limit_changes()),
        ),
        name="stats-reporter",
    )

    def stats() -> WorkerStats:
        counters = flatten_counters(metrics)
        for name in HOME_SIDE_COUNTERS:
            counters[name] += getattr(ctx.home_metrics, name)
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
            inflight=router.inflight_by_revision(),
            cold_starts=dict(activator.cold_starts),
            cold_start_latency=histograms_json(activator.cold_start_latency),
            loop_lag_s=lag[0],
            broker_events=ctx.ingress.metrics.rows(),
            learned_limits=router.learned_by_revision(),
            limit_changes={k: list(v) for k, v in router.limit_changes().items()},
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
        await ctx.aclose()
        await admin.cleanup()
    log.info("event=worker_stopped worker=%d", index)
    return 0


async def _drain(router: Router, metrics: ProxyMetrics, deadline: float) -> None:
    """Wait (bounded) for the requests in flight (to replicas and to home workers) to finish."""
    loop = asyncio.get_running_loop()
    delay = 0.01
    while loop.time() < deadline and (
        router.total_inflight() > 0 or metrics.inflight_requests > 0
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

