"""Broker ingress for Redis-backed brokers, without sockets: a fake stream writer, and the
exchange answering such a broker on the worker that took the request (no home forwarding)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest
from support.fakes import FakeTransport

from flint_common.cloudevents.codec import Event
from flint_common.redis_keys import stream_key
from flint_common.snapshot import BrokerEntry, Endpoint, Snapshot
from gateway.channels.base import ChannelLog
from gateway.channels.redis_writer import StreamGone
from gateway.client import ClientConnection
from gateway.config import GatewaySettings
from gateway.home import home_index
from gateway.ingress import REDIS, BrokerIngress, home_key
from gateway.upstream import UpstreamConn, UpstreamPool
from gateway.worker import build_context

NOW = 1_700_000_000.5


class FakeWriter:
    """A `StreamAppender` keeping what it was given; `fail` makes every append raise it."""

    def __init__(self) -> None:
        self.streams: dict[str, list[bytes]] = {}
        self.fail: Exception | None = None
        self.warmed = 0
        self.closed = 0

    async def append(self, stream: str, records: Sequence[bytes]) -> list[str]:
        if self.fail is not None:
            raise self.fail
        kept = self.streams.setdefault(stream, [])
        kept.extend(records)
        return [f"{len(kept) - len(records) + i}-0" for i in range(len(records))]

    def warm_up(self) -> None:
        self.warmed += 1

    async def close(self) -> None:
        self.closed += 1


def redis_entry(uid: str = "uid-r", name: str = "b", kind: str = "broker") -> BrokerEntry:
    return BrokerEntry("ns", name, uid, f"eventing/logs/{uid}.db", kind=kind, backend=REDIS,
                       stream=stream_key(uid))


def no_sqlite(entry: BrokerEntry) -> ChannelLog:
    raise AssertionError(f"a SQLite log was opened for {entry.ident}")


def make(tmp_path: Path, writer: FakeWriter | None) -> tuple[BrokerIngress, list[int]]:
    made: list[int] = []

    def open_writer() -> FakeWriter:
        assert writer is not None
        made.append(1)
        return writer

    ingress = BrokerIngress(tmp_path, "localhost", max_event_bytes=64 * 1024, clock=lambda: NOW,
                            open_log=no_sqlite, open_stream_writer=None if writer is None else open_writer)
    return ingress, made


BINARY = [(b"ce-specversion", b"1.0"), (b"ce-id", b"e1"), (b"ce-source", b"/t"),
          (b"ce-type", b"t"), (b"content-type", b"application/json")]


async def test_events_go_to_the_stream_stamped_and_the_writer_is_made_once(tmp_path: Path) -> None:
    writer = FakeWriter()
    ingress, made = make(tmp_path, writer)
    b = redis_entry()
    for _ in range(3):
        assert (await ingress.accept(b, BINARY, b'{"n": 1}')).status == 202
    [(stream, records)] = writer.streams.items()
    assert stream == "flint:{uid-r}:events" and len(records) == 3
    e = Event.from_log(records[0])
    assert e.get("knativebrokerttl") == 255 and e.get("knativearrivaltime") == "2023-11-14T22:13:20.500000Z"
    assert made == [1] and writer.warmed == 1
    assert ingress.metrics.accepted == {"ns/b": 3}
    await ingress.close()
    assert writer.closed == 1


async def test_a_channel_stores_events_as_they_came(tmp_path: Path) -> None:
    writer = FakeWriter()
    ingress, _ = make(tmp_path, writer)
    assert (await ingress.accept(redis_entry(kind="channel"), BINARY, b"{}")).status == 202
    [records] = writer.streams.values()
    assert Event.from_log(records[0]).get("knativearrivaltime") is None
    assert ingress.metrics.accepted == {"channel:ns/b": 1}


async def test_the_writer_is_made_when_a_snapshot_brings_a_redis_broker(tmp_path: Path) -> None:
    writer = FakeWriter()
    ingress, made = make(tmp_path, writer)
    sqlite = BrokerEntry("ns", "s", "uid-s", "eventing/logs/uid-s.db")
    ingress.apply(Snapshot(1, (), (), (sqlite,)))
    assert made == []
    ingress.apply(Snapshot(2, (), (), (sqlite, redis_entry())))
    assert made == [1] and writer.warmed == 1
    ingress.apply(Snapshot(3, (), (), (sqlite,)))  # gone: no log file to delete, no task spawned
    assert not ingress._tasks
    await ingress.close()


async def test_redis_failure_is_503_with_retry_after_and_counted(tmp_path: Path) -> None:
    writer = FakeWriter()
    writer.fail = RuntimeError("Redis did not store the events: ConnectionError: refused")
    ingress, _ = make(tmp_path, writer)
    answer = await ingress.accept(redis_entry(), BINARY, b"{}")
    assert answer.status == 503 and answer.retry_after
    assert "the Redis stream of broker ns/b is unavailable" in answer.message and "refused" in answer.message
    assert ingress.metrics.rejected == {("ns/b", "log-unavailable"): 1} and not ingress.metrics.accepted
    writer.fail = None
    assert (await ingress.accept(redis_entry(), BINARY, b"{}")).status == 202


async def test_a_stream_gone_is_503_to_retry_never_202_nor_404(tmp_path: Path) -> None:
    # Deleted with its broker while this gateway's snapshot still has it, or lost by Redis (made
    # again by the controller): either way the producer retries, as it would not after a 404.
    writer = FakeWriter()
    writer.fail = StreamGone("the stream flint:{uid-r}:events does not exist (deleted)")
    ingress, _ = make(tmp_path, writer)
    answer = await ingress.accept(redis_entry(), BINARY, b"{}")
    assert (answer.status, answer.retry_after) == (503, True)
    assert answer.message.startswith("the Redis stream of broker ns/b does not exist")
    assert ingress.metrics.rejected == {("ns/b", "log-gone"): 1} and not ingress.metrics.accepted


async def test_no_redis_configured_is_503_saying_so(tmp_path: Path) -> None:
    ingress, _ = make(tmp_path, None)
    answer = await ingress.accept(redis_entry(), BINARY, b"{}")
    assert answer.status == 503 and answer.retry_after
    assert "keeps its events in Redis, but this gateway has no Redis configured" in answer.message
    assert ingress.metrics.rejected == {("ns/b", "redis-not-configured"): 1}


@pytest.mark.parametrize(("body", "headers", "status"), [
    (b"{", [*BINARY[:4], (b"content-type", b"application/cloudevents+json")], 400),
    (b"{}", [(b"content-type", b"application/cloudevents+xml")], 415),
    (b"x" * 70_000, BINARY, 413),
])
async def test_bad_events_are_answered_as_for_sqlite_and_nothing_is_written(
    tmp_path: Path, body: bytes, headers: list[tuple[bytes, bytes]], status: int
) -> None:
    writer = FakeWriter()
    ingress, _ = make(tmp_path, writer)
    assert (await ingress.accept(redis_entry(), headers, body)).status == status
    assert writer.streams == {}


async def test_an_exhausted_ttl_is_202_and_not_written(tmp_path: Path) -> None:
    writer = FakeWriter()
    ingress, _ = make(tmp_path, writer)
    answer = await ingress.accept(redis_entry(), [*BINARY, (b"ce-knativebrokerttl", b"0")], b"{}")
    assert answer.status == 202 and writer.streams == {}
    assert ingress.metrics.dropped_ttl == {"ns/b": 1}


# -- the exchange: a Redis-backed broker is answered where the request arrived -------------------


async def _post(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: BrokerEntry) -> tuple[bytes, int]:
    """POST an event to `entry` on a worker of two that is not its home: (answer, upstream
    connections opened: a forward to the home worker opens one)."""
    index = 1 - home_index(home_key(entry), 2)
    settings = GatewaySettings(state_dir=tmp_path, workers=2)
    ctx = build_context(settings, asyncio.get_running_loop(), index=index,
                        snapshot=Snapshot(1, (), (), (entry,)))
    opened: list[FakeTransport] = []

    async def connect(pool: UpstreamPool, endpoint: Endpoint) -> UpstreamConn:
        up = UpstreamConn(pool, endpoint.id)
        transport = FakeTransport()
        up.connection_made(transport)  # type: ignore[arg-type]
        opened.append(transport)
        return up

    monkeypatch.setattr(UpstreamPool, "_open_connection", connect)
    conn = ClientConnection(ctx)
    out = FakeTransport()
    conn.connection_made(out)  # type: ignore[arg-type]
    conn.data_received(b"POST /ns/b HTTP/1.1\r\nHost: broker-ingress.localhost\r\nce-specversion: 1.0\r\n"
                       b"ce-id: 1\r\nce-source: /s\r\nce-type: t\r\nContent-Length: 2\r\n\r\n{}")
    for _ in range(100):
        if out.out or opened:
            break
        await asyncio.sleep(0)
    ctx.close()
    await ctx.ingress.close()
    return out.take(), len(opened)


async def test_a_redis_broker_is_not_forwarded_to_a_home_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer, forwarded = await _post(tmp_path, monkeypatch, redis_entry())
    # This worker answered itself (no Redis configured in this test's gateway: 503, saying so).
    assert forwarded == 0
    assert answer.startswith(b"HTTP/1.1 503 ") and b"no Redis configured" in answer
    assert b"Retry-After: 1\r\n" in answer


async def test_a_sqlite_broker_still_goes_to_its_home_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = BrokerEntry("ns", "b", "uid-s", "eventing/logs/uid-s.db")
    answer, forwarded = await _post(tmp_path, monkeypatch, entry)
    assert forwarded == 1 and answer == b""
