"""The controller's Redis pieces against a real redis-server, without `flint up`: the periodic
durability check (a Redis whose settings change, one that stops), the deletions of a broker's
and a trigger's keys, the backlog from XINFO GROUPS (and XRANGE when Redis reports no lag)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from support.harness import free_port
from support.redis_server import RedisServer, stop_redis

from controller.eventing.dispatcher import Dispatcher, DispatcherSettings
from controller.eventing.plan import ConsumerPlan, DispatchPlan, RedisLog, dispatcher_id
from controller.redis_backlog import group_backlogs
from controller.redis_health import RedisHealth
from controller.redis_janitor import RedisJanitor, read_journal
from controller.redis_logs import create_group, create_stream
from flint_common import redis_conn
from flint_common.redis_config import RedisSettings
from flint_common.redis_keys import consumer_key, stream_key
from flint_common.secret import Secret


def _client(server: RedisServer) -> aioredis.Redis:
    return redis_conn.client(RedisSettings(url=server.url))


async def _until(check: Callable[[], object], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not await check():  # type: ignore[misc]
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


async def test_the_health_check_follows_the_redis_settings_and_its_outage(
        redis_servers: Callable[..., RedisServer]) -> None:
    server = redis_servers()
    client = _client(server)
    changes: list[str] = []
    health = RedisHealth(client, server.url, on_change=lambda: changes.append("x"))
    try:
        assert await health.check()
        d = health.view.durability
        assert d is not None and d.durable and changes == ["x"]
        assert not await health.check()  # nothing new: no change, no requeue
        await client.config_set("appendonly", "no")  # as if restarted with other settings
        assert await health.check()
        d = health.view.durability
        assert d is not None and d.reason == "AOFDisabled" and changes == ["x", "x"]
        await asyncio.to_thread(stop_redis, server)
        assert await health.check()
        assert health.view.durability is None and "Error" in health.view.error
    finally:
        await health.close()
        await client.aclose()


async def test_the_background_check_runs_every_period(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    seen = asyncio.Event()
    health = RedisHealth(client, redis_server.url, on_change=seen.set, every_s=0.05)
    try:
        health.start()
        await asyncio.wait_for(seen.wait(), 10)
        assert health.view.durability is not None and health.view.durability.durable
    finally:
        await health.close()
        await client.aclose()


async def test_deleting_a_log_and_a_consumer_unlinks_only_their_keys(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    janitor = RedisJanitor(client, settle_s=0.05)
    gone, kept = stream_key("log-gone"), stream_key("log-kept")
    try:
        for stream in (gone, kept):
            await client.xadd(stream, {"e": "1"})
            await client.xgroup_create(stream, "c1", id="0")
            await client.xgroup_create(stream, "c2", id="0")
        await client.zadd(consumer_key("log-gone", "c1", "retries"), {"a": 1})
        await client.zadd(consumer_key("log-kept", "c1", "retries"), {"a": 1})
        await client.zadd(consumer_key("log-kept", "c2", "retries"), {"a": 1})
        janitor.delete_log("log-gone")
        janitor.delete_log("log-gone")  # idempotent: one deletion at a time
        janitor.delete_consumer("log-kept", "c1")
        janitor.delete_consumer("log-kept", "c9")  # no such group: nothing to do, no error

        async def done() -> bool:
            return not janitor.pending

        await _until(done)
        assert [k async for k in client.scan_iter(match="flint:{log-gone}:*")] == []
        assert [g["name"] for g in await client.xinfo_groups(kept)] == ["c2"]
        assert not await client.exists(consumer_key("log-kept", "c1", "retries"))
        assert await client.exists(consumer_key("log-kept", "c2", "retries"))
    finally:
        await janitor.close()
        await client.flushdb()
        await client.aclose()


async def test_a_deletion_is_retried_while_redis_does_not_answer() -> None:
    dead = redis_conn.client(RedisSettings(url="redis://127.0.0.1:1/0"))  # nothing listens
    janitor = RedisJanitor(dead, retry_first_s=0.01, retry_max_s=0.02)
    try:
        janitor.delete_log("u")
        await asyncio.sleep(0.1)
        assert janitor.pending == ["log:u"]  # still trying
    finally:
        await janitor.close()
        await dead.aclose()
    assert janitor.pending == []


async def test_backlog_is_lag_plus_pending(redis_server: RedisServer) -> None:
    client = _client(redis_server)
    stream = stream_key("log-backlog")
    try:
        assert await group_backlogs(client, stream) == {}  # no stream yet
        for i in range(5):
            await client.xadd(stream, {"e": str(i)})
        await client.xgroup_create(stream, "fresh", id="0")
        await client.xgroup_create(stream, "reading", id="0")
        await client.xreadgroup("reading", "d1", {stream: ">"}, count=2)  # 2 pending, 3 to go
        await client.xgroup_create(stream, "unknown", id="0")
        # A group created at an id Redis cannot place in the entries' count reports lag null.
        second = (await client.xrange(stream, count=2) or [])[1][0]
        assert second is not None
        await client.xgroup_setid(stream, "unknown", second)
        groups = await group_backlogs(client, stream)
        assert (groups["fresh"].backlog, groups["fresh"].pending) == (5, 0)
        assert (groups["reading"].lag, groups["reading"].pending, groups["reading"].backlog) == (3, 2, 5)
        unknown = groups["unknown"]
        assert unknown.lag == 3 and unknown.counted and not unknown.capped
        # Entries deleted before a group read them: Redis cannot tell its lag; a group before the
        # first entry has the whole stream to go (no count needed), one at the end has none.
        await client.xgroup_create(stream, "behind", id="0")
        await client.xgroup_create(stream, "ahead", id="$")
        await client.xdel(stream, second)
        await client.xgroup_setid(stream, "ahead", "$")
        ids = [i for i, _ in await client.xrange(stream) or [] if i is not None]
        await client.xdel(stream, ids[0])  # now "behind" is before the first entry
        groups = await group_backlogs(client, stream)
        assert (groups["behind"].lag, groups["behind"].counted) == (3, False)
        assert groups["ahead"].lag == 0
        assert groups["reading"].backlog == groups["reading"].lag + 2  # type: ignore[operator]
    finally:
        await client.flushdb()
        await client.aclose()


async def test_a_deletion_left_undone_is_resumed_from_the_journal(
        redis_server: RedisServer, tmp_path: Path) -> None:
    journal = tmp_path / "eventing" / "redis-deletions.json"
    dead = redis_conn.client(RedisSettings(url="redis://127.0.0.1:1/0"))  # nothing listens
    janitor = RedisJanitor(dead, journal=journal, retry_first_s=0.01, retry_max_s=0.02)
    janitor.delete_log("log-later")
    janitor.delete_consumer("log-other", "c1")
    await asyncio.sleep(0.05)
    await janitor.close()  # a controller stopped during the outage
    await dead.aclose()
    assert await asyncio.to_thread(read_journal, journal) == ["consumer:log-other/c1", "log:log-later"]
    assert (await asyncio.to_thread(journal.stat)).st_mode & 0o777 == 0o600

    client = _client(redis_server)
    await client.xadd(stream_key("log-later"), {"e": "1"})
    await client.zadd(consumer_key("log-other", "c1", "retries"), {"a": 1})
    janitor = RedisJanitor(client, journal=journal, settle_s=0.01)
    try:
        await janitor.start()
        assert janitor.pending == ["consumer:log-other/c1", "log:log-later"]

        async def done() -> bool:
            return not janitor.pending

        await _until(done)
        assert [k async for k in client.scan_iter(match="flint:*")] == []
        await janitor.close()
        assert await asyncio.to_thread(read_journal, journal) == []
    finally:
        await janitor.close()
        await client.flushdb()
        await client.aclose()


def _redis_plan(log_uid: str, consumer_uid: str) -> DispatchPlan:
    consumer = ConsumerPlan(
        uid=consumer_uid, namespace="ns", name="t1", broker="rb", log_uid=log_uid,
        log=RedisLog(stream_key(log_uid), consumer_uid), subscriber="http://127.0.0.1:9/",
        reply="http://broker-ingress.localhost/ns/rb", filter_attributes=None, filters=None,
        delivery={}, dead_letter_uri=None, ordered=False)
    return DispatchPlan(version=1, triggers=(consumer,), known=(consumer_uid,))


@pytest.mark.parametrize("with_redis", [True, False])
async def test_the_dispatcher_runs_redis_consumers_under_its_id_or_refuses_them_without_redis(
        redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        with_redis: bool) -> None:
    state_dir = await asyncio.to_thread(tmp_path.resolve)
    settings = DispatcherSettings(
        state_dir=state_dir, controller_url=f"http://127.0.0.1:{free_port()}",
        admin_port=free_port(), token=Secret("t" * 32),
        redis=RedisSettings(url=redis_server.url) if with_redis else None)
    d = Dispatcher(settings)
    await d.start()
    try:
        assert d.id == dispatcher_id(state_dir, socket.gethostname())
        assert (d.redis is not None) == with_redis
        with caplog.at_level(logging.INFO, logger="flint.dispatcher"):
            await d.apply(_redis_plan("log-d", "c-d"))
            await d.apply(replace(_redis_plan("log-d", "c-d"), version=2))
            refusals = [r.getMessage() for r in caplog.records
                        if "trigger_not_runnable" in r.getMessage()]
            if not with_redis:
                assert len(refusals) == 1, refusals  # said once, not at every plan
                assert "has no Redis configured" in refusals[0] and "backend=redis" in refusals[0]
                assert d.runners == {} and list(d._refused) == ["c-d"]
                await d.apply(DispatchPlan(version=3))  # deleted: nothing is kept of it
                assert d._refused == {}
                return
            assert refusals == [] and list(d.runners) == ["c-d"]

            async def waiting() -> bool:
                return any("event=group_wait trigger=ns/t1" in r.getMessage() for r in caplog.records)

            await _until(waiting)  # the runner waits for the group: it makes neither it nor the stream
        client = _client(redis_server)
        try:
            assert not await client.exists(stream_key("log-d"))
            await create_stream(client, stream_key("log-d"))  # as the reconcilers do
            await create_group(client, stream_key("log-d"), "c-d")
            # An event makes it read under the dispatcher's id (Redis 7.0 names a consumer once a
            # read gave it an entry).
            await client.xadd(stream_key("log-d"), {"e": b"{}"})

            async def joined() -> bool:
                groups = await client.xinfo_groups(stream_key("log-d"))
                if not groups:
                    return False
                consumers = await client.xinfo_consumers(stream_key("log-d"), "c-d")
                return any(c["name"] == d.id for c in consumers)
            deadline = asyncio.get_running_loop().time() + 10
            while not await joined():
                assert asyncio.get_running_loop().time() < deadline, "the runner never read"
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
    finally:
        await d.stop()
    assert d.redis is None


async def test_the_dispatcher_trims_its_plans_streams_below_every_group_and_past_the_caps(
        redis_server: RedisServer, tmp_path: Path) -> None:
    state_dir = await asyncio.to_thread(tmp_path.resolve)
    settings = DispatcherSettings(
        state_dir=state_dir, controller_url=f"http://127.0.0.1:{free_port()}",
        admin_port=free_port(), token=Secret("t" * 32),
        redis=RedisSettings(url=redis_server.url), log_max_records=3)
    client = _client(redis_server)
    stream = stream_key("log-t")
    # The group exists before any entry: the trigger handled the first four, not the rest.
    await client.xgroup_create(stream, "c-t", id="$", mkstream=True)
    ids = [await client.xadd(stream, {"e": f"{i}"}) for i in range(8)]
    await client.xgroup_setid(stream, "c-t", ids[3])
    d = Dispatcher(settings)
    await d.start()
    try:
        d.runners = {}  # only the plan's streams matter here, not its runners
        d._plan = _redis_plan("log-t", "c-t")
        handled, dropped = await d.trim_streams()
        assert handled == 3  # below the group's last-delivered id (itself kept)
        assert dropped == 2  # past the cap of 3 entries, never handled: counted
        assert await client.xlen(stream) == 3
        metric = d.metrics.retention_dropped.labels("log-t")._value.get()
        assert metric == 2
    finally:
        await d.stop()
        await client.aclose()
