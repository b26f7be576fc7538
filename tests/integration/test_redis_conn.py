"""The Redis connection against a real redis-server (tests/support/redis_server.py): the
durability check, the password as a parameter, and errors that never show the password."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from support.harness import free_port
from support.redis_server import RedisServer

from flint_common import redis_conn
from flint_common.redis_config import RedisSettings
from flint_common.secret import Secret

PASSWORD = "pw-s3cret-do-not-print"


async def test_aof_on_is_durable(redis_server: RedisServer) -> None:
    client = redis_conn.client(RedisSettings(url=redis_server.url))
    try:
        found = await redis_conn.durability(client)
    finally:
        await client.aclose()
    assert found.aof_enabled and found.durable and found.reason is None
    assert found.appendfsync == "everysec"  # redis-server's default


async def test_aof_off_is_not_durable(redis_servers: Callable[..., RedisServer]) -> None:
    server = redis_servers(appendonly=False)
    client = redis_conn.client(RedisSettings(url=server.url))
    try:
        found = await redis_conn.durability(client)
    finally:
        await client.aclose()
    assert not found.aof_enabled and not found.durable
    assert found.reason == "AOFDisabled"


async def test_the_password_is_a_parameter_and_in_no_repr_or_error(
        redis_servers: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flint.redis")
    server = redis_servers(password=PASSWORD)
    good = RedisSettings(url=server.url, password=Secret(PASSWORD))
    client = redis_conn.client(good)
    try:
        assert await client.ping()
        assert PASSWORD not in repr(client) and PASSWORD not in repr(good) and PASSWORD not in str(good)
    finally:
        await client.aclose()
    found = await redis_conn.check_connection(good, "test")
    assert found is not None and found.durable

    wrong = RedisSettings(url=server.url, password=Secret(PASSWORD + "-wrong"))
    client = redis_conn.client(wrong)
    try:
        with pytest.raises(AuthenticationError) as refused:
            await client.ping()
    finally:
        await client.aclose()
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(refused.value)

    nobody = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", password=Secret(PASSWORD))
    client = redis_conn.client(nobody)
    try:
        with pytest.raises(RedisConnectionError) as unreachable:
            await client.ping()
    finally:
        await client.aclose()
    assert PASSWORD not in str(unreachable.value) and PASSWORD not in repr(unreachable.value)
    assert await redis_conn.check_connection(nobody, "test") is None
    assert "event=redis_connected role=test" in caplog.text and "event=redis_unreachable" in caplog.text
    assert PASSWORD not in caplog.text


async def test_a_database_number_is_used(redis_server: RedisServer) -> None:
    client = redis_conn.client(RedisSettings(url=f"redis://127.0.0.1:{redis_server.port}/3"))
    try:
        await client.set("flint-test-db", "3")
    finally:
        await client.aclose()
    plain = aioredis.Redis(host="127.0.0.1", port=redis_server.port, db=3, decode_responses=True)
    try:
        assert await plain.get("flint-test-db") == "3"
    finally:
        await plain.aclose()
