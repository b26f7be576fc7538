"""The dispatcher's Redis side against a real redis-server (`controller.eventing.redis_dispatch`):
blocking reads on a pool of their own (control commands never wait behind them), one dispatcher
trimming a stream per period however many run, and what a dispatcher remembers of a consumer
forgotten once the consumer is deleted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support.harness import free_port, until
from support.redis_server import RedisServer

from controller.eventing import redis_dispatch
from controller.eventing.dispatcher import Dispatcher, DispatcherSettings
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import ConsumerPlan, DispatchPlan, RedisLog
from controller.eventing.redis_consumer import RedisConsumerSettings
from controller.eventing.redis_dispatch import RedisDispatch
from controller.eventing.sender import Sender
from controller.redis_logs import create_group, create_stream
from flint_common.redis_config import RedisSettings
from flint_common.redis_keys import stream_key, trim_lock_key
from flint_common.secret import Secret


def consumer(log_uid: str, uid: str) -> ConsumerPlan:
    return ConsumerPlan(
        uid=uid, namespace="ns", name=uid, broker="rb", log_uid=log_uid,
        log=RedisLog(stream_key(log_uid), uid), subscriber="http://127.0.0.1:9/",
        reply="http://broker-ingress.localhost/ns/rb", filter_attributes=None, filters=None,
        delivery={}, dead_letter_uri=None, ordered=False)


def plan(version: int, *consumers: ConsumerPlan, known: tuple[str, ...] | None = None) -> DispatchPlan:
    return DispatchPlan(version=version, triggers=consumers,
                        known=tuple(c.uid for c in consumers) if known is None else known)


@pytest.fixture
def client(redis_client: aioredis.Redis) -> aioredis.Redis:
    return redis_client


async def dispatcher(tmp: Path, url: str, **settings: object) -> Dispatcher:
    state_dir = await asyncio.to_thread(tmp.resolve)
    d = Dispatcher(DispatcherSettings(
        state_dir=state_dir, controller_url=f"http://127.0.0.1:{free_port()}",
        admin_port=free_port(), token=Secret("t" * 32), redis=RedisSettings(url=url),
        **settings))  # type: ignore[arg-type]
    await d.start()
    return d


async def test_blocking_reads_never_hold_up_the_control_commands(
        redis_server: RedisServer, client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_dispatch, "READ_CONNECTIONS", 2)  # as if 512 runners were reading
    rd = RedisDispatch(RedisSettings(url=redis_server.url), owner="d-a", metrics=DispatcherMetrics(),
                       consumer=RedisConsumerSettings(block_ms=60_000))
    sender = Sender(domain="localhost", gateway="http://127.0.0.1:9")
    assert rd.reads.connection_pool is not rd.control.connection_pool
    stream = stream_key("log-pools")
    await create_stream(client, stream)
    runners = [rd.runner(consumer("log-pools", f"c{i}"), sender) for i in range(3)]
    reads: list[asyncio.Task[object]] = []
    try:
        for r in runners:
            await create_group(client, stream, r.plan.uid)
            await r.source.open()
        reads = [asyncio.create_task(r.source.read(10)) for r in runners]  # block a minute each

        async def both_blocking() -> bool:  # every connection of the reads' pool is held
            listed = await client.client_list()
            return sum(c["cmd"] == "xreadgroup" for c in listed) == 2

        await until(both_blocking, "two blocking reads")
        # The control commands go through while both reads still block (for a minute, with no
        # event to return): on one shared pool they would wait for a read to end first.
        await rd.control.ping()
        await runners[0].source.ack(["0-1"])
        await runners[0].state.hold(1)  # a retry nobody holds: False, at once
        assert not any(t.done() for t in reads)
    finally:
        for t in reads:
            t.cancel()
        await asyncio.gather(*reads, return_exceptions=True)
        await sender.close()
        await rd.close()


async def test_one_dispatcher_trims_a_stream_per_period_and_counts_the_drops_once(
        redis_server: RedisServer, client: aioredis.Redis, tmp_path: Path) -> None:
    stream = stream_key("log-t")
    await create_stream(client, stream)
    await create_group(client, stream, "c-t")
    ids = [await client.xadd(stream, {"e": f"{i}"}) for i in range(8)]
    await client.xgroup_setid(stream, "c-t", ids[3])  # the trigger handled the first four
    the_plan = plan(1, consumer("log-t", "c-t"))
    one = await dispatcher(tmp_path / "one", redis_server.url, log_max_records=3, trim_every_s=1.0)
    two = await dispatcher(tmp_path / "two", redis_server.url, log_max_records=3, trim_every_s=1.0)
    assert one.id != two.id and one.redis is not None and two.redis is not None

    def dropped(d: Dispatcher) -> float:
        found = d.metrics.registry.get_sample_value("flint_dispatcher_retention_dropped_total",
                                                    {"log_uid": "log-t"})
        return found or 0.0

    try:
        # Both trim the plan in the same period (their own loops trim their empty `_plan`).
        assert await one.redis.trim(the_plan) == (3, 2)
        assert await client.get(trim_lock_key("log-t")) == one.id
        assert 0 < await client.pttl(trim_lock_key("log-t")) <= 1000
        await client.xadd(stream, {"e": "8"})
        await client.xadd(stream, {"e": "9"})  # two more past the cap: there would be work
        assert await two.redis.trim(the_plan) == (0, 0)  # but one did it this period
        assert await client.xlen(stream) == 5
        assert dropped(one) + dropped(two) == 2

        async def next_period() -> bool:
            return not await client.exists(trim_lock_key("log-t"))

        await until(next_period, "the trim lock's period over")
        assert await two.redis.trim(the_plan) == (0, 2)  # the next period's trim: whoever comes
        assert (dropped(one), dropped(two)) == (2, 2)
        assert await client.xlen(stream) == 3
    finally:
        await one.stop()
        await two.stop()


async def test_a_deleted_consumers_restarts_and_failures_are_forgotten(tmp_path: Path) -> None:
    # Nothing listens on port 1: the Redis runner fails at once, and is restarted with back-off.
    d = await dispatcher(tmp_path, "redis://127.0.0.1:1/0")
    try:
        c = consumer("log-x", "c-x")
        await d.apply(plan(1, c))

        async def restarted() -> bool:
            return d._failures.get("c-x", 0) >= 1 and "c-x" in d._started

        await until(restarted, "the failing runner restarted")
        await d.apply(plan(2, known=("c-x",)))  # out of the plan (not runnable), still exists
        assert "c-x" in d._failures and "c-x" in d._started  # its back-off goes on when it returns
        await d.apply(plan(3, known=()))  # deleted
        assert d._failures == {} and d._started == {} and d.runners == {}
    finally:
        await d.stop()
