"""The dispatcher's durable state: persistence, coalesced positions, retries, dead letters, commits."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from controller.eventing.state import DeadLetter, DispatcherState, DispatcherStateClosed, PendingRetry

REPO = Path(__file__).resolve().parents[2]
CALL_THREADS: list[int] = []


class RecordingConnection(sqlite3.Connection):
    """Notes the thread of every SQLite call made through the connection."""

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        CALL_THREADS.append(threading.get_ident())
        return super().execute(*args, **kwargs)

    def executemany(self, sql: str, seq: Iterable[Any], /) -> sqlite3.Cursor:
        CALL_THREADS.append(threading.get_ident())
        return super().executemany(sql, seq)

    def close(self) -> None:
        CALL_THREADS.append(threading.get_ident())
        super().close()


class Gate:
    """Holds the writer inside its next COMMIT until released, so the test knows what queues up."""

    armed = False
    entered = threading.Event()
    release = threading.Event()

    @classmethod
    def arm(cls) -> None:
        cls.entered.clear()
        cls.release.clear()
        cls.armed = True


class GatedConnection(sqlite3.Connection):
    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        if args and args[0] == "COMMIT" and Gate.armed:
            Gate.armed = False
            Gate.entered.set()
            Gate.release.wait(30)
        return super().execute(*args, **kwargs)


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[DispatcherState]:
    st = DispatcherState(tmp_path / "state.db")
    yield st
    await st.close()


async def test_everything_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"  # the parent directories do not exist yet
    st = DispatcherState(path)
    await st.set_position("t1", 7)
    await st.set_position("t2", 3)
    r1 = await st.add_retry("t1", 5, b"five", 1, 100.0)
    r2 = await st.add_retry("t1", 6, b"six", 2, 50.0)
    await st.update_retry(r1, 2, 40.0)
    d1 = await st.add_dead_letter("t2", 2, b"two", "rejected", 400, "bad request", 10.0)
    d2 = await st.add_dead_letter("t2", 3, b"three", "unreachable", None, "connection refused", 11.0)
    await st.close()

    st = DispatcherState(path)
    try:
        assert await st.positions() == {"t1": 7, "t2": 3}
        assert await st.retries("t1") == [
            PendingRetry(r1, "t1", 5, b"five", 2, 40.0),
            PendingRetry(r2, "t1", 6, b"six", 2, 50.0),
        ]
        assert await st.dead_letters("t2") == [
            DeadLetter(d1, "t2", 2, b"two", "rejected", 400, "bad request", 10.0),
            DeadLetter(d2, "t2", 3, b"three", "unreachable", None, "connection refused", 11.0),
        ]
        # ids are never reused, even after a reopen
        assert await st.add_retry("t1", 8, b"eight", 0, 1.0) > r2
    finally:
        await st.close()


async def test_positions_never_move_backwards(tmp_path: Path) -> None:
    st = DispatcherState(tmp_path / "state.db")
    await st.set_position("c", 10)
    await st.set_position("c", 4)  # a later commit with a lower value
    await asyncio.gather(*(st.set_position("c", o) for o in (12, 30, 11, 29)))  # coalesced in any order
    assert await st.positions() == {"c": 30}
    await st.close()
    st = DispatcherState(tmp_path / "state.db")
    try:
        assert await st.positions() == {"c": 30}
        await st.set_position("c", 1)
        assert await st.positions() == {"c": 30}
    finally:
        await st.close()


async def test_retries_ordered_by_due_time_then_age(state: DispatcherState) -> None:
    a = await state.add_retry("c", 1, b"a", 0, 30.0)
    b = await state.add_retry("c", 2, b"b", 0, 10.0)
    c = await state.add_retry("c", 3, b"c", 0, 30.0)
    d = await state.add_retry("c", 4, b"d", 0, 20.0)
    await state.add_retry("other", 5, b"x", 0, 0.0)
    assert [r.id for r in await state.retries("c")] == [b, d, a, c]
    await state.update_retry(b, 1, 40.0)
    assert [r.id for r in await state.retries("c")] == [d, a, c, b]
    await state.remove_retry(a)
    await state.remove_retry(a)  # already gone: not an error
    await state.update_retry(a, 5, 1.0)  # likewise
    assert [(r.id, r.attempt) for r in await state.retries("c")] == [(d, 0), (c, 0), (b, 1)]
    assert await state.retries("nobody") == []


async def test_dead_letter_with_retry_id_moves_the_retry(state: DispatcherState) -> None:
    keep = await state.add_retry("c", 1, b"keep", 3, 5.0)
    rid = await state.add_retry("c", 2, b"last try", 3, 5.0)
    did = await state.add_dead_letter(
        "c", 2, b"last try", "retries exhausted", 503, "busy", 9.0, retry_id=rid
    )
    assert [r.id for r in await state.retries("c")] == [keep]
    assert [(d.id, d.event, d.status) for d in await state.dead_letters("c")] == [(did, b"last try", 503)]


async def test_a_failing_dead_letter_keeps_its_retry(state: DispatcherState) -> None:
    rid = await state.add_retry("c", 2, b"e", 3, 5.0)
    with pytest.raises(sqlite3.Error):  # not bindable: the insert fails after the retry's delete
        await state.add_dead_letter("c", 2, cast(bytes, object()), "x", None, "", 1.0, retry_id=rid)
    assert [r.id for r in await state.retries("c")] == [rid]  # rolled back together
    assert await state.dead_letters("c") == []


async def test_one_failing_operation_fails_only_its_caller(tmp_path: Path) -> None:
    st = DispatcherState(tmp_path / "state.db", connection_factory=GatedConnection)
    try:
        await st.positions()  # opened (the schema's commit is not gated)
        Gate.arm()
        first = asyncio.ensure_future(st.set_position("c", 1))
        assert await asyncio.to_thread(Gate.entered.wait, 30)  # the writer holds the first commit
        ok1 = asyncio.ensure_future(st.add_retry("c", 2, b"ok", 0, 1.0))
        bad = asyncio.ensure_future(st.add_retry("c", 3, cast(bytes, object()), 0, 1.0))
        ok2 = asyncio.ensure_future(st.set_position("c", 3))
        await asyncio.sleep(0)  # a yield, not a wait: every task queues its operation
        Gate.release.set()
        await first
        rid = await ok1
        with pytest.raises(sqlite3.Error):
            await bad
        await ok2
        assert st.transactions == 2  # the three went into one transaction
        assert [r.id for r in await st.retries("c")] == [rid]
        assert await st.positions() == {"c": 3}
    finally:
        Gate.release.set()
        await st.close()


async def test_group_commit_and_position_coalescing(tmp_path: Path) -> None:
    st = DispatcherState(tmp_path / "state.db", connection_factory=GatedConnection)
    try:
        await st.positions()  # opened (the schema's commit is not gated)
        Gate.arm()
        first = asyncio.ensure_future(st.add_retry("a", 0, b"first", 0, 0.0))
        assert await asyncio.to_thread(Gate.entered.wait, 30)
        calls: list[Coroutine[Any, Any, object]] = [
            st.set_position("a" if i % 2 else "b", i) for i in range(200)
        ]
        calls += [st.add_retry("a", i, b"%d" % i, 0, float(i)) for i in range(20)]
        rest = asyncio.gather(*calls)
        await asyncio.sleep(0)  # a yield, not a wait: every call queues its operation
        Gate.release.set()
        await first
        await rest
        assert st.transactions == 2  # 221 calls, two commits
        assert st.operations == 221
        assert st.position_writes == 2  # 200 set_position calls, one row write per consumer
        assert await st.positions() == {"a": 199, "b": 198}
        assert len(await st.retries("a")) == 21
    finally:
        Gate.release.set()
        await st.close()


async def test_concurrent_calls_share_transactions(state: DispatcherState) -> None:
    n = 300
    ids = await asyncio.gather(*(state.add_retry("c", i, b"e", 0, float(i)) for i in range(n)))
    await asyncio.gather(*(state.set_position("c", i) for i in range(n)))
    assert len(set(ids)) == n
    assert state.operations == 2 * n
    assert state.transactions < 2 * n
    assert state.position_writes < n
    assert await state.positions() == {"c": n - 1}
    # each call's retry sits under the id it was told
    assert {r.id: r.offset for r in await state.retries("c")} == dict(zip(ids, range(n), strict=True))


async def test_order_is_kept_within_a_group(tmp_path: Path) -> None:
    st = DispatcherState(tmp_path / "state.db", connection_factory=GatedConnection)
    try:
        await st.positions()  # opened (the schema's commit is not gated)
        Gate.arm()
        first = asyncio.ensure_future(st.set_position("x", 1))
        assert await asyncio.to_thread(Gate.entered.wait, 30)
        # One group: a position set before a forget is forgotten; one set after it is kept.
        ops = asyncio.gather(
            st.set_position("c", 50),
            st.add_retry("c", 40, b"old", 0, 1.0),
            st.forget("c"),
            st.set_position("c", 3),
            st.set_position("gone", 9),
            st.forget("gone"),
        )
        await asyncio.sleep(0)  # a yield, not a wait
        Gate.release.set()
        await first
        await ops
        assert st.transactions == 2
        assert await st.positions() == {"x": 1, "c": 3}
        assert await st.retries("c") == []
    finally:
        Gate.release.set()
        await st.close()


async def test_take_and_requeue_dead_letters(state: DispatcherState) -> None:
    ids = [await state.add_dead_letter("c", i, b"e%d" % i, "r", 500, "d", float(i)) for i in range(1, 6)]
    other = await state.add_dead_letter("o", 9, b"o", "r", None, "", 1.0)
    assert [d.id for d in await state.dead_letters("c", limit=2)] == ids[:2]
    assert await state.dead_letters("c", limit=0) == []

    taken = await state.take_dead_letters("c", [ids[3], ids[1], other, 10_000])  # other consumer's: ignored
    assert [(d.id, d.offset) for d in taken] == [(ids[1], 2), (ids[3], 4)]
    assert await state.take_dead_letters("c", []) == []
    assert [d.id for d in await state.dead_letters("c")] == [ids[0], ids[2], ids[4]]

    assert await state.requeue_dead_letters("c", [ids[2], other], next_at=77.0) == 1
    [r] = await state.retries("c")
    assert (r.offset, r.event, r.attempt, r.next_at) == (3, b"e3", 0, 77.0)
    assert await state.requeue_dead_letters("c", None, next_at=80.0) == 2
    assert [(r.offset, r.attempt) for r in await state.retries("c")] == [(3, 0), (1, 0), (5, 0)]
    assert await state.dead_letters("c") == []
    assert await state.requeue_dead_letters("c", None, next_at=1.0) == 0

    assert [d.id for d in await state.take_dead_letters("o")] == [other]
    assert await state.take_dead_letters("o") == []


async def test_forget_drops_only_that_consumer(state: DispatcherState) -> None:
    for c in ("gone", "kept"):
        await state.set_position(c, 4)
        await state.add_retry(c, 2, b"r", 1, 1.0)
        await state.add_dead_letter(c, 1, b"d", "r", None, "", 1.0)
    await state.forget("gone")
    await state.forget("never-seen")
    assert await state.positions() == {"kept": 4}
    assert await state.retries("gone") == []
    assert await state.dead_letters("gone") == []
    assert await state.counts() == {"kept": (1, 1)}


async def test_counts(state: DispatcherState) -> None:
    assert await state.counts() == {}
    await state.set_position("only-position", 1)
    for i in range(3):
        await state.add_retry("a", i, b"e", 0, 1.0)
    await state.add_dead_letter("a", 9, b"e", "r", None, "", 1.0)
    await state.add_dead_letter("b", 9, b"e", "r", None, "", 1.0)
    await state.add_dead_letter("b", 10, b"e", "r", None, "", 1.0)
    await state.add_retry("c", 1, b"e", 0, 1.0)
    assert await state.counts() == {"a": (3, 1), "b": (0, 2), "c": (1, 0)}


async def test_close_is_idempotent_and_later_calls_fail(tmp_path: Path) -> None:
    st = DispatcherState(tmp_path / "state.db")
    pending = asyncio.ensure_future(st.add_retry("c", 1, b"e", 0, 1.0))
    await asyncio.sleep(0)  # queued before the close: committed by it
    await asyncio.gather(st.close(), st.close())
    await st.close()
    assert await pending > 0
    with pytest.raises(DispatcherStateClosed, match="closed"):
        await st.set_position("c", 1)
    with pytest.raises(DispatcherStateClosed, match="closed"):
        await st.add_retry("c", 1, b"e", 0, 1.0)
    with pytest.raises(DispatcherStateClosed, match="closed"):
        await st.positions()
    st = DispatcherState(tmp_path / "state.db")
    try:
        assert len(await st.retries("c")) == 1
    finally:
        await st.close()


async def test_one_writer_per_file(tmp_path: Path) -> None:
    st = DispatcherState(tmp_path / "state.db")
    await st.set_position("c", 1)  # st's writer holds the file now
    other = DispatcherState(tmp_path / "state.db")
    try:
        with pytest.raises(DispatcherStateClosed, match="already has a writer"):
            await other.set_position("c", 2)
        with pytest.raises(DispatcherStateClosed):
            await other.positions()
    finally:
        await other.close()
        await st.close()


async def test_no_sqlite_call_on_the_event_loop_thread(tmp_path: Path) -> None:
    CALL_THREADS.clear()
    loop_thread = threading.get_ident()
    st = DispatcherState(tmp_path / "s.db", durable=False, connection_factory=RecordingConnection)
    st.checkpoint_every = 2
    rid = await st.add_retry("c", 1, b"e", 0, 1.0)
    await asyncio.gather(*(st.set_position("c", i) for i in range(20)))
    await st.update_retry(rid, 1, 2.0)
    await st.add_dead_letter("c", 1, b"e", "r", None, "", 1.0, retry_id=rid)
    await st.requeue_dead_letters("c", None, 3.0)
    await st.positions()
    await st.retries("c")
    await st.counts()
    await st.forget("c")
    await st.close()
    assert st.checkpoints >= 2
    assert len(CALL_THREADS) > 10
    assert loop_thread not in CALL_THREADS
    assert len(set(CALL_THREADS)) == 2  # the writer and the reader


_CHILD = """
import asyncio, sys, threading
from controller.eventing.state import DispatcherState

async def main() -> None:
    st = DispatcherState(sys.argv[1])
    rid = await st.add_retry("t", 41, b"payload", 2, 123.5)
    await st.set_position("t", 41)
    print("ok", rid, flush=True)
    threading.Event().wait()  # block with the state open; never closed

asyncio.run(main())
"""


async def test_a_returned_call_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, str(path), stdout=asyncio.subprocess.PIPE, cwd=REPO, env=env
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"ok "), line
        rid = int(line.split()[1])
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert proc.returncode == -signal.SIGKILL

    st = DispatcherState(path)  # the dead writer's lock went with it
    try:
        assert await st.retries("t") == [PendingRetry(rid, "t", 41, b"payload", 2, 123.5)]
        assert await st.positions() == {"t": 41}
    finally:
        await st.close()
