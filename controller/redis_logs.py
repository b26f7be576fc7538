"""Creates the streams and consumer groups of Redis-backed logs: the controller owns their
lifecycle, so that a gateway or a dispatcher acting on an old snapshot or plan cannot bring back
what the janitor (`redis_janitor`) deleted.

* A broker's or RedisChannel's stream is created empty by its reconciler before the gateways get
  it (`create_stream`: one script, so an existing stream and its entries are never touched; the
  gateways append with `XADD … NOMKSTREAM`, which never makes a stream).
* A Trigger's or Subscription's consumer group (named by its uid) is created at the stream's
  tail (`$`: a new consumer starts at the tail) by its reconciler before the consumer enters the
  dispatch plan (`create_group`: on an existing stream only, else `StreamMissing`). Dispatchers
  never create a group: they wait for it (`RedisConsumerSource.open`).

Both are idempotent. A stream Redis lost (a restart without its append-only file, a FLUSHALL)
is made again by its log's reconciler, which then wakes the log's consumers
(`redis_marks.ensure_stream`'s `recreated`); each makes its group again at the stream's first
entry, not its tail, since every entry of the new stream was appended after the loss and is
theirs to deliver.

A consumer exists in the store before its group does (its reconciler saw it first), which is what
lets the janitor's sweep (`redis_sweep`) take a group without a consumer in the store for an
orphan.

`RedisLogs` is the reconcilers' handle on these: it remembers for `recheck_s` what it created or
found, so that frequent reconciles cost no Redis command, and a stream or group Redis lost (a
restart without its append-only file, a FLUSHALL) is created again by the next reconcile after
that (the reconcilers of Redis-backed objects requeue every `recheck_s`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

__all__ = ["RECHECK_S", "RedisLogs", "StreamMissing", "create_group", "create_stream"]

log = logging.getLogger("flint.redis")

RECHECK_S = 30.0
"""How long `RedisLogs` takes a stream or group it created or found for still there (seconds)."""

_CREATE_STREAM = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '$', 'MKSTREAM')
redis.call('XGROUP', 'DESTROY', KEYS[1], ARGV[1])
return 1
"""
"""An empty stream, only where no key is: made by a group created with MKSTREAM and destroyed in
the same step (nobody sees the group). Unlike `XADD … MAXLEN 0` this leaves the stream's counters
at zero, so Redis can report the lag of the groups created on it later."""

_SCRATCH_GROUP = "flint-create"


class StreamMissing(LookupError):
    """A consumer group cannot be created: its log's stream does not exist (its broker or
    channel was not reconciled yet, or it was deleted)."""


async def create_stream(client: aioredis.Redis, stream: str) -> bool:
    """Create `stream` empty unless it exists; True when it was created now."""
    return bool(int(await client.eval(_CREATE_STREAM, 1, stream, _SCRATCH_GROUP)))


async def create_group(client: aioredis.Redis, stream: str, group: str, *, at: str = "$") -> bool:
    """Create the consumer group `group` on the existing `stream`, at its tail (`$`, a new
    consumer) or at `at` (`0-0`: from its first entry); True when it was created now, False when
    it existed. `StreamMissing` when the stream does not exist."""
    try:
        await client.xgroup_create(stream, group, id=at)
    except ResponseError as exc:
        if "BUSYGROUP" in str(exc):
            return False
        if "requires the key to exist" in str(exc):
            raise StreamMissing(f"the Redis stream {stream} does not exist") from None
        raise
    return True


class RedisLogs:
    """The reconcilers' creation of streams and groups, on the controller's client; Redis errors
    (`RedisError`, `OSError`) and `StreamMissing` go to the caller."""

    def __init__(self, client: aioredis.Redis, *, recheck_s: float = RECHECK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.recheck_s = recheck_s
        self._clock = clock
        self._known: dict[tuple[str, str], float] = {}
        """(stream, group or "" for the stream itself) → when it was last created or found."""
        self._next_prune = 0.0

    async def ensure_stream(self, stream: str) -> bool:
        """`stream` exists: created now, or found (or created) less than `recheck_s` ago; True
        when it was created now. What was remembered of the groups on it is forgotten then (a
        stream made again has none: they must be made again too, at once)."""
        if self._fresh((stream, "")):
            return False
        created = await create_stream(self.client, stream)
        if created:
            log.info("event=stream_created stream=%s", stream)
            for key in [k for k in self._known if k[0] == stream and k[1]]:
                del self._known[key]
        self._mark((stream, ""))
        return created

    async def ensure_group(self, stream: str, group: str, *, from_start: bool = False) -> None:
        """The group `group` exists on `stream` (as `ensure_stream` for the stream): made at the
        tail, or with `from_start` at the first entry (a consumer whose group Redis lost: what
        its stream holds now was appended since, and would be skipped at the tail)."""
        if self._fresh((stream, group)):
            return
        if await create_group(self.client, stream, group, at="0-0" if from_start else "$"):
            log.info("event=consumer_group_created stream=%s group=%s position=%s", stream, group,
                     "0-0 (the first entry: its group was lost)" if from_start else "$ (the tail)")
        self._mark((stream, group))

    def _fresh(self, key: tuple[str, str]) -> bool:
        at = self._known.get(key)
        return at is not None and self._clock() - at < self.recheck_s

    def _mark(self, key: tuple[str, str]) -> None:
        now = self._clock()
        self._known[key] = now
        if now >= self._next_prune:  # what was deleted stops being remembered
            self._next_prune = now + self.recheck_s
            for k in [k for k, at in self._known.items() if now - at >= self.recheck_s]:
                del self._known[k]
