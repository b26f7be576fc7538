"""Deletes what a deleted Redis broker or consumer left in Redis (the controller's own client).

A deleted broker's keys (`log_pattern(uid)`: its stream, with every consumer group in it, and
every consumer's state) are found with `SCAN MATCH` and `UNLINK`ed; a deleted trigger's consumer
group is destroyed (`XGROUP DESTROY`) and its keys (`consumer_pattern`) unlinked. Idempotent,
retried with backoff until Redis answers, and done once more `SETTLE_S` later: a gateway or a
dispatcher still acting on the previous snapshot or plan may have written in between.

Pending deletions are kept in a journal (`journal`, a 0600 JSON file in the state dir, written
off the loop) until both rounds are done, so a controller stopped during a Redis outage does them
when it starts again (`start`).

Given `live` (what the store has), it also sweeps every `sweep_every_s`: the groups and consumer
keys on Flint's logs whose Trigger or Subscription is not in the store, and every key of a log
whose broker or channel is not, are deleted as above (`redis_sweep` finds them, and says why a
sweep never takes what belongs to a live object).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from controller.redis_sweep import Live, Orphans, find_orphans
from flint_common.backoff import backoff_delay
from flint_common.private import write_private
from flint_common.redis_keys import consumer_pattern, log_pattern, stream_key

__all__ = ["RETRY_MAX_S", "SETTLE_S", "SWEEP_EVERY_S", "RedisJanitor", "unlink_matching"]

log = logging.getLogger("flint.redis")

SETTLE_S = 10.0
"""A deletion is done again this long after it first succeeded (late writers)."""
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
"""Backoff between the attempts of a deletion while Redis does not answer: doubling, capped."""
SCAN_COUNT = 500
SWEEP_EVERY_S = 300.0
"""How often Redis is swept for orphans (each sweep SCANs the whole keyspace once)."""


async def unlink_matching(client: aioredis.Redis, pattern: str) -> int:
    """UNLINK every key matching `pattern` (SCAN MATCH, in batches); how many were unlinked."""
    removed = 0
    batch: list[str] = []
    async for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
        batch.append(key)
        if len(batch) >= SCAN_COUNT:
            removed += int(await client.unlink(*batch))
            batch = []
    if batch:
        removed += int(await client.unlink(*batch))
    return removed


def read_journal(path: Path) -> list[str]:
    """The pending deletions a journal holds ([] when there is none). Blocking: file I/O."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        log.warning("event=redis_journal_unreadable path=%s error=%s", path, exc)
        return []
    return [str(k) for k in data] if isinstance(data, list) else []


class RedisJanitor:
    """Runs the deletions on background tasks, one per broker or consumer at a time."""

    def __init__(
        self, client: aioredis.Redis, *, journal: Path | None = None, settle_s: float = SETTLE_S,
        retry_first_s: float = RETRY_FIRST_S, retry_max_s: float = RETRY_MAX_S,
        live: Callable[[], Awaitable[Live]] | None = None, sweep_every_s: float = SWEEP_EVERY_S,
        active: Callable[[], bool] = lambda: True,
    ) -> None:
        self._client = client
        self._live = live
        """What the store has, read afresh by each sweep (None: no sweeps)."""
        self._sweep_every_s = sweep_every_s
        self._active = active
        """Whether sweeps run now (a standby controller leaves them to the leader)."""
        self._sweeper: asyncio.Task[None] | None = None
        self._journal = journal
        self._settle_s = settle_s
        self._retry_first_s = retry_first_s
        self._retry_max_s = retry_max_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wanted: set[str] = set()
        """Every deletion not yet done (both rounds): what the journal holds."""
        self._dirty = False
        self._saver: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Resume the deletions a previous run left in the journal; sweep every `sweep_every_s`
        (the first time one period after this)."""
        if self._live is not None and self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(),
                                                                   name="redis-sweep")
        if self._journal is None:
            return
        for key in await asyncio.to_thread(read_journal, self._journal):
            kind, _, what = key.partition(":")
            log_uid, _, consumer_uid = what.partition("/")
            try:
                if kind == "log":
                    self.delete_log(log_uid)
                elif kind == "consumer":
                    self.delete_consumer(log_uid, consumer_uid)
            except ValueError as exc:  # a journal edited by hand: skip what is not a uid
                log.warning("event=redis_journal_entry_skipped entry=%s error=%s", key, exc)

    @property
    def pending(self) -> list[str]:
        """What is being deleted: `log:<uid>` and `consumer:<log uid>/<consumer uid>`."""
        return sorted(self._tasks)

    def delete_log(self, log_uid: str) -> None:
        """Delete every key of the broker (or channel) `log_uid`."""
        log_pattern(log_uid)  # a ValueError now for what is not a uid
        self._spawn(f"log:{log_uid}", lambda: self._delete_log(log_uid))

    def delete_consumer(self, log_uid: str, consumer_uid: str) -> None:
        """Destroy the consumer's group on the log's stream and delete its keys."""
        consumer_pattern(log_uid, consumer_uid)  # a ValueError now for what is not a uid
        if f"log:{log_uid}" in self._tasks:
            return  # its whole log is going
        self._spawn(f"consumer:{log_uid}/{consumer_uid}",
                    lambda: self._delete_consumer(log_uid, consumer_uid))

    async def sweep(self) -> Orphans:
        """Find the orphans on Redis now and start deleting them (as `delete_log` and
        `delete_consumer`); what was found."""
        assert self._live is not None
        found = await find_orphans(self._client, self._live)
        for log_uid in found.logs:
            log.warning("event=redis_orphan what=log:%s (its broker or channel is not in this "
                        "Flint's store: every key of it is deleted; a Redis database belongs to one "
                        "Flint installation)", log_uid)
            try:
                self.delete_log(log_uid)
            except ValueError as exc:  # a key under flint: that no Flint made; left alone
                log.warning("event=redis_orphan_skipped what=log:%s error=%s", log_uid, exc)
        for log_uid, consumer in found.consumers:
            log.info("event=redis_orphan what=consumer:%s/%s", log_uid, consumer)
            try:
                self.delete_consumer(log_uid, consumer)
            except ValueError:  # a group not named like a uid: no consumer's, but it holds the floor
                with contextlib.suppress(ResponseError):
                    await self._client.xgroup_destroy(stream_key(log_uid), consumer)
        return found

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every_s)
            if not self._active():
                continue
            try:
                await self.sweep()
            except Exception as exc:  # Redis or the store away: the next round tries again
                log.warning("event=redis_sweep_failed error=%s", f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """Stop; what is not done stays in the journal (written before this returns)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self._saver is not None:
            with contextlib.suppress(Exception):
                await self._saver

    def _journal_changed(self) -> None:
        if self._journal is None:
            return
        self._dirty = True
        if self._saver is None or self._saver.done():
            self._saver = asyncio.get_running_loop().create_task(self._save(), name="redis-journal")

    async def _save(self) -> None:
        assert self._journal is not None
        while self._dirty:
            self._dirty = False
            data = orjson.dumps(sorted(self._wanted))
            try:
                await asyncio.to_thread(write_private, self._journal, data)
            except OSError as exc:  # the deletions go on; only a restart would forget them
                log.warning("event=redis_journal_write_failed path=%s error=%s", self._journal, exc)

    async def _delete_log(self, log_uid: str) -> str:
        removed = await unlink_matching(self._client, log_pattern(log_uid))
        return f"keys={removed}"

    async def _delete_consumer(self, log_uid: str, consumer_uid: str) -> str:
        destroyed = 0
        with contextlib.suppress(ResponseError):  # no stream (nothing was sent) or no group
            destroyed = int(await self._client.xgroup_destroy(stream_key(log_uid), consumer_uid))
        removed = await unlink_matching(self._client, consumer_pattern(log_uid, consumer_uid))
        return f"group_destroyed={destroyed} keys={removed}"

    def _spawn(self, key: str, work: Callable[[], Awaitable[str]]) -> None:
        if key in self._tasks:
            return
        task = asyncio.get_running_loop().create_task(self._run(key, work), name=f"redis-delete:{key}")
        self._tasks[key] = task
        task.add_done_callback(lambda _t: self._tasks.pop(key, None))
        if key not in self._wanted:
            self._wanted.add(key)
            self._journal_changed()

    async def _run(self, key: str, work: Callable[[], Awaitable[str]]) -> None:
        for round_ in ("first", "settled"):
            if round_ == "settled":
                await asyncio.sleep(self._settle_s)
            failures = 0
            done = ""
            while True:
                try:
                    done = await work()
                    break
                except (RedisError, OSError) as exc:
                    delay = backoff_delay(self._retry_first_s, self._retry_max_s, failures)
                    failures += 1
                    log.warning("event=redis_delete_failed what=%s error=%s retry_in_s=%.1f",
                                key, f"{type(exc).__name__}: {exc}", delay)
                    await asyncio.sleep(delay)
            log.info("event=redis_deleted what=%s round=%s %s", key, round_, done)
        self._wanted.discard(key)
        self._journal_changed()
