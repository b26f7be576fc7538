"""The SQLite channel log: order, durability, group commit, wake-ups, retention, threads."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import pytest

from flint_common.cloudevents.codec import Event
from gateway.channels import ChannelLog, ChannelLogClosed, SqliteChannelLog

CALL_THREADS: list[int] = []


class RecordingConnection(sqlite3.Connection):
    """Notes the thread of every SQLite call made through the connection."""

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        CALL_THREADS.append(threading.get_ident())
        return super().execute(*args, **kwargs)

    def executemany(self, sql: str, seq: Iterable[Any], /) -> sqlite3.Cursor:
        CALL_THREADS.append(threading.get_ident())
        return super().executemany(sql, seq)

    def commit(self) -> None:
        CALL_THREADS.append(threading.get_ident())
        super().commit()

    def close(self) -> None:
        CALL_THREADS.append(threading.get_ident())
        super().close()


@pytest.fixture
async def log(tmp_path: Path) -> AsyncIterator[SqliteChannelLog]:
    lg = SqliteChannelLog(tmp_path / "log.db")
    yield lg
    await lg.close()


def test_is_a_channel_log(tmp_path: Path) -> None:
    assert issubclass(SqliteChannelLog, ChannelLog)


async def test_append_read_order_and_offsets_per_channel(log: SqliteChannelLog) -> None:
    assert await log.tail("a") == 0
    assert await log.read("a", 0, 10) == []
    assert await log.append("a", [b"a1", b"a2"]) == [1, 2]
    assert await log.append("b", [b"b1"]) == [1]
    assert await log.append("a", [b"a3"]) == [3]
    assert await log.append("a", []) == []
    assert await log.read("a", 0, 10) == [(1, b"a1"), (2, b"a2"), (3, b"a3")]
    assert await log.read("a", 1, 1) == [(2, b"a2")]
    assert await log.read("a", 3, 10) == []
    assert await log.read("b", 0, 10) == [(1, b"b1")]
    assert (await log.tail("a"), await log.tail("b")) == (3, 1)


async def test_events_round_trip_through_the_log(log: SqliteChannelLog) -> None:
    ev = Event({"id": "1", "source": "/s", "type": "t", "specversion": "1.0"}, b' {"x": 1}\n', True)
    [off] = await log.append("c", [ev.to_log()])
    [(got_off, raw)] = await log.read("c", 0, 1)
    assert got_off == off
    back = Event.from_log(raw)
    assert back.attributes == ev.attributes and back.data == ev.data


async def test_durable_across_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    lg = SqliteChannelLog(path)
    await lg.append("a", [b"one", b"two"])
    await lg.compact("a", 2)
    await lg.close()
    await lg.close()  # idempotent
    with pytest.raises(ChannelLogClosed):
        await lg.append("a", [b"late"])
    lg2 = SqliteChannelLog(path)
    try:
        assert await lg2.read("a", 0, 10) == [(2, b"two")]
        assert await lg2.tail("a") == 2
        assert await lg2.append("a", [b"three"]) == [3]  # offsets never reused
        # The writer's tails were loaded: a wait past the old data is immediate.
        assert await lg2.wait("a", 2, timeout=5)
    finally:
        await lg2.close()
    assert await asyncio.to_thread(journal_mode, path) == "wal"


def journal_mode(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        return str(con.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        con.close()


async def test_one_writer_per_file(tmp_path: Path) -> None:
    lg = SqliteChannelLog(tmp_path / "log.db")
    await lg.append("a", [b"x"])  # lg's writer holds the file now
    other = SqliteChannelLog(tmp_path / "log.db")
    try:
        with pytest.raises(ChannelLogClosed):
            await other.append("a", [b"y"])
    finally:
        await other.close()
        await lg.close()


async def test_group_commit_batches_concurrent_appends(tmp_path: Path) -> None:
    lg = SqliteChannelLog(tmp_path / "log.db", group_max=64)
    try:
        n = 500
        results = await asyncio.gather(*(lg.append("g", [b"%d" % i]) for i in range(n)))
        offsets = sorted(o for r in results for o in r)
        assert offsets == list(range(1, n + 1))
        assert lg.appended == n
        assert lg.transactions < n  # batched
        assert lg.transactions >= n // 64  # and never more than group_max per transaction
        # each append's record sits at the offset it was told
        stored = dict(await lg.read("g", 0, n))
        for i, [off] in enumerate(results):
            assert stored[off] == b"%d" % i
    finally:
        await lg.close()


async def test_group_wait_gathers_appends_into_one_commit(tmp_path: Path) -> None:
    lg = SqliteChannelLog(tmp_path / "log.db", group_max=8, group_wait_s=0.5)
    try:
        await asyncio.gather(*(lg.append("g", [b"x"]) for _ in range(8)))
        assert lg.transactions == 1
    finally:
        await lg.close()


async def test_wait_wakes_on_append_and_times_out(log: SqliteChannelLog) -> None:
    assert await log.wait("w", 0, timeout=0.05) is False
    # A timeout answers False (after 30 s, far beyond any wake-up): True is the append's wake-up.
    waiter = asyncio.create_task(log.wait("w", 0, timeout=30))
    other = asyncio.create_task(log.wait("w", 5, timeout=30))  # needs more than one record
    await asyncio.sleep(0)  # let both register
    assert not waiter.done() and not other.done()
    await log.append("w", [b"x"])
    assert await waiter is True
    assert [r for _, r in await log.read("w", 0, 10)] == [b"x"]
    assert not other.done()
    await log.append("w", [b"y"] * 5)
    assert await other is True
    assert await log.wait("w", 0, timeout=0)  # already there: immediate


async def test_close_wakes_waiters(tmp_path: Path) -> None:
    lg = SqliteChannelLog(tmp_path / "log.db")
    await lg.tail("w")
    waiter = asyncio.create_task(lg.wait("w", 0, timeout=30))
    await asyncio.sleep(0)
    await lg.close()
    assert await waiter is True  # spurious wake: the caller's read then fails with ChannelLogClosed
    with pytest.raises(ChannelLogClosed):
        await lg.read("w", 0, 1)


async def test_compaction_stops_below(log: SqliteChannelLog) -> None:
    await log.append("c", [b"%d" % i for i in range(1, 11)])
    assert await log.compact("c", 4) == 3
    assert [o for o, _ in await log.read("c", 0, 100)] == list(range(4, 11))
    assert await log.compact("c", 4) == 0
    assert await log.tail("c") == 10


async def test_retention_never_crosses_keep_from(log: SqliteChannelLog) -> None:
    await log.append("r", [b"%d" % i for i in range(1, 21)])
    # size: keep the newest 5, but the slowest consumer is at 8 → only 1..7 go
    assert await log.apply_retention("r", max_age_s=None, max_records=5, keep_from=8) == 7
    assert (await log.read("r", 0, 1))[0][0] == 8
    # size within the consumer's reach
    assert await log.apply_retention("r", max_age_s=None, max_records=5, keep_from=21) == 8
    assert (await log.read("r", 0, 1))[0][0] == 16
    # age: everything is old, still nothing at or above keep_from
    await log.append("old", [b"%d" % i for i in range(1, 11)])
    assert await log.apply_retention("old", max_age_s=0, max_records=None, keep_from=6) == 5
    assert [o for o, _ in await log.read("old", 0, 100)] == [6, 7, 8, 9, 10]
    # age: nothing is old enough
    assert await log.apply_retention("old", max_age_s=3600, max_records=None, keep_from=11) == 0
    # no limits → nothing; unknown channel → nothing
    assert await log.apply_retention("old", max_age_s=None, max_records=None, keep_from=11) == 0
    assert await log.apply_retention("nope", max_age_s=0, max_records=0, keep_from=100) == 0
    assert await log.tail("old") == 10


async def test_delete_channel(log: SqliteChannelLog) -> None:
    await log.append("d", [b"1", b"2"])
    await log.append("keep", [b"k"])
    await log.delete_channel("d")
    assert await log.read("d", 0, 10) == []
    assert await log.tail("d") == 0
    assert await log.wait("d", 0, timeout=0.01) is False
    assert await log.append("d", [b"new"]) == [1]  # a new channel of the same name
    assert await log.read("keep", 0, 10) == [(1, b"k")]


async def test_no_sqlite_call_on_the_event_loop_thread(tmp_path: Path) -> None:
    CALL_THREADS.clear()
    loop_thread = threading.get_ident()
    lg = SqliteChannelLog(tmp_path / "log.db", connection_factory=RecordingConnection, checkpoint_every=3)
    await lg.append("t", [b"x"])
    await asyncio.gather(*(lg.append("t", [b"y"]) for _ in range(20)))
    await lg.read("t", 0, 100)
    await lg.tail("t")
    await lg.wait("t", 0, timeout=1)
    await lg.compact("t", 3)
    await lg.apply_retention("t", max_age_s=0, max_records=1, keep_from=10)
    await lg.delete_channel("t")
    await lg.close()
    assert lg.checkpoints >= 2
    assert len(CALL_THREADS) > 20
    assert loop_thread not in CALL_THREADS
    assert len(set(CALL_THREADS)) == 2  # the writer and the reader


async def test_non_durable_mode(tmp_path: Path) -> None:
    path = tmp_path / "mem.db"
    lg = SqliteChannelLog(path, durable=False, connection_factory=RecordingConnection)
    await asyncio.gather(*(lg.append("m", [b"%d" % i]) for i in range(100)))
    assert await lg.tail("m") == 100
    assert len(await lg.read("m", 0, 1000)) == 100
    await lg.close()
    lg2 = SqliteChannelLog(path, durable=False)
    try:
        assert await lg2.tail("m") == 100  # a clean close keeps it; only crashes may lose data
    finally:
        await lg2.close()


@pytest.mark.parametrize("durable", [True, False])
async def test_throughput_printed(tmp_path: Path, durable: bool) -> None:
    lg = SqliteChannelLog(tmp_path / "tp.db", durable=durable)
    payload = b"x" * 1024
    total, producers = 5000, 64
    per = [total // producers + (1 if i < total % producers else 0) for i in range(producers)]

    async def produce(n: int) -> None:
        for _ in range(n):
            await lg.append("tp", [payload])

    start = time.perf_counter()
    await asyncio.gather(*(produce(n) for n in per))
    elapsed = time.perf_counter() - start
    txs = lg.transactions
    await lg.close()
    print(
        f"\nchannel log durable={durable}: {total} x 1 KiB appends from {producers} producers in "
        f"{elapsed:.2f}s = {total / elapsed:,.0f}/s, {txs} transactions ({total / txs:.1f} per commit)"
    )
