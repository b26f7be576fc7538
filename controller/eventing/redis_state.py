"""The Redis backend of a consumer's `ConsumerState`: its pending retries and dead letters live in
Redis, next to its log (`flint_common.redis_keys`), because every dispatcher that runs the
consumer shares them.

* pending retries: the sorted set `retries` (member: the retry id, from `INCR seq`; score: when
  due), their data in the hash `retrydata` and their events' stream ids in `retryfloor` (for
  retention: `controller.eventing.redis_retention`), all kept together by the scripts
  (`controller.eventing.redis_scripts`);
* `take_due` moves due retries, in one script, into `inflight` with a lease (`lease_s`) and this
  dispatcher (`owner`) as taker, and gives them out; a lease that expired (its taker died) is
  taken over like a due retry. `update_retry`, `remove_retry` and `add_dead_letter(retry_id=…)`
  end the lease; each `take_due` renews the leases of the retries this state took and has not
  ended (the runner calls it at least every `RETRY_POLL_S`, far below the lease), and `hold`
  renews one and says whether it is still this taker's;
* dead letters: the sorted set `dead` (by id, from the same counter: ids are never reused) and
  their data in `deaddata`; `redeliver` turns them back into retries in one script.

Due times and leases are on Redis's clock (`TIME` in the scripts), so several dispatchers agree on
them whatever their own clocks say. The Protocol's times (`now`, `next_at`) are unix seconds on
the caller's clock, which must be this state's `clock`: the state sends their distance from its
clock's present (`next_at − clock()`: a delay; `now − clock()`: 0 when the caller means "now"),
and the script adds it to Redis's present; the `next_at` it gives back is mapped onto `clock` the
same way. Only durations measured on one machine cross the wire, never an absolute time.

A taker whose lease expired while it was still attempting (a stall longer than `lease_s`) may
attempt a retry that another taker attempts too: a duplicate, never a loss (at least once). Its
outcome is dropped, not written over the new taker's (`update_retry`, `add_dead_letter`, and
`hold` before the runner sends the event to a dead-letter sink).
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
    HOLD,
    REDELIVER,
    REMOVE_RETRY,
    TAKE_DUE,
    UPDATE_RETRY,
    floor_score,
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
        self._floor = key("retryfloor")
        self._take = redis.register_script(TAKE_DUE)
        self._add_retry = redis.register_script(ADD_RETRY)
        self._update = redis.register_script(UPDATE_RETRY)
        self._remove = redis.register_script(REMOVE_RETRY)
        self._hold = redis.register_script(HOLD)
        self._add_dead = redis.register_script(ADD_DEAD_LETTER)
        self._redeliver = redis.register_script(REDELIVER)
        self._held: set[int] = set()
        """Retries this state took and whose lease it has not ended: renewed at each take."""

    def _from_now(self, at: float) -> str:
        """`at` (unix seconds on the caller's clock) as seconds from the present, for a script to
        add to Redis's present."""
        return repr(at - self._clock())

    async def retries(self) -> list[DueRetry]:
        t0 = self._clock()
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.time()
            pipe.zrange(self._retries, 0, -1, withscores=True)
            pipe.hgetall(self._inflight)
            (sec, usec), waiting, taken = await pipe.execute()
        shift = t0 - (int(sec) + int(usec) / 1e6)  # Redis's clock → ours
        due: dict[str, float] = {text(m): float(s) + shift for m, s in waiting}
        for rid, value in taken.items():
            due[text(rid)] = float(text(value).split("|", 2)[1]) + shift
        if not due:
            return []
        ids = list(due)
        found = await self._redis.hmget(self._retrydata, ids)
        out = [_due_retry(i, d, due[i]) for i, d in zip(ids, found, strict=True) if d is not None]
        return sorted(out, key=lambda r: (r.next_at, r.id))

    async def take_due(self, now: float, limit: int) -> list[DueRetry]:
        """See `ConsumerState.take_due`; "due at `now`" is judged on Redis's clock, at `now`'s
        distance from this state's clock's present (the runner passes that present: 0)."""
        t0 = self._clock()
        reply = await self._take(
            keys=[self._retries, self._inflight, self._retrydata, self._floor],
            args=[repr(now - t0), max(limit, 0), repr(self.lease_s), self.owner,
                  *sorted(self._held)],
        )
        shift = t0 - float(text(reply[0]))
        taken = [_due_retry(reply[i], reply[i + 1], float(text(reply[i + 2])) + shift)
                 for i in range(1, len(reply), 3)]
        self._held.update(r.id for r in taken)
        return taken

    async def hold(self, retry_id: int) -> bool:
        held = int(await self._hold(keys=[self._inflight],
                                    args=[retry_id, repr(self.lease_s), self.owner]))
        if not held:
            self._held.discard(retry_id)
        return bool(held)

    async def add_retry(self, event_id: str, event: bytes, attempt: int, next_at: float) -> int:
        rid = await self._add_retry(
            keys=[self._seq, self._retries, self._retrydata, self._floor],
            args=[self._from_now(next_at), _retry_data(event_id, event, attempt),
                  floor_score(event_id) or ""])
        return int(rid)

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        await self._update(keys=[self._retries, self._inflight, self._retrydata, self._floor],
                           args=[retry_id, attempt, self._from_now(next_at), self.owner])
        self._held.discard(retry_id)

    async def remove_retry(self, retry_id: int) -> None:
        await self._remove(keys=[self._retries, self._inflight, self._retrydata, self._floor],
                           args=[retry_id])
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
        keys = [self._seq, self._dead, self._deaddata, self._retries, self._inflight, self._retrydata,
                self._floor]
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
            keys=[self._seq, self._dead, self._deaddata, self._retries, self._retrydata, self._floor],
            args=[self._from_now(next_at), *chosen])
        return int(moved)
