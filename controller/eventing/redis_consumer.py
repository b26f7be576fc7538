"""The Redis Streams backend of a consumer's `ConsumerSource`: several dispatchers share one
consumer (a Trigger or a Subscription) through its consumer group, so delivery scales out and
survives a dispatcher's death (issue 12 §3).

* The group is named after the consumer's uid and created by the controller at the stream's
  tail (`$`: a new trigger starts at the tail) before the consumer enters the plan
  (`controller.redis_logs`); a source never creates a group or a stream (a dispatcher on an old
  plan would bring back a group the controller deleted, an orphan that holds back retention).
  `open` waits while the group does not exist, and so do `read`, `pending` and `claim` when it
  was destroyed under a running runner (`NOGROUP`: its consumer deleted, or Redis lost it; the
  controller creates it again for a consumer that still exists): looked for again every
  `group_poll_max_s` at most, logged once per wait. Each dispatcher reads the group as its own
  group consumer, named by its unique, stable dispatcher id, with `XREADGROUP … >` (blocking:
  `blocks`), and acks with `XACK` once the runner handled an event (delivered, filtered out,
  stored as a retry or dead-lettered: durable outcomes only).
* Idle time measures a dead dispatcher, not a slow subscriber: `maintain` refreshes the idle
  time of every entry this source holds (read, not acked) with `XCLAIM … JUSTID` to itself every
  `claim_heartbeat_s` (only those still pending with it, in one script); a reader takes over
  entries of other consumers idle longer than `claim_after_s` (`XAUTOCLAIM` in `read`, at most
  every `claim_after_s / 4`; `pending`/`claim` at start, with the entries its own earlier
  incarnation left). Entries trimmed or deleted
  meanwhile are acked and skipped. Consumers of the group with nothing pending that were idle
  that long are removed from it (`remove_dead_consumers`, also run by `maintain`).
* An ordered consumer (`delivery.order: ordered`) is read by one dispatcher at a time: the
  holder of its lease key (`SET … PX`, value `<owner>|<fencing number>`, the number from `INCR`
  on the `fence` key, so each new holder's is higher: `fence`). `open` waits until it holds the
  lease; `maintain` renews it every `lease_s / 3` and raises `LeaseLost` when it is gone or could
  not be renewed in time (the runner fails and the dispatcher restarts it, which waits for the
  lease again); `check_turn`, asked before each attempt (the runner retries in place), raises it
  once the lease ran out. A new holder first delivers everything pending in the group, in id
  order, then reads on. A holder that is paused (a stop-the-world pause, a frozen VM) past its
  lease's expiry can still deliver the one event it was delivering when it resumes (the attempt
  under way; no retry of it), while the next holder already delivers: the fencing number orders
  the holders, but a subscriber that does not check it sees that event out of order (or twice).

The blocking read holds one pooled connection for up to `block_ms`: it goes through `reads`, a
client of its own whose socket timeout is longer than that (or none), so that many consumers'
blocking reads never starve the short commands (acks, heartbeats, claims, leases) of the other
client. Acks are coalesced (one XACK in flight per source, sent by a flusher task the source owns,
so a cancelled caller loses no one's ack), but the runner's deliveries may still call the state
concurrently (up to its window of 64): with many consumers on one client, give it a pool that
waits for a free connection (`redis.asyncio.BlockingConnectionPool`) rather than redis-py's
default pool, which fails a command past 100 connections (the dispatcher sizes both:
`redis_dispatch`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from controller.eventing.redis_scripts import (
    ACQUIRE_LEASE,
    HEARTBEAT,
    RELEASE_LEASE,
    REMOVE_DEAD_CONSUMERS,
    RENEW_LEASE,
    lease_value,
    parse_stream_id,
    text,
)
from flint_common.redis_keys import EVENT_FIELD, consumer_key

__all__ = ["LeaseLost", "RedisConsumerSettings", "RedisConsumerSource"]

log = logging.getLogger("flint.dispatcher")

_CHUNK = 500
"""Ids per XCLAIM/XACK command."""
_ACK_STOP_S = 1.0
"""How long a stopping source waits for its acks in flight (`RedisConsumerSource._stop_acks`)."""
_GROUP_POLL_FIRST_S = 0.05


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark an ack batch's outcome seen: its callers may all have stopped waiting."""
    if not future.cancelled():
        future.exception()


def _no_group(exc: ResponseError) -> bool:
    """Redis says the stream or the consumer group does not exist."""
    return str(exc).startswith("NOGROUP")


class LeaseLost(RuntimeError):
    """An ordered consumer's lease is held by another dispatcher now, or could not be renewed."""


@dataclass(frozen=True, slots=True)
class RedisConsumerSettings:
    """How a Redis source shares its consumer with other dispatchers (times in seconds)."""

    claim_after_s: float = 30.0
    """Entries another consumer of the group held this long without a heartbeat are taken over
    (its dispatcher is taken for dead); also the idle time after which a consumer with nothing
    pending is removed from the group. 30 s: far above `claim_heartbeat_s`."""
    claim_heartbeat_s: float = 5.0
    """How often the idle time of the entries this source holds is reset (`XCLAIM … JUSTID`)."""
    block_ms: int = 1000
    """How long one `XREADGROUP` waits for new entries (milliseconds)."""
    lease_s: float = 30.0
    """An ordered consumer's lease; renewed every third of it."""
    backlog_every_s: float = 1.0
    """`backlog` asks Redis at most this often (the runner asks after each batch)."""
    backlog_cap: int = 10_000
    """When Redis reports no lag (possible on 7.0 after deletions), entries counted at most."""
    group_poll_max_s: float = 1.0
    """While the consumer's group does not exist, it is looked for again this often at most
    (first after 50 ms, then twice as long each time up to this)."""


def _fields(entry: Any) -> tuple[str, bytes | None]:
    """A stream entry `(id, fields)` of redis-py as `(id, the event's bytes or None)`."""
    eid, fields = entry
    raw = fields.get(EVENT_FIELD) if fields else None
    return text(eid), raw


class RedisConsumerSource:
    """One dispatcher's share of a consumer's events, through the consumer's group."""

    blocks = True
    """`read` waits up to `block_ms` for new entries."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        reads: aioredis.Redis | None = None,
        log_uid: str,
        stream: str,
        group: str,
        consumer: str,
        ordered: bool = False,
        settings: RedisConsumerSettings = RedisConsumerSettings(),
        label: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        """Every command but the blocking read: acks, claims, heartbeats, leases, scripts."""
        self._reads = reads if reads is not None else redis
        """The blocking `XREADGROUP` (its own pool, so that it never holds up the others)."""
        self.log_uid = log_uid
        self.stream = stream
        self.group = group
        self.consumer = consumer
        """This dispatcher's name in the group (its unique, stable id)."""
        self.ordered = ordered
        self.settings = settings
        self._label = label or group
        self._clock = clock
        self._held: dict[str, None] = {}
        """Entries read or claimed here and not acked yet (in read order): their idle time is kept
        low by the heartbeat."""
        self._claim_idle: dict[str, int] = {}
        """`pending` → `claim`: the min idle time (ms) each listed entry is claimed with."""
        self._next_autoclaim = 0.0
        self._autoclaim_from = "0-0"
        self._lease_key = consumer_key(log_uid, group, "lease")
        self._fence_key = consumer_key(log_uid, group, "fence")
        self._lease: str | None = None
        self.fence: int | None = None
        """The fencing number of the lease this source holds (ordered consumers)."""
        self._lease_until = 0.0
        self._backlog: tuple[float, int] | None = None
        self._ack_buf: list[str] = []
        self._ack_next: asyncio.Future[None] | None = None
        """The XACK that the ids in `_ack_buf` will go in (resolved when it is done)."""
        self._acker: asyncio.Task[None] | None = None
        """The source's flusher of `_ack_buf` (`_flush_acks`), while there is something to ack."""
        self._acquire = redis.register_script(ACQUIRE_LEASE)
        self._renew = redis.register_script(RENEW_LEASE)
        self._release = redis.register_script(RELEASE_LEASE)
        self._remove_dead = redis.register_script(REMOVE_DEAD_CONSUMERS)
        self._beat = redis.register_script(HEARTBEAT)

    @property
    def held(self) -> list[str]:
        """The entries read or claimed here and not acked yet, in read order."""
        return list(self._held)

    @property
    def _claim_after_ms(self) -> int:
        return int(self.settings.claim_after_s * 1000)

    # -- ConsumerSource ------------------------------------------------------------------------

    async def open(self) -> None:
        """Wait for the consumer's group (the controller creates it), then, for an ordered
        consumer, for its lease."""
        await self._wait_for_group("not created yet")
        if self.ordered:
            await self._wait_for_lease()

    async def read(self, limit: int) -> list[tuple[str, bytes]]:
        try:
            if self.ordered:
                self._check_lease()
            elif self._clock() >= self._next_autoclaim:
                self._next_autoclaim = self._clock() + self.settings.claim_after_s / 4
                claimed = await self._autoclaim(limit)
                if claimed:
                    return claimed
            reply: Any = await self._reads.xreadgroup(self.group, self.consumer, {self.stream: ">"},
                                                      count=limit, block=self.settings.block_ms)
        except ResponseError as exc:
            if not _no_group(exc):
                raise
            await self._group_gone()
            return []
        return await self._keep([e for _, entries in reply or [] for e in entries])

    async def ack(self, ids: Sequence[str]) -> None:
        """XACK `ids`, coalesced: the source's flusher task sends one XACK at a time, and the
        next one carries every id acked meanwhile (the runner acks each handled prefix at once,
        often one event: one command and one pooled connection each would exhaust the pool under
        load). The caller awaits the XACK that carries its ids, shielded: a caller cancelled
        while it waits only stops waiting, and its ids and everyone else's are acked all the
        same. A failed XACK fails every caller it carried; stopping the source (`maintain`
        cancelled) lets the flusher finish for a moment, then cancels it."""
        if not ids:
            return
        self._ack_buf.extend(ids)
        if self._ack_next is None:
            self._ack_next = asyncio.get_running_loop().create_future()
            self._ack_next.add_done_callback(_retrieved)
        covering = self._ack_next
        if self._acker is None or self._acker.done():
            self._acker = asyncio.create_task(self._flush_acks(), name=f"acks:{self._label}")
        await asyncio.shield(covering)

    async def _flush_acks(self) -> None:
        """XACK what `ack` buffered, one batch at a time, until nothing is left; each batch's
        future says how its XACK went."""
        while self._ack_buf:
            batch, covering, self._ack_buf, self._ack_next = self._ack_buf, self._ack_next, [], None
            assert covering is not None
            try:
                for i in range(0, len(batch), _CHUNK):
                    await self._redis.xack(self.stream, self.group, *batch[i : i + _CHUNK])
            except asyncio.CancelledError:  # the source stops: not acked, delivered again later
                covering.cancel()
                if self._ack_next is not None:
                    self._ack_next.cancel()
                    self._ack_next = None
                raise
            except Exception as exc:
                covering.set_exception(exc)
            else:
                covering.set_result(None)
                for eid in batch:
                    self._held.pop(eid, None)

    async def _stop_acks(self) -> None:
        """The source stops: let the flusher finish what it has (for at most `_ACK_STOP_S`: an
        ack lost here only means a redelivery), then make sure it is gone."""
        acker = self._acker
        if acker is None or acker.done():
            return
        await asyncio.wait({acker}, timeout=_ACK_STOP_S)
        acker.cancel()
        await asyncio.gather(acker, return_exceptions=True)

    async def pending(self) -> list[str]:
        """Entries pending in the group that this source may take over, in id order: its own
        earlier incarnation's (any idle time) and, for an ordered consumer that holds the lease,
        every other consumer's; else the other consumers' idle longer than `claim_after_s`."""
        if self.ordered:
            self._check_lease()
        found: dict[str, int] = {}
        start = "-"
        while True:
            try:
                page: Any = await self._redis.xpending_range(self.stream, self.group, start, "+",
                                                             _CHUNK)
            except ResponseError as exc:
                if not _no_group(exc):
                    raise
                await self._group_gone()  # made again empty: nothing pending in it
                self._claim_idle = {}
                return []
            for p in page:
                eid, owner = text(p["message_id"]), text(p["consumer"])
                if owner == self.consumer or self.ordered:
                    if eid not in self._held:
                        found[eid] = 0
                elif int(p["time_since_delivered"]) >= self._claim_after_ms:
                    found[eid] = self._claim_after_ms
            if len(page) < _CHUNK:
                break
            start = "(" + text(page[-1]["message_id"])
        self._claim_idle = found
        return sorted(found, key=parse_stream_id)

    async def claim(self, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        by_idle: dict[int, list[Any]] = {}
        for eid in ids:
            by_idle.setdefault(self._claim_idle.pop(eid, self._claim_after_ms), []).append(eid)
        entries: list[Any] = []
        try:
            for idle, group_ids in by_idle.items():
                for i in range(0, len(group_ids), _CHUNK):
                    entries += await self._redis.xclaim(self.stream, self.group, self.consumer,
                                                        idle, group_ids[i : i + _CHUNK])
        except ResponseError as exc:
            if not _no_group(exc):
                raise
            await self._group_gone()  # what it listed went with the group
            return []
        entries.sort(key=lambda e: parse_stream_id(e[0]))
        return await self._keep(entries)

    async def backlog(self) -> int:
        now = self._clock()
        if self._backlog is not None and now - self._backlog[0] < self.settings.backlog_every_s:
            return self._backlog[1]
        try:
            groups: Any = await self._redis.xinfo_groups(self.stream)
        except ResponseError:  # no such stream (nothing was ever written, or it was deleted)
            groups = []
        count = 0
        for g in groups:
            if text(g["name"]) != self.group:
                continue
            lag = g.get("lag")
            if lag is None:  # Redis 7.0 after deletions: count (capped) past last-delivered-id
                after = "(" + text(g["last-delivered-id"])
                found: Any = await self._redis.xrange(self.stream, after, "+",
                                                      count=self.settings.backlog_cap)
                lag = len(found)
            count = int(lag) + int(g["pending"])
        self._backlog = (now, count)
        return count

    async def maintain(self) -> None:
        """Heartbeat the held entries, renew the lease (ordered), remove dead consumers; on
        cancellation finish the acks in flight and give the lease back (the next holder need not
        wait for it to expire)."""
        s = self.settings
        now = self._clock()
        next_beat, next_gc = now + s.claim_heartbeat_s, now + s.claim_after_s
        next_renew = now + s.lease_s / 3
        try:
            while True:
                now = self._clock()
                wake = min(next_beat, next_gc, next_renew if self.ordered else next_beat)
                if wake > now:
                    await asyncio.sleep(wake - now)
                    continue
                if self.ordered and now >= next_renew:
                    await self._renew_lease()
                    next_renew = now + s.lease_s / 3
                if now >= next_beat:
                    await self._heartbeat()
                    next_beat = now + s.claim_heartbeat_s
                if now >= next_gc:
                    with contextlib.suppress(RedisError, OSError):
                        await self.remove_dead_consumers()
                    next_gc = now + s.claim_after_s
        except asyncio.CancelledError:
            await self._stop_acks()  # acked before the lease goes: the next holder skips them
            if self._lease is not None:
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(
                        self._release(keys=[self._lease_key], args=[self._lease]), 1.0)
                self._lease = None
            raise

    async def check_turn(self) -> None:
        """An ordered consumer's reader asks before each attempt: `LeaseLost` once its lease ran
        out (by this machine's clock, counted from before the last renewal was sent), so a holder
        that stalled past it delivers no more than the attempt it was making. Unordered: no-op."""
        if self.ordered:
            self._check_lease()

    # -- the group, made by the controller ------------------------------------------------------

    async def _wait_for_group(self, why: str) -> None:
        """Return once the consumer's group exists on the stream, looking again with a growing
        pause (up to `group_poll_max_s`); the wait is logged once, when it begins."""
        pause = _GROUP_POLL_FIRST_S
        waited = False
        while True:
            try:
                await self._redis.xpending(self.stream, self.group)
            except ResponseError as exc:
                if not _no_group(exc):
                    raise
            else:
                if waited:
                    log.info("event=group_found trigger=%s stream=%s", self._label, self.stream)
                return
            if not waited:
                waited = True
                log.info("event=group_wait trigger=%s stream=%s reason=its consumer group is %s "
                         "(the controller creates it)", self._label, self.stream, why)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.settings.group_poll_max_s)

    async def _group_gone(self) -> None:
        """The group was destroyed under this running source: what it held went with it; wait
        until it exists again (never made here)."""
        self._held.clear()
        self._autoclaim_from = "0-0"
        await self._wait_for_group("gone (destroyed while this dispatcher read it)")

    # -- sharing the group ---------------------------------------------------------------------

    async def remove_dead_consumers(self) -> list[str]:
        """Remove the group's other consumers that have nothing pending and were idle longer than
        `claim_after_s` (dispatchers gone; in one step, so none loses pending entries); their
        names. A live one removed while idle is made again by its next read."""
        try:
            gone = await self._remove_dead(keys=[self.stream],
                                           args=[self.group, self.consumer, self._claim_after_ms])
        except ResponseError:  # no stream or group (yet)
            return []
        names = [text(n) for n in gone]
        for name in names:
            log.info("event=consumer_removed trigger=%s consumer=%s", self._label, name)
        return names

    async def _autoclaim(self, limit: int) -> list[tuple[str, bytes]]:
        reply = await self._redis.xautoclaim(self.stream, self.group, self.consumer,
                                             self._claim_after_ms, self._autoclaim_from, count=limit)
        self._autoclaim_from = text(reply[0])
        # An entry held here whose heartbeat came late is being delivered already: not twice.
        claimed = await self._keep([e for e in reply[1] if text(e[0]) not in self._held])
        if claimed:
            log.info("event=entries_claimed trigger=%s count=%d", self._label, len(claimed))
        return claimed

    async def _keep(self, entries: list[Any]) -> list[tuple[str, bytes]]:
        """Entries read or claimed: hold them; ack and skip the ones no longer in the stream."""
        out: list[tuple[str, bytes]] = []
        gone: list[str] = []
        for entry in entries:
            eid, raw = _fields(entry)
            if raw is None:
                gone.append(eid)
                continue
            self._held[eid] = None
            out.append((eid, raw))
        if gone:
            log.warning("event=entries_gone trigger=%s count=%d reason=trimmed or deleted before "
                        "delivery", self._label, len(gone))
            try:
                await self._redis.xack(self.stream, self.group, *gone)
            except ResponseError as exc:  # the group destroyed meanwhile: nothing left to ack
                if not _no_group(exc):
                    raise
        return out

    async def _heartbeat(self) -> None:
        """Reset the idle time of the entries held here, so no other dispatcher claims them; stop
        holding the ones another dispatcher claimed meanwhile (this one was stalled)."""
        held = list(self._held)
        try:
            for i in range(0, len(held), _CHUNK):
                lost = await self._beat(keys=[self.stream],
                                        args=[self.group, self.consumer, *held[i : i + _CHUNK]])
                claimed = 0
                for j in range(0, len(lost), 2):
                    self._held.pop(text(lost[j]), None)  # acked meanwhile, or claimed by another
                    claimed += bool(lost[j + 1])
                if claimed:
                    log.warning("event=entries_lost trigger=%s count=%d reason=claimed by another "
                                "dispatcher while this one stalled", self._label, claimed)
        except (RedisError, OSError) as exc:  # the next beat tries again
            log.warning("event=heartbeat_failed trigger=%s error=%s", self._label, exc)

    # -- the ordered consumer's lease ----------------------------------------------------------

    async def _wait_for_lease(self) -> None:
        lease_ms = int(self.settings.lease_s * 1000)
        waiting = False
        while True:
            t0 = self._clock()
            fence = int(await self._acquire(keys=[self._lease_key, self._fence_key],
                                            args=[self.consumer, lease_ms]))
            if fence:
                self.fence = fence
                self._lease = lease_value(self.consumer, fence)
                self._lease_until = t0 + self.settings.lease_s
                log.info("event=lease_acquired trigger=%s fence=%d", self._label, fence)
                return
            if not waiting:
                log.info("event=lease_wait trigger=%s reason=another dispatcher holds it",
                         self._label)
                waiting = True
            left_ms = await self._redis.pttl(self._lease_key)
            await asyncio.sleep(min(max(int(left_ms), 10) / 1000, self.settings.lease_s / 3))

    async def _renew_lease(self) -> None:
        assert self._lease is not None
        t0 = self._clock()
        try:
            ours = await self._renew(keys=[self._lease_key],
                                     args=[self._lease, int(self.settings.lease_s * 1000)])
        except (RedisError, OSError) as exc:
            self._check_lease()  # raises once the lease ran out without a renewal
            log.warning("event=lease_renew_failed trigger=%s error=%s", self._label, exc)
            return
        if not int(ours):
            self._lease = None
            raise LeaseLost(f"the ordered consumer {self._label}'s lease (fence {self.fence}) is "
                            "held by another dispatcher now")
        self._lease_until = t0 + self.settings.lease_s

    def _check_lease(self) -> None:
        if self._lease is None or self._clock() >= self._lease_until:
            raise LeaseLost(f"the ordered consumer {self._label}'s lease (fence {self.fence}) ran "
                            "out: another dispatcher may hold it")
