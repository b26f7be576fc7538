"""Retention and deletion of a Redis-backed log (a broker's or a channel's stream): what every
consumer handled goes, a maximum age and length bound the rest (counting what is dropped before
it was handled), and a deleted broker, channel or consumer leaves no key behind.

`trim` keeps every entry at or above the *floor*: the smallest, over the stream's consumer groups,
of the group's oldest pending entry, its last-delivered id and its oldest pending retry's event id
(a retry carries its event, but keeping the entry keeps the accounting honest). Below the floor
every group handled everything: `XTRIM MINID` there counts as handled. Then the age and length caps
trim exactly (`MINID` at now − `max_age_s`, `MAXLEN`), and whatever they take is counted as dropped.
A group's oldest retry comes from its `retryfloor` sorted set (one `ZRANGE`, however many retries
wait; the scripts keep it with the retries): `<ms>-0` of the lowest millisecond there, which keeps
every entry of that millisecond (conservative: a few handled entries may stay a round longer).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from controller.eventing.redis_scripts import min_stream_id, text
from flint_common.redis_keys import consumer_key, consumer_pattern, log_pattern

__all__ = ["delete_consumer", "delete_log", "retention_floor", "trim"]

_SCAN_COUNT = 1000


async def retention_floor(redis: aioredis.Redis, log_uid: str, stream: str) -> str | None:
    """The smallest stream id some consumer group of `stream` still needs (None: no group)."""
    try:
        groups: list[dict[str, Any]] = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream
        return None
    marks: list[str] = []
    for g in groups:
        name = text(g["name"])
        marks.append(text(g["last-delivered-id"]))
        if int(g["pending"]):
            summary = await redis.xpending(stream, name)
            if summary.get("min") is not None:
                marks.append(text(summary["min"]))
        oldest = await _oldest_retry(redis, log_uid, name)
        if oldest is not None:
            marks.append(oldest)
    return min_stream_id(marks)


async def _oldest_retry(redis: aioredis.Redis, log_uid: str, group: str) -> str | None:
    """The floor the group's pending retries need: `<ms>-0` of the oldest one's event id."""
    try:
        key = consumer_key(log_uid, group, "retryfloor")
    except ValueError:  # a group not named like a consumer uid: not one of ours
        return None
    lowest: Any = await redis.zrange(key, 0, 0, withscores=True)
    return f"{int(lowest[0][1])}-0" if lowest else None


async def trim(
    redis: aioredis.Redis,
    log_uid: str,
    stream: str,
    *,
    max_age_s: float | None,
    max_records: int | None,
    now: float | None = None,
) -> tuple[int, int]:
    """Trim `stream`: `(handled, dropped)`, the entries removed that every group had handled and
    those the age (`max_age_s`) or length (`max_records`) caps removed before then (None: no cap).
    `now` (unix seconds) defaults to the clock. A stream without groups is trimmed by the caps only."""
    handled = dropped = 0
    floor = await retention_floor(redis, log_uid, stream)
    if floor is not None:
        handled = int(await redis.xtrim(stream, minid=floor, approximate=False))
    if max_age_s is not None:
        cutoff_ms = int(((time.time() if now is None else now) - max_age_s) * 1000)
        if cutoff_ms > 0:
            dropped += int(await redis.xtrim(stream, minid=f"{cutoff_ms}-0", approximate=False))
    if max_records is not None:
        dropped += int(await redis.xtrim(stream, maxlen=max(max_records, 0), approximate=False))
    return handled, dropped


async def _unlink_matching(redis: aioredis.Redis, pattern: str) -> int:
    removed = 0
    batch: list[Any] = []
    async for key in redis.scan_iter(match=pattern, count=_SCAN_COUNT):
        batch.append(key)
        if len(batch) >= _SCAN_COUNT:
            removed += int(await redis.unlink(*batch))
            batch = []
    if batch:
        removed += int(await redis.unlink(*batch))
    return removed


async def delete_log(redis: aioredis.Redis, log_uid: str) -> int:
    """The broker or channel `log_uid` was deleted: unlink every key of its log (its stream with
    its groups, every consumer's state); how many keys. On a Redis Cluster, run it on the primary
    of the log's slot (every key has its hash tag)."""
    return await _unlink_matching(redis, log_pattern(log_uid))


async def delete_consumer(redis: aioredis.Redis, log_uid: str, stream: str, group: str) -> int:
    """The consumer `group` (a Trigger's or Subscription's uid) was deleted: destroy its group
    and unlink its state (retries, dead letters, lease); how many keys were unlinked."""
    with contextlib.suppress(ResponseError):  # no such stream
        await redis.xgroup_destroy(stream, group)
    return await _unlink_matching(redis, consumer_pattern(log_uid, group))
