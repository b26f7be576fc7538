"""One consumer's delivery loop, with an in-memory source, state and sender and a fake clock.

The runner's loops are real asyncio tasks; the tests only yield to the loop (`asyncio.sleep(0)`)
until the expected effect shows, then stop the runner. Retries are scheduled in the fake clock's
future, which never comes, so no test waits for a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.eventing.consumer import DeadLetter, DueRetry
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import ConsumerPlan, SqliteLog
from controller.eventing.runner import ConsumerRunner, reply_ttl
from controller.eventing.sender import Outcome, Sender
from flint_common.cloudevents.codec import Event

T0 = 1_700_000_000.0
SUBSCRIBER = "http://sub.ns.localhost"
REPLY = "http://broker-ingress.localhost/ns/default"
DEFAULT_DELIVERY = {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}


def ev(event_id: str, type_: str = "wanted", **extra: object) -> Event:
    attrs = {"specversion": "1.0", "id": event_id, "source": "/src", "type": type_, **extra}
    return Event(attrs, b'{"n":1}', True)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# reply_ttl
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(None, 254), (255, 254), ("3", 2), (1, 0), (" 7 ", 6), ("abc", 254), (True, 254), (0, -1)],
)
def test_reply_ttl(ttl: object, expected: int) -> None:
    event = ev("e") if ttl is None else ev("e", knativebrokerttl=ttl)
    assert reply_ttl(event) == expected


# ------------------------------------------------------------------------------------------
# fakes
#
# The source and the state are in-memory implementations of the runner's Protocols
# (`ConsumerSource`, `ConsumerState`): mypy checks them against the Protocols where the runner
# takes them. The sender subclasses the real class, only so that mypy checks every faked
# method against the real signature; it never calls the real __init__ (no session is made).
# The backends' own implementations are tested in `integration/test_consumer_conformance.py`.
# ------------------------------------------------------------------------------------------


class FakeSource:
    """A log of events with ids "1", "2", ... and a position, like the SQLite source's."""

    blocks = False

    def __init__(self, events: list[Event] | None = None) -> None:
        self.records: list[tuple[str, bytes]] = []
        self.stored: int | None = 0
        self.position = 0
        self.positions: list[int] = []
        """Every position stored (at open for a new consumer, and after each ack)."""
        self.acks: list[list[str]] = []
        self.unacked: list[tuple[str, bytes]] = []
        """Events an earlier reader read and never acked (what `pending` lists)."""
        self.claimed: list[list[str]] = []
        self.maintained = False
        self.turn_over = False
        """`check_turn` raises: another reader may deliver in this one's place now."""
        self.turn_checks = 0
        self._fetched = 0
        for e in events or []:
            self.add(e)

    def add(self, event: Event) -> str:
        self.records.append((str(len(self.records) + 1), event.to_log()))
        return self.records[-1][0]

    def last_position(self) -> int | None:
        return self.positions[-1] if self.positions else None

    async def open(self) -> None:
        if self.stored is None:
            self.stored = len(self.records)
            self.positions.append(self.stored)
        self.position = self._fetched = self.stored

    async def read(self, limit: int) -> list[tuple[str, bytes]]:
        batch = self.records[self._fetched : self._fetched + limit]
        self._fetched += len(batch)
        return batch

    async def ack(self, ids: Sequence[str]) -> None:
        self.acks.append(list(ids))
        self.position = max([self.position, *(int(i) for i in ids if i.isdigit())])
        self.positions.append(self.position)

    async def pending(self) -> list[str]:
        return [i for i, _ in self.unacked]

    async def claim(self, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        self.claimed.append(list(ids))
        return [r for r in self.unacked if r[0] in ids]

    async def backlog(self) -> int:
        return len(self.records) - self.position

    async def maintain(self) -> None:
        self.maintained = True

    async def check_turn(self) -> None:
        self.turn_checks += 1
        if self.turn_over:
            raise RuntimeError("the ordered consumer's lease ran out")


@dataclass
class FakeState:
    stored_retries: list[DueRetry] = field(default_factory=list)
    added: list[tuple[str, bytes, int, float]] = field(default_factory=list)
    updated: list[tuple[int, int, float]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    redelivered: list[tuple[Sequence[int] | None, float]] = field(default_factory=list)
    taken: list[DueRetry] = field(default_factory=list)
    lost: set[int] = field(default_factory=set)
    """Retries another taker holds now (or that are gone): `hold` says False for them."""
    holds: list[int] = field(default_factory=list)

    async def retries(self) -> list[DueRetry]:
        return list(self.stored_retries)

    async def take_due(self, now: float, limit: int) -> list[DueRetry]:
        due = [r for r in self.stored_retries if r.next_at <= now][: max(limit, 0)]
        self.taken.extend(due)
        self.stored_retries = [r for r in self.stored_retries if r not in due]
        return due

    async def hold(self, retry_id: int) -> bool:
        self.holds.append(retry_id)
        return retry_id not in self.lost

    async def add_retry(self, event_id: str, event: bytes, attempt: int, next_at: float) -> int:
        self.added.append((event_id, event, attempt, next_at))
        return 100 + len(self.added)

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        self.updated.append((retry_id, attempt, next_at))

    async def remove_retry(self, retry_id: int) -> None:
        self.removed.append(retry_id)

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
        self.dead.append({"id": event_id, "reason": reason, "status": status, "retry_id": retry_id})
        return len(self.dead)

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        return []

    async def redeliver(self, ids: Sequence[int] | None, next_at: float) -> int:
        self.redelivered.append((ids, next_at))
        return 0


@dataclass
class Sent:
    url: str
    event: Event
    structured: bool
    prefer_reply: bool


class FakeSender(Sender):
    """Answers each send with `answer(url, event)`."""

    def __init__(self, answer: Callable[[str, Event], Outcome]) -> None:  # no super().__init__
        self.answer = answer
        self.sent: list[Sent] = []

    async def send(
        self, url: str, event: Event, *, structured: bool, timeout_s: float, prefer_reply: bool = True
    ) -> Outcome:
        self.sent.append(Sent(url, event, structured, prefer_reply))
        return self.answer(url, event)

    def to(self, url: str) -> list[Sent]:
        return [s for s in self.sent if s.url == url]


def plan(
    *,
    filter_attributes: dict[str, str] | None = None,
    delivery: dict[str, Any] | None = None,
    dead_letter_uri: str | None = None,
    ordered: bool = False,
) -> ConsumerPlan:
    return ConsumerPlan(
        uid="tuid",
        namespace="ns",
        name="t1",
        broker="default",
        log_uid="buid",
        log=SqliteLog("eventing/logs/buid.db"),
        subscriber=SUBSCRIBER,
        reply=REPLY,
        filter_attributes=filter_attributes,
        filters=None,
        delivery=dict(delivery or DEFAULT_DELIVERY),
        dead_letter_uri=dead_letter_uri,
        ordered=ordered,
    )


@dataclass
class Rig:
    runner: ConsumerRunner
    source: FakeSource
    state: FakeState
    sender: FakeSender
    metrics: DispatcherMetrics

    def start(self, stored: int | None) -> None:
        """Start the runner on a consumer whose stored position is `stored` (None: a new one)."""
        self.source.stored = stored
        self.runner.start()

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, {"namespace": "ns", "trigger": "t1", **labels})
        return value or 0.0


async def until(cond: Callable[[], bool], rounds: int = 500) -> None:
    for _ in range(rounds):
        if cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


@pytest.fixture
async def rigs() -> AsyncIterator[list[Rig]]:
    made: list[Rig] = []
    yield made
    for rig in made:
        await rig.runner.stop()


@pytest.fixture
def make(rigs: list[Rig]) -> Callable[..., Rig]:
    def build(
        events: list[Event],
        answer: Callable[[str, Event], Outcome],
        *,
        state: FakeState | None = None,
        **plan_args: Any,
    ) -> Rig:
        source, st, sender = FakeSource(events), state or FakeState(), FakeSender(answer)
        metrics = DispatcherMetrics()
        runner = ConsumerRunner(
            plan(**plan_args),
            source,
            st,
            sender,
            metrics,
            clock=lambda: T0,
        )
        rig = Rig(runner, source, st, sender, metrics)
        rigs.append(rig)
        return rig

    return build


def ok(url: str, event: Event) -> Outcome:
    return Outcome(True, 202)


# ------------------------------------------------------------------------------------------
# the runner
# ------------------------------------------------------------------------------------------


async def test_a_new_trigger_starts_at_the_tail(make: Callable[..., Rig]) -> None:
    rig = make([ev("old1"), ev("old2"), ev("old3")], ok)
    rig.start(None)
    await until(lambda: 3 in rig.source.positions)
    assert rig.source.position == 3
    assert rig.sender.sent == []
    rig.source.add(ev("new"))
    rig.runner.wake()
    await until(lambda: rig.source.position == 4)
    assert [s.event.id for s in rig.sender.sent] == ["new"]
    await until(lambda: rig.source.last_position() == 4)


async def test_delivers_from_the_stored_position(make: Callable[..., Rig]) -> None:
    rig = make([ev("a"), ev("b"), ev("c")], ok)
    rig.start(1)
    await until(lambda: rig.source.position == 3)
    assert sorted(s.event.id for s in rig.sender.sent) == ["b", "c"]
    sent = rig.sender.sent[0]
    assert sent.url == SUBSCRIBER
    assert sent.structured is False
    assert sent.prefer_reply is True
    assert rig.sample("flint_dispatcher_events_delivered_total") == 2


async def test_filtered_out_events_advance_the_position(make: Callable[..., Rig]) -> None:
    events = [ev("a", "other"), ev("b", "other"), ev("c", "wanted"), ev("d", "other")]
    rig = make(events, ok, filter_attributes={"type": "wanted"})
    rig.start(0)
    await until(lambda: rig.source.position == 4)
    assert [s.event.id for s in rig.sender.sent] == ["c"]
    await until(lambda: rig.source.last_position() == 4)
    assert rig.state.added == []


async def test_only_filtered_out_events_are_never_sent(make: Callable[..., Rig]) -> None:
    rig = make([ev("a", "other"), ev("b", "other")], ok, filter_attributes={"type": "wanted"})
    rig.start(0)
    await until(lambda: rig.source.position == 2)
    await until(lambda: rig.source.last_position() == 2)
    assert rig.sender.sent == []


async def test_failed_first_attempt_stores_a_retry_and_moves_on(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        return Outcome(False, 500, detail="boom") if event.id == "a" else Outcome(True, 202)

    rig = make([ev("a"), ev("b")], answer)
    rig.start(0)
    await until(lambda: rig.source.position == 2)
    assert len(rig.state.added) == 1
    event_id, raw, attempt, next_at = rig.state.added[0]
    assert (event_id, attempt) == ("1", 2)
    assert Event.from_log(raw).id == "a"
    assert next_at == pytest.approx(T0 + 0.4)  # exponential: 0.2 s × 2^1
    assert rig.state.dead == []
    await until(lambda: rig.source.last_position() == 2)
    assert rig.sample("flint_dispatcher_events_retried_total") == 1
    assert rig.sample("flint_dispatcher_events_delivered_total") == 1


async def test_not_retryable_failure_without_sink_is_kept_as_a_dead_letter(make: Callable[..., Rig]) -> None:
    rig = make([ev("a")], lambda url, event: Outcome(False, 400, detail="bad"))
    rig.start(0)
    await until(lambda: rig.source.position == 1)
    assert rig.state.added == []
    assert rig.state.dead == [
        {"id": "1", "reason": "not-retryable", "status": 400, "retry_id": None}
    ]
    assert rig.sample("flint_dispatcher_events_dropped_total", reason="not-retryable") == 1


async def test_not_retryable_failure_goes_to_the_dead_letter_sink(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        return Outcome(True, 202) if url == "http://dls" else Outcome(False, 400, body=b"nope")

    rig = make([ev("a")], answer, dead_letter_uri="http://dls")
    rig.start(0)
    await until(lambda: rig.source.position == 1)
    [dead] = rig.sender.to("http://dls")
    assert dead.event.id == "a"
    assert dead.event.get("knativeerrordest") == SUBSCRIBER
    assert dead.event.get("knativeerrorcode") == "400"
    assert dead.prefer_reply is False
    assert rig.state.dead == []
    assert rig.sample("flint_dispatcher_events_dead_lettered_total") == 1


async def test_reply_goes_to_the_broker_with_one_less_ttl(make: Callable[..., Rig]) -> None:
    reply = ev("r", "reply")

    def answer(url: str, event: Event) -> Outcome:
        return Outcome(True, 200, reply=reply) if url == SUBSCRIBER else Outcome(True, 202)

    rig = make([ev("a", knativebrokerttl=5)], answer)
    rig.start(0)
    await until(lambda: rig.source.position == 1)
    [sent] = rig.sender.to(REPLY)
    assert sent.event.id == "r"
    assert sent.event.get("knativebrokerttl") == 4
    assert sent.structured is True
    assert sent.prefer_reply is False
    assert rig.state.added == []


async def test_reply_with_exhausted_ttl_is_dropped(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        return Outcome(True, 200, reply=ev("r", "reply"))

    rig = make([ev("a", knativebrokerttl=1)], answer)
    rig.start(0)
    await until(lambda: rig.source.position == 1)
    assert rig.sender.to(REPLY) == []
    assert rig.sample("flint_dispatcher_events_dropped_total", reason="ttl-exhausted") == 1
    assert rig.state.added == []


async def test_a_refused_reply_fails_the_delivery(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        if url == SUBSCRIBER:
            return Outcome(True, 200, reply=ev("r", "reply"))
        return Outcome(False, 503, retry_after="1", detail="log down")

    rig = make([ev("a")], answer)
    rig.start(0)
    await until(lambda: rig.source.position == 1)
    assert [(i, a) for i, _, a, _ in rig.state.added] == [("1", 2)]
    assert rig.sample("flint_dispatcher_events_delivered_total") == 0


async def test_a_due_stored_retry_is_delivered_and_removed(make: Callable[..., Rig]) -> None:
    raw = ev("old").to_log()
    state = FakeState(stored_retries=[DueRetry(7, "1", raw, 3, T0 - 1.0)])
    rig = make([ev("old")], ok, state=state)
    rig.start(1)
    await until(lambda: rig.state.removed == [7])
    assert [s.event.id for s in rig.sender.sent] == ["old"]
    assert rig.state.updated == []


async def test_a_failing_stored_retry_is_rescheduled(make: Callable[..., Rig]) -> None:
    raw = ev("old").to_log()
    state = FakeState(stored_retries=[DueRetry(7, "1", raw, 2, T0 - 1.0)])
    rig = make([ev("old")], lambda url, event: Outcome(False, 502), state=state)
    rig.start(1)
    await until(lambda: bool(rig.state.updated))
    [(rid, attempt, next_at)] = rig.state.updated
    assert (rid, attempt) == (7, 3)
    assert next_at == pytest.approx(T0 + 0.8)  # 0.2 s × 2^2
    assert rig.state.removed == []


async def test_a_stored_retry_out_of_retries_is_dead_lettered(make: Callable[..., Rig]) -> None:
    raw = ev("old").to_log()
    state = FakeState(stored_retries=[DueRetry(9, "1", raw, 2, T0 - 1.0)])
    rig = make([ev("old")], lambda url, event: Outcome(False, 500), state=state, delivery={"retry": 1})
    rig.start(1)
    await until(lambda: bool(rig.state.dead))
    assert rig.state.dead == [
        {"id": "1", "reason": "retries-exhausted", "status": 500, "retry_id": 9}
    ]


async def test_a_retry_taken_over_meanwhile_is_not_sent_to_the_dead_letter_sink(
    make: Callable[..., Rig],
) -> None:
    """The runner's lease on the retry was taken over (it stalled): the other taker owns the
    outcome, so this one neither sends the event to the sink nor keeps a dead letter."""

    def answer(url: str, event: Event) -> Outcome:
        return Outcome(True, 202) if url == "http://dls" else Outcome(False, 400)

    state = FakeState(stored_retries=[DueRetry(9, "1", ev("old").to_log(), 2, T0 - 1.0)], lost={9})
    rig = make([ev("old")], answer, state=state, dead_letter_uri="http://dls")
    rig.start(1)
    await until(lambda: rig.state.holds == [9])
    await until(lambda: rig.runner._retrying == 0)  # the retry's task ended
    assert [s.url for s in rig.sender.sent] == [SUBSCRIBER]  # the attempt, and nothing after it
    assert rig.state.dead == [] and rig.state.removed == []
    assert rig.sample("flint_dispatcher_events_dead_lettered_total") == 0


async def test_the_hold_is_asked_again_before_each_retry_of_the_dead_letter_sink(
    make: Callable[..., Rig],
) -> None:
    state = FakeState(stored_retries=[DueRetry(9, "1", ev("old").to_log(), 2, T0 - 1.0)])

    def answer(url: str, event: Event) -> Outcome:
        if url == "http://dls":
            state.lost.add(9)  # taken over while the sink failed
            return Outcome(False, 503)
        return Outcome(False, 400)

    rig = make([ev("old")], answer, state=state, dead_letter_uri="http://dls",
               delivery={"retry": 1, "backoffPolicy": "linear", "backoffDelay": "PT0S"})
    rig.start(1)
    await until(lambda: rig.state.holds == [9, 9])
    await until(lambda: rig.runner._retrying == 0)
    assert len(rig.sender.to("http://dls")) == 1  # no second try of the sink: not ours any more
    assert rig.state.dead == [] and rig.state.removed == []


async def test_a_held_retry_given_up_on_goes_to_the_dead_letter_sink_and_is_removed(
    make: Callable[..., Rig],
) -> None:
    def answer(url: str, event: Event) -> Outcome:
        return Outcome(True, 202) if url == "http://dls" else Outcome(False, 400)

    state = FakeState(stored_retries=[DueRetry(9, "1", ev("old").to_log(), 2, T0 - 1.0)])
    rig = make([ev("old")], answer, state=state, dead_letter_uri="http://dls")
    rig.start(1)
    await until(lambda: rig.state.removed == [9])
    assert rig.state.holds == [9]
    assert [s.event.id for s in rig.sender.to("http://dls")] == ["old"]


async def test_an_ordered_runner_asks_for_its_turn_before_each_attempt_and_stops_when_it_is_over(
    make: Callable[..., Rig],
) -> None:
    """Retried in place (ordered), an event is attempted again only while it is still this
    reader's turn: once its lease ran out the runner fails instead of attempting again."""
    attempts: list[str] = []

    def answer(url: str, event: Event) -> Outcome:
        attempts.append(event.id)
        if len(attempts) == 2:
            rig.source.turn_over = True  # the lease ran out during the second attempt
        return Outcome(False, 500)

    rig = make([ev("a"), ev("b")], answer, ordered=True,
               delivery={"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0S"})
    failures: list[ConsumerRunner] = []
    rig.runner.on_failure = failures.append
    rig.start(0)
    await until(lambda: rig.runner.failed)
    assert failures == [rig.runner]
    assert attempts == ["a", "a"]  # no third attempt, and "b" never
    assert rig.source.turn_checks == 3
    assert rig.source.acks == [] and rig.state.dead == []


async def test_an_ordered_runner_asks_for_its_turn_before_giving_up(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        rig.source.turn_over = True
        return Outcome(False, 400)  # not retryable: given up at once

    rig = make([ev("a")], answer, ordered=True, dead_letter_uri="http://dls")
    rig.start(0)
    await until(lambda: rig.runner.failed)
    assert [s.url for s in rig.sender.sent] == [SUBSCRIBER]  # not to the sink: not our turn
    assert rig.state.dead == [] and rig.source.acks == []


async def test_events_pending_with_an_earlier_reader_are_claimed_and_delivered_first(
    make: Callable[..., Rig],
) -> None:
    rig = make([ev("a"), ev("b")], ok)
    rig.source.unacked = [("p1", ev("pending1").to_log()), ("p2", ev("pending2").to_log())]
    rig.start(0)
    await until(lambda: rig.source.position == 2)
    assert rig.source.claimed == [["p1", "p2"]]
    assert [s.event.id for s in rig.sender.sent][:2] == ["pending1", "pending2"]
    assert sorted(s.event.id for s in rig.sender.sent) == ["a", "b", "pending1", "pending2"]
    assert [i for ack in rig.source.acks for i in ack] == ["p1", "p2", "1", "2"]  # in read order


# ------------------------------------------------------------------------------------------
# the seams' hooks: a blocking source, the source's upkeep, retries taken from the state
# ------------------------------------------------------------------------------------------


class BlockingSource(FakeSource):
    """A source whose `read` waits for events itself (as Redis' `XREADGROUP … BLOCK` does; here
    it only yields to the loop, so the test sees how often the runner reads)."""

    blocks = True

    def __init__(self, events: list[Event] | None = None) -> None:
        super().__init__(events)
        self.reads = 0

    async def read(self, limit: int) -> list[tuple[str, bytes]]:
        self.reads += 1
        await asyncio.sleep(0)
        return await super().read(limit)


class FailingUpkeepSource(FakeSource):
    async def maintain(self) -> None:
        raise RuntimeError("lease lost")


def runner_on(source: FakeSource, rigs: list[Rig], state: FakeState | None = None) -> Rig:
    st, sender, metrics = state or FakeState(), FakeSender(ok), DispatcherMetrics()
    runner = ConsumerRunner(plan(), source, st, sender, metrics, clock=lambda: T0)
    rig = Rig(runner, source, st, sender, metrics)
    rigs.append(rig)
    return rig


async def test_a_blocking_source_is_read_again_at_once_after_an_empty_read(rigs: list[Rig]) -> None:
    rig = runner_on(BlockingSource(), rigs)
    rig.start(0)
    source = rig.source
    assert isinstance(source, BlockingSource)
    await until(lambda: source.reads >= 5)  # no POLL_S wait between them (no wake-up either)
    source.add(ev("a"))
    await until(lambda: [s.event.id for s in rig.sender.sent] == ["a"])


async def test_a_source_that_does_not_block_waits_for_a_wake_up(make: Callable[..., Rig]) -> None:
    rig = make([], ok)
    rig.start(0)
    for _ in range(50):
        await asyncio.sleep(0)
    rig.source.add(ev("a"))
    for _ in range(50):
        await asyncio.sleep(0)
    assert rig.sender.sent == []  # it sleeps until a wake-up (or POLL_S)
    rig.runner.wake()
    await until(lambda: [s.event.id for s in rig.sender.sent] == ["a"])


async def test_the_source_s_upkeep_runs_and_its_failure_fails_the_runner_once(
    rigs: list[Rig], make: Callable[..., Rig]
) -> None:
    fine = make([], ok)
    fine.start(0)
    await until(lambda: fine.source.maintained)
    rig = runner_on(FailingUpkeepSource(), rigs)
    failures: list[ConsumerRunner] = []
    rig.runner.on_failure = failures.append
    rig.start(0)
    await until(lambda: rig.runner.failed)
    assert failures == [rig.runner]
    assert not fine.runner.failed


class CancelLosingSource(FakeSource):
    """Its upkeep loses the first cancellation, as a Redis call can on Python 3.11 (redis-py's
    `asyncio.wait_for` around socket I/O swallows one that comes as the I/O completes)."""

    def __init__(self) -> None:
        super().__init__()
        self.cancels = 0

    async def maintain(self) -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancels += 1
                if self.cancels == 1:
                    continue  # lost
                raise


@dataclass
class CancelLosingState(FakeState):
    """Its `take_due` loses the cancellation it gets (once), as above."""

    lost_cancels: int = 0

    async def take_due(self, now: float, limit: int) -> list[DueRetry]:
        try:
            await asyncio.sleep(3600)  # the retry loop is here when the runner stops
        except asyncio.CancelledError:
            if self.lost_cancels:
                raise
            self.lost_cancels += 1  # lost: it returns as if the call had completed
        return []


async def test_stop_ends_a_runner_whose_tasks_lose_a_cancellation(
    rigs: list[Rig], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("controller.eventing.runner.STOP_RECANCEL_S", 0.01)
    source, state = CancelLosingSource(), CancelLosingState()
    rig = runner_on(source, rigs, state)
    rig.start(0)
    await until(lambda: len(rig.runner._tasks) == 1)  # the upkeep runs
    await asyncio.wait_for(rig.runner.stop(), 10.0)  # the lost cancellations do not keep it up
    assert source.cancels == 2 and state.lost_cancels == 1
    assert all(t.done() for t in (*rig.runner._main, *rig.runner._tasks))


async def test_retries_another_dispatcher_stored_are_taken_when_due(
    make: Callable[..., Rig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("controller.eventing.runner.RETRY_POLL_S", 0.01)
    rig = make([ev("old")], ok)
    rig.start(1)
    await until(lambda: rig.source.position == 1)
    raw = ev("old").to_log()
    rig.state.stored_retries.append(DueRetry(7, "1", raw, 2, T0 - 1.0))  # nobody wakes the runner
    deadline = asyncio.get_running_loop().time() + 10.0
    while rig.state.removed != [7]:
        assert asyncio.get_running_loop().time() < deadline, "the retry was never taken"
        await asyncio.sleep(0.005)
    assert [r.id for r in rig.state.taken] == [7]


async def test_requeued_makes_the_runner_take_due_retries_at_once(make: Callable[..., Rig]) -> None:
    rig = make([ev("old")], ok)
    rig.start(1)
    await until(lambda: rig.source.position == 1)
    for _ in range(20):
        await asyncio.sleep(0)  # the retry loop is asleep now (for RETRY_POLL_S)
    rig.state.stored_retries.append(DueRetry(8, "1", ev("old").to_log(), 0, T0))
    rig.runner.requeued()
    await until(lambda: rig.state.removed == [8])
    assert [s.event.id for s in rig.sender.sent] == ["old"]  # attempt 0 counts as 1 for the policy
