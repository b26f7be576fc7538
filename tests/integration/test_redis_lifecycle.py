"""The controller owns the streams and groups of Redis-backed logs, against a real redis-server:
making them (`controller.redis_logs`), and the janitor's sweep of what the store no longer has
(`controller.redis_sweep`), including the order of its two looks that keeps it off a consumer
created meanwhile."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from support.harness import until

from controller.reconcilers.context import BROKERS, REDIS_CHANNELS, SUBSCRIPTIONS, TRIGGERS
from controller.redis_janitor import RedisJanitor
from controller.redis_logs import RedisLogs, StreamMissing, create_group, create_stream
from controller.redis_sweep import Live, Orphans, store_owners
from controller.store.base import Kind
from controller.store.memory import MemoryStore
from flint_common.redis_keys import consumer_key, stream_key, trim_lock_key


@pytest.fixture
def client(redis_client: aioredis.Redis) -> aioredis.Redis:
    return redis_client


async def groups(client: aioredis.Redis, stream: str) -> list[str]:
    return sorted(g["name"] for g in await client.xinfo_groups(stream))


async def keys(client: aioredis.Redis) -> list[str]:
    return sorted([k async for k in client.scan_iter(match="flint:*")])


# -- making them ---------------------------------------------------------------------------------


async def test_a_stream_is_made_empty_once_and_one_that_exists_is_left_alone(
        client: aioredis.Redis) -> None:
    stream = stream_key("log-a")
    assert await create_stream(client, stream)
    assert await client.xlen(stream) == 0 and await client.xinfo_groups(stream) == []
    await client.xadd(stream, {"e": "1"})
    assert not await create_stream(client, stream)
    assert await client.xlen(stream) == 1
    # Its counters start at zero: Redis can tell the lag of the groups made on it later.
    assert await create_group(client, stream, "c1")
    await client.xadd(stream, {"e": "2"})
    [g] = await client.xinfo_groups(stream)
    assert (g["name"], g["lag"]) == ("c1", 1)


async def test_a_group_is_made_at_the_tail_of_an_existing_stream_only(client: aioredis.Redis) -> None:
    stream = stream_key("log-b")
    with pytest.raises(StreamMissing):
        await create_group(client, stream, "c1")
    assert not await client.exists(stream)  # no stream made for it either
    await create_stream(client, stream)
    await client.xadd(stream, {"e": "before"})
    assert await create_group(client, stream, "c1")
    assert not await create_group(client, stream, "c1")  # already there: nothing changes
    await client.xadd(stream, {"e": "after"})
    read: Any = await client.xreadgroup("c1", "d", {stream: ">"}, count=10)
    assert [f["e"] for _, entries in read for _, f in entries] == ["after"]


async def test_the_reconcilers_handle_makes_again_what_redis_lost_after_recheck(
        client: aioredis.Redis) -> None:
    now = [0.0]
    logs = RedisLogs(client, recheck_s=30.0, clock=lambda: now[0])
    stream = stream_key("log-c")
    await logs.ensure_stream(stream)
    await logs.ensure_group(stream, "c1")
    assert await groups(client, stream) == ["c1"]
    await client.unlink(stream)  # Redis restarted without its append-only file
    now[0] = 10.0
    await logs.ensure_stream(stream)
    await logs.ensure_group(stream, "c1")  # remembered: no command
    assert not await client.exists(stream)
    now[0] = 31.0
    await logs.ensure_stream(stream)
    await logs.ensure_group(stream, "c1")
    assert await groups(client, stream) == ["c1"]


async def test_a_stream_made_again_forgets_its_groups_and_a_lost_group_starts_at_the_first_entry(
        client: aioredis.Redis) -> None:
    now = [0.0]
    logs = RedisLogs(client, recheck_s=30.0, clock=lambda: now[0])
    stream = stream_key("log-lost")
    assert await logs.ensure_stream(stream)  # made now
    await logs.ensure_group(stream, "c1")
    now[0] = 31.0
    assert not await logs.ensure_stream(stream)  # there: nothing made
    await client.unlink(stream)  # Redis lost it, and the groups on it
    now[0] = 62.0
    assert await logs.ensure_stream(stream)  # made again: what it knew of the groups is forgotten
    await client.xadd(stream, {"e": "accepted after the loss"})
    await logs.ensure_group(stream, "c1", from_start=True)  # within recheck_s, still made
    read: Any = await client.xreadgroup("c1", "d", {stream: ">"}, count=10)
    assert [f["e"] for _, entries in read for _, f in entries] == ["accepted after the loss"]


# -- the janitor's sweep -------------------------------------------------------------------------


async def test_the_sweep_deletes_what_no_object_in_the_store_owns(client: aioredis.Redis) -> None:
    live_stream, gone_stream = stream_key("log-live"), stream_key("log-gone")
    for stream in (live_stream, gone_stream):
        await create_stream(client, stream)
        await client.xadd(stream, {"e": "1"})
        await create_group(client, stream, "c-live")
        await create_group(client, stream, "c-gone")  # its trigger was deleted: an orphan
    await client.zadd(consumer_key("log-live", "c-live", "retries"), {"a": 1})
    await client.zadd(consumer_key("log-live", "c-left", "retries"), {"a": 1})  # no group, no trigger
    await client.zadd(consumer_key("log-gone", "c-live", "retries"), {"a": 1})
    await client.set(trim_lock_key("log-gone"), "d-a")
    await client.set("other:key", "not Flint's")
    store = Live(logs=frozenset({"log-live"}), consumers=frozenset({"c-live"}))

    async def live() -> Live:
        return store

    janitor = RedisJanitor(client, live=live, sweep_every_s=0.05, settle_s=0.05)
    await janitor.start()  # sweeps periodically from now on
    try:
        async def swept() -> bool:
            return (await keys(client) == [consumer_key("log-live", "c-live", "retries"), live_stream]
                    and await groups(client, live_stream) == ["c-live"] and not janitor.pending)

        await until(swept, "the orphans deleted")
        assert await client.get("other:key") == "not Flint's"
        assert await client.xlen(live_stream) == 1  # a live log's entries are not touched
        assert await janitor.sweep() == Orphans()  # nothing left to find
    finally:
        await janitor.close()


@pytest.mark.parametrize("what", ["consumer", "log"])
async def test_an_object_created_while_the_sweep_runs_keeps_its_group_or_stream(
        client: aioredis.Redis, what: str) -> None:
    """The reconcilers make a consumer's group (a log's stream) only after the store has the
    consumer (the log): the sweep lists Redis first and reads the store after, so an object
    created between the two is not in the listing, and what the listing found has its owner in
    the store if it has one. Read the other way round, this test's consumer (log) would be taken
    for an orphan: the store read before it existed, its group (stream) listed after."""
    stream = stream_key("log-live")
    await create_stream(client, stream)
    await create_group(client, stream, "c-orphan")  # found in the same sweep: it does delete
    store = {"logs": {"log-live"}, "consumers": set()}
    snapshots: list[Live] = []

    async def live() -> Live:
        read = Live(logs=frozenset(store["logs"]), consumers=frozenset(store["consumers"]))
        snapshots.append(read)
        # Right after the store was read, a reconcile: the object in the store, then in Redis.
        if what == "consumer":
            store["consumers"].add("c-new")
            await create_group(client, stream, "c-new")
        else:
            store["logs"].add("log-new")
            await create_stream(client, stream_key("log-new"))
        return read

    janitor = RedisJanitor(client, live=live, settle_s=0.05)
    try:
        found = await janitor.sweep()
        assert len(snapshots) == 1
        assert found == Orphans(logs=[], consumers=[("log-live", "c-orphan")])

        async def done() -> bool:
            return not janitor.pending

        await until(done, "the orphan's deletion")
        if what == "consumer":
            assert await groups(client, stream) == ["c-new"]
        else:
            assert await client.exists(stream_key("log-new"))
            assert await groups(client, stream) == []
    finally:
        await janitor.close()


async def test_the_sweep_asks_the_store_itself_what_exists() -> None:
    store = MemoryStore()

    async def made(kind: Kind, api: str, name: str) -> str:
        obj = await store.create(kind, {"apiVersion": api, "kind": name.title(),
                                        "metadata": {"name": name, "namespace": "default"}})
        return str(obj["metadata"]["uid"])

    b = await made(BROKERS, "eventing.knative.dev/v1", "broker")
    t = await made(TRIGGERS, "eventing.knative.dev/v1", "trigger")
    c = await made(REDIS_CHANNELS, "messaging.flint.dev/v1", "redischannel")
    sub = await made(SUBSCRIPTIONS, "messaging.knative.dev/v1", "subscription")
    assert await store_owners(store) == Live(logs=frozenset({b, c}), consumers=frozenset({t, sub}))
