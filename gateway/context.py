"""What every connection of one gateway worker shares: the worker context.

A connection needs the worker's routing state, upstream pool, wait queues, stats and broker
ingress. Rather than reaching them through its protocol factory, it is handed this frozen
record, built once per worker by `gateway.worker.build_context`, which is also the one place
where the callbacks between these parts are wired. A connection owns nothing in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from flint_common.wire import Poke, UpMessage
from gateway.activator import Activator
from gateway.config import GatewaySettings
from gateway.home import HomeRouter
from gateway.ingress import BrokerIngress
from gateway.prober import StartingProber
from gateway.proxy_metrics import ProxyMetrics
from gateway.router import Router
from gateway.stats import Pokes, StatsAccumulator
from gateway.upstream import UpstreamPool

__all__ = ["PokeSender", "SendUp", "WorkerContext"]

SendUp = Callable[[UpMessage], Awaitable[bool]]
"""Sends one message up the controller link; False when the link could not carry it."""


class PokeSender:
    """Sends the activator's pokes (start a replica of this revision) up the controller link.

    The request that pokes never waits for the link: each poke is its own task. A poke the
    link cannot carry is forgotten by `Pokes`, so the next cold request sends it again.
    """

    __slots__ = ("_loop", "_pokes", "_send_up", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop, send_up: SendUp, pokes: Pokes) -> None:
        self._loop = loop
        self._send_up = send_up
        self._pokes = pokes
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, key: str, waiting: int) -> None:
        task = self._loop.create_task(self._send(key, waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, key: str, waiting: int) -> None:
        if not await self._send_up(Poke(key, waiting)):
            self._pokes.failed(key)  # link down: the next cold request pokes again

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()


@dataclass(frozen=True, slots=True)
class WorkerContext:
    """One worker's proxy state, shared by the connections of all its listeners."""

    settings: GatewaySettings
    loop: asyncio.AbstractEventLoop
    router: Router
    """Routes hosts to revisions and reserves replica slots (the latest snapshot)."""
    pool: UpstreamPool
    """Idle keep-alive connections to replicas and to the other workers."""
    activator: Activator
    """The wait queues of revisions scaling from zero or full."""
    prober: StartingProber
    """Probes starting replicas so that they are routed from their first accepted connect."""
    stats: StatsAccumulator
    """Per-revision concurrency, reported to the autoscaler every second."""
    ingress: BrokerIngress
    """Broker and channel ingress: requests the gateway answers itself."""
    home: HomeRouter | None
    """Where limited revisions and logs owned by another worker are forwarded; None with one
    worker (it is the home of everything)."""
    metrics: ProxyMetrics
    """The counters of requests from clients (the loopback and `--listen` listeners)."""
    home_metrics: ProxyMetrics
    """The counters of requests forwarded by the other workers (the unix listener), kept apart
    so that a forwarded request is not counted twice; its upstream failures are scraped."""
    send_up: SendUp
    """Sends a message up the controller link (stats)."""
    poke: PokeSender
    """Sends the activator's pokes."""

    def close(self) -> None:
        """Stop probes, timers and pokes; close the idle upstream connections (at shutdown)."""
        self.poke.close()
        self.prober.close()
        self.activator.close()
        self.pool.close()

    async def aclose(self) -> None:
        """`close`, then finish pending broker-log writes and close the logs."""
        self.close()
        await self.ingress.close()
