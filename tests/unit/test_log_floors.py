"""Retention of broker logs: the dispatcher's floors, the writer's compaction, the read side."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flint_common.channellog.floor import floor_path, read_floor, write_floor
from flint_common.channellog.format import CHANNEL
from flint_common.channellog.sqlite_reader import SqliteLogReader
from flint_common.snapshot import BrokerEntry, Snapshot
from gateway.ingress import BrokerIngress

ENTRY = BrokerEntry("default", "b", "uid-1", "eventing/logs/uid-1.db")


def headers(i: int) -> list[tuple[bytes, bytes]]:
    return [(b"ce-specversion", b"1.0"), (b"ce-id", b"e-%d" % i), (b"ce-source", b"/t"),
            (b"ce-type", b"t"), (b"content-type", b"application/json")]


def test_floor_round_trip_and_unknown(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "x.db"
    assert read_floor(log) is None
    write_floor(log, 42)
    assert read_floor(log) == 42
    assert floor_path(log).name == "x.db.floor"
    write_floor(log, 43)  # replaced atomically, no temporary file left behind
    assert read_floor(log) == 43
    assert sorted(p.name for p in log.parent.iterdir()) == ["x.db.floor"]
    floor_path(log).write_text("garbage")
    assert read_floor(log) is None


async def test_the_writer_compacts_below_the_floor_and_readers_see_the_rest(tmp_path: Path) -> None:
    ingress = BrokerIngress(tmp_path, "localhost", max_event_bytes=1 << 20)
    ingress.apply(Snapshot(1, (), (), (ENTRY,)))
    for i in range(10):
        assert (await ingress.accept(ENTRY, headers(i), b'{"n": 1}')).status == 202
    path = tmp_path / ENTRY.log
    reader = SqliteLogReader(path)
    try:
        assert await ingress.compact_once() == 0  # no floor yet: nothing is known, nothing goes
        assert [off for off, _ in await reader.read(CHANNEL, 0, 100)] == list(range(1, 11))
        await asyncio.to_thread(write_floor, path, 6)
        assert await ingress.compact_once() == 6
        assert [off for off, _ in await reader.read(CHANNEL, 0, 100)] == [7, 8, 9, 10]
        assert await reader.tail(CHANNEL) == 10  # offsets are never reused
        assert await ingress.compact_once() == 0
        assert ingress.compacted == 6
    finally:
        await reader.close()
        await ingress.close()


async def test_a_reader_of_a_log_not_written_yet_neither_fails_nor_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "eventing" / "logs" / "none.db"
    reader = SqliteLogReader(path)
    try:
        assert await reader.read(CHANNEL, 0, 10) == []
        assert await reader.tail(CHANNEL) == 0
        assert not path.exists()
    finally:
        await reader.close()


async def test_a_deleted_broker_takes_its_floor_file_along(tmp_path: Path) -> None:
    ingress = BrokerIngress(tmp_path, "localhost", max_event_bytes=1 << 20)
    ingress.apply(Snapshot(1, (), (), (ENTRY,)))
    assert (await ingress.accept(ENTRY, headers(1), b"{}")).status == 202
    await asyncio.to_thread(write_floor, tmp_path / ENTRY.log, 1)
    ingress.apply(Snapshot(2, (), (), ()))
    await ingress.close()
    assert list((tmp_path / "eventing" / "logs").iterdir()) == []


async def test_past_the_size_cap_unhandled_records_go_and_are_counted(tmp_path: Path) -> None:
    ingress = BrokerIngress(tmp_path, "localhost", max_event_bytes=1 << 20, max_records=4)
    ingress.apply(Snapshot(1, (), (), (ENTRY,)))
    for i in range(10):
        assert (await ingress.accept(ENTRY, headers(i), b"{}")).status == 202
    path = tmp_path / ENTRY.log
    await asyncio.to_thread(write_floor, path, 3)  # the slowest trigger handled 1..3
    reader = SqliteLogReader(path)
    try:
        assert await ingress.compact_once() == 6  # 1..3 handled, 4..6 over the cap
        assert [off for off, _ in await reader.read(CHANNEL, 0, 100)] == [7, 8, 9, 10]
        assert ingress.metrics.dropped_retention == {"default/b": 3}
        assert ("default/b", "dropped", "retention", 3) in ingress.metrics.rows()
    finally:
        await reader.close()
        await ingress.close()
