"""An in-memory stand-in for `controller.redis_logs.RedisLogs`, for the reconcilers' unit tests
(the real one is tested against a real redis-server in the integration tests)."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError

from controller.redis_logs import StreamMissing


class FakeRedisLogs:
    """Streams and groups as sets; `down` makes every call fail as an unreachable Redis does."""

    recheck_s = 30.0

    def __init__(self) -> None:
        self.streams: set[str] = set()
        self.groups: set[tuple[str, str]] = set()
        self.made_from_start: dict[tuple[str, str], bool] = {}
        """(stream, group) → whether it was made at the stream's first entry (else its tail)."""
        self.down = False

    async def ensure_stream(self, stream: str) -> bool:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        created = stream not in self.streams
        self.streams.add(stream)
        return created

    async def ensure_group(self, stream: str, group: str, *, from_start: bool = False) -> None:
        if self.down:
            raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        if stream not in self.streams:
            raise StreamMissing(f"the Redis stream {stream} does not exist")
        if (stream, group) not in self.groups:
            self.made_from_start[(stream, group)] = from_start
        self.groups.add((stream, group))
