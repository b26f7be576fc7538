"""One trigger's delivery loop, with an in-memory log reader, state and sender and a fake clock.

The runner's loops are real asyncio tasks; the tests only yield to the loop (`asyncio.sleep(0)`)
until the expected effect shows, then stop the runner. Retries are scheduled in the fake clock's
future, which never comes, so no test waits for a backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.eventing.logreader import LogReader
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import TriggerPlan
from controller.eventing.runner import TriggerRunner, reply_ttl
from controller.eventing.sender import Outcome, Sender
from controller.eventing.state import DispatcherState, PendingRetry
from gateway.cloudevents import Event

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
# Each fake subclasses the real class it stands in for, only so that mypy checks every faked
# method against the real signature (an override that drifts is an error). None calls the real
# __init__: no file, thread or session is made, and a real method the fake does not override
# fails at once on the attributes it lacks.
# ------------------------------------------------------------------------------------------


class FakeReader(LogReader):
    def __init__(self, events: list[Event] | None = None) -> None:  # no super().__init__: no file
        self.records: list[tuple[int, bytes]] = []
        for e in events or []:
            self.add(e)

    def add(self, event: Event) -> int:
        offset = len(self.records) + 1
        self.records.append((offset, event.to_log()))
        return offset

    async def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        return [r for r in self.records if r[0] > after][:limit]

    async def tail(self) -> int:
        return len(self.records)


@dataclass
class FakeState(DispatcherState):  # the dataclass __init__ replaces the real one: no SQLite
    stored_retries: list[PendingRetry] = field(default_factory=list)
    set_positions: list[tuple[str, int]] = field(default_factory=list)
    """Every set_position call (`positions` is the real state's committed-positions query)."""
    added: list[tuple[str, int, bytes, int, float]] = field(default_factory=list)
    updated: list[tuple[int, int, float]] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)

    def last_position(self) -> tuple[str, int] | None:
        return self.set_positions[-1] if self.set_positions else None

    async def set_position(self, consumer: str, offset: int) -> None:
        self.set_positions.append((consumer, offset))

    async def add_retry(self, consumer: str, offset: int, event: bytes, attempt: int, next_at: float) -> int:
        self.added.append((consumer, offset, event, attempt, next_at))
        return 100 + len(self.added)

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        self.updated.append((retry_id, attempt, next_at))

    async def remove_retry(self, retry_id: int) -> None:
        self.removed.append(retry_id)

    async def retries(self, consumer: str) -> list[PendingRetry]:
        return [r for r in self.stored_retries if r.consumer == consumer]

    async def add_dead_letter(
        self,
        consumer: str,
        offset: int,
        event: bytes,
        reason: str,
        status: int | None,
        detail: str,
        at: float,
        *,
        retry_id: int | None = None,
    ) -> int:
        self.dead.append(
            {"consumer": consumer, "offset": offset, "reason": reason, "status": status, "retry_id": retry_id}
        )
        return len(self.dead)


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
) -> TriggerPlan:
    return TriggerPlan(
        uid="tuid",
        namespace="ns",
        name="t1",
        broker="default",
        broker_uid="buid",
        log="eventing/logs/buid.db",
        subscriber=SUBSCRIBER,
        reply=REPLY,
        filter_attributes=filter_attributes,
        filters=None,
        delivery=dict(delivery or DEFAULT_DELIVERY),
        dead_letter_uri=dead_letter_uri,
        ordered=False,
    )


@dataclass
class Rig:
    runner: TriggerRunner
    reader: FakeReader
    state: FakeState
    sender: FakeSender
    metrics: DispatcherMetrics

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
        reader, st, sender = FakeReader(events), state or FakeState(), FakeSender(answer)
        metrics = DispatcherMetrics()
        runner = TriggerRunner(
            plan(**plan_args),
            reader,
            st,
            sender,
            metrics,
            clock=lambda: T0,
        )
        rig = Rig(runner, reader, st, sender, metrics)
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
    rig.runner.start(None)
    await until(lambda: ("tuid", 3) in rig.state.set_positions)
    assert rig.runner.position == 3
    assert rig.sender.sent == []
    rig.reader.add(ev("new"))
    rig.runner.wake()
    await until(lambda: rig.runner.position == 4)
    assert [s.event.id for s in rig.sender.sent] == ["new"]
    await until(lambda: rig.state.last_position() == ("tuid", 4))


async def test_delivers_from_the_stored_position(make: Callable[..., Rig]) -> None:
    rig = make([ev("a"), ev("b"), ev("c")], ok)
    rig.runner.start(1)
    await until(lambda: rig.runner.position == 3)
    assert sorted(s.event.id for s in rig.sender.sent) == ["b", "c"]
    sent = rig.sender.sent[0]
    assert sent.url == SUBSCRIBER
    assert sent.structured is False
    assert sent.prefer_reply is True
    assert rig.sample("flint_dispatcher_events_delivered_total") == 2


async def test_filtered_out_events_advance_the_position(make: Callable[..., Rig]) -> None:
    events = [ev("a", "other"), ev("b", "other"), ev("c", "wanted"), ev("d", "other")]
    rig = make(events, ok, filter_attributes={"type": "wanted"})
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 4)
    assert [s.event.id for s in rig.sender.sent] == ["c"]
    await until(lambda: rig.state.last_position() == ("tuid", 4))
    assert rig.state.added == []


async def test_only_filtered_out_events_are_never_sent(make: Callable[..., Rig]) -> None:
    rig = make([ev("a", "other"), ev("b", "other")], ok, filter_attributes={"type": "wanted"})
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 2)
    await until(lambda: rig.state.last_position() == ("tuid", 2))
    assert rig.sender.sent == []


async def test_failed_first_attempt_stores_a_retry_and_moves_on(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        return Outcome(False, 500, detail="boom") if event.id == "a" else Outcome(True, 202)

    rig = make([ev("a"), ev("b")], answer)
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 2)
    assert len(rig.state.added) == 1
    consumer, offset, raw, attempt, next_at = rig.state.added[0]
    assert (consumer, offset, attempt) == ("tuid", 1, 2)
    assert Event.from_log(raw).id == "a"
    assert next_at == pytest.approx(T0 + 0.4)  # exponential: 0.2 s × 2^1
    assert rig.state.dead == []
    await until(lambda: rig.state.last_position() == ("tuid", 2))
    assert rig.sample("flint_dispatcher_events_retried_total") == 1
    assert rig.sample("flint_dispatcher_events_delivered_total") == 1


async def test_not_retryable_failure_without_sink_is_kept_as_a_dead_letter(make: Callable[..., Rig]) -> None:
    rig = make([ev("a")], lambda url, event: Outcome(False, 400, detail="bad"))
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 1)
    assert rig.state.added == []
    assert rig.state.dead == [
        {"consumer": "tuid", "offset": 1, "reason": "not-retryable", "status": 400, "retry_id": None}
    ]
    assert rig.sample("flint_dispatcher_events_dropped_total", reason="not-retryable") == 1


async def test_not_retryable_failure_goes_to_the_dead_letter_sink(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        return Outcome(True, 202) if url == "http://dls" else Outcome(False, 400, body=b"nope")

    rig = make([ev("a")], answer, dead_letter_uri="http://dls")
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 1)
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
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 1)
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
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 1)
    assert rig.sender.to(REPLY) == []
    assert rig.sample("flint_dispatcher_events_dropped_total", reason="ttl-exhausted") == 1
    assert rig.state.added == []


async def test_a_refused_reply_fails_the_delivery(make: Callable[..., Rig]) -> None:
    def answer(url: str, event: Event) -> Outcome:
        if url == SUBSCRIBER:
            return Outcome(True, 200, reply=ev("r", "reply"))
        return Outcome(False, 503, retry_after="1", detail="log down")

    rig = make([ev("a")], answer)
    rig.runner.start(0)
    await until(lambda: rig.runner.position == 1)
    assert [(c, o, a) for c, o, _, a, _ in rig.state.added] == [("tuid", 1, 2)]
    assert rig.sample("flint_dispatcher_events_delivered_total") == 0


async def test_a_due_stored_retry_is_delivered_and_removed(make: Callable[..., Rig]) -> None:
    raw = ev("old").to_log()
    state = FakeState(stored_retries=[PendingRetry(7, "tuid", 1, raw, 3, T0 - 1.0)])
    rig = make([ev("old")], ok, state=state)
    rig.runner.start(1)
    await until(lambda: rig.state.removed == [7])
    assert [s.event.id for s in rig.sender.sent] == ["old"]
    assert rig.state.updated == []


async def test_a_failing_stored_retry_is_rescheduled(make: Callable[..., Rig]) -> None:
    raw = ev("old").to_log()
    state = FakeState(stored_retries=[PendingRetry(7, "tuid", 1, raw, 2, T0 - 1.0)])
    rig = make([ev("old")], lambda url, event: Outcome(False, 502), state=state)
    rig.runner.start(1)
    await until(lambda: bool(rig.state.updated))
    [(rid, attempt, next_at)] = rig.state.updated
    assert (rid, attempt) == (7, 3)
    assert next_at == pytest.approx(T0 + 0.8)  # 0.2 s × 2^2
    assert rig.state.removed == []


async def test_a_stored_retry_out_of_retries_is_dead_lettered(make: Callable[..., Rig]) -> None:
    raw = ev("old").to_log()
    state = FakeState(stored_retries=[PendingRetry(9, "tuid", 1, raw, 2, T0 - 1.0)])
    rig = make([ev("old")], lambda url, event: Outcome(False, 500), state=state, delivery={"retry": 1})
    rig.runner.start(1)
    await until(lambda: bool(rig.state.dead))
    assert rig.state.dead == [
        {"consumer": "tuid", "offset": 1, "reason": "retries-exhausted", "status": 500, "retry_id": 9}
    ]
