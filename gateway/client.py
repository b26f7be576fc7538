"""Client side of the proxy: parses HTTP/1.1 requests, guards limits, keep-alive and pipelining."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import httptools

from gateway.config import GatewaySettings
from gateway.headers import (
    H_CONNECTION,
    H_CONTENT_LENGTH,
    H_EXPECT,
    H_FORWARDED,
    H_HOST,
    H_INTERNAL_REVISION,
    H_INTERNAL_ROUTE,
    H_TAG,
    H_TRACEPARENT,
    H_TRANSFER_ENCODING,
    H_UPGRADE,
    H_XFF,
    INTERNAL_PREFIX,
    REQUEST_KINDS,
    connection_tokens,
    drop_named,
    error_response,
    forwarded_node,
)
from gateway.proxy_metrics import LATENCY_BUCKETS_S, Histogram, ProxyMetrics, RouteCounter

__all__ = [
    "LATENCY_BUCKETS_S",
    "ClientConnection",
    "ClientRequest",
    "Histogram",
    "ProxyMetrics",
    "RouteCounter",
]


# Reasons the client transport's reading is paused (bit mask).
P_PIPELINE = 1
P_PENDING = 2
P_UPWRITE = 4
P_UPGRADE = 8
P_QUEUED = 16

PENDING_HIGH_WATER = 256 * 1024
"""Request-body bytes buffered while the upstream connection is being set up."""
LINGER_S = 2.0
"""After an error response to a client still sending, read and discard for this long."""
RAW_HEAD_SLACK = 256 * 1024
"""Raw bytes tolerated (besides max_header_bytes) before a header block is complete."""


_PASS = -1
_INTERNAL = -2
_kinds: dict[bytes, int] = {}
"""Request header name as sent → its kind in `REQUEST_KINDS`, `_PASS` or `_INTERNAL` (bounded)."""
_KINDS_MAX = 1024


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing with an error status."""


class ClientRequest:
    """One client request as parsed so far."""

    __slots__ = (
        "body_size",
        "chunked",
        "complete",
        "conn",
        "content_length",
        "discard",
        "error",
        "expect",
        "forwarded",
        "head_done",
        "headers",
        "host",
        "hsize",
        "http10",
        "internal_rev",
        "internal_route",
        "keep_alive",
        "method",
        "pending",
        "pending_size",
        "replay",
        "replay_size",
        "response_done",
        "tag",
        "tail",
        "traceparent",
        "upgrade",
        "upgrade_value",
        "url",
        "xff",
    )

    def __init__(self) -> None:
        self.method = b"GET"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.hsize = 0
        self.host: bytes | None = None
        self.tag: bytes | None = None
        self.conn: bytes | None = None
        self.forwarded: bytes | None = None
        self.xff: bytes | None = None
        self.traceparent = False
        self.expect = False
        self.upgrade_value: bytes | None = None
        self.upgrade = False
        self.content_length: int | None = None
        self.chunked = False
        self.http10 = False
        self.keep_alive = True
        self.head_done = False
        self.complete = False
        self.response_done = False
        self.discard = False
        self.error: tuple[int, str] | None = None
        self.body_size = 0
        self.pending: list[bytes] = []
        self.pending_size = 0
        self.replay: list[bytes] | None = []
        self.replay_size = 0
        self.tail = b""
        self.internal_rev: bytes | None = None
        """`x-flint-revision` of a request forwarded by another worker (trusted socket only)."""
        self.internal_route: bytes | None = None

    @property
    def body_expected(self) -> bool:
        return self.chunked or bool(self.content_length)


class ClientConnection(asyncio.Protocol):
    """One client connection: request parsing, limits, pipelining, keep-alive, error replies.

    The exchange with a replica (routing, upstream I/O, response relay) is the subclass's
    job, through the hooks at the end of this class.
    """

    __slots__ = (
        "_abort_status",
        "_advance_again",
        "_advancing",
        "_broken",
        "_client_ip",
        "_client_write_paused",
        "_closing",
        "_ctimer",
        "_cur",
        "_cwhen",
        "_for_node",
        "_fresh",
        "_head_bytes",
        "_head_since",
        "_idle_since",
        "_in_head",
        "_last",
        "_local",
        "_loop",
        "_max_body",
        "_max_header",
        "_metrics",
        "_parser",
        "_pmask",
        "_queue",
        "_replay_limit",
        "_req",
        "_resp_started",
        "_settings",
        "_splice",
        "_trusted",
        "_up_ready",
        "_utimer",
        "transport",
    )

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: ProxyMetrics,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._loop = loop
        self._max_header = settings.max_header_bytes
        self._max_body = settings.max_request_body_bytes
        self._replay_limit = settings.replay_buffer_bytes
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._for_node = b"unknown"
        self._client_ip = b"unknown"
        self._req: ClientRequest | None = None
        self._last: ClientRequest | None = None
        self._cur: ClientRequest | None = None
        self._queue: list[ClientRequest] = []
        self._in_head = False
        self._head_bytes = 0
        self._abort_status: tuple[int, str] | None = None
        self._pmask = 0
        self._closing = False
        self._broken = False
        self._client_write_paused = False
        self._ctimer: asyncio.TimerHandle | None = None
        self._cwhen = 0.0
        self._idle_since = 0.0
        self._fresh = True
        self._head_since = 0.0
        self._up_ready = False
        self._local = False
        """The active exchange is answered by the gateway itself (the broker ingress): body
        chunks go to `_forward_body` and the end of any body to `_forward_end`."""
        self._utimer: asyncio.TimerHandle | None = None
        self._resp_started = False
        self._splice = False
        self._advancing = False
        self._advance_again = False
        self._trusted = False
        """A connection from another worker of this gateway: `x-flint-*` headers are honoured
        and the forwarding headers it set are kept as they are."""

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._for_node, self._client_ip = forwarded_node(transport.get_extra_info("peername"))
        self._metrics.active_connections += 1
        self._idle_since = now = self._loop.time()
        if self._settings.header_read_timeout_s > 0:
            self._ensure_ctimer(now + self._settings.header_read_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._splice:
            self._splice_in(data)
            return
        if self._closing:
            return
        parser = self._parser
        if parser is None:
            if self._last is not None:
                self._last.tail += data
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self._parser = None
            req = self._last
            if req is not None and req.upgrade and not self._closing:
                req.tail = data[exc.args[0] :]
                self._pause(P_UPGRADE)
            else:
                self._close_client()  # CONNECT: its 405 is already written
            return
        except httptools.HttpParserCallbackError:
            if self._abort_status is not None:
                status, message = self._abort_status
                self._protocol_error(status, message)
            else:  # pragma: no cover - a bug in a callback
                self._protocol_error(400, "request rejected")
            return
        except httptools.HttpParserError as exc:
            self._protocol_error(400, f"malformed request: {exc}")
            return
        if self._in_head:
            # Rare: a header block split over reads. Bound it in bytes and in time.
            self._head_bytes += len(data)
            if self._head_bytes > self._max_header + RAW_HEAD_SLACK:
                self._protocol_error(431, "request header block too large")
                return
            req = self._req
            if req is not None and req is self._cur and not self._head_since:
                self._head_since = now = self._loop.time()
                if self._settings.header_read_timeout_s > 0:
                    self._ensure_ctimer(now + self._settings.header_read_timeout_s)

    def eof_received(self) -> bool | None:
        # A client that stops sending has gone away (like nginx without
        # proxy_ignore_client_abort): close, which aborts the exchange and frees its slot.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._metrics.active_connections -= 1
        if self._splice:
            self._metrics.active_upgrades -= 1
        self._closing = True
        self._cancel_timers()
        self._end_exchange(reuse=False)
        self._cur = None
        self._queue.clear()

    # -- httptools request callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        req = ClientRequest()
        self._req = req
        self._in_head = True
        self._head_bytes = 0
        if self._cur is None:
            self._cur = req
            self._head_since = 0.0
        else:
            self._queue.append(req)
            self._pause(P_PIPELINE)

    def on_url(self, url: bytes) -> None:
        req = self._req
        assert req is not None
        req.url = req.url + url if req.url else url
        req.hsize += len(url)
        if req.hsize > self._max_header:
            self._abort_status = (431, "request line too long")
            raise _Abort

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._req
        assert req is not None
        req.hsize += len(name) + len(value) + 4
        if req.hsize > self._max_header:
            self._abort_status = (
                431,
                f"request header block exceeds {self._max_header} bytes",
            )
            raise _Abort
        kind = _kinds.get(name)
        if kind is None:
            lname = name.lower()
            kind = REQUEST_KINDS.get(lname, _PASS)
            if kind == _PASS and lname.startswith(INTERNAL_PREFIX):
                kind = _INTERNAL
            if len(_kinds) < _KINDS_MAX:
                _kinds[name] = kind
        if kind == _PASS:
            req.headers.append((name, value))
        elif kind == _INTERNAL:
            if self._trusted:
                lname = name.lower()
                if lname == H_INTERNAL_REVISION:
                    req.internal_rev = value
                elif lname == H_INTERNAL_ROUTE:
                    req.internal_route = value
        elif kind == H_HOST:
            if req.host is not None:
                self._abort_status = (400, "more than one Host header")
                raise _Abort
            req.host = value
            req.headers.append((name, value))
        elif kind == H_CONTENT_LENGTH:
            if not value.strip().isdigit():
                self._abort_status = (400, "invalid Content-Length")
                raise _Abort
            length = int(value)
            if req.content_length is not None and req.content_length != length:
                self._abort_status = (400, "conflicting Content-Length headers")
                raise _Abort
            req.content_length = length
        elif kind == H_TRANSFER_ENCODING:
            req.chunked = True
        elif kind == H_CONNECTION:
            req.conn = req.conn + b"," + value if req.conn else value
        elif kind == H_UPGRADE:
            req.upgrade_value = value
        elif kind == H_FORWARDED:
            req.forwarded = req.forwarded + b", " + value if req.forwarded else value
        elif kind == H_XFF:
            req.xff = req.xff + b", " + value if req.xff else value
        elif kind == H_TAG:
            req.tag = value
        elif kind == H_TRACEPARENT:
            req.traceparent = True
            req.headers.append((name, value))
        elif kind == H_EXPECT:
            req.expect = value.strip().lower() == b"100-continue"
            req.headers.append((name, value))

    def on_headers_complete(self) -> None:
        req = self._req
        parser = self._parser
        assert req is not None and parser is not None
        self._in_head = False
        if req.chunked and req.content_length is not None:
            self._abort_status = (400, "both Content-Length and Transfer-Encoding present")
            raise _Abort
        req.method = parser.get_method()
        req.http10 = parser.get_http_version() == "1.0"
        req.keep_alive = parser.should_keep_alive()
        req.upgrade = req.upgrade_value is not None and parser.should_upgrade()
        if req.conn is not None:
            tokens = connection_tokens(req.conn)
            req.headers = drop_named(req.headers, tokens)
            if req.upgrade and b"upgrade" not in tokens:
                req.upgrade = False
        req.head_done = True
        if req.content_length is not None and req.content_length > self._max_body:
            req.error = (
                413,
                f"request body of {req.content_length} bytes exceeds the limit of {self._max_body} bytes",
            )
        if req is self._cur:
            self._start(req)

    def on_body(self, data: bytes) -> None:
        req = self._req
        assert req is not None
        req.body_size += len(data)
        if req.discard:
            return
        if req.body_size > self._max_body:
            req.discard = True
            if req is self._cur:
                self._body_too_large(req)
            else:
                req.error = (413, f"request body exceeds the limit of {self._max_body} bytes")
            return
        replay = req.replay
        if replay is not None:
            size = req.replay_size + len(data)
            if size <= self._replay_limit:
                replay.append(data)
                req.replay_size = size
            else:
                req.replay = None
        if req is self._cur and self._up_ready:
            self._forward_body(req, data)
        else:
            req.pending.append(data)
            req.pending_size += len(data)
            if req is self._cur and req.pending_size > PENDING_HIGH_WATER:
                self._pause(P_PENDING)

    def on_message_complete(self) -> None:
        req = self._req
        assert req is not None
        self._req = None
        self._last = req
        req.complete = True
        if req is not self._cur:
            return
        if req.response_done:
            self._advance()
        elif self._up_ready and (req.chunked or self._local) and not req.discard:
            self._forward_end()

    # -- answers and endings ----------------------------------------------------------------

    def _respond_error(self, status: int, message: str, retry_after: bool = False) -> None:
        self._respond_local(status, lambda close: error_response(status, message, close, retry_after))

    def _respond_local(self, status: int, render: Callable[[bool], bytes]) -> None:
        """Answer the active request from the gateway itself: `render(close)` is the whole
        response; the connection is kept when the request allows it."""
        req = self._cur
        transport = self.transport
        if req is None or transport is None or self._closing:
            return
        body_pending = not req.complete and req.body_expected
        close = not req.keep_alive or body_pending or req.upgrade or self._broken or req.method == b"CONNECT"
        transport.write(render(close))
        self._metrics.count_status(status)
        self._resp_started = True
        req.response_done = True
        if close:
            req.keep_alive = False
            self._close_client(linger=body_pending)
        elif req.complete:
            self._advance()
        else:
            req.discard = True

    def _protocol_error(self, status: int, message: str) -> None:
        """The request stream is unusable: answer `status` if nothing was answered, close."""
        self._metrics.client_errors += 1
        self._parser = None
        cur = self._cur
        if self._closing:
            return
        if cur is not None and cur is not self._req:
            # A pipelined request is broken: finish the active exchange, then close.
            self._broken = True
            cur.keep_alive = False
            self._pause(P_PIPELINE)
            return
        started = self._resp_started
        self._end_exchange(reuse=False)
        transport = self.transport
        if started or transport is None:
            self._close_client()
            return
        transport.write(error_response(status, message, True))
        self._metrics.count_status(status)
        self._close_client(linger=True)

    def _advance(self) -> None:
        """The active exchange is over: start the next pipelined request or wait for one.

        Iterative, so a long run of pipelined requests answered at once cannot recurse deeply.
        """
        if self._advancing:
            self._advance_again = True
            return
        self._advancing = True
        try:
            while True:
                self._advance_again = False
                self._advance_once()
                if not self._advance_again:
                    break
        finally:
            self._advancing = False

    def _advance_once(self) -> None:
        req = self._cur
        self._cur = None
        self._resp_started = False
        self._reset_exchange()
        if req is None or not req.keep_alive or self._broken:
            self._close_client()
            return
        if self._queue:
            nxt = self._queue.pop(0)
            self._cur = nxt
            if not self._queue:
                self._resume(P_PIPELINE)
            if nxt.head_done:
                self._start(nxt)
            else:
                self._head_since = now = self._loop.time()
                if self._settings.header_read_timeout_s > 0:
                    self._ensure_ctimer(now + self._settings.header_read_timeout_s)
            return
        if self._pmask & P_PIPELINE:
            self._resume(P_PIPELINE)
        self._fresh = False
        self._idle_since = now = self._loop.time()
        timeout = self._settings.client_keepalive_timeout_s
        if timeout > 0 and (self._ctimer is None or self._cwhen > now + timeout):
            self._ensure_ctimer(now + timeout)

    def _close_client(self, linger: bool = False) -> None:
        transport = self.transport
        if self._closing or transport is None:
            return
        self._closing = True
        self._cancel_timers()
        if linger and transport.can_write_eof() and not transport.is_closing():
            transport.write_eof()
            self._pmask = 0
            transport.resume_reading()
            self._ctimer = self._loop.call_later(LINGER_S, transport.close)
        else:
            transport.close()

    # -- client timer and flow control -------------------------------------------------------

    def _ensure_ctimer(self, when: float) -> None:
        """Make the client timer fire no later than `when` (it re-checks state when it fires)."""
        handle = self._ctimer
        if handle is not None:
            if self._cwhen <= when:
                return
            handle.cancel()
        self._cwhen = when
        self._ctimer = self._loop.call_at(when, self._on_ctimer)

    def _cancel_timers(self) -> None:
        if self._ctimer is not None:
            self._ctimer.cancel()
            self._ctimer = None
        if self._utimer is not None:
            self._utimer.cancel()
            self._utimer = None

    def _on_ctimer(self) -> None:
        """Client-side deadlines: idle keep-alive connection, slow header block."""
        self._ctimer = None
        if self._closing:
            return
        now = self._loop.time()
        settings = self._settings
        cur = self._cur
        if cur is None:
            limit = settings.header_read_timeout_s if self._fresh else (settings.client_keepalive_timeout_s)
            deadline = self._idle_since + limit
            if limit <= 0:
                return
            if now >= deadline:
                self._close_client()
            else:
                self._ensure_ctimer(deadline)
            return
        if not cur.head_done and self._req is cur and settings.header_read_timeout_s > 0:
            since = self._head_since or self._idle_since
            deadline = since + settings.header_read_timeout_s
            if now < deadline:
                self._ensure_ctimer(deadline)
                return
            self._metrics.client_errors += 1
            self._parser = None
            transport = self.transport
            assert transport is not None
            transport.write(error_response(408, "request headers not received in time", True))
            self._metrics.count_status(408)
            self._close_client(linger=True)
        # Otherwise an exchange is under way; `_advance` re-arms when it ends.

    def _pause(self, reason: int) -> None:
        if not self._pmask:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()
        self._pmask |= reason

    def _resume(self, reason: int) -> None:
        if self._pmask & reason:
            self._pmask &= ~reason
            if not self._pmask:
                transport = self.transport
                if transport is not None and not transport.is_closing():
                    transport.resume_reading()

    # -- hooks for the exchange (implemented by the proxy) -----------------------------------

    def _start(self, req: ClientRequest) -> None:
        """Headers of the active request are complete: route it and start the exchange."""
        raise NotImplementedError

    def _forward_body(self, req: ClientRequest, data: bytes) -> None:
        """A body chunk of the active request, with the upstream ready."""
        raise NotImplementedError

    def _forward_end(self) -> None:
        """The active chunked request body ended, with the upstream ready."""
        raise NotImplementedError

    def _body_too_large(self, req: ClientRequest) -> None:
        raise NotImplementedError

    def _end_exchange(self, reuse: bool) -> None:
        """Abandon or finish the upstream side of the exchange; idempotent."""
        raise NotImplementedError

    def _reset_exchange(self) -> None:
        """Forget per-exchange state before the next request."""
        raise NotImplementedError

    def _splice_in(self, data: bytes) -> None:
        """Raw bytes from the client of an upgraded connection."""
        raise NotImplementedError
