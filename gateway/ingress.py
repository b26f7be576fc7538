"""Broker and channel ingress: CloudEvents POSTed to their address are stored in their log.

`http://broker-ingress.{domain}:{port}/{namespace}/{broker}` and, for an InMemoryChannel,
`http://channel-ingress.{domain}:{port}/{namespace}/{channel}` are served by the gateway itself
(the proxy hands such requests to `BrokerIngress`). A SQLite log has one writing process: its
*home worker* (`home_index(entry.ident)`, as for limited revisions); other workers forward the
request to it over the internal unix socket. A Redis-backed one (`entry.backend == "redis"`) is
appended to by whichever worker (of whichever gateway) took the request, through the worker's
batching writer (`channels/redis_writer.py`), made on the first such request from the Redis
settings `flint up` handed the gateway (`FLINT_REDIS_*`).

Answers (Knative's broker ingress, with the reason in the body):

* 202 once every event of the request is committed to the log (durably, for a durable log);
* 400 for an invalid event (or batch: the index of the first bad one), 415 for an event format
  we do not read, 413 for an event over `max_event_bytes` or a body over `max_ingress_body_bytes`;
* 404 for an unknown broker or a path that names none, 405 for a method other than POST
  (`Allow: POST, OPTIONS`); OPTIONS is answered for CloudEvents webhook validation
  (`WebHook-Allowed-Origin`, `WebHook-Allowed-Rate`);
* 503 with `Retry-After` when the log cannot be written (nothing was acknowledged): for a
  Redis-backed broker also when Redis is unreachable, refuses the write, reaches fewer than
  `redis min-replicas` replicas, has no stream for it (deleted with the broker while this
  gateway's snapshot still lists it, or lost by Redis), or this gateway has no Redis configured.

Retention: every `COMPACT_EVERY_S` the home worker deletes the records that every trigger of
the broker has handled (the floor the dispatcher writes next to the log, `flint_common/channellog/floor.py`);
past the age and size caps (`log_max_age_s`, `log_max_records`: 7 days, 10 M records) older
records go even if unhandled, each counted and logged as a `retention` drop; the log file goes
when the broker leaves the snapshot. None of this is done for a Redis-backed broker: its stream
is trimmed by the dispatchers and deleted by the controller.

Every event stored in a broker gets `knativearrivaltime` (RFC 3339, UTC) and
`knativebrokerttl` (255 when absent); a channel stores events as they came. An event that
arrives at a broker with a TTL of 0 or less has looped too often: it is a recorded drop
(counted and logged), not stored, and the request is still answered 202 as Knative does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flint_common.channellog.floor import read_floor
from flint_common.channellog.format import CHANNEL
from flint_common.channellog.wake import WakeSender
from flint_common.cloudevents.attrs import INT_MAX
from flint_common.cloudevents.codec import (
    CloudEventError,
    Event,
    EventTooLarge,
    Headers,
    InvalidEvent,
    UnsupportedFormat,
    decode_http,
)
from flint_common.cloudevents.knative import ARRIVAL_ATTR, DEFAULT_TTL, TTL_ATTR
from flint_common.redis_keys import stream_key
from flint_common.snapshot import BrokerEntry, RevisionTarget, Snapshot
from flint_common.timefmt import rfc3339_micros
from gateway.channels.base import ChannelLog
from gateway.channels.redis_writer import StreamAppender, StreamAppendError, StreamGone
from gateway.channels.sqlite import SqliteChannelLog
from gateway.headers import REASONS
from gateway.home import home_index

__all__ = [
    "HOST_PREFIX",
    "REDIS",
    "Answer",
    "BrokerIngress",
    "IngressMetrics",
    "classify",
    "home_key",
    "ingress_target",
    "local_response",
    "stamp",
]

log = logging.getLogger("flint.gateway.ingress")

HOST_PREFIX = b"broker-ingress."
CHANNEL_HOST_PREFIX = b"channel-ingress."
HOST_PREFIXES = (HOST_PREFIX, CHANNEL_HOST_PREFIX)
"""`host.startswith(HOST_PREFIXES)`: the proxy's one cheap test before `BrokerIngress.kind_of`."""
COMPACT_EVERY_S = 30.0
"""How often the home worker deletes the records every trigger of a broker has handled (the
default of `GatewaySettings.log_compact_interval_s`)."""


REDIS = "redis"
"""`BrokerEntry.backend` of a broker or channel kept in a Redis stream (no home worker)."""
FAILURE_LOG_EVERY_S = 5.0
"""A Redis-backed log failing requests is logged at most this often (each request is counted)."""

FORWARD_TIMEOUT_S = 30.0
"""How long a worker waits for the home worker's answer to a forwarded ingress request."""


def home_key(entry: BrokerEntry) -> str:
    """The key whose home worker writes this broker's (or channel's) log."""
    return entry.ident


def ingress_target(entry: BrokerEntry) -> RevisionTarget:
    """The upstream description used to forward a broker's requests to its home worker."""
    return RevisionTarget(
        namespace=entry.namespace,
        name=f"{entry.kind}-ingress:{entry.name}",
        service="",
        timeout_s=FORWARD_TIMEOUT_S,
        response_start_timeout_s=FORWARD_TIMEOUT_S,
        idle_timeout_s=0.0,
        container_concurrency=0,
        endpoints=(),
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """What the ingress replies: a status, a text reason and extra headers."""

    status: int
    message: str = ""
    headers: tuple[tuple[bytes, bytes], ...] = ()
    retry_after: bool = False


ALLOW = ((b"Allow", b"POST, OPTIONS"),)


def local_response(answer: Answer, close: bool) -> bytes:
    """The bytes of an ingress answer (text/plain reason, its extra headers)."""
    body = answer.message.encode("utf-8", "replace") + b"\n" if answer.message else b""
    head = [b"HTTP/1.1 %d %s\r\n" % (answer.status, REASONS.get(answer.status, b"Status"))]
    for name, value in answer.headers:
        head += (name, b": ", value, b"\r\n")
    if body:
        head.append(b"Content-Type: text/plain; charset=utf-8\r\n")
    if answer.retry_after:
        head.append(b"Retry-After: 1\r\n")
    head.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        head.append(b"Connection: close\r\n")
    head += (b"\r\n", body)
    return b"".join(head)


def classify(
    method: bytes, path: bytes, request_headers: Sequence[tuple[bytes, bytes]] = (), kind: str = "broker"
) -> tuple[str, str] | Answer:
    """`(namespace, name)` for a POST to a broker (or channel) path, else the answer to send (pure)."""
    path = path.split(b"?", 1)[0].rstrip(b"/")
    parts = path.split(b"/")
    if len(parts) != 3 or parts[0] != b"" or not parts[1] or not parts[2]:
        return Answer(404, f"not a {kind} address: expected /{{namespace}}/{{{kind}}}")
    ns, name = parts[1].decode("latin-1"), parts[2].decode("latin-1")
    if method == b"OPTIONS":
        origin = _header(request_headers, "webhook-request-origin")
        extra: list[tuple[bytes, bytes]] = list(ALLOW)
        if origin is not None:
            extra += [(b"WebHook-Allowed-Origin", origin.encode("latin-1")), (b"WebHook-Allowed-Rate", b"*")]
        return Answer(200, "", tuple(extra))
    if method != b"POST":
        return Answer(405, f"method {method.decode('latin-1')} is not allowed: POST events", ALLOW)
    return ns, name


def _header(headers: Sequence[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k.decode("latin-1").lower() == name:
            return v.decode("latin-1")
    return None


def stamp(event: Event, now: float) -> Event | None:
    """The event as stored: arrival time set, TTL defaulted; None when its TTL is exhausted.

    Raises `InvalidEvent` for a TTL that is not an integer."""
    raw = event.attributes.get(TTL_ATTR)
    if raw is None:
        ttl = DEFAULT_TTL
    elif isinstance(raw, bool):
        raise InvalidEvent(f"{TTL_ATTR} must be an integer, got a boolean")
    elif isinstance(raw, int):
        ttl = raw
    else:
        try:
            ttl = int(str(raw).strip())
        except ValueError:
            raise InvalidEvent(f"{TTL_ATTR} must be an integer, got {raw!r}") from None
    if ttl <= 0:
        return None
    # The event was validated when decoded; both values are valid extensions by construction.
    attrs = dict(event.attributes)
    attrs[ARRIVAL_ATTR] = rfc3339_micros(now)
    attrs[TTL_ATTR] = min(ttl, INT_MAX)
    return Event(attrs, event.data, event.data_is_json)


@dataclass
class IngressMetrics:
    """Counters per broker key (`ns/name`): accepted events and rejected requests by reason."""

    accepted: dict[str, int] = field(default_factory=dict)
    rejected: dict[tuple[str, str], int] = field(default_factory=dict)
    dropped_ttl: dict[str, int] = field(default_factory=dict)
    dropped_retention: dict[str, int] = field(default_factory=dict)

    def reject(self, broker: str, reason: str) -> None:
        k = (broker, reason)
        self.rejected[k] = self.rejected.get(k, 0) + 1

    def rows(self) -> list[tuple[str, str, str, int]]:
        """(broker, outcome, reason, count) rows for the worker's stats."""
        out = [(b, "accepted", "", n) for b, n in self.accepted.items()]
        out += [(b, "rejected", r, n) for (b, r), n in self.rejected.items()]
        out += [(b, "dropped", "ttl-exhausted", n) for b, n in self.dropped_ttl.items()]
        out += [(b, "dropped", "retention", n) for b, n in self.dropped_retention.items()]
        return out


_ERROR_ANSWERS: tuple[tuple[type[CloudEventError], int, str], ...] = (
    (EventTooLarge, 413, "too-large"),
    (UnsupportedFormat, 415, "unsupported-format"),
)


class BrokerIngress:
    """One worker's broker ingress: the brokers of the snapshot and the logs this worker owns."""

    def __init__(
        self,
        state_dir: Path,
        domain: str,
        *,
        worker_index: int = 0,
        workers: int = 1,
        max_event_bytes: int,
        max_age_s: float | None = None,
        max_records: int | None = None,
        compact_every_s: float = COMPACT_EVERY_S,
        wake: WakeSender | None = None,
        clock: Callable[[], float] = time.time,
        open_log: Callable[[BrokerEntry], ChannelLog] | None = None,
        open_stream_writer: Callable[[], StreamAppender] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.host = HOST_PREFIX + domain.encode("ascii")
        self.channel_host = CHANNEL_HOST_PREFIX + domain.encode("ascii")
        self.index = worker_index
        self.workers = workers
        self.max_event_bytes = max_event_bytes
        self.max_age_s = max_age_s
        self.max_records = max_records
        self.compact_every_s = compact_every_s
        self.metrics = IngressMetrics()
        self._wake = wake
        self._clock = clock
        self._open_log = open_log or self._open_sqlite
        self._open_stream_writer = open_stream_writer
        """Makes this worker's Redis writer (on the first Redis-backed broker); None: no Redis
        configured for this gateway."""
        self._stream_writer: StreamAppender | None = None
        self._failure_logged: dict[str, float] = {}
        self._brokers: dict[str, BrokerEntry] = {}
        self._logs: dict[str, tuple[BrokerEntry, ChannelLog]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._compactor: asyncio.Task[None] | None = None
        self.compacted = 0
        """Records deleted below the consumers' floors so far."""

    # -- routing ------------------------------------------------------------------------------

    def matches(self, host: bytes) -> bool:
        """Is `host` (as sent, maybe with a port) the broker ingress host?"""
        return _same_host(host, self.host)

    def kind_of(self, host: bytes) -> str | None:
        """`broker` or `channel` when `host` is one of the ingress hosts, else None."""
        if _same_host(host, self.host):
            return "broker"
        if _same_host(host, self.channel_host):
            return "channel"
        return None

    def lookup(self, namespace: str, name: str, kind: str = "broker") -> BrokerEntry | None:
        return self._brokers.get(f"{kind}:{namespace}/{name}")

    def is_home(self, entry: BrokerEntry) -> bool:
        return home_index(home_key(entry), self.workers) == self.index

    def apply(self, snapshot: Snapshot) -> None:
        """Adopt a snapshot's brokers; close (and, at their home, delete) the logs of brokers
        that are gone or were re-created under their name (a new uid)."""
        new = {b.ident: b for b in snapshot.brokers}
        old = self._brokers
        self._brokers = new
        for key, entry in old.items():
            cur = new.get(key)
            if cur is not None and cur.uid == entry.uid:
                continue
            if entry.backend != REDIS and self.is_home(entry):
                self._spawn(self._retire(entry))
        if any(b.backend == REDIS for b in snapshot.brokers):
            self._writer()  # connect now: the first event should not wait for it

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _retire(self, entry: BrokerEntry) -> None:
        held = self._logs.pop(entry.ident, None)
        if held is not None and held[0].uid == entry.uid:
            await held[1].close()
        elif held is not None:
            self._logs[entry.ident] = held
        path = self.state_dir / entry.log
        await asyncio.to_thread(_remove_log_files, path)
        log.info("event=broker_log_deleted broker=%s uid=%s", entry.key, entry.uid)

    # -- events -------------------------------------------------------------------------------

    def _open_sqlite(self, entry: BrokerEntry) -> ChannelLog:
        # The writer thread creates the log's folder (`SqliteWriter._acquire_lock`), off the loop.
        return SqliteChannelLog(self.state_dir / entry.log, durable=entry.durable)

    def _log_for(self, entry: BrokerEntry) -> ChannelLog:
        held = self._logs.get(entry.ident)
        if held is not None and held[0].uid == entry.uid:
            return held[1]
        if held is not None:
            self._spawn(held[1].close())
        log_ = self._open_log(entry)
        self._logs[entry.ident] = (entry, log_)
        if self._compactor is None:
            self._compactor = asyncio.get_running_loop().create_task(self._compact_forever())
        return log_

    async def compact_once(self) -> int:
        """Delete, in every log this worker writes, the records at or below its floor (the
        lowest position of its triggers, written by the dispatcher). Returns how many."""
        deleted = 0
        for entry, log_ in list(self._logs.values()):
            floor = await asyncio.to_thread(read_floor, self.state_dir / entry.log)
            try:
                if floor is not None and floor > 0:
                    deleted += await log_.compact(CHANNEL, floor + 1)
                if self.max_age_s is None and self.max_records is None:
                    continue
                # What is left was not handled by every trigger: past the caps it goes anyway.
                lost = await log_.apply_retention(
                    CHANNEL, max_age_s=self.max_age_s, max_records=self.max_records,
                    keep_from=await log_.tail(CHANNEL) + 1,
                )
            except Exception as exc:  # the next round tries again
                log.warning("event=compact_failed broker=%s error=%r", entry.key, exc)
                continue
            if lost:
                key = entry.key if entry.kind == "broker" else entry.ident
                self.metrics.dropped_retention[key] = self.metrics.dropped_retention.get(key, 0) + lost
                log.error("event=retention_dropped %s=%s records=%d (past the log's age or size cap "
                          "before every trigger handled them)", entry.kind, entry.key, lost)
                deleted += lost
        self.compacted += deleted
        return deleted

    async def _compact_forever(self) -> None:
        while True:
            await asyncio.sleep(self.compact_every_s)
            await self.compact_once()

    def _writer(self) -> StreamAppender | None:
        """This worker's Redis writer, made on first use; None when no Redis is configured."""
        writer = self._stream_writer
        if writer is None and self._open_stream_writer is not None:
            writer = self._stream_writer = self._open_stream_writer()
            writer.warm_up()
        return writer

    async def _append_redis(self, entry: BrokerEntry, key: str, records: list[bytes]) -> Answer | None:
        """Append to the entry's stream; None once Redis acknowledged it, else the 503 to send.
        A stream that does not exist is a 503 too, never a 404 (producers do not retry a 404):
        either the broker was deleted, and the next snapshot drops it (an unknown broker's 404
        then), or Redis lost the stream, and the controller makes it again within its recheck."""
        writer = self._writer()
        if writer is None:
            self.metrics.reject(key, "redis-not-configured")
            return Answer(503, f"{entry.kind} {entry.key} keeps its events in Redis, but this "
                          "gateway has no Redis configured (flint up --redis URL, or "
                          "FLINT_REDIS_URL for the gateway)", retry_after=True)
        try:
            await writer.append(entry.stream or stream_key(entry.uid), records)
        except StreamGone:  # never made here (NOMKSTREAM): deleted, or lost by Redis
            self.metrics.reject(key, "log-gone")
            return Answer(503, f"the Redis stream of {entry.kind} {entry.key} does not exist (its "
                          "broker was deleted, or Redis lost it and the controller makes it again)",
                          retry_after=True)
        except Exception as exc:  # not (verifiably) stored: the producer retries
            now = self._clock()
            if now - self._failure_logged.get(key, -FAILURE_LOG_EVERY_S) >= FAILURE_LOG_EVERY_S:
                self._failure_logged[key] = now
                detail = exc.detail if isinstance(exc, StreamAppendError) else repr(exc)
                log.error("event=append_failed %s=%s backend=redis error=%s (logged at most every "
                          "%g s)", entry.kind, key, detail, FAILURE_LOG_EVERY_S)
            self.metrics.reject(key, "log-unavailable")
            return Answer(503, f"the Redis stream of {entry.kind} {entry.key} is unavailable: {exc}",
                          retry_after=True)
        return None

    async def accept(self, entry: BrokerEntry, headers: Headers, body: bytes) -> Answer:
        """Decode, stamp and store the events of one request; the answer to send."""
        key = entry.key if entry.kind == "broker" else entry.ident
        try:
            events = decode_http(headers, body, max_event_bytes=self.max_event_bytes)
            now = self._clock()
            stamped: list[Event | None] = []
            for i, e in enumerate(events):
                if entry.kind != "broker":
                    stamped.append(e)  # a channel stores events as they came
                    continue
                try:
                    stamped.append(stamp(e, now))
                except InvalidEvent as exc:
                    raise InvalidEvent(exc.reason, index=i if len(events) > 1 else None) from None
        except CloudEventError as exc:
            for kind, status, reason in _ERROR_ANSWERS:
                if isinstance(exc, kind):
                    self.metrics.reject(key, reason)
                    return Answer(status, exc.message)
            self.metrics.reject(key, "invalid-event")
            return Answer(400, exc.message)
        records = [e.to_log() for e in stamped if e is not None]
        dropped = len(stamped) - len(records)
        if dropped:
            self.metrics.dropped_ttl[key] = self.metrics.dropped_ttl.get(key, 0) + dropped
            log.warning("event=ttl_exhausted broker=%s dropped=%d", key, dropped)
        if records and entry.backend == REDIS:
            failed = await self._append_redis(entry, key, records)
            if failed is not None:
                return failed
        elif records:
            try:
                await self._log_for(entry).append(CHANNEL, records)
            except Exception as exc:  # the log failed: nothing was acknowledged
                log.error("event=append_failed broker=%s error=%r", key, exc)
                self.metrics.reject(key, "log-unavailable")
                held = self._logs.pop(entry.ident, None)
                if held is not None:  # release its writer and lock: the next request reopens
                    self._spawn(held[1].close())
                reason = f"the log of {entry.kind} {entry.key} is unavailable: {exc}"
                return Answer(503, reason, retry_after=True)
            if self._wake is not None:
                self._wake.notify(entry.uid)
        self.metrics.accepted[key] = self.metrics.accepted.get(key, 0) + len(records)
        return Answer(202)

    async def close(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._compactor
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        logs, self._logs = self._logs, {}
        for _, log_ in logs.values():
            with contextlib.suppress(Exception):
                await log_.close()
        if self._wake is not None:
            self._wake.close()
        writer, self._stream_writer = self._stream_writer, None
        if writer is not None:
            with contextlib.suppress(Exception):
                await writer.close()


def _same_host(host: bytes, h: bytes) -> bool:
    return host == h or (host.startswith(h) and host[len(h) : len(h) + 1] == b":")


def _remove_log_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".lock", ".floor"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(str(path) + suffix)
