"""Ingress into Redis-backed brokers against a real redis-server: the batching writer under
concurrent requests, Redis stopped and restarted, `min_replicas`, a deleted broker's stream never
made again (503, to retry), and the gateway process. Each broker's stream is made first, by the function
the controller's broker reconciler uses (gateways never make one)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from integration.test_gateway_process import controller, eventually, gateway_process, snapshot, terminate
from support.harness import free_port
from support.redis_server import RedisServer, start_redis, stop_redis

from controller.redis_logs import create_stream
from flint_common import guards, redis_config
from flint_common.cloudevents.codec import Event
from flint_common.redis_config import RedisSettings
from flint_common.redis_keys import EVENT_FIELD, stream_key
from flint_common.snapshot import BrokerEntry
from gateway.channels.redis_writer import RedisStreamWriter, open_redis_writer
from gateway.ingress import REDIS, Answer, BrokerIngress

DEADLINE_S = 20.0


def broker(uid: str) -> BrokerEntry:
    return BrokerEntry("default", "b", uid, f"eventing/logs/{uid}.db", backend=REDIS,
                       stream=stream_key(uid))


def headers(event_id: str) -> list[tuple[bytes, bytes]]:
    return [(b"ce-specversion", b"1.0"), (b"ce-id", event_id.encode()), (b"ce-source", b"/t"),
            (b"ce-type", b"t"), (b"content-type", b"application/json")]


def ingress(tmp_path: Path, settings: RedisSettings | None) -> tuple[BrokerIngress, list[RedisStreamWriter]]:
    made: list[RedisStreamWriter] = []

    def open_writer() -> RedisStreamWriter:
        assert settings is not None
        made.append(open_redis_writer(settings, role="test"))
        return made[-1]

    return BrokerIngress(tmp_path, "localhost", max_event_bytes=64 * 1024,
                         open_stream_writer=None if settings is None else open_writer), made


async def made(server: RedisServer, uid: str) -> None:
    """The broker's stream, made as the broker reconciler makes it before the gateways get it."""
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        await create_stream(client, stream_key(uid))
    finally:
        await client.aclose()


async def stream_ids(server: RedisServer, uid: str) -> list[str]:
    """The `ce-id` of every event in the broker's stream, in stream order."""
    client = aioredis.Redis(host="127.0.0.1", port=server.port)
    try:
        entries = await client.xrange(stream_key(uid))
    finally:
        await client.aclose()
    out = []
    for _, fields in entries or ():
        assert fields is not None
        data = fields[EVENT_FIELD]
        assert isinstance(data, bytes)
        out.append(Event.from_log(data).id)
    return out


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[list[RedisServer]]:
    """Redis servers a test starts (and may stop and restart) itself: [0] runs at first; each
    one in the list is stopped at the end."""
    servers = [await asyncio.to_thread(start_redis, tmp_path / "redis")]
    try:
        yield servers
    finally:
        for s in servers:
            await asyncio.to_thread(stop_redis, s)


async def test_concurrent_requests_share_pipelines_and_each_202_is_stored_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    ing, writers = ingress(tmp_path, RedisSettings(url=redis_server.url))
    b = broker("uid-concurrent")
    await made(redis_server, "uid-concurrent")
    try:
        answers = await asyncio.gather(
            *(ing.accept(b, headers(f"e-{i}"), b'{"n": %d}' % i) for i in range(300)))
        assert {a.status for a in answers} == {202}
        # One batch per turn of the loop; later ones wait for the pipeline in flight.
        [writer] = writers
        assert writer.entries == 300 and writer.pipelines < 30, (writer.pipelines, writer.entries)
        more = await asyncio.gather(*(ing.accept(b, headers(f"f-{i}"), b"{}") for i in range(50)))
        assert {a.status for a in more} == {202}
    finally:
        await ing.close()
    ids = await stream_ids(redis_server, "uid-concurrent")
    assert sorted(ids) == sorted([*(f"e-{i}" for i in range(300)), *(f"f-{i}" for i in range(50))])
    assert ing.metrics.accepted == {"default/b": 350}


async def test_redis_stopped_is_503_and_restarted_is_202_again(
    own_redis: list[RedisServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="flint.gateway.ingress")
    server = own_redis[0]
    ing, _ = ingress(tmp_path, RedisSettings(url=server.url))
    b = broker("uid-restart")
    await made(server, "uid-restart")
    loop = asyncio.get_running_loop()
    try:
        assert (await ing.accept(b, headers("before"), b"{}")).status == 202
        await asyncio.to_thread(stop_redis, server)
        started = loop.time()
        answers = await asyncio.gather(*(ing.accept(b, headers(f"down-{i}"), b"{}") for i in range(5)))
        assert loop.time() - started < 5.0  # refused at once: no retries with backoff
        for a in answers:
            assert a.status == 503 and a.retry_after, a
            assert "the Redis stream of broker default/b is unavailable" in a.message
            assert f":{server.port}" not in a.message  # the producer is not told where Redis is
        assert ing.metrics.rejected == {("default/b", "log-unavailable"): 5}
        # The operator is, once (not once per request).
        logged = [r.getMessage() for r in caplog.records if "event=append_failed" in r.getMessage()]
        assert len(logged) == 1 and f"127.0.0.1:{server.port}" in logged[0], logged

        own_redis.append(await asyncio.to_thread(start_redis, server.dir, port=server.port))
        got: list[Answer] = []

        async def accepted() -> bool:
            got.append(await ing.accept(b, headers(f"after-{len(got)}"), b"{}"))
            return got[-1].status == 202

        await eventually(accepted, "a 202 once Redis is back")
        assert all(a.status == 503 for a in got[:-1])
    finally:
        await ing.close()
    # The append-only file kept what was acknowledged before the stop; nothing of the outage.
    ids = await stream_ids(own_redis[-1], "uid-restart")
    assert ids == ["before", f"after-{len(got) - 1}"]


async def test_a_redis_that_does_not_answer_fails_requests_within_the_socket_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that accepts and never answers (a hung Redis): 503 after the socket timeout."""
    import gateway.channels.redis_writer as rw

    monkeypatch.setattr(rw, "SOCKET_TIMEOUT_S", 0.3)
    monkeypatch.setattr(rw, "WAIT_TIMEOUT_MS", 100)
    accepted: list[asyncio.StreamWriter] = []

    async def hang(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    hung = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = hung.sockets[0].getsockname()[1]
    ing, _ = ingress(tmp_path, RedisSettings(url=f"redis://127.0.0.1:{port}/0"))
    try:
        answer = await asyncio.wait_for(ing.accept(broker("uid-hung"), headers("x"), b"{}"), 10)
        assert answer.status == 503 and answer.retry_after and "Timeout" in answer.message, answer
    finally:
        await ing.close()
        for w in accepted:
            w.close()
        hung.close()
        await hung.wait_closed()


async def test_a_deleted_brokers_stream_is_503_and_never_made_again(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    ing, _ = ingress(tmp_path, RedisSettings(url=redis_server.url))
    b = broker("uid-deleted")
    await made(redis_server, "uid-deleted")
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port)
    try:
        assert (await ing.accept(b, headers("before"), b"{}")).status == 202
        await client.unlink(stream_key("uid-deleted"))  # the janitor: its broker was deleted
        # This gateway's snapshot still has the broker: its requests find no stream.
        answers = await asyncio.gather(*(ing.accept(b, headers(f"late-{i}"), b"{}") for i in range(3)))
        # 503, to retry: the next snapshot drops a deleted broker (404 then), and a stream Redis
        # lost is made again by the controller; a 404 now would end the producer's retries.
        assert [(a.status, a.retry_after) for a in answers] == [(503, True)] * 3
        assert answers[0].message.startswith("the Redis stream of broker default/b does not exist")
        assert not await client.exists(stream_key("uid-deleted"))
        assert ing.metrics.rejected == {("default/b", "log-gone"): 3}
    finally:
        await ing.close()
        await client.aclose()


async def test_no_redis_configured_is_503(tmp_path: Path) -> None:
    ing, _ = ingress(tmp_path, None)
    try:
        answer = await ing.accept(broker("uid-none"), headers("x"), b"{}")
    finally:
        await ing.close()
    assert answer.status == 503 and answer.retry_after and "no Redis configured" in answer.message


async def test_min_replicas_waits_for_a_replica(
    redis_servers: Callable[..., RedisServer], tmp_path: Path
) -> None:
    primary = await asyncio.to_thread(redis_servers)
    ing, _ = ingress(tmp_path, RedisSettings(url=primary.url, min_replicas=1))
    b = broker("uid-replicas")
    await made(primary, "uid-replicas")
    try:
        answer = await ing.accept(b, headers("lonely"), b"{}")
        assert answer.status == 503 and answer.retry_after
        assert "only 0 of the 1 Redis replicas required" in answer.message, answer

        replica = await asyncio.to_thread(redis_servers)
        client = aioredis.Redis(host="127.0.0.1", port=primary.port)
        try:  # the first sync at once, not after the default 5 s wait for more replicas
            await client.config_set("repl-diskless-sync-delay", 0)
        finally:
            await client.aclose()
        client = aioredis.Redis(host="127.0.0.1", port=replica.port)
        try:
            await client.replicaof("127.0.0.1", str(primary.port))
        finally:
            await client.aclose()

        async def replica_online() -> bool:
            c = aioredis.Redis(host="127.0.0.1", port=primary.port, decode_responses=True)
            try:
                info = await c.info("replication")
            finally:
                await c.aclose()
            return bool(info.get("connected_slaves") == 1 and "online" in str(info.get("slave0")))

        await eventually(replica_online, "the replica in sync")
        assert (await ing.accept(b, headers("replicated"), b"{}")).status == 202
    finally:
        await ing.close()
    # WAIT short of replicas does not undo the write: the retry may store it twice (at-least-once).
    assert await stream_ids(primary, "uid-replicas") == ["lonely", "replicated"]
    assert await stream_ids(replica, "uid-replicas") == ["lonely", "replicated"]


# -- the gateway process ---------------------------------------------------------------------------


async def test_two_gateway_workers_append_to_one_stream_without_forwarding(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m gateway` with the Redis settings in its environment (as flint up passes them):
    both workers append (no home forwards), every 202 is in the stream once, and the log has
    one `redis_connected` line per worker."""
    monkeypatch.setenv(redis_config.ENV_URL, redis_server.url)
    monkeypatch.setenv("FLINT_BLOCKBUSTER", "1")
    b = broker("uid-gateway")
    await made(redis_server, "uid-gateway")
    snap = dataclasses.replace(snapshot(1, free_port(), ("unused.default.localhost",)), brokers=(b,))
    lines: list[str] = []
    async with controller(snap) as c, gateway_process(tmp_path / "state", c.url, workers=2, log=lines) as gw:
        await gw.wait_ready()
        await eventually(lambda: c.acked("gw/0") == 1 and c.acked("gw/1") == 1, "acks")
        codes: list[int] = []

        async def post(i: int) -> None:
            async with aiohttp.ClientSession() as s, s.post(  # a fresh connection: both workers
                f"http://127.0.0.1:{gw.port}/default/b", data=b'{"n": 1}',
                headers={"Host": "broker-ingress.localhost", "ce-specversion": "1.0",
                         "ce-id": f"g-{i}", "ce-source": "/t", "ce-type": "t",
                         "Content-Type": "application/json"},
            ) as r:
                codes.append(r.status)

        await asyncio.gather(*(post(i) for i in range(60)))
        assert codes == [202] * 60
        m = await gw.metrics()
        assert m.get("flint_gateway_home_forwards_total", 0) == 0
        assert m['flint_gateway_broker_events_total{broker="default/b",outcome="accepted",reason=""}'] == 60
        await eventually(lambda: sum("event=redis_connected role=gateway-worker-" in ln for ln in lines) == 2,
                         "each worker's redis_connected line")
        await terminate(gw)
    assert sorted(await stream_ids(redis_server, "uid-gateway")) == sorted(f"g-{i}" for i in range(60))
    text = "".join(lines)
    assert not guards.blocking_reports(text), guards.blocking_reports(text)[:3]
    assert text.count("event=redis_connected role=gateway-worker-0 ") == 1
