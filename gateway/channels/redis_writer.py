"""Appends to Redis streams for one gateway worker, batched: concurrent requests share one pipeline.

The Redis counterpart of the SQLite log's group commit. `RedisStreamWriter.append(stream,
records)` queues the request; one task sends the queue's head as one pipeline (no MULTI) of
`XADD <stream> NOMKSTREAM * e <record>`, one per record, and, with `min_replicas > 0`, a final
`WAIT min_replicas wait_timeout_ms`. While that pipeline is in flight new requests queue and go
in the next one (up to `max_entries` records and `max_bytes` of data per pipeline), so under load one
round trip and one syscall pair carry many requests: one XADD per request costs several times
the CPU (issue 12 measured 96 vs 25 µs per 1 KiB event; `loadtests/bench_redis_ingest.py`
measures it here).

NOMKSTREAM: the controller creates a broker's stream before any gateway gets the broker, and
deletes it with the broker, so a gateway still on an old snapshot must not make it again: Redis
answers nil instead, and the request fails with `StreamGone` (the ingress answers 404, as for an
unknown broker).

Each caller resolves only after Redis acknowledged every entry of its request (with their stream
ids) and, with `min_replicas`, after WAIT counted that many replicas. Anything else raises
`StreamAppendError` and the ingress answers 503 with `Retry-After`: the connection refused or
lost, a socket timeout (a dead or stopped Redis never hangs a request longer than
`SOCKET_TIMEOUT_S` per read), `READONLY` (a replica after a failover), `OOM`, a missing reply,
too few replicas, more than `max_queued_bytes` already waiting for Redis. Some of a failed
request's entries may have been stored (a reply lost after Redis applied the XADD, or WAIT short
of replicas): the producer's retry then stores them again; that is at-least-once, and the
dispatchers deliver both.

The client never retries by itself (redis-py's default would try ten more times with backoff):
the answer is 503 now, and redis-py's pool reconnects on a later request. The batching decisions
(`take_batch`, `settle`) are pure; the I/O is the `StreamTransport` (`RedisTransport` here; the
unit tests inject a fake one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from flint_common import redis_conn
from flint_common.redis_config import RedisSettings
from flint_common.redis_keys import EVENT_FIELD

__all__ = [
    "MAX_BATCH_BYTES",
    "MAX_BATCH_ENTRIES",
    "MAX_QUEUED_BYTES",
    "SOCKET_TIMEOUT_S",
    "WAIT_TIMEOUT_MS",
    "RedisStreamWriter",
    "RedisTransport",
    "StreamAppendError",
    "StreamAppender",
    "StreamGone",
    "StreamTransport",
    "open_redis_writer",
    "settle",
    "take_batch",
]

log = logging.getLogger("flint.gateway.redis")

MAX_BATCH_ENTRIES = 1024
"""Records per pipeline at most (a request larger than this goes alone, whole)."""
MAX_BATCH_BYTES = 4 * 1024 * 1024
"""Bytes of records per pipeline at most (idem): bounds Redis's query buffer and one reply's wait."""
MAX_QUEUED_BYTES = 64 * 1024 * 1024
"""Bytes of records waiting for a pipeline at most: past it (Redis slower than the producers, or
not answering) a request fails at once with 503 instead of holding its body in memory."""
WAIT_TIMEOUT_MS = 1000
"""How long `WAIT` waits for `min_replicas` replicas (ms) before the requests fail with 503."""
SOCKET_TIMEOUT_S = 5.0
"""Longest wait for one read or write on the Redis socket (plus the WAIT timeout): a stopped
Redis (SIGSTOP, a partition) fails the requests in flight after this, never hangs them."""


class StreamAppendError(Exception):
    """Redis did not (or not verifiably) store a request's entries: answer 503 and let the
    producer retry. The message says what failed, for the producer (no address, no password);
    `detail` adds what the operator needs (redis-py's error: the server's address)."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class StreamGone(StreamAppendError):
    """The stream does not exist (its broker or channel was deleted): nothing was stored, and a
    retry would not store it either."""


class StreamAppender(Protocol):
    """What the ingress appends through (`RedisStreamWriter`; a fake in unit tests)."""

    async def append(self, stream: str, records: Sequence[bytes]) -> list[str]:
        """Store `records` at the end of `stream`; their stream ids once Redis acknowledged them."""
        ...

    def warm_up(self) -> None:
        """Start connecting now (the first request should not pay for it); never raises."""
        ...

    async def close(self) -> None:
        """Fail what is queued, wait for the pipeline in flight, close the connections."""
        ...


class StreamTransport(Protocol):
    """One round trip to Redis (the I/O edge of `RedisStreamWriter`)."""

    async def send(
        self, entries: Sequence[tuple[str, bytes]], wait_replicas: int, wait_timeout_ms: int
    ) -> Sequence[object]:
        """`XADD stream NOMKSTREAM * e record` for each entry, then `WAIT` when `wait_replicas >
        0`, in one pipeline; the replies in order (None for an XADD to a stream that does not
        exist), a failed command's error in place of its reply. Raises when the round trip itself
        fails (connection, timeout)."""
        ...

    def warm_up(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class Pending:
    """One `append` call waiting for its pipeline."""

    stream: str
    records: Sequence[bytes]
    size: int
    future: asyncio.Future[list[str]]


def take_batch(queue: deque[Pending], max_entries: int, max_bytes: int) -> list[Pending]:
    """Pop the requests of the next pipeline off `queue`'s head: whole requests in arrival order,
    at least one, and no more once the next would pass `max_entries` records or `max_bytes`. Pure
    (on the queue it is given)."""
    batch: list[Pending] = []
    entries = size = 0
    while queue:
        nxt = queue[0]
        if batch and (entries + len(nxt.records) > max_entries or size + nxt.size > max_bytes):
            break
        queue.popleft()
        batch.append(nxt)
        entries += len(nxt.records)
        size += nxt.size
    return batch


def settle(
    batch: Sequence[Pending], replies: Sequence[object], min_replicas: int, wait_timeout_ms: int
) -> list[list[str] | StreamAppendError]:
    """Each request's outcome from its pipeline's replies: its stream ids, or the error that
    fails it (a refused XADD fails its own request, a nil one too, with `StreamGone`; a missing
    reply or too few replicas fail them all). Pure."""
    expected = sum(len(p.records) for p in batch) + (1 if min_replicas > 0 else 0)
    if len(replies) != expected:
        return [StreamAppendError(f"Redis sent {len(replies)} replies to a pipeline of {expected} "
                                  "commands: the events may not be stored") for _ in batch]
    if min_replicas > 0:
        acked = replies[-1]
        if isinstance(acked, BaseException):
            return [StreamAppendError(f"Redis refused WAIT: {acked}") for _ in batch]
        if not isinstance(acked, int) or acked < min_replicas:
            return [StreamAppendError(
                f"only {acked} of the {min_replicas} Redis replicas required (redis min-replicas) "
                f"acknowledged the events within {wait_timeout_ms} ms; the primary has them, so a "
                "retry may deliver them twice") for _ in batch]
    out: list[list[str] | StreamAppendError] = []
    i = 0
    for p in batch:
        mine = replies[i : i + len(p.records)]
        i += len(p.records)
        bad = next((r for r in mine if r is None or isinstance(r, BaseException)), _ALL_STORED)
        if bad is _ALL_STORED:
            out.append([r.decode("ascii") if isinstance(r, bytes) else str(r) for r in mine])
        elif bad is None:
            out.append(StreamGone(f"the stream {p.stream} does not exist (deleted)"))
        else:
            out.append(StreamAppendError(f"Redis refused the write to {p.stream}: {bad}"))
    return out


_ALL_STORED = object()
"""`settle`'s mark of a request whose every XADD was answered with an id."""


class RedisStreamWriter:
    """One worker's batching writer (see the module docstring). Single event loop."""

    def __init__(
        self,
        transport: StreamTransport,
        *,
        min_replicas: int = 0,
        wait_timeout_ms: int = WAIT_TIMEOUT_MS,
        max_entries: int = MAX_BATCH_ENTRIES,
        max_bytes: int = MAX_BATCH_BYTES,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be at least 1")
        self.transport = transport
        self.min_replicas = min_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_queued_bytes = max_queued_bytes
        self.queued_bytes = 0
        """Bytes of the records waiting for a pipeline (not yet sent)."""
        self.pipelines = 0
        """Pipelines sent so far (a pipeline that failed included)."""
        self.entries = 0
        """Records sent so far."""
        self._queue: deque[Pending] = deque()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def append(self, stream: str, records: Sequence[bytes]) -> list[str]:
        if self._closed:
            raise StreamAppendError("the Redis writer of this gateway worker is closed (stopping)")
        if not records:
            return []
        size = sum(map(len, records))
        if self.queued_bytes and self.queued_bytes + size > self.max_queued_bytes:
            raise StreamAppendError(
                "too many events are waiting for Redis: it is slower than the producers or not "
                "answering", f"{self.queued_bytes} bytes queued (max {self.max_queued_bytes})")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[str]] = loop.create_future()
        self._queue.append(Pending(stream, records, size, future))
        self.queued_bytes += size
        if self._task is None:
            # The pipeline goes out on the next turn of the loop: requests that arrive in this
            # one join it; later ones queue for the next pipeline while it is in flight.
            self._task = loop.create_task(self._drain())
        return await future

    def warm_up(self) -> None:
        self.transport.warm_up()

    async def _drain(self) -> None:
        batch: list[Pending] = []
        try:
            while self._queue:
                batch = take_batch(self._queue, self.max_entries, self.max_bytes)
                self.queued_bytes -= sum(p.size for p in batch)
                entries = [(p.stream, r) for p in batch for r in p.records]
                self.pipelines += 1
                self.entries += len(entries)
                outcomes: Sequence[list[str] | StreamAppendError]
                try:
                    replies = await self.transport.send(entries, self.min_replicas, self.wait_timeout_ms)
                except Exception as exc:  # connection refused or lost, timeout, closed...
                    outcomes = [StreamAppendError(
                        f"Redis did not answer ({type(exc).__name__}): the events may not be stored",
                        f"Redis did not answer: {_describe(exc)}") for _ in batch]
                else:
                    outcomes = settle(batch, replies, self.min_replicas, self.wait_timeout_ms)
                for p, outcome in zip(batch, outcomes, strict=True):
                    if p.future.done():  # the caller went away; what was written stands
                        continue
                    if isinstance(outcome, StreamAppendError):
                        p.future.set_exception(outcome)
                    else:
                        p.future.set_result(outcome)
                batch = []
        finally:
            self._task = None
            # Cancelled (close): nobody is left waiting for an answer that will not come.
            left = [*batch, *self._queue]
            self._queue.clear()
            self.queued_bytes = 0
            for p in left:
                if not p.future.done():
                    p.future.set_exception(StreamAppendError("the Redis writer was closed"))

    async def close(self) -> None:
        """Answer what was queued (the pipeline in flight finishes, bounded by the socket
        timeout), then close the client. Idempotent."""
        self._closed = True
        task = self._task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.transport.close()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_announced = False
"""Whether this process logged `event=redis_connected` (once per process)."""


class RedisTransport:
    """`StreamTransport` over a redis-py client (bytes replies, no client-side retries)."""

    def __init__(self, client: aioredis.Redis, *, url: str, role: str) -> None:
        self.client = client
        self.url = url
        """For the log lines (a Flint Redis URL never carries a password)."""
        self.role = role
        self._announcing: asyncio.Task[None] | None = None

    async def send(
        self, entries: Sequence[tuple[str, bytes]], wait_replicas: int, wait_timeout_ms: int
    ) -> Sequence[object]:
        pipe = self.client.pipeline(transaction=False)
        for stream, record in entries:
            pipe.xadd(stream, {EVENT_FIELD: record}, nomkstream=True)
        if wait_replicas > 0:
            pipe.wait(wait_replicas, wait_timeout_ms)
        replies: list[object] = await pipe.execute(raise_on_error=False)
        if not _announced:
            self.warm_up()
        return replies

    def warm_up(self) -> None:
        if _announced or self._announcing is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop yet (a snapshot applied at build time): first use
            return
        self._announcing = loop.create_task(self._announce())

    async def _announce(self) -> None:
        """Log `event=redis_connected … durable=…` once per process (or, for now,
        `event=redis_unreachable`: the next successful pipeline tries again)."""
        global _announced
        try:
            found = await redis_conn.durability(self.client)
        except (RedisError, OSError, ValueError) as exc:
            log.warning("event=redis_unreachable role=%s url=%s error=%s", self.role, self.url, exc)
            return
        finally:
            self._announcing = None
        if not _announced:
            _announced = True
            log.info("event=redis_connected role=%s url=%s durable=%s reason=%s appendfsync=%s",
                     self.role, self.url, found.durable, found.reason or "-", found.appendfsync or "-")

    async def close(self) -> None:
        task = self._announcing
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.client.aclose()


def open_redis_writer(settings: RedisSettings, *, role: str) -> RedisStreamWriter:
    """The writer of one gateway worker for `settings` (it connects on first use)."""
    client = redis_conn.client(
        settings, decode=False, socket_timeout_s=SOCKET_TIMEOUT_S + WAIT_TIMEOUT_MS / 1000)
    client.set_retry(Retry(NoBackoff(), 0))  # no retry of a pipeline whose reply was lost: 503
    return RedisStreamWriter(RedisTransport(client, url=settings.url, role=role),
                             min_replicas=settings.min_replicas)
