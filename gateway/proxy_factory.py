"""One worker's proxy state (pool, wait queues, probes, stats) and the protocol factory over it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from gateway.activator import Activator
from gateway.channels.wake import WakeSender
from gateway.config import GatewaySettings
from gateway.home import HomeRouter
from gateway.ingress import BrokerIngress
from gateway.prober import StartingProber
from gateway.proxy import ProxyProtocol
from gateway.proxy_metrics import ProxyMetrics
from gateway.router import Router
from gateway.stats import StatsAccumulator, poke_message
from gateway.upstream import UpstreamPool

__all__ = ["ProxyFactory", "make_proxy_factory"]


class ProxyFactory:
    """Protocol factory for `loop.create_server`: one worker's shared proxy state.

    Owns the worker's upstream pool, activator (wait queues), starting-endpoint prober and
    stats accumulator. `trusted=True` makes a factory for the unix socket on which the other
    workers forward requests for revisions this worker is the home of; `public=True` one for
    the `--listen` sockets, whose connections are not served cluster-local routes. Pass the
    loopback listener's factory as `shared` so all of them use the same state.
    """

    def __init__(
        self,
        router: Router,
        settings: GatewaySettings,
        metrics: ProxyMetrics | None = None,
        *,
        controller_connected: Callable[[], bool] | None = None,
        send_up: Callable[[Mapping[str, Any]], Awaitable[bool]] | None = None,
        worker_index: int = 0,
        workers: int = 1,
        trusted: bool = False,
        public: bool = False,
        shared: ProxyFactory | None = None,
    ) -> None:
        self.router = router
        self.settings = settings
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.trusted = trusted
        self.public = public
        """Its connections came in on a `--listen` address (not the loopback listener)."""
        self.send_up = send_up
        """Sends an up message to the controller (pokes); None when there is no link."""
        self._pool: UpstreamPool | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        if shared is not None:
            self._pool = shared.pool
            self.activator: Activator | None = shared.activator
            self.prober: StartingProber | None = shared.prober
            self.stats: StatsAccumulator | None = shared.stats
            self.home: HomeRouter | None = shared.home
            self.ingress: BrokerIngress | None = shared.ingress
            self._owner = False
            return
        self._owner = True
        loop = asyncio.get_running_loop()
        self.home = (
            HomeRouter(worker_index, workers, settings.state_dir) if workers > 1 else None
        )
        self.stats = StatsAccumulator(loop.time())
        self.ingress = BrokerIngress(
            settings.state_dir,
            settings.domain,
            worker_index=worker_index,
            workers=workers,
            max_event_bytes=settings.max_event_bytes,
            max_age_s=settings.log_max_age_s,
            max_records=settings.log_max_records,
            compact_every_s=settings.log_compact_interval_s,
            wake=WakeSender(settings.state_dir),
        )
        router.listeners.append(self.ingress.apply)
        self.ingress.apply(router.snapshot)
        self.activator = Activator(
            router,
            settings,
            workers=workers,
            clock=loop.time,
            loop=loop,
            controller_connected=controller_connected or (lambda: False),
            poke=self._poke,
        )
        self.prober = StartingProber(
            router,
            loop,
            interval_s=settings.probe_interval_s,
            connect_timeout_s=settings.upstream_connect_timeout_s,
            on_ready=self.activator.on_promoted,
        )

    @property
    def pool(self) -> UpstreamPool:
        if self._pool is None:
            self._pool = UpstreamPool(asyncio.get_running_loop(), self.settings)
        return self._pool

    def __call__(self) -> asyncio.Protocol:
        return ProxyProtocol(
            self.router, self.settings, self.metrics, self.pool, asyncio.get_running_loop(), self
        )

    def _poke(self, key: str, waiting: int) -> None:
        send = self.send_up
        if send is None:
            if self.activator is not None:
                self.activator.pokes.failed(key)
            return
        task = asyncio.get_running_loop().create_task(self._send_poke(send, key, waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_poke(
        self, send: Callable[[Mapping[str, Any]], Awaitable[bool]], key: str, waiting: int
    ) -> None:
        if not await send(poke_message(key, waiting)) and self.activator is not None:
            self.activator.pokes.failed(key)  # link down: the next cold request pokes again

    async def aclose(self) -> None:
        """`close`, then finish pending broker-log writes and close the logs."""
        self.close()
        if self._owner and self.ingress is not None:
            await self.ingress.close()

    def close(self) -> None:
        """Close the idle upstream connections, stop probes and timers (at shutdown)."""
        for task in self._tasks:
            task.cancel()
        if not self._owner:
            return
        if self.prober is not None:
            self.prober.close()
        if self.activator is not None:
            self.activator.close()
        if self._pool is not None:
            self._pool.close()


def make_proxy_factory(
    router: Router, settings: GatewaySettings, metrics: ProxyMetrics | None = None, **kw: Any
) -> ProxyFactory:
    """A protocol factory for `loop.create_server(factory, sock=sock)`; see `ProxyFactory`."""
    return ProxyFactory(router, settings, metrics, **kw)
