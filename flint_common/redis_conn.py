"""A Redis client from `RedisSettings`, and whether that Redis keeps what it acknowledges.

The client is redis-py's `redis.asyncio.Redis`; the password goes to it as a parameter (from the
`Secret`), never inside a URL string that could be logged. redis-py's `repr` of a client and its
connection errors name the host, port and database only.

`durability` reads `INFO persistence` (`aof_enabled`) and, when the server allows `CONFIG`
(managed Redis services often rename or forbid it), `CONFIG GET appendfsync`: a broker on a
Redis without the append-only file loses acknowledged events when Redis restarts, so its
condition will say `Durable=False` with reason `AOFDisabled` (`appendfsync no`: `AOFNoFsync`,
the kernel writes when it likes).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from flint_common.redis_config import RedisSettings

log = logging.getLogger("flint.redis")

try:
    from redis import DriverInfo

    _IDENTITY: dict[str, Any] = {
        "driver_info": DriverInfo(name="redis-py", lib_version=redis.__version__)}
    """What a connection tells the server (CLIENT SETINFO), given so that recent redis-py does not
    look its version up in the package metadata (file I/O) on the loop for each connection."""
except ImportError:  # older redis-py (no DriverInfo) reads its version once, at import
    _IDENTITY = {}

CONNECT_TIMEOUT_S = 5.0
"""How long a connect (TCP, TLS, AUTH) may take."""


@dataclass(frozen=True)
class Durability:
    """What a Redis server does with a write before it answers."""

    aof_enabled: bool
    """The append-only file is on (`appendonly yes`): a restart replays it."""
    appendfsync: str | None
    """`always`, `everysec` or `no`; None when `CONFIG GET` is not allowed."""

    @property
    def durable(self) -> bool:
        return self.reason is None

    @property
    def reason(self) -> str | None:
        """A condition reason when not durable (`AOFDisabled`, `AOFNoFsync`), else None."""
        if not self.aof_enabled:
            return "AOFDisabled"
        if self.appendfsync == "no":
            return "AOFNoFsync"
        return None

    @property
    def message(self) -> str:
        if not self.aof_enabled:
            return ("Redis runs without its append-only file (appendonly no): acknowledged events "
                    "are lost when it restarts")
        if self.appendfsync == "no":
            return ("Redis never fsyncs its append-only file (appendfsync no): a power cut loses "
                    "acknowledged events")
        fsync = self.appendfsync or "unknown: CONFIG GET is not allowed"
        return f"append-only file on (appendfsync {fsync})"


def parse_durability(info: Mapping[str, object], appendfsync: str | None) -> Durability:
    """`INFO persistence` (as redis-py parses it) and `appendfsync` → `Durability`. Pure."""
    enabled = info.get("aof_enabled")
    if enabled is None:
        raise ValueError("INFO persistence has no aof_enabled field")
    return Durability(aof_enabled=str(enabled) == "1",
                      appendfsync=appendfsync.lower() if appendfsync else None)


def client(settings: RedisSettings, *, decode: bool = True,
           socket_timeout_s: float | None = CONNECT_TIMEOUT_S,
           max_connections: int | None = None) -> aioredis.Redis:
    """A client for `settings` (it connects on first use): the password as a parameter.

    `decode=False` for the event data paths (stream entries are bytes); `socket_timeout_s=None`
    for a client whose commands block server-side (`XREADGROUP … BLOCK`). `max_connections`
    makes the pool a blocking one of that size: a command waits for a free connection instead
    of failing once the pool is exhausted (redis-py's default pool raises past its limit)."""
    password = settings.password.reveal() if settings.password is not None else None
    options: dict[str, Any] = {
        "password": password, "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": socket_timeout_s, "decode_responses": decode, **_IDENTITY}
    if max_connections is None:
        return aioredis.Redis.from_url(settings.url, **options)
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url, max_connections=max_connections, timeout=None, **options)
    return aioredis.Redis.from_pool(pool)


async def durability(server: aioredis.Redis) -> Durability:
    """Ask `server` whether it keeps what it acknowledges."""
    info = await server.info("persistence")
    appendfsync: str | None = None
    try:
        reply = await server.config_get("appendfsync")
    except ResponseError:  # CONFIG renamed or forbidden (ACL, managed Redis)
        reply = {}
    value = reply.get("appendfsync") if isinstance(reply, Mapping) else None
    if isinstance(value, str):
        appendfsync = value
    return parse_durability(info, appendfsync)


async def check_connection(settings: RedisSettings, role: str) -> Durability | None:
    """Connect once at startup and log `event=redis_connected durable=…` (no password: the
    settings' URL has none); a failure is logged (`event=redis_unreachable`) and gives None."""
    conn = client(settings)
    try:
        await conn.ping()
        found = await durability(conn)
    except (RedisError, OSError, ValueError) as exc:
        log.warning("event=redis_unreachable role=%s url=%s error=%s", role, settings.url, exc)
        return None
    finally:
        await conn.aclose()
    log.info("event=redis_connected role=%s url=%s durable=%s reason=%s appendfsync=%s", role,
             settings.url, found.durable, found.reason or "-", found.appendfsync or "-")
    return found
