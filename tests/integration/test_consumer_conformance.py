"""Conformance of the consumer seams' backends (`controller.eventing.consumer`): every backend's
`ConsumerSource` and `ConsumerState` pass the same tests, and so does a `ConsumerRunner` on them.

Parametrized over the backends: SQLite (the gateway's log file, the dispatcher's database) and
Redis Streams (a real redis-server, `tests/support/redis_server.py`; each test on a log of its
own). A backend is a `Backend`: it appends events to a consumer's log the way the gateway does,
and builds the source and the state of a consumer the way the dispatcher does (a new source is
what a restarted dispatcher makes). On Redis, the log's stream and each consumer's group are
made the way the controller's reconcilers make them (`controller.redis_logs.create_stream` and
`create_group`, the same functions), the group before a source opens: a dispatcher never makes
either. Event ids are opaque: the tests only compare them. What only a shared backend can do
(several dispatchers in one group, leases, the ordered consumer's lease, a group destroyed under a
running source, retention of a stream) is tested on Redis alone, further down. Waits poll with
deadlines.

Times: a backend's `clock` is the dispatcher's clock (the runner's and the state's); the tests'
synthetic times (`T0` on) are on it. The SQLite state compares them as they are, whatever `clock`
says (it is the real one there). The Redis state keeps due times and leases on Redis's clock and
reads a time as its distance from its `clock`'s present, which the Redis backend fixes at `T0`
(a fake clock, years behind Redis's): `take_due(T0 + 19, …)` means "19 s from now" to it, so the
synthetic times work as they do on SQLite while Redis's clock runs, and every test also shows
that a dispatcher's clock need not agree with Redis's. A `next_at` the Redis state gives back
went through Redis's clock, which ran meanwhile: equal within `time_error_s`, not to the bit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis.asyncio as aioredis
from support.redis_server import RedisServer

from controller.eventing.consumer import ConsumerSource, ConsumerState
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import ConsumerPlan, RedisLog, SqliteLog
from controller.eventing.redis_consumer import (
    LeaseLost,
    RedisConsumerSettings,
    RedisConsumerSource,
)
from controller.eventing.redis_retention import delete_consumer, delete_log, trim
from controller.eventing.redis_scripts import parse_stream_id
from controller.eventing.redis_state import RedisConsumerState
from controller.eventing.runner import ConsumerRunner
from controller.eventing.sender import Outcome, Sender
from controller.eventing.sqlite_consumer import SqliteConsumerSource, SqliteConsumerState
from controller.eventing.state import DispatcherState
from controller.redis_logs import create_group, create_stream
from flint_common.channellog.format import CHANNEL
from flint_common.channellog.sqlite_reader import SqliteLogReader
from flint_common.cloudevents.codec import Event
from flint_common.redis_keys import EVENT_FIELD, consumer_key, log_pattern, stream_key
from gateway.channels.sqlite import SqliteChannelLog

T0 = 1_700_000_000.0
SUBSCRIBER = "http://sub.ns.localhost"
DEADLINE_S = 10.0

FAST = RedisConsumerSettings(claim_after_s=0.3, claim_heartbeat_s=0.05, block_ms=20, lease_s=0.6,
                             backlog_every_s=0.0, group_poll_max_s=0.05)
"""Small times, so that takeovers happen within a test (the tests never assert timings)."""


def ev(event_id: str) -> Event:
    attrs = {"specversion": "1.0", "id": event_id, "source": "/src", "type": "t"}
    return Event(attrs, b'{"n":1}', True)  # type: ignore[arg-type]


def ids_of(batch: list[tuple[str, bytes]]) -> list[str]:
    return [Event.from_log(raw).id for _, raw in batch]


async def until(cond: Callable[[], Awaitable[bool]], what: str = "condition") -> None:
    """Poll `cond` until it holds; fail after DEADLINE_S."""
    end = time.monotonic() + DEADLINE_S
    while not await cond():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {DEADLINE_S:g} s")
        await asyncio.sleep(0.005)


def skewed_clock(reads: float) -> Callable[[], float]:
    """A clock that reads `reads` now and runs at real speed: a machine whose clock is off."""
    skew = reads - time.time()
    return lambda: time.time() + skew


def at(backend: Backend, t: float) -> Any:
    """`t` as a time the backend gave back compares (`time_error_s`)."""
    return pytest.approx(t, rel=0, abs=backend.time_error_s)


class Backend(Protocol):
    clock: Callable[[], float]
    time_error_s: float

    async def append(self, *events: Event) -> None: ...
    async def source(self, consumer: str) -> ConsumerSource: ...
    def state(self, consumer: str) -> ConsumerState: ...
    def log_ref(self, consumer: str) -> SqliteLog | RedisLog: ...
    async def close(self) -> None: ...


class SqliteBackend:
    """The log file a gateway writes, the dispatcher's reader of it and its own database."""

    time_error_s = 0.0

    def __init__(self, tmp: Path) -> None:
        self.clock: Callable[[], float] = time.time
        path = tmp / "eventing" / "logs" / "b.db"
        path.parent.mkdir(parents=True)
        self.log = SqliteChannelLog(path, durable=False)
        self.reader = SqliteLogReader(path)
        self.db = DispatcherState(tmp / "eventing" / "dispatcher.db", durable=False)

    async def append(self, *events: Event) -> None:
        await self.log.append(CHANNEL, [e.to_log() for e in events])

    async def source(self, consumer: str) -> ConsumerSource:
        stored = (await self.db.positions()).get(consumer)
        return SqliteConsumerSource(self.reader, self.db, consumer, stored)

    def state(self, consumer: str) -> ConsumerState:
        return SqliteConsumerState(self.db, consumer)

    def log_ref(self, consumer: str) -> SqliteLog:
        return SqliteLog("eventing/logs/b.db")

    async def close(self) -> None:
        await self.reader.close()
        await self.log.close()
        await self.db.close()


class SourceOfAReconciledConsumer(RedisConsumerSource):
    """A dispatcher's source of a consumer whose reconciler ran: `open` first makes its group as
    the reconciler does before the plan has the consumer (`create_group`, idempotent), then opens
    as any source (which waits for the group, never makes it)."""

    async def open(self) -> None:
        await create_group(self._redis, self.stream, self.group)
        await super().open()


class RedisBackend:
    """A log of its own on the module's redis-server, its stream made by `start` as the broker
    reconciler makes it; sources and states as dispatcher `name` makes them (a new source with the
    same name is that dispatcher restarted)."""

    time_error_s = 0.5

    def __init__(self, server: RedisServer) -> None:
        self.redis = aioredis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
        self.log_uid = "log-" + uuid.uuid4().hex[:12]
        self.stream = stream_key(self.log_uid)
        self.clock: Callable[[], float] = lambda: T0

    async def start(self) -> RedisBackend:
        await create_stream(self.redis, self.stream)
        return self

    async def append(self, *events: Event) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for e in events:
                pipe.xadd(self.stream, {EVENT_FIELD: e.to_log()}, nomkstream=True)
            replies = await pipe.execute()
        assert None not in replies, f"{self.stream} does not exist"

    async def source(self, consumer: str) -> ConsumerSource:
        return self.redis_source(consumer)

    def redis_source(self, consumer: str, name: str = "dispatcher-a", *, ordered: bool = False,
                     settings: RedisConsumerSettings = FAST,
                     client: aioredis.Redis | None = None) -> RedisConsumerSource:
        return SourceOfAReconciledConsumer(
            client or self.redis, log_uid=self.log_uid, stream=self.stream, group=consumer,
            consumer=name, ordered=ordered, settings=settings)

    def bare_source(self, consumer: str, name: str = "dispatcher-a") -> RedisConsumerSource:
        """A source of a consumer whose group nobody made (yet): just what a dispatcher builds."""
        return RedisConsumerSource(self.redis, log_uid=self.log_uid, stream=self.stream,
                                   group=consumer, consumer=name, settings=FAST)

    def state(self, consumer: str) -> ConsumerState:
        return self.redis_state(consumer)

    def redis_state(self, consumer: str, owner: str = "dispatcher-a", lease_s: float = 30.0,
                    clock: Callable[[], float] | None = None) -> RedisConsumerState:
        return RedisConsumerState(self.redis, log_uid=self.log_uid, consumer_uid=consumer,
                                  owner=owner, lease_s=lease_s, clock=clock or self.clock)

    def log_ref(self, consumer: str) -> RedisLog:
        return RedisLog(self.stream, consumer)

    async def append_apart(self, *events: Event) -> None:
        """Append `events` each in a millisecond of its own (ids `<ms>-0`, 1 ms apart)."""
        sec, usec = await self.redis.time()
        base = int(sec) * 1000 + int(usec) // 1000
        async with self.redis.pipeline(transaction=False) as pipe:
            for k, e in enumerate(events):
                pipe.xadd(self.stream, {EVENT_FIELD: e.to_log()}, id=f"{base + k}-0")
            await pipe.execute()

    async def ids(self) -> list[str]:
        """The ids of the stream's entries, oldest first."""
        entries: Any = await self.redis.xrange(self.stream)
        return [i.decode() for i, _ in entries]

    async def pel(self, group: str) -> list[dict[str, Any]]:
        """The group's pending entries (ids and consumers as text)."""
        found: Any = await self.redis.xpending_range(self.stream, group, "-", "+", 1000)
        return [{**p, "message_id": p["message_id"].decode(), "consumer": p["consumer"].decode()}
                for p in found]

    async def keys(self) -> list[str]:
        return sorted([k.decode() async for k in self.redis.scan_iter(match=log_pattern(self.log_uid))])

    async def close(self) -> None:
        await self.redis.aclose()


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made: Backend
    if request.param == "sqlite":
        made = SqliteBackend(tmp_path)
    else:
        made = await RedisBackend(request.getfixturevalue("redis_server")).start()
    yield made
    await made.close()


@pytest.fixture
async def rb(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    made = await RedisBackend(redis_server).start()
    yield made
    await made.close()


# ------------------------------------------------------------------------------------------
# the source
# ------------------------------------------------------------------------------------------


async def test_a_new_consumer_starts_at_the_tail(backend: Backend) -> None:
    await backend.append(ev("old1"), ev("old2"))
    source = await backend.source("c")
    await source.open()
    assert await source.read(10) == []
    await backend.append(ev("new"))
    assert ids_of(await source.read(10)) == ["new"]


async def test_a_new_consumer_of_a_log_not_written_yet_reads_nothing(backend: Backend) -> None:
    source = await backend.source("c")
    await source.open()
    assert await source.read(10) == []
    assert await source.backlog() == 0


async def test_reads_go_on_in_order_in_batches_with_distinct_ids(backend: Backend) -> None:
    source = await backend.source("c")
    await source.open()
    await backend.append(*(ev(f"e{i}") for i in range(5)))
    first, second = await source.read(3), await source.read(3)
    assert ids_of(first) + ids_of(second) == [f"e{i}" for i in range(5)]
    ids = [i for i, _ in first + second]
    assert len(set(ids)) == 5 and all(isinstance(i, str) for i in ids)
    assert await source.read(3) == []


async def test_a_new_source_reads_again_what_was_not_acked(backend: Backend) -> None:
    """A restarted dispatcher redelivers what was in flight (at least once), never what was acked."""
    source = await backend.source("c")
    await source.open()
    await backend.append(ev("a"), ev("b"), ev("c"))
    batch = await source.read(10)
    await source.ack([batch[0][0]])
    assert await source.backlog() == 2
    again = await backend.source("c")
    await again.open()
    claimed = await again.claim(await again.pending())
    assert sorted(ids_of(claimed) + ids_of(await again.read(10))) == ["b", "c"]


async def test_acking_everything_empties_the_backlog(backend: Backend) -> None:
    source = await backend.source("c")
    await source.open()
    await backend.append(ev("a"), ev("b"))
    batch = await source.read(10)
    await source.ack([i for i, _ in batch])
    assert await source.backlog() == 0
    again = await backend.source("c")
    await again.open()
    assert await again.pending() == []
    assert await again.read(10) == []


async def test_consumers_of_one_log_are_independent(backend: Backend) -> None:
    one, two = await backend.source("one"), await backend.source("two")
    await one.open()
    await two.open()
    await backend.append(ev("a"), ev("b"))
    await one.ack([i for i, _ in await one.read(10)])
    assert ids_of(await two.read(10)) == ["a", "b"]
    assert await two.backlog() == 2


# ------------------------------------------------------------------------------------------
# the state
# ------------------------------------------------------------------------------------------


async def test_retries_are_kept_updated_and_removed(backend: Backend) -> None:
    state, other = backend.state("c"), backend.state("other")
    r1 = await state.add_retry("7", b"raw7", 2, T0 + 5)
    r2 = await state.add_retry("8", b"raw8", 2, T0 + 1)
    await other.add_retry("9", b"raw9", 2, T0)
    assert [(r.id, r.event_id, r.event, r.attempt) for r in await state.retries()] == [
        (r2, "8", b"raw8", 2),
        (r1, "7", b"raw7", 2),
    ]  # soonest due first
    await state.update_retry(r2, 3, T0 + 9)
    assert [(r.id, r.attempt, r.next_at) for r in await state.retries()][-1] == (
        r2, 3, at(backend, T0 + 9))
    await state.remove_retry(r1)
    await state.remove_retry(r1)  # a missing id is not an error
    assert [r.id for r in await state.retries()] == [r2]
    assert [r.event_id for r in await other.retries()] == ["9"]


async def test_a_failed_retry_becomes_a_dead_letter_and_can_be_redelivered(backend: Backend) -> None:
    state = backend.state("c")
    rid = await state.add_retry("7", b"raw7", 3, T0)
    await state.add_dead_letter("7", b"raw7", "retries-exhausted", 500, "boom", T0 + 1, retry_id=rid)
    await state.add_dead_letter("8", b"raw8", "not-retryable", None, "", T0 + 2)
    assert await state.retries() == []
    letters = await state.dead_letters()
    assert [(d.event, d.reason, d.status) for d in letters] == [
        (b"raw7", "retries-exhausted", 500),
        (b"raw8", "not-retryable", None),
    ]
    assert await state.redeliver([letters[1].id], T0 + 3) == 1
    [back] = await state.retries()
    assert (back.event_id, back.event, back.attempt, back.next_at) == (
        "8", b"raw8", 0, at(backend, T0 + 3))
    assert await state.redeliver(None, T0 + 4) == 1
    assert await state.dead_letters() == []


# ------------------------------------------------------------------------------------------
# a runner on the backend
# ------------------------------------------------------------------------------------------


class AnswerSender(Sender):
    def __init__(self, answer: Callable[[Event], Outcome]) -> None:  # no super().__init__: no session
        self.answer = answer
        self.sent: list[str] = []

    async def send(
        self, url: str, event: Event, *, structured: bool, timeout_s: float, prefer_reply: bool = True
    ) -> Outcome:
        self.sent.append(event.id)
        return self.answer(event)


def consumer_plan(backend: Backend, *, ordered: bool = False, delivery: dict[str, Any] | None = None,
                  dead_letter_uri: str | None = None) -> ConsumerPlan:
    return ConsumerPlan(
        uid="c", namespace="ns", name="t", broker="default", log_uid="b", log=backend.log_ref("c"),
        subscriber=SUBSCRIBER, reply="", filter_attributes=None, filters=None,
        delivery=delivery or {"retry": 3}, dead_letter_uri=dead_letter_uri, ordered=ordered,
        kind="subscription",
    )


async def test_a_runner_delivers_acks_and_keeps_retries_on_the_backend(backend: Backend) -> None:
    sender = AnswerSender(lambda e: Outcome(e.id != "bad", 202 if e.id != "bad" else 500))
    state = backend.state("c")
    source = await backend.source("c")
    await source.open()  # where the consumer starts is known before the events come (the runner opens again)
    # Its retry is due an hour on: it waits in the state, whichever clock judges it.
    runner = ConsumerRunner(consumer_plan(backend, delivery={"retry": 3, "backoffDelay": "PT1H"}),
                            source, state, sender, DispatcherMetrics(), clock=backend.clock)
    runner.start()
    try:
        await backend.append(ev("a"), ev("bad"), ev("c"))
        runner.wake()

        async def handled() -> bool:
            return await source.backlog() == 0 and len(await state.retries()) == 1

        await until(handled, "all handled")
        assert sorted(sender.sent) == ["a", "bad", "c"]
        [retry] = await state.retries()
        assert (Event.from_log(retry.event).id, retry.attempt) == ("bad", 2)
    finally:
        await runner.stop()
    again = await backend.source("c")
    await again.open()
    assert await again.read(10) == [] and await again.pending() == []


async def test_a_runner_takes_its_retries_from_the_state_and_delivers_them(backend: Backend) -> None:
    failed: list[str] = []

    def answer(e: Event) -> Outcome:
        if e.id == "bad" and not failed:
            failed.append(e.id)
            return Outcome(False, 500)
        return Outcome(True, 202)

    sender = AnswerSender(answer)
    state = backend.state("c")
    source = await backend.source("c")
    await source.open()
    delivery = {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}
    runner = ConsumerRunner(consumer_plan(backend, delivery=delivery), source, state, sender,
                            DispatcherMetrics(), clock=backend.clock)
    runner.start()
    try:
        await backend.append(ev("a"), ev("bad"))
        runner.wake()

        async def retried() -> bool:
            return sender.sent.count("bad") == 2 and await state.retries() == []

        await until(retried, "the retry delivered and removed")
        assert sorted(sender.sent) == ["a", "bad", "bad"]
    finally:
        await runner.stop()


async def test_redelivered_dead_letters_are_delivered_by_the_runner(backend: Backend) -> None:
    refuse = {"bad"}
    sender = AnswerSender(lambda e: Outcome(False, 400) if e.id in refuse else Outcome(True, 202))
    state = backend.state("c")
    source = await backend.source("c")
    await source.open()
    runner = ConsumerRunner(consumer_plan(backend), source, state, sender, DispatcherMetrics(),
                            clock=backend.clock)
    runner.start()
    try:
        await backend.append(ev("bad"))
        runner.wake()

        async def dead() -> bool:
            return len(await state.dead_letters()) == 1

        await until(dead, "a dead letter")
        refuse.clear()
        assert await state.redeliver(None, backend.clock()) == 1
        runner.requeued()

        async def delivered() -> bool:
            return sender.sent == ["bad", "bad"] and await state.retries() == []

        await until(delivered, "the redelivered event delivered")
        assert await state.dead_letters() == []
    finally:
        await runner.stop()


async def test_take_due_hands_each_due_retry_out_once_until_it_is_updated(backend: Backend) -> None:
    state = backend.state("c")
    r1 = await state.add_retry("1", b"one", 2, T0 + 1)
    r2 = await state.add_retry("2", b"two", 2, T0 + 2)
    r3 = await state.add_retry("3", b"three", 2, T0 + 50)
    assert await state.take_due(T0, 10) == []
    [a] = await state.take_due(T0 + 2.5, 1)  # the limit
    assert (a.id, a.event_id, a.event, a.attempt, a.next_at) == (
        r1, "1", b"one", 2, at(backend, T0 + 1))
    assert [r.id for r in await state.take_due(T0 + 3, 10)] == [r2]  # r1 is taken: not again
    assert await state.take_due(T0 + 3, 10) == []
    assert [r.id for r in await state.retries()] == [r1, r2, r3]  # taken ones are still pending
    await state.update_retry(r1, 3, T0 + 4)  # it failed again: no longer taken
    assert await state.take_due(T0 + 3.5, 10) == []
    [again] = await state.take_due(T0 + 4, 10)
    assert (again.id, again.attempt) == (r1, 3)
    await state.remove_retry(r2)
    await state.update_retry(r2, 4, T0)  # a retry gone is not brought back
    await state.add_dead_letter("1", b"one", "retries-exhausted", 500, "", T0 + 5, retry_id=r1)
    assert [r.id for r in await state.retries()] == [r3]
    [dead] = await state.dead_letters()
    assert (dead.event_id, dead.event) == ("1", b"one")
    assert await state.redeliver([dead.id], T0 + 6) == 1
    [back] = await state.take_due(T0 + 6, 10)
    assert (back.event_id, back.event, back.attempt) == ("1", b"one", 0)


async def test_hold_says_whether_a_taken_retry_is_still_there_for_its_taker(backend: Backend) -> None:
    state = backend.state("c")
    rid = await state.add_retry("1", b"one", 2, T0)
    [taken] = await state.take_due(T0, 5)
    assert taken.id == rid
    assert await state.hold(rid)
    assert await state.hold(rid)  # asking again changes nothing
    await state.remove_retry(rid)
    assert not await state.hold(rid)  # delivered (by another taker, say): not ours to finish
    assert not await state.hold(rid + 1000)  # never was


# ------------------------------------------------------------------------------------------
# Redis only: several dispatchers share one consumer
# ------------------------------------------------------------------------------------------


async def test_two_takers_of_one_consumer_never_take_the_same_retry(rb: RedisBackend) -> None:
    one, two = rb.redis_state("c", "d-a"), rb.redis_state("c", "d-b")
    ids = [await one.add_retry(str(i), b"x", 2, T0) for i in range(20)]
    got_one, got_two = await asyncio.gather(one.take_due(T0, 15), two.take_due(T0, 15))
    taken_one, taken_two = {r.id for r in got_one}, {r.id for r in got_two}
    assert not taken_one & taken_two
    assert taken_one | taken_two == set(ids)
    assert await one.take_due(T0 + 1, 20) == [] and await two.take_due(T0 + 1, 20) == []


async def test_an_expired_lease_is_taken_over_and_renewals_keep_it(rb: RedisBackend) -> None:
    one, two = rb.redis_state("c", "d-a", lease_s=10), rb.redis_state("c", "d-b", lease_s=10)
    rid = await one.add_retry("7", b"seven", 2, T0)
    [taken] = await one.take_due(T0, 5)
    assert taken.id == rid
    assert await two.take_due(T0 + 5, 5) == []
    assert await one.take_due(T0 + 8, 0) == []  # renews one's lease until T0 + 18
    assert await two.take_due(T0 + 15, 5) == []
    [over] = await two.take_due(T0 + 19, 5)  # one stopped renewing: taken over
    assert (over.id, over.event_id, over.event, over.attempt) == (rid, "7", b"seven", 2)
    assert await one.take_due(T0 + 19, 5) == []
    await two.remove_retry(rid)
    await one.update_retry(rid, 3, T0 + 20)  # the stale taker's update does not bring it back
    assert await one.retries() == []


async def test_a_stalled_taker_cannot_write_its_outcome_over_the_new_takers(rb: RedisBackend) -> None:
    one, two = rb.redis_state("c", "d-a", lease_s=10), rb.redis_state("c", "d-b", lease_s=10)
    rid = await one.add_retry("7", b"seven", 2, T0)
    [_] = await one.take_due(T0, 5)
    [over] = await two.take_due(T0 + 11, 5)  # one stalled past its lease: two holds the retry
    assert over.id == rid
    await one.update_retry(rid, 3, T0 + 12)  # one's late failure: dropped
    await one.add_dead_letter("7", b"seven", "retries exhausted", 500, "", T0 + 12, retry_id=rid)
    assert await one.dead_letters() == []  # not dead-lettered behind two's back
    assert [r.id for r in await two.retries()] == [rid]  # still two's, in progress
    assert await one.take_due(T0 + 13, 5) == [] and await two.take_due(T0 + 13, 5) == []
    await two.update_retry(rid, 3, T0 + 14)  # the owner's outcome counts
    [again] = await one.take_due(T0 + 14, 5)
    assert (again.id, again.attempt) == (rid, 3)


async def test_hold_renews_a_lease_that_ran_out_and_is_false_once_another_taker_holds_it(
    rb: RedisBackend,
) -> None:
    one, two = rb.redis_state("c", "d-a", lease_s=10), rb.redis_state("c", "d-b", lease_s=10)
    rid = await one.add_retry("7", b"seven", 2, T0 - 30)
    [_] = await one.take_due(T0 - 20, 5)  # leased until T0 - 10: run out by now
    assert await one.hold(rid)  # nobody took it over: still one's, leased until T0 + 10
    assert await two.take_due(T0, 5) == []
    [over] = await two.take_due(T0 + 11, 5)  # one stalled past the renewed lease
    assert over.id == rid
    assert not await one.hold(rid)  # two's now: one must leave the outcome to it
    assert await two.hold(rid)
    await two.update_retry(rid, 3, T0 + 20)  # failed again: back to waiting, taken by nobody
    assert not await two.hold(rid)


async def test_dispatchers_whose_clocks_disagree_agree_on_due_times_and_leases(
    rb: RedisBackend,
) -> None:
    """Due times and leases are judged on Redis's clock: a dispatcher whose clock is an hour fast
    neither takes a retry due in a minute early nor takes over a lease that is still running, and
    a retry it stores as due now is due now for the others."""
    fast_clock = skewed_clock(time.time() + 3600)
    right = rb.redis_state("c", "d-right", lease_s=30, clock=time.time)
    fast = rb.redis_state("c", "d-fast", lease_s=30, clock=fast_clock)
    later = await right.add_retry("1-1", b"in a minute", 2, time.time() + 60)
    due = await right.add_retry("2-1", b"now", 2, time.time())
    [taken] = await right.take_due(time.time(), 5)
    assert taken.id == due  # leased to right for 30 s
    assert await fast.take_due(fast_clock(), 5) == []  # its clock says an hour on: not so
    assert await right.hold(due)
    ours = await fast.add_retry("3-1", b"now by the fast clock", 2, fast_clock())
    [mine] = await right.take_due(time.time(), 5)
    assert mine.id == ours
    waiting = {r.id: r.next_at for r in await right.retries()}
    assert waiting[later] == pytest.approx(time.time() + 60, abs=rb.time_error_s)
    assert {r.id: r.next_at for r in await fast.retries()}[later] == pytest.approx(
        fast_clock() + 60, abs=rb.time_error_s)  # given back on each one's own clock


async def test_a_runner_sends_nothing_to_the_dead_letter_sink_for_a_retry_taken_over_meanwhile(
    rb: RedisBackend, caplog: pytest.LogCaptureFixture,
) -> None:
    """The runner stalls in a retry's attempt past its lease; another dispatcher takes the retry
    over. When the stalled attempt ends in a give-up, the event is not sent to the dead-letter
    sink behind the new taker's back, and nothing is written over its retry."""
    caplog.set_level(logging.INFO, logger="flint.dispatcher")
    release = asyncio.Event()
    attempts: list[str] = []

    class StallingSender(AnswerSender):
        async def send(self, url: str, event: Event, *, structured: bool, timeout_s: float,
                       prefer_reply: bool = True) -> Outcome:
            self.sent.append(f"{url} {event.id}")
            if url == "http://dls":
                return Outcome(True, 202)
            attempts.append(event.id)
            if len(attempts) == 1:
                return Outcome(False, 500)  # a retry is stored
            await release.wait()  # the retry's attempt hangs while the lease runs out
            return Outcome(False, 400)  # then fails for good: give up

    sender = StallingSender(lambda e: Outcome(True, 202))
    state = rb.redis_state("c", "d-a", lease_s=0.2, clock=time.time)  # far below RETRY_POLL_S
    other = rb.redis_state("c", "d-b", clock=time.time)
    source = rb.redis_source("c")
    await source.open()
    delivery = {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.01S"}
    plan = consumer_plan(rb, delivery=delivery, dead_letter_uri="http://dls")
    runner = ConsumerRunner(plan, source, state, sender, DispatcherMetrics())
    runner.start()
    try:
        await rb.append(ev("bad"))

        async def stalled() -> bool:
            return len(attempts) == 2

        await until(stalled, "the retry's attempt under way")
        over: list[Any] = []

        async def taken_over() -> bool:
            over.extend(await other.take_due(time.time(), 5))
            return bool(over)

        await until(taken_over, "the retry taken over by the other dispatcher")
        release.set()

        def to_sink() -> list[str]:
            return [m for m in sender.sent if m.startswith("http://dls")]

        async def settled() -> bool:  # its outcome dropped (logged), or sent to the sink
            return bool(to_sink()) or any("event=outcome_dropped" in m for m in caplog.messages)

        await until(settled, "the stalled runner's outcome settled")
        assert to_sink() == []
        assert await other.hold(over[0].id)  # still the other's, in progress
        assert await state.dead_letters() == []
    finally:
        await runner.stop()


async def test_two_sources_in_one_group_share_the_events_without_duplicates(rb: RedisBackend) -> None:
    one, two = rb.redis_source("c", "d-a"), rb.redis_source("c", "d-b")
    await one.open()
    await two.open()
    await rb.append(*(ev(f"e{i}") for i in range(30)))
    got: dict[str, list[str]] = {"one": [], "two": []}

    async def all_read() -> bool:
        got["one"] += ids_of(await one.read(4))
        got["two"] += ids_of(await two.read(4))
        return len(got["one"]) + len(got["two"]) >= 30

    await until(all_read, "every event read")
    assert got["one"] and got["two"]
    assert not set(got["one"]) & set(got["two"])
    assert sorted(got["one"] + got["two"]) == sorted(f"e{i}" for i in range(30))


async def test_a_running_source_takes_over_a_dead_dispatchers_entries(rb: RedisBackend) -> None:
    dead, alive = rb.redis_source("c", "d-dead"), rb.redis_source("c", "d-alive")
    await dead.open()
    await alive.open()
    await rb.append(ev("a"), ev("b"), ev("c"))
    held = await dead.read(3)  # read, never acked, no heartbeat: its dispatcher died
    assert ids_of(held) == ["a", "b", "c"]
    taken: list[tuple[str, bytes]] = []

    async def claimed() -> bool:
        taken.extend(await alive.read(10))
        return len(taken) >= 3

    await until(claimed, "the dead dispatcher's entries claimed")
    assert ids_of(taken) == ["a", "b", "c"]
    await alive.ack([i for i, _ in taken])
    assert (await rb.redis.xpending(rb.stream, "c"))["pending"] == 0


async def test_a_new_source_lists_and_claims_entries_idle_past_claim_after(rb: RedisBackend) -> None:
    dead = rb.redis_source("c", "d-dead")
    await dead.open()
    await rb.append(ev("a"), ev("b"))
    ids = [i for i, _ in await dead.read(2)]
    fresh = rb.redis_source("c", "d-new")
    await fresh.open()
    assert await fresh.pending() == []  # not idle long enough: its owner may be alive

    async def listed() -> bool:
        return await fresh.pending() == ids

    await until(listed, "the entries idle past claim_after_s")
    assert ids_of(await fresh.claim(ids)) == ["a", "b"]
    assert {p["consumer"] for p in await rb.pel("c")} == {"d-new"}


async def test_the_heartbeat_resets_the_idle_time_of_held_entries(rb: RedisBackend) -> None:
    source = rb.redis_source("c", "d-a")
    await source.open()
    await rb.append(ev("a"))
    await source.read(1)

    async def idle_ms() -> int:
        [p] = await rb.redis.xpending_range(rb.stream, "c", "-", "+", 1)
        return int(p["time_since_delivered"])

    async def idle_a_while() -> bool:
        return await idle_ms() >= 100

    await until(idle_a_while, "an idle entry")
    task = asyncio.create_task(source.maintain())
    try:
        async def beaten() -> bool:
            return await idle_ms() < 100

        await until(beaten, "a heartbeat")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [p] = await rb.redis.xpending_range(rb.stream, "c", "-", "+", 1)
    assert (p["consumer"], p["times_delivered"]) == (b"d-a", 1)  # JUSTID: not a delivery


async def test_a_stalled_holder_s_heartbeat_does_not_take_back_what_was_claimed(
    rb: RedisBackend,
) -> None:
    stalled, other = rb.redis_source("c", "d-stalled"), rb.redis_source("c", "d-other")
    await stalled.open()
    await other.open()
    await rb.append(ev("a"))
    [(eid, _)] = await stalled.read(1)
    assert stalled.held == [eid]

    async def claimed() -> bool:
        return bool(await other.read(1))

    await until(claimed, "the stalled holder's entry claimed")
    task = asyncio.create_task(stalled.maintain())  # it wakes up and beats
    try:
        async def let_go() -> bool:
            return stalled.held == []

        await until(let_go, "the stalled holder letting go")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [(p["message_id"], p["consumer"]) for p in await rb.pel("c")] == [(eid, "d-other")]


async def test_concurrent_acks_are_coalesced_into_few_xacks(rb: RedisBackend) -> None:
    source = rb.redis_source("c")
    await source.open()
    await rb.append(*(ev(f"e{i}") for i in range(100)))
    read = await source.read(100)

    async def xacks() -> int:
        stats: Any = await rb.redis.info("commandstats")
        return int(stats.get("cmdstat_xack", {}).get("calls", 0))

    before = await xacks()
    await asyncio.gather(*(source.ack([eid]) for eid, _ in read))  # as the runner acks: one by one
    assert (await rb.redis.xpending(rb.stream, "c"))["pending"] == 0
    assert source.held == []
    assert await xacks() - before < 10


class GatedRedis(aioredis.Redis):
    """A real client of the test's redis-server whose XACKs wait at `gate` until the test opens
    it (`waiting`: how many wait there), so that a test can cancel an acker mid-XACK."""

    def __init__(self, server: RedisServer) -> None:
        super().__init__(host="127.0.0.1", port=server.port, socket_timeout=5)
        self.gate = asyncio.Event()
        self.waiting = 0

    async def xack(self, name: Any, groupname: Any, *ids: Any) -> int:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return int(await super().xack(name, groupname, *ids))


async def yield_until(cond: Callable[[], bool], what: str) -> None:
    """Let the loop run (no time passes) until `cond` holds; fail after many turns."""
    for _ in range(1000):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{what} not reached")


@pytest.fixture
async def gated(redis_server: RedisServer) -> AsyncIterator[GatedRedis]:
    client = GatedRedis(redis_server)
    yield client
    client.gate.set()
    await client.aclose()


async def test_cancelling_ackers_loses_no_ack_of_theirs_or_anyone_else_s(
    rb: RedisBackend, gated: GatedRedis,
) -> None:
    """Acks are coalesced: whoever acks while an XACK is in flight rides on the next one. The
    runner cancels ack calls (its stop; a task torn down): the one whose call happened to start
    an XACK, and one waiting with others for the next, are cancelled mid-flight. Every id is
    acked all the same, and the caller that was not cancelled sees its ack succeed."""
    source = rb.redis_source("c", client=gated)
    await source.open()
    await rb.append(ev("a"), ev("b"), ev("c"))
    (a, _), (b, _), (c, _) = await source.read(3)
    first = asyncio.create_task(source.ack([a]))
    await yield_until(lambda: gated.waiting == 1, "the first XACK in flight")
    second, third = asyncio.create_task(source.ack([b])), asyncio.create_task(source.ack([c]))
    await yield_until(lambda: c in source._ack_buf, "b and c waiting for the next XACK")
    first.cancel()  # the caller whose ack started the XACK in flight
    await yield_until(first.done, "the first caller gone")
    await yield_until(lambda: gated.waiting == 1, "an XACK in flight")
    second.cancel()  # waiting with `third` for the XACK that carries both
    await yield_until(second.done, "the second caller gone")
    gated.gate.set()
    await asyncio.wait_for(third, DEADLINE_S)  # not cancelled: its ack succeeds
    assert first.cancelled() and second.cancelled()

    async def all_acked() -> bool:
        return await rb.pel("c") == []

    await until(all_acked, "every id acked, the cancelled callers' too")
    assert source.held == []


async def test_stopping_the_source_finishes_the_acks_in_flight_and_leaves_no_task(
    rb: RedisBackend, gated: GatedRedis,
) -> None:
    source = rb.redis_source("c", client=gated)
    await source.open()
    await rb.append(ev("a"), ev("b"))
    (a, _), (b, _) = await source.read(2)
    upkeep = asyncio.create_task(source.maintain())
    acking = asyncio.create_task(source.ack([a]))
    await yield_until(lambda: gated.waiting == 1, "the XACK in flight")
    upkeep.cancel()  # the runner stops
    await yield_until(lambda: upkeep.cancelling() > 0 and not upkeep.done(), "the source stopping")
    gated.gate.set()  # Redis answers while the source stops: the ack is not given up
    await asyncio.gather(upkeep, return_exceptions=True)
    assert acking.done() and acking.exception() is None
    assert [p["message_id"] for p in await rb.pel("c")] == [b]
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("acks:")] == []


async def test_a_stopping_source_gives_up_an_ack_redis_does_not_answer_and_leaves_no_task(
    rb: RedisBackend, gated: GatedRedis,
) -> None:
    source = rb.redis_source("c", client=gated)
    await source.open()
    await rb.append(ev("a"))
    [(a, _)] = await source.read(1)
    upkeep = asyncio.create_task(source.maintain())
    acking = asyncio.create_task(source.ack([a]))
    await yield_until(lambda: gated.waiting == 1, "the XACK in flight")
    upkeep.cancel()
    await asyncio.wait_for(asyncio.gather(upkeep, return_exceptions=True), DEADLINE_S)
    assert acking.done() and acking.cancelled()  # not acked: delivered again (at least once)
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("acks:")] == []
    assert [p["message_id"] for p in await rb.pel("c")] == [a]


async def test_a_pending_entry_deleted_meanwhile_is_skipped(rb: RedisBackend) -> None:
    dead = rb.redis_source("c", "d-dead")
    await dead.open()
    await rb.append(ev("a"), ev("b"))
    first, second = [i for i, _ in await dead.read(2)]
    await rb.redis.xdel(rb.stream, first)
    alive = rb.redis_source("c", "d-alive")
    await alive.open()
    taken: list[tuple[str, bytes]] = []

    async def claimed() -> bool:
        taken.extend(await alive.read(10))
        return bool(taken)

    await until(claimed, "the surviving entry claimed")
    assert ids_of(taken) == ["b"]
    assert [p["message_id"] for p in await rb.pel("c")] == [second]


async def test_consumers_gone_with_nothing_pending_are_removed_from_the_group(rb: RedisBackend) -> None:
    done, holding = rb.redis_source("c", "d-done"), rb.redis_source("c", "d-holding")
    await done.open()
    await holding.open()
    await rb.append(ev("a"), ev("b"))
    await done.ack([i for i, _ in await done.read(1)])
    assert len(await holding.read(1)) == 1  # pending with it

    async def both_idle() -> bool:
        consumers = await rb.redis.xinfo_consumers(rb.stream, "c")
        return all(c["idle"] > 300 for c in consumers)

    await until(both_idle, "idle consumers")
    sweeper = rb.redis_source("c", "d-sweeper")
    assert await sweeper.remove_dead_consumers() == ["d-done"]
    names = {c["name"] for c in await rb.redis.xinfo_consumers(rb.stream, "c")}
    assert names == {b"d-holding"}


async def test_backlog_counts_undelivered_and_pending_also_when_redis_reports_no_lag(
    rb: RedisBackend,
) -> None:
    source = rb.redis_source("c")
    await source.open()
    await rb.append(*(ev(f"e{i}") for i in range(5)))
    read = await source.read(2)
    assert await source.backlog() == 5
    await source.ack([read[0][0]])
    assert await source.backlog() == 4
    await rb.redis.xdel(rb.stream, (await rb.ids())[3])  # Redis 7.0 then reports the lag as null
    assert await source.backlog() == 3


# ------------------------------------------------------------------------------------------
# Redis only: the ordered consumer's lease
# ------------------------------------------------------------------------------------------


async def test_the_next_lease_holder_delivers_the_old_holders_pending_entries_first(
    rb: RedisBackend,
) -> None:
    old = rb.redis_source("c", "d-old", ordered=True)
    await old.open()
    assert old.fence is not None
    await rb.append(ev("1"), ev("2"), ev("3"))
    held = [i for i, _ in await old.read(2)]  # then the old holder pauses: no renewal, no ack
    new = rb.redis_source("c", "d-new", ordered=True)
    opening = asyncio.create_task(new.open())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not opening.done()  # the old holder's lease holds it back
    await asyncio.wait_for(opening, DEADLINE_S)
    assert new.fence is not None and new.fence > old.fence
    with pytest.raises(LeaseLost):
        await old.read(1)
    with pytest.raises(LeaseLost):
        await old.maintain()  # its renewal finds another holder
    assert await new.pending() == held
    assert ids_of(await new.claim(held)) == ["1", "2"]
    assert ids_of(await new.read(10)) == ["3"]


async def test_a_stopped_lease_holder_gives_the_lease_back(rb: RedisBackend) -> None:
    holder = rb.redis_source("c", "d-a", ordered=True)
    await holder.open()
    lease = consumer_key(rb.log_uid, "c", "lease")
    assert await rb.redis.get(lease) == f"d-a|{holder.fence}".encode()
    task = asyncio.create_task(holder.maintain())
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await rb.redis.exists(lease) == 0
    nxt = rb.redis_source("c", "d-b", ordered=True)
    await asyncio.wait_for(nxt.open(), DEADLINE_S)
    assert nxt.fence is not None and holder.fence is not None and nxt.fence > holder.fence


async def test_an_ordered_runner_that_loses_its_lease_fails(rb: RedisBackend) -> None:
    source = rb.redis_source("c", "d-a", ordered=True)
    await source.open()  # the group exists before the events come (the runner opens again)
    sender = AnswerSender(lambda e: Outcome(True, 202))
    runner = ConsumerRunner(consumer_plan(rb, ordered=True), source, rb.state("c"), sender,
                            DispatcherMetrics())
    failures: list[ConsumerRunner] = []
    runner.on_failure = failures.append
    runner.start()
    try:
        await rb.append(ev("a"), ev("b"))

        async def delivered() -> bool:
            return sender.sent == ["a", "b"]

        await until(delivered, "ordered delivery")
        await rb.redis.set(consumer_key(rb.log_uid, "c", "lease"), b"d-b|999", px=60_000)

        async def failed() -> bool:
            return runner.failed

        await until(failed, "the runner failed")
        assert failures == [runner]
    finally:
        await runner.stop()


# ------------------------------------------------------------------------------------------
# Redis only: the consumer group is the controller's, never a dispatcher's
# ------------------------------------------------------------------------------------------


async def xpending_calls(rb: RedisBackend) -> int:
    """How many XPENDINGs the server ran: how a source looks for its group."""
    stats: Any = await rb.redis.info("commandstats")
    return int(stats.get("cmdstat_xpending", {}).get("calls", 0))


async def waits_for_its_group(rb: RedisBackend, task: asyncio.Task[Any],
                              caplog: pytest.LogCaptureFixture, why: str) -> None:
    """`task` logged that it waits for the group (`why`) and went on looking several times, without
    making it (nor the stream)."""

    async def said() -> bool:
        return any("event=group_wait" in r.getMessage() and why in r.getMessage()
                   for r in caplog.records)

    await until(said, f"event=group_wait ({why})")
    seen = await xpending_calls(rb)

    async def looked_again() -> bool:
        return await xpending_calls(rb) >= seen + 3

    await until(looked_again, "the source looking for its group again")
    assert not task.done()
    if await rb.redis.exists(rb.stream):
        assert await rb.redis.xinfo_groups(rb.stream) == []


async def test_open_waits_for_the_group_and_makes_neither_it_nor_the_stream(
    rb: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    await rb.redis.unlink(rb.stream)  # its broker not reconciled yet (or deleted)
    source = rb.bare_source("c")
    with caplog.at_level(logging.INFO, logger="flint.dispatcher"):
        opening = asyncio.create_task(source.open())
        await waits_for_its_group(rb, opening, caplog, "not created yet")
        assert not await rb.redis.exists(rb.stream)
        await create_stream(rb.redis, rb.stream)  # the broker reconciler, then the trigger's
        await create_group(rb.redis, rb.stream, "c")
        await asyncio.wait_for(opening, DEADLINE_S)
    assert [r.getMessage() for r in caplog.records].count(
        f"event=group_wait trigger=c stream={rb.stream} reason=its consumer group is not created "
        "yet (the controller creates it)") == 1  # logged once, however long it waited
    await rb.append(ev("a"))
    assert ids_of(await source.read(10)) == ["a"]


async def test_a_read_of_a_group_destroyed_meanwhile_waits_for_it_and_does_not_make_it(
    rb: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    source = rb.redis_source("c")
    await source.open()
    await rb.append(ev("a"))
    assert ids_of(await source.read(10)) == ["a"] and len(source.held) == 1
    await rb.redis.xgroup_destroy(rb.stream, "c")  # its trigger deleted (or Redis lost it)
    with caplog.at_level(logging.INFO, logger="flint.dispatcher"):
        reading = asyncio.create_task(source.read(10))
        await waits_for_its_group(rb, reading, caplog, "gone")
        assert source.held == []  # they went with the group
        await create_group(rb.redis, rb.stream, "c")  # the controller made it again
        assert await asyncio.wait_for(reading, DEADLINE_S) == []
    await rb.append(ev("b"))
    assert ids_of(await source.read(10)) == ["b"]  # from the new group's start: the tail


async def test_a_claim_in_a_group_destroyed_meanwhile_waits_for_it_and_takes_nothing(
    rb: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    dead = rb.redis_source("c", "d-dead")
    await dead.open()
    await rb.append(ev("a"), ev("b"))
    ids = [i for i, _ in await dead.read(2)]
    fresh = rb.redis_source("c", "d-new")
    await fresh.open()

    async def listed() -> bool:
        return await fresh.pending() == ids

    await until(listed, "the entries idle past claim_after_s")
    await rb.redis.xgroup_destroy(rb.stream, "c")
    with caplog.at_level(logging.INFO, logger="flint.dispatcher"):
        claiming = asyncio.create_task(fresh.claim(ids))
        await waits_for_its_group(rb, claiming, caplog, "gone")
        await create_group(rb.redis, rb.stream, "c")
        assert await asyncio.wait_for(claiming, DEADLINE_S) == []
    assert await rb.pel("c") == []


# ------------------------------------------------------------------------------------------
# Redis only: retention and deletion
# ------------------------------------------------------------------------------------------


async def test_trim_keeps_what_a_consumer_still_needs_and_counts_what_the_caps_drop(
    rb: RedisBackend,
) -> None:
    one, two = rb.redis_source("one"), rb.redis_source("two")
    await one.open()
    await two.open()
    await rb.append_apart(*(ev(f"e{i}") for i in range(10)))  # the retry floor keeps whole ms
    sids = await rb.ids()
    read_one = await one.read(10)
    await one.ack([i for i, _ in read_one[:6]])  # e6..e9 pending with one
    read_two = await two.read(4)
    await two.ack([i for i, _ in read_two])  # two delivered up to e3
    await rb.state("two").add_retry(sids[1], b"raw", 2, T0)  # and retries e1

    assert await trim(rb.redis, rb.log_uid, rb.stream, max_age_s=None, max_records=None) == (1, 0)
    assert await rb.ids() == sids[1:]
    assert await trim(rb.redis, rb.log_uid, rb.stream, max_age_s=None, max_records=5) == (0, 4)
    far = time.time() + 3600
    assert await trim(rb.redis, rb.log_uid, rb.stream, max_age_s=60, max_records=None,
                      now=far) == (0, 5)
    assert await rb.redis.xlen(rb.stream) == 0


async def test_trim_keeps_the_oldest_retry_s_entry_and_drops_the_handled_ones_before_it(
    rb: RedisBackend,
) -> None:
    """The group handled every entry, some as retries: trim drops the entries older than the
    oldest retry's event and keeps that one, finding it in the retry floor (no read of the
    retries themselves), which every way of adding or removing a retry keeps up to date."""
    source = rb.redis_source("c")
    await source.open()
    await rb.append_apart(*(ev(f"e{i}") for i in range(8)))
    sids = await rb.ids()
    ms = [parse_stream_id(i)[0] for i in sids]
    await source.ack([i for i, _ in await source.read(10)])  # all handled ...
    state = rb.state("c")
    r5 = await state.add_retry(sids[5], b"raw5", 2, T0)
    r2 = await state.add_retry(sids[2], b"raw2", 2, T0)  # ... e2 and e5 as retries
    floor_key = consumer_key(rb.log_uid, "c", "retryfloor")

    async def floor() -> dict[int, int]:
        found: Any = await rb.redis.zrange(floor_key, 0, -1, withscores=True)
        return {int(m): int(score) for m, score in found}

    async def retry_reads() -> int:
        stats: Any = await rb.redis.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0))
                   for c in ("hvals", "hgetall", "hscan", "hmget", "hget"))

    async def trimmed() -> tuple[int, int]:
        return await trim(rb.redis, rb.log_uid, rb.stream, max_age_s=None, max_records=None)

    assert await floor() == {r2: ms[2], r5: ms[5]}  # the event ids' milliseconds, exactly
    reads = await retry_reads()
    assert await trimmed() == (2, 0)  # e0, e1 go; e2, the oldest retry's event, stays
    assert await retry_reads() == reads
    assert await rb.ids() == sids[2:]
    await state.remove_retry(r2)  # delivered at last
    assert await floor() == {r5: ms[5]}
    assert await trimmed() == (3, 0)
    assert await rb.ids() == sids[5:]
    await state.add_dead_letter(sids[5], b"raw5", "retries-exhausted", 500, "", T0, retry_id=r5)
    assert await floor() == {}
    [dead] = await state.dead_letters()
    assert await state.redeliver([dead.id], T0) == 1
    [back] = await state.retries()
    assert await floor() == {back.id: ms[5]}  # redelivered: its entry is needed again
    assert await trimmed() == (0, 0)
    await rb.redis.hdel(consumer_key(rb.log_uid, "c", "retrydata"), str(back.id))
    await state.update_retry(back.id, 3, T0)  # its data gone: the retry goes, floor and all
    assert await floor() == {}
    assert await trimmed() == (2, 0)  # up to the group's last-delivered entry, e7
    assert await rb.ids() == sids[7:]


async def test_delete_consumer_and_delete_log_leave_no_key(rb: RedisBackend) -> None:
    for consumer in ("one", "two"):
        source = rb.redis_source(consumer, ordered=consumer == "two")
        await source.open()
    await rb.append(ev("a"))
    state = rb.state("one")
    await state.add_retry("1-0", b"x", 2, T0)
    await state.add_dead_letter("1-0", b"x", "not-retryable", 400, "", T0)
    await rb.state("two").add_retry("1-0", b"y", 2, T0)
    other = RedisBackend.__new__(RedisBackend)  # a second log on the same server
    other.redis, other.log_uid = rb.redis, rb.log_uid + "-other"
    other.stream = stream_key(other.log_uid)
    await other.start()
    await other.append(ev("kept"))

    parts = {k.rsplit(":", 1)[1] for k in await rb.keys() if ":c:one:" in k}
    assert parts == {"seq", "retries", "retrydata", "retryfloor", "dead", "deaddata"}
    assert await delete_consumer(rb.redis, rb.log_uid, rb.stream, "one") == len(parts)
    assert [g["name"] for g in await rb.redis.xinfo_groups(rb.stream)] == [b"two"]
    assert not [k for k in await rb.keys() if ":c:one:" in k]
    left = await rb.keys()
    assert {k.rsplit(":", 1)[1] for k in left} >= {"events", "lease", "fence", "retries"}
    assert await delete_log(rb.redis, rb.log_uid) == len(left)
    assert await rb.keys() == []
    assert await rb.redis.xlen(other.stream) == 1
