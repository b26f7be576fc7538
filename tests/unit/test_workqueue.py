"""The reconcilers' work queue: dedup, one worker per key, retries with backoff, delayed adds."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from controller.reconcilers.queue import BackoffSettings, WorkQueue

TINY = BackoffSettings(initial_s=0.001, max_s=0.004)
WAIT = 2.0
"""Upper bound on any wait for an event; a test that needs it has already failed."""


class Recorder:
    """A handler that records calls, tracks per-key concurrency and lets tests script outcomes."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.active: Counter[str] = Counter()
        self.max_active: Counter[str] = Counter()
        self.behaviour: dict[str, Callable[[int], Awaitable[float | None]]] = {}
        self._waiters: list[tuple[Callable[[], bool], asyncio.Event]] = []

    async def __call__(self, key: str) -> float | None:
        self.calls.append(key)
        self.active[key] += 1
        self.max_active[key] = max(self.max_active[key], self.active[key])
        try:
            fn = self.behaviour.get(key)
            return await fn(self.calls.count(key)) if fn else None
        finally:
            self.active[key] -= 1
            self._notify()

    def _notify(self) -> None:
        for cond, ev in self._waiters:
            if cond():
                ev.set()

    async def until(self, cond: Callable[[], bool]) -> None:
        ev = asyncio.Event()
        self._waiters.append((cond, ev))
        if cond():
            ev.set()
        await asyncio.wait_for(ev.wait(), WAIT)

    def count(self, key: str) -> int:
        return self.calls.count(key)


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
async def queues() -> AsyncIterator[list[WorkQueue[str]]]:
    made: list[WorkQueue[str]] = []
    yield made
    for q in made:
        await q.stop()


def make(queues: list[WorkQueue[str]], rec: Recorder, workers: int = 2) -> WorkQueue[str]:
    q: WorkQueue[str] = WorkQueue("test", rec, workers=workers, backoff=TINY)
    queues.append(q)
    return q


async def settle(q: WorkQueue[str]) -> None:
    """Let the loop run until the queue has nothing queued or active (no timers involved)."""
    for _ in range(1000):
        if q.idle():
            return
        await asyncio.sleep(0)
    raise AssertionError("queue never became idle")


def test_backoff_doubles_and_is_capped() -> None:
    b = BackoffSettings(initial_s=0.5, max_s=3.0)
    assert [b.delay(n) for n in (0, 1, 2, 3, 4, 5)] == [0.5, 0.5, 1.0, 2.0, 3.0, 3.0]


def test_backoff_defaults() -> None:
    b = BackoffSettings()
    assert b.delay(1) == 0.005
    assert b.delay(100) == 30.0


async def test_waiting_key_is_processed_once(queues: list[WorkQueue[str]], rec: Recorder) -> None:
    q = make(queues, rec, workers=1)
    for _ in range(5):
        q.add("a")
    q.add("b")
    q.add("a")
    assert not q.idle()
    q.start()
    q.add("sentinel")  # FIFO with one worker: a duplicate "a" would run before this
    await rec.until(lambda: rec.count("sentinel") == 1)
    await settle(q)
    assert rec.calls == ["a", "b", "sentinel"]


async def test_key_added_while_active_runs_again_after_never_concurrently(
    queues: list[WorkQueue[str]], rec: Recorder
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def slow(n: int) -> None:
        if n == 1:
            entered.set()
            await release.wait()

    rec.behaviour["k"] = slow
    q = make(queues, rec, workers=4)
    q.start()
    q.add("k")
    await asyncio.wait_for(entered.wait(), WAIT)
    q.add("k")
    q.add("k")
    q.add("other")  # other keys are not blocked by k
    await rec.until(lambda: rec.count("other") == 1)
    assert rec.count("k") == 1
    assert not q.idle()
    release.set()
    await rec.until(lambda: rec.count("k") == 2)
    await settle(q)
    assert rec.count("k") == 2
    assert rec.max_active["k"] == 1


async def test_many_keys_many_workers_never_concurrent_per_key(
    queues: list[WorkQueue[str]], rec: Recorder
) -> None:
    async def yielding(n: int) -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    keys = [f"k{i}" for i in range(5)]
    for k in keys:
        rec.behaviour[k] = yielding
    q = make(queues, rec, workers=4)
    q.start()
    for _ in range(10):
        for k in keys:
            q.add(k)
        await asyncio.sleep(0)
    await settle(q)
    assert set(rec.calls) == set(keys)
    assert all(rec.max_active[k] == 1 for k in keys)


async def test_failure_is_retried_with_backoff(
    queues: list[WorkQueue[str]], rec: Recorder
) -> None:
    loop = asyncio.get_running_loop()
    times: list[float] = []

    async def flaky(n: int) -> None:
        times.append(loop.time())
        if n <= 3:
            raise RuntimeError(f"failure {n}")

    rec.behaviour["k"] = flaky
    q = make(queues, rec, workers=1)
    q.start()
    q.add("k")
    await rec.until(lambda: rec.count("k") == 4)
    await settle(q)
    assert rec.count("k") == 4
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # 1 ms, 2 ms, 4 ms (with a little slack for the loop's clock resolution)
    assert gaps[0] >= 0.001 - 1e-4
    assert gaps[1] >= 0.002 - 1e-4
    assert gaps[2] >= 0.004 - 1e-4


async def test_failing_key_does_not_block_others(
    queues: list[WorkQueue[str]], rec: Recorder
) -> None:
    async def always(n: int) -> None:
        raise ValueError("nope")

    rec.behaviour["bad"] = always
    q = make(queues, rec, workers=1)
    q.start()
    q.add("bad")
    q.add("good")
    await rec.until(lambda: rec.count("good") == 1 and rec.count("bad") >= 3)


async def test_key_added_while_failing_runs_again(
    queues: list[WorkQueue[str]], rec: Recorder
) -> None:
    entered = asyncio.Event()
    release = asyncio.Event()

    async def fail_first(n: int) -> None:
        if n == 1:
            entered.set()
            await release.wait()
            raise RuntimeError("boom")

    rec.behaviour["k"] = fail_first
    q = make(queues, rec)
    q.start()
    q.add("k")
    await asyncio.wait_for(entered.wait(), WAIT)
    q.add("k")
    release.set()
    await rec.until(lambda: rec.count("k") >= 2)
    assert rec.max_active["k"] == 1


async def test_returned_delay_requeues(queues: list[WorkQueue[str]], rec: Recorder) -> None:
    async def again_once(n: int) -> float | None:
        return 0.001 if n == 1 else None

    rec.behaviour["k"] = again_once
    q = make(queues, rec)
    q.start()
    q.add("k")
    await rec.until(lambda: rec.count("k") == 2)


async def test_add_after(queues: list[WorkQueue[str]], rec: Recorder) -> None:
    q = make(queues, rec)
    q.start()
    q.add_after("k", 0.001)
    assert rec.count("k") == 0
    await rec.until(lambda: rec.count("k") == 1)


async def test_add_after_earlier_timer_wins(queues: list[WorkQueue[str]], rec: Recorder) -> None:
    q = make(queues, rec)
    q.start()
    q.add_after("late-then-early", 60.0)
    q.add_after("late-then-early", 0.001)  # replaces the later timer
    q.add_after("early-then-late", 0.001)
    q.add_after("early-then-late", 60.0)  # ignored: an earlier one is pending
    await rec.until(
        lambda: rec.count("late-then-early") == 1 and rec.count("early-then-late") == 1
    )


async def test_add_after_of_a_waiting_key_is_deduplicated(
    queues: list[WorkQueue[str]], rec: Recorder
) -> None:
    q = make(queues, rec, workers=1)
    q.add("k")
    q.add_after("k", 0.0)
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()
    loop.call_later(0.0, fired.set)  # runs after the queue's timer (same due time, later)
    await asyncio.wait_for(fired.wait(), WAIT)
    q.start()
    q.add("sentinel")
    await rec.until(lambda: rec.count("sentinel") == 1)
    assert rec.calls == ["k", "sentinel"]


async def test_stop_cancels_timers_and_running_handlers(rec: Recorder) -> None:
    entered = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever(n: int) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    rec.behaviour["busy"] = forever
    q: WorkQueue[str] = WorkQueue("test", rec, workers=2, backoff=TINY)
    q.start()
    q.add("busy")
    await asyncio.wait_for(entered.wait(), WAIT)
    q.add_after("timed", 0.0)
    await asyncio.wait_for(q.stop(), WAIT)
    assert cancelled.is_set()
    # the timer would have fired by now if stop had not cancelled it
    fired = asyncio.Event()
    asyncio.get_running_loop().call_later(0.0, fired.set)
    await asyncio.wait_for(fired.wait(), WAIT)
    assert q.idle()
    assert rec.count("timed") == 0
