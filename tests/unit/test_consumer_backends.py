"""Conformance of the consumer seams' backends (`controller.eventing.consumer`): every backend's
`ConsumerSource` and `ConsumerState` pass the same tests, and so does a `ConsumerRunner` on them.

Parametrized over the backends: only SQLite exists so far (Redis Streams comes next). A backend
is a `Backend`: it appends events to a consumer's log the way the gateway does, and builds the
source and the state of a consumer the way the dispatcher does (a new source is what a
restarted dispatcher makes). Event ids are opaque: the tests only compare them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import pytest

from controller.eventing.consumer import ConsumerSource, ConsumerState
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import ConsumerPlan, SqliteLog
from controller.eventing.runner import ConsumerRunner
from controller.eventing.sender import Outcome, Sender
from controller.eventing.sqlite_consumer import SqliteConsumerSource, SqliteConsumerState
from controller.eventing.state import DispatcherState
from gateway.channels.sqlite import SqliteChannelLog
from gateway.channels.sqlite_reader import SqliteLogReader
from gateway.cloudevents import Event
from gateway.ingress import CHANNEL

T0 = 1_700_000_000.0
SUBSCRIBER = "http://sub.ns.localhost"


def ev(event_id: str) -> Event:
    attrs = {"specversion": "1.0", "id": event_id, "source": "/src", "type": "t"}
    return Event(attrs, b'{"n":1}', True)  # type: ignore[arg-type]


def ids_of(batch: list[tuple[str, bytes]]) -> list[str]:
    return [Event.from_log(raw).id for _, raw in batch]


class Backend(Protocol):
    async def append(self, *events: Event) -> None: ...
    async def source(self, consumer: str) -> ConsumerSource: ...
    def state(self, consumer: str) -> ConsumerState: ...
    async def close(self) -> None: ...


class SqliteBackend:
    """The log file a gateway writes, the dispatcher's reader of it and its own database."""

    def __init__(self, tmp: Path) -> None:
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

    async def close(self) -> None:
        await self.reader.close()
        await self.log.close()
        await self.db.close()


BACKENDS: dict[str, Callable[[Path], Backend]] = {"sqlite": SqliteBackend}


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
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
    assert [(r.id, r.attempt, r.next_at) for r in await state.retries()][-1] == (r2, 3, T0 + 9)
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
    assert (back.event_id, back.event, back.attempt, back.next_at) == ("8", b"raw8", 0, T0 + 3)
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


def consumer_plan() -> ConsumerPlan:
    return ConsumerPlan(
        uid="c", namespace="ns", name="t", broker="default", log_uid="b", log=SqliteLog("unused"),
        subscriber=SUBSCRIBER, reply="", filter_attributes=None, filters=None,
        delivery={"retry": 3}, dead_letter_uri=None, ordered=False, kind="subscription",
    )


async def until(cond: Callable[[], Awaitable[bool]], rounds: int = 2000) -> None:
    for _ in range(rounds):
        if await cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not reached")


async def test_a_runner_delivers_acks_and_keeps_retries_on_the_backend(backend: Backend) -> None:
    sender = AnswerSender(lambda e: Outcome(e.id != "bad", 202 if e.id != "bad" else 500))
    state = backend.state("c")
    source = await backend.source("c")
    await source.open()  # where the consumer starts is known before the events come (the runner opens again)
    runner = ConsumerRunner(consumer_plan(), source, state, sender, DispatcherMetrics(), clock=lambda: T0)
    runner.start()
    try:
        await backend.append(ev("a"), ev("bad"), ev("c"))
        runner.wake()

        async def handled() -> bool:
            return await source.backlog() == 0 and len(await state.retries()) == 1

        await until(handled)
        assert sorted(sender.sent) == ["a", "bad", "c"]
        [retry] = await state.retries()
        assert (Event.from_log(retry.event).id, retry.attempt) == ("bad", 2)
    finally:
        await runner.stop()
    again = await backend.source("c")
    await again.open()
    assert await again.read(10) == [] and await again.pending() == []
