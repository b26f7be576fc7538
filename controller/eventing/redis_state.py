"""The Redis backend of a consumer's `ConsumerState`: its pending retries and dead letters live in
Redis, next to its log (`flint_common.redis_keys`), because every dispatcher that runs the
consumer shares them.

* pending retries: the sorted set `retries` (member: the retry id, from `INCR seq`; score: when
  due), their data in the hash `retrydata` (`controller.eventing.redis_scripts`);
* `take_due` moves due retries, in one script, into `inflight` with a lease (`lease_s`) and this
  dispatcher (`owner`) as taker, and gives them out; a lease that expired (its taker died) is
  taken over like a due retry. `update_retry`, `remove_retry` and `add_dead_letter(retry_id=…)`
  end the lease; each `take_due` renews the leases of the retries this state took and has not
  ended (the runner calls it at least every `RETRY_POLL_S`, far below the lease);
* dead letters: the sorted set `dead` (by id, from the same counter: ids are never reused) and
  their data in `deaddata`; `redeliver` turns them back into retries in one script.

A taker whose lease expired while it was still attempting (a stall longer than `lease_s`) may
attempt a retry that another taker attempts too: a duplicate, never a loss (at least once).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import redis.asyncio as aioredis

from controller.eventing.consumer import DueRetry
from controller.eventing.redis_scripts import (
    ADD_DEAD_LETTER,
    ADD_RETRY,
    REDELIVER,
    TAKE_DUE,
    UPDATE_RETRY,
    text,
)
from controller.eventing.state import DeadLetter
from flint_common.redis_keys import consumer_key

__all__ = ["RedisConsumerState"]


def _retry_data(event_id: str, event: bytes, attempt: int) -> bytes:
    return orjson.dumps({"event_id": event_id, "event": base64.b64encode(event).decode(),
                         "attempt": attempt})


def _due_retry(rid: bytes | str, data: bytes | str, next_at: float) -> DueRetry:
    obj = orjson.loads(data)
    return DueRetry(int(text(rid)), str(obj["event_id"]), base64.b64decode(obj["event"]),
                    int(obj["attempt"]), float(next_at))


class RedisConsumerState:
    """One consumer's pending retries and dead letters, shared by the dispatchers that run it."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        log_uid: str,
        consumer_uid: str,
        owner: str,
        lease_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self.consumer = consumer_uid
        self.owner = owner
        self.lease_s = lease_s
        self._clock = clock

        def key(part: str) -> str:
            return consumer_key(log_uid, consumer_uid, part)

        self._seq, self._retries, self._inflight = key("seq"), key("retries"), key("inflight")
        self._retrydata, self._dead, self._deaddata = key("retrydata"), key("dead"), key("deaddata")
        self._take = redis.register_script(TAKE_DUE)
        self._add_retry = redis.register_script(ADD_RETRY)
        self._update = redis.register_script(UPDATE_RETRY)
        self._add_dead = redis.register_script(ADD_DEAD_LETTER)
        self._redeliver = redis.register_script(REDELIVER)
        self._held: set[int] = set()
        """Retries this state took and whose lease it has not ended: renewed at each take."""

    async def retries(self) -> list[DueRetry]:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrange(self._retries, 0, -1, withscores=True)
            pipe.hgetall(self._inflight)
            waiting, taken = await pipe.execute()
        due: dict[str, float] = {text(m): float(s) for m, s in waiting}
        for rid, value in taken.items():
            due[text(rid)] = float(text(value).split("|", 2)[1])
        if not due:
            return []
        ids = list(due)
        found = await self._redis.hmget(self._retrydata, ids)
        out = [_due_retry(i, d, due[i]) for i, d in zip(ids, found, strict=True) if d is not None]
        return sorted(out, key=lambda r: (r.next_at, r.id))

    async def take_due(self, now: float, limit: int) -> list[DueRetry]:
        reply = await self._take(
            keys=[self._retries, self._inflight, self._retrydata],
            args=[now, max(limit, 0), now + self.lease_s, self.owner, *sorted(self._held)],
        )
        taken = [_due_retry(reply[i], reply[i + 1], float(text(reply[i + 2])))
                 for i in range(0, len(reply), 3)]
        self._held.update(r.id for r in taken)
        return taken

    async def add_retry(self, event_id: str, event: bytes, attempt: int, next_at: float) -> int:
        rid = await self._add_retry(keys=[self._seq, self._retries, self._retrydata],
                                    args=[next_at, _retry_data(event_id, event, attempt)])
        return int(rid)

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        await self._update(keys=[self._retries, self._inflight, self._retrydata],
                           args=[retry_id, attempt, next_at, self.owner])
        self._held.discard(retry_id)

    async def remove_retry(self, retry_id: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._retries, retry_id)
            pipe.hdel(self._inflight, str(retry_id))
            pipe.hdel(self._retrydata, str(retry_id))
            await pipe.execute()
        self._held.discard(retry_id)

    async def add_dead_letter(
        self,
        event_id: str,
        event: bytes,
        reason: str,
        status: int | None,
        detail: str,
        at: float,
        *,
        retry_id: int | None = None,
    ) -> int:
        data = orjson.dumps({"event_id": event_id, "event": base64.b64encode(event).decode(),
                             "reason": reason, "status": status, "detail": detail, "at": at})
        keys = [self._seq, self._dead, self._deaddata, self._retries, self._inflight, self._retrydata]
        dead = await self._add_dead(keys=keys, args=[data, "" if retry_id is None else retry_id,
                                                     self.owner])
        if retry_id is not None:
            self._held.discard(retry_id)
        return int(dead)

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        if limit <= 0:
            return []
        found_ids: Any = await self._redis.zrange(self._dead, 0, limit - 1)
        ids = [text(i) for i in found_ids]
        if not ids:
            return []
        found = await self._redis.hmget(self._deaddata, ids)
        return [self._dead_letter(i, d) for i, d in zip(ids, found, strict=True) if d is not None]

    def _dead_letter(self, id_: str, data: bytes | str) -> DeadLetter:
        obj: dict[str, Any] = orjson.loads(data)
        status = obj.get("status")
        return DeadLetter(
            int(id_), self.consumer, 0, base64.b64decode(obj["event"]), str(obj["reason"]),
            None if status is None else int(status), str(obj["detail"]), float(obj["at"]),
            event_id=str(obj["event_id"]),
        )

    async def redeliver(self, ids: Sequence[int] | None, next_at: float) -> int:
        if ids is not None and not ids:
            return 0
        chosen = [] if ids is None else sorted({int(i) for i in ids})
        moved = await self._redeliver(
            keys=[self._seq, self._dead, self._deaddata, self._retries, self._retrydata],
            args=[next_at, *chosen])
        return int(moved)
