"""The gateway's hot path: HTTP/1.1 reverse proxying with asyncio Protocols and httptools."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import cast

import httptools

from gateway.config import Endpoint, GatewaySettings, RevisionTarget
from gateway.headers import (
    CRLF,
    H_CONNECTION,
    H_CONTENT_LENGTH,
    H_EXPECT,
    H_FORWARDED,
    H_HOST,
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
    forwarding_headers,
    join_headers,
    new_traceparent,
)
from gateway.router import RouteMiss, Router
from gateway.upstream import UpstreamConn, UpstreamPool


@dataclass(slots=True)
class ProxyMetrics:
    """Plain counters of one worker; exported to Prometheus elsewhere (not in the hot path)."""

    requests_total: int = 0
    responses_1xx: int = 0
    responses_2xx: int = 0
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0
    upstream_errors: int = 0
    """Upstream failures of any kind: connect, reset, malformed response, timeouts."""
    upstream_connect_errors: int = 0
    upstream_timeouts: int = 0
    upstream_retries: int = 0
    client_errors: int = 0
    """Malformed or oversized requests, header timeouts."""
    active_connections: int = 0
    active_upgrades: int = 0

    def count_status(self, status: int) -> None:
        if status < 300:
            if status >= 200:
                self.responses_2xx += 1
            else:
                self.responses_1xx += 1
        elif status < 400:
            self.responses_3xx += 1
        elif status < 500:
            self.responses_4xx += 1
        else:
            self.responses_5xx += 1


# Reasons the client transport's reading is paused (bit mask).
P_PIPELINE = 1
P_PENDING = 2
P_UPWRITE = 4
P_UPGRADE = 8

# Response framing toward the client.
M_NONE = 0
M_SIZED = 1
M_CHUNKED = 2
M_CLOSE = 3

PENDING_HIGH_WATER = 256 * 1024
"""Request-body bytes buffered while the upstream connection is being set up."""
LINGER_S = 2.0
"""After an error response to a client still sending, read and discard for this long."""
RAW_HEAD_SLACK = 256 * 1024
"""Raw bytes tolerated (besides max_header_bytes) before a header block is complete."""

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_NO_BODY_STATUS = frozenset((204, 304))
_REASONS: dict[int, bytes] = {
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, r) for code, r in _REASONS.items()}


class _Abort(Exception):
    """Raised inside a parser callback to stop parsing with an error status."""


class _Request:
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

    @property
    def body_expected(self) -> bool:
        return self.chunked or bool(self.content_length)


class ProxyProtocol(asyncio.Protocol):
    """One client connection: parses requests, routes them and relays the exchanges."""

    __slots__ = (
        "_abort_status",
        "_advance_again",
        "_advancing",
        "_broken",
        "_client_ip",
        "_client_write_paused",
        "_closing",
        "_connect_task",
        "_ctimer",
        "_cur",
        "_cwhen",
        "_ep",
        "_failed_over",
        "_for_node",
        "_fresh",
        "_head",
        "_head_bytes",
        "_head_since",
        "_idle_since",
        "_idle_timeout",
        "_in_head",
        "_last",
        "_last_io",
        "_loop",
        "_max_body",
        "_max_header",
        "_metrics",
        "_out_head",
        "_parser",
        "_pmask",
        "_pool",
        "_queue",
        "_replay_limit",
        "_req",
        "_resp_close",
        "_resp_mode",
        "_resp_started",
        "_retried",
        "_reused",
        "_rev",
        "_router",
        "_settings",
        "_splice",
        "_start_deadline",
        "_start_timeout",
        "_up",
        "_up_ready",
        "_utimer",
        "_uwhen",
        "transport",
    )

    def __init__(
        self,
        router: Router,
        settings: GatewaySettings,
        metrics: ProxyMetrics,
        pool: UpstreamPool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._router = router
        self._settings = settings
        self._metrics = metrics
        self._pool = pool
        self._loop = loop
        self._max_header = settings.max_header_bytes
        self._max_body = settings.max_request_body_bytes
        self._replay_limit = settings.replay_buffer_bytes
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._for_node = b"unknown"
        self._client_ip = b"unknown"
        self._req: _Request | None = None
        self._last: _Request | None = None
        self._cur: _Request | None = None
        self._queue: list[_Request] = []
        self._in_head = False
        self._head_bytes = 0
        self._abort_status: tuple[int, str] | None = None
        self._pmask = 0
        self._closing = False
        self._broken = False
        self._client_write_paused = False
        # Lazy timers: one handle each, re-armed only when it fires before its deadline.
        self._ctimer: asyncio.TimerHandle | None = None
        self._cwhen = 0.0
        self._idle_since = 0.0
        self._fresh = True
        self._head_since = 0.0
        # Per exchange:
        self._rev: RevisionTarget | None = None
        self._ep: Endpoint | None = None
        self._up: UpstreamConn | None = None
        self._up_ready = False
        self._reused = False
        self._retried = False
        self._failed_over = False
        self._connect_task: asyncio.Task[None] | None = None
        self._head = b""
        self._utimer: asyncio.TimerHandle | None = None
        self._uwhen = 0.0
        self._start_deadline = 0.0
        self._start_timeout = 0.0
        self._out_head: bytes | None = None
        self._idle_timeout = 0.0
        self._last_io = 0.0
        self._resp_started = False
        self._resp_mode = M_NONE
        self._resp_close = False
        self._splice = False
        self._advancing = False
        self._advance_again = False

    # -- asyncio.Protocol: client side ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._for_node, self._client_ip = forwarded_node(transport.get_extra_info("peername"))
        self._metrics.active_connections += 1
        self._idle_since = now = self._loop.time()
        if self._settings.header_read_timeout_s > 0:
            self._ensure_ctimer(now + self._settings.header_read_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._splice:
            up = self._up
            if up is not None and up.transport is not None:
                up.transport.write(data)
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

    def pause_writing(self) -> None:
        self._client_write_paused = True
        up = self._up
        if up is not None and up.transport is not None and not up.closed:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self._client_write_paused = False
        up = self._up
        if up is not None and up.transport is not None and not up.closed:
            up.transport.resume_reading()

    # -- httptools request callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        req = _Request()
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
        lname = name.lower()
        kind = REQUEST_KINDS.get(lname)
        if kind is None:
            if not lname.startswith(INTERNAL_PREFIX):
                req.headers.append((name, value))
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
                f"request body of {req.content_length} bytes exceeds the limit of "
                f"{self._max_body} bytes",
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
            up = self._up
            assert up is not None and up.transport is not None
            if req.chunked:
                up.transport.writelines((b"%x\r\n" % len(data), data, CRLF))
            else:
                up.transport.write(data)
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
        elif self._up_ready and req.chunked and not req.discard:
            up = self._up
            assert up is not None and up.transport is not None
            up.transport.write(_LAST_CHUNK)

    # -- the exchange -----------------------------------------------------------------------

    def _start(self, req: _Request) -> None:
        """Route a request whose headers are complete and send it to a replica."""
        self._metrics.requests_total += 1
        if req.error is not None:
            self._respond_error(*req.error)
            return
        if req.method == b"CONNECT":
            self._respond_error(405, "CONNECT is not supported")
            return
        host = req.host
        if req.url[:1] not in (b"/", b"*"):
            try:
                parsed = httptools.parse_url(req.url)
            except httptools.HttpParserInvalidURLError:
                self._respond_error(400, "invalid request target")
                return
            if parsed.host:
                host = parsed.host if parsed.port is None else b"%s:%d" % (parsed.host, parsed.port)
            req.url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        if not host:
            self._respond_error(400, "missing Host header")
            return
        host_s = host.decode("latin-1")
        target = self._router.resolve(host_s, req.tag.decode("latin-1") if req.tag else None)
        if isinstance(target, RouteMiss):
            if target.reason == "unknown-host":
                self._respond_error(404, f"no route for host {host_s!r}")
            else:
                self._respond_error(503, target.message, retry_after=True)
            return
        ep = self._router.acquire(target)
        if ep is None:
            if not target.endpoints:
                msg = f"revision {target.key} has no ready replica"
            else:
                msg = (
                    f"revision {target.key} has no free slot "
                    f"(containerConcurrency={target.container_concurrency})"
                )
            self._respond_error(503, msg, retry_after=True)
            return
        self._rev = target
        self._ep = ep
        self._failed_over = False
        self._retried = False
        self._head = self._build_head(req, host)
        timeout = target.response_start_timeout_s or target.timeout_s
        if target.timeout_s > 0:
            timeout = min(timeout, target.timeout_s)
        self._start_timeout = timeout
        self._idle_timeout = target.idle_timeout_s
        if timeout > 0:
            self._start_deadline = deadline = self._loop.time() + timeout
            self._ensure_utimer(deadline)
        else:
            self._start_deadline = 0.0
        self._dispatch(ep, fresh=False)

    def _build_head(self, req: _Request, host: bytes) -> bytes:
        parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
        join_headers(parts, req.headers)
        forwarding_headers(parts, req.forwarded, req.xff, self._for_node, self._client_ip, host)
        if not req.traceparent:
            parts += (b"traceparent: ", new_traceparent(), CRLF)
        if req.chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        elif req.content_length is not None:
            parts += (b"Content-Length: ", b"%d" % req.content_length, CRLF)
        if req.upgrade:
            parts += (b"Connection: Upgrade\r\nUpgrade: ", req.upgrade_value or b"", CRLF)
        parts.append(CRLF)
        return b"".join(parts)

    def _dispatch(self, ep: Endpoint, fresh: bool) -> None:
        if not fresh:
            up = self._pool.get(ep.id)
            if up is not None:
                self._attach(up, reused=True)
                return
        self._connect_task = self._loop.create_task(self._connect(ep))

    async def _connect(self, ep: Endpoint) -> None:
        try:
            up = await self._pool.connect(ep)
        except (OSError, TimeoutError) as exc:
            self._connect_task = None
            self._connect_failed(ep, exc)
            return
        self._connect_task = None
        if self._ep is not ep or self._cur is None or self._closing:
            self._pool.put(up)
            return
        self._attach(up, reused=False)

    def _connect_failed(self, ep: Endpoint, exc: BaseException) -> None:
        metrics = self._metrics
        metrics.upstream_errors += 1
        metrics.upstream_connect_errors += 1
        if self._ep is not ep:
            return
        self._release_ep()
        rev = self._rev
        if rev is None or self._cur is None:
            return
        if not self._failed_over:
            self._failed_over = True
            other = self._router.acquire(rev, exclude=(ep.id,))
            if other is not None:
                self._ep = other
                self._dispatch(other, fresh=False)
                return
        reason = str(exc) or type(exc).__name__
        self._upstream_failed(
            502, f"could not connect to a replica of revision {rev.key}: {reason}"
        )

    def _attach(self, up: UpstreamConn, reused: bool) -> None:
        req = self._cur
        assert req is not None and up.transport is not None
        if self._retried and req.replay is None:
            # The body outgrew the replay buffer while the retry connected: cannot resend.
            self._pool.put(up)
            rev = self._rev
            key = rev.key if rev is not None else "?"
            self._upstream_failed(502, f"a replica of revision {key} dropped the connection")
            return
        self._up = up
        self._reused = reused
        up.begin(self, req.method == b"HEAD")
        if self._client_write_paused:
            up.transport.pause_reading()
        if up.write_paused:
            self._pause(P_UPWRITE)
        chunks = req.replay if self._retried and req.replay is not None else req.pending
        if not chunks and not (req.complete and req.chunked):
            up.transport.write(self._head)
        else:
            out = [self._head]
            if req.chunked:
                for data in chunks:
                    out += (b"%x\r\n" % len(data), data, CRLF)
                if req.complete:
                    out.append(_LAST_CHUNK)
            else:
                out += chunks
            up.transport.writelines(out)
        req.pending = []
        req.pending_size = 0
        self._resume(P_PENDING)
        self._up_ready = True

    # -- UpstreamOwner ----------------------------------------------------------------------

    def up_headers(self, up: UpstreamConn, status: int) -> None:
        req = self._cur
        transport = self.transport
        if req is None or transport is None or self._closing:
            return
        if status < 200 and status != 101:
            if status == 100 and req.expect and not req.http10:
                transport.write(_CONTINUE)
            return
        self._resp_started = True
        upgrade = status == 101 and req.upgrade
        line = _STATUS_LINES.get(status)
        if line is None or up.reason != _REASONS.get(status):
            line = b"HTTP/1.1 %d %s\r\n" % (status, up.reason)
        parts = [line]
        join_headers(parts, up.headers)
        close = not req.keep_alive or self._broken or (req.upgrade and not upgrade)
        length = up.content_length
        if upgrade:
            mode = M_NONE
            parts += (b"Connection: Upgrade\r\nUpgrade: ", up.upgrade or b"", CRLF)
        elif req.method == b"HEAD" or status in _NO_BODY_STATUS:
            mode = M_NONE
            if length is not None:
                parts += (b"Content-Length: ", b"%d" % length, CRLF)
        elif length is not None and not up.chunked:
            mode = M_SIZED
            parts += (b"Content-Length: ", b"%d" % length, CRLF)
        elif up.chunked and not req.http10:
            mode = M_CHUNKED
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            mode = M_CLOSE
            close = True
        if not upgrade:
            if close:
                parts.append(b"Connection: close\r\n")
            elif req.http10:
                parts.append(b"Connection: keep-alive\r\n")
        parts.append(CRLF)
        self._resp_mode = mode
        self._resp_close = close
        # Held back so that a head and the body bytes of the same read go out in one write.
        self._out_head = b"".join(parts)
        self._metrics.count_status(status)
        if self._idle_timeout > 0 and not upgrade:
            self._last_io = now = self._loop.time()
            self._ensure_utimer(now + self._idle_timeout)

    def up_flush(self) -> None:
        """End of one upstream read: write a response head still held back."""
        head = self._out_head
        if head is not None:
            self._out_head = None
            transport = self.transport
            if transport is not None and not self._closing:
                transport.write(head)

    def up_body(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        head = self._out_head
        if self._resp_mode == M_CHUNKED:
            if head is not None:
                self._out_head = None
                transport.writelines((head, b"%x\r\n" % len(data), data, CRLF))
            else:
                transport.writelines((b"%x\r\n" % len(data), data, CRLF))
        elif head is not None:
            self._out_head = None
            if len(data) <= 16384:
                transport.write(head + data)
            else:
                transport.writelines((head, data))
        else:
            transport.write(data)
        if self._idle_timeout > 0:
            self._last_io = self._loop.time()

    def up_complete(self, up: UpstreamConn) -> None:
        req = self._cur
        if req is None or up is not self._up:
            up.close()
            return
        if up.status == 101 and req.upgrade:
            self.up_upgrade(up, b"")
            return
        transport = self.transport
        if transport is not None and not self._closing:
            head = self._out_head
            if head is not None:
                self._out_head = None
                if self._resp_mode == M_CHUNKED:
                    head += _LAST_CHUNK
                transport.write(head)
            elif self._resp_mode == M_CHUNKED:
                transport.write(_LAST_CHUNK)
        self._end_exchange(reuse=req.complete)
        req.response_done = True
        if self._resp_close or not req.complete:
            req.keep_alive = False
            self._close_client(linger=not req.complete)
        else:
            self._advance()

    def up_upgrade(self, up: UpstreamConn, tail: bytes) -> None:
        req = self._cur
        transport = self.transport
        self.up_flush()
        if req is None or transport is None or not (up.status == 101 and req.upgrade):
            self._end_exchange(reuse=False)
            self._close_client()
            return
        self._splice = True
        up.splice = True
        self._metrics.active_upgrades += 1
        if tail:
            transport.write(tail)
        if req.tail and up.transport is not None:
            up.transport.write(req.tail)
        self._pmask &= ~(P_UPGRADE | P_PIPELINE | P_PENDING)
        if not self._pmask:
            transport.resume_reading()

    def up_lost(self, up: UpstreamConn, exc: Exception | None) -> None:
        if up is not self._up:
            return
        self.up_flush()
        self._up = None
        self._up_ready = False
        self._resume(P_UPWRITE)
        if self._splice:
            self._release_ep()
            self._close_client()
            return
        req = self._cur
        if req is None:
            self._release_ep()
            return
        if self._resp_started:
            if self._resp_mode == M_CLOSE:
                # Close-delimited response: the upstream's EOF ends it.
                self.up_complete_eof(req)
            else:
                self._metrics.upstream_errors += 1
                self._end_exchange(reuse=False)
                self._close_client()
            return
        self._metrics.upstream_errors += 1
        ep = self._ep
        if self._reused and not self._retried and req.replay is not None and ep is not None:
            self._retried = True
            self._metrics.upstream_retries += 1
            self._dispatch(ep, fresh=True)
            return
        rev = self._rev
        key = rev.key if rev is not None else "?"
        self._upstream_failed(
            502, f"a replica of revision {key} closed the connection before responding"
        )

    def up_complete_eof(self, req: _Request) -> None:
        self._end_exchange(reuse=False)
        req.response_done = True
        req.keep_alive = False
        self._close_client(linger=not req.complete)

    def up_pause(self) -> None:
        self._pause(P_UPWRITE)

    def up_resume(self) -> None:
        self._resume(P_UPWRITE)

    def splice_to_client(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    # -- endings ----------------------------------------------------------------------------

    def _release_ep(self) -> None:
        ep = self._ep
        if ep is not None:
            self._ep = None
            self._router.release(ep.id)

    def _end_exchange(self, reuse: bool) -> None:
        """Detach the upstream (pooling it if `reuse`), free the slot. Idempotent."""
        self._start_deadline = 0.0
        task = self._connect_task
        if task is not None:
            self._connect_task = None
            task.cancel()
        up = self._up
        if up is not None:
            self._up = None
            up.detach()
            if reuse and up.reusable:
                self._pool.put(up)
            else:
                up.close()
        self._up_ready = False
        self._resume(P_UPWRITE)
        self._release_ep()

    def _upstream_failed(self, status: int, message: str) -> None:
        self._end_exchange(reuse=False)
        if self._resp_started:
            self._close_client()
        else:
            self._respond_error(status, message)

    def _respond_error(self, status: int, message: str, retry_after: bool = False) -> None:
        req = self._cur
        transport = self.transport
        if req is None or transport is None or self._closing:
            return
        body_pending = not req.complete and req.body_expected
        close = (
            not req.keep_alive
            or body_pending
            or req.upgrade
            or self._broken
            or req.method == b"CONNECT"
        )
        transport.write(error_response(status, message, close, retry_after))
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

    def _body_too_large(self, req: _Request) -> None:
        self._metrics.client_errors += 1
        started = self._resp_started
        self._end_exchange(reuse=False)
        if started:
            self._close_client()
        else:
            self._respond_error(413, f"request body exceeds the limit of {self._max_body} bytes")

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
        self._rev = None
        self._resp_started = False
        self._resp_mode = M_NONE
        self._resp_close = False
        self._reused = False
        self._retried = False
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
        self._resume(P_PIPELINE)
        self._fresh = False
        self._idle_since = now = self._loop.time()
        if self._settings.client_keepalive_timeout_s > 0:
            self._ensure_ctimer(now + self._settings.client_keepalive_timeout_s)

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

    # -- timers -----------------------------------------------------------------------------

    def _ensure_ctimer(self, when: float) -> None:
        """Make the client timer fire no later than `when` (it re-checks state when it fires)."""
        handle = self._ctimer
        if handle is not None:
            if self._cwhen <= when:
                return
            handle.cancel()
        self._cwhen = when
        self._ctimer = self._loop.call_at(when, self._on_ctimer)

    def _ensure_utimer(self, when: float) -> None:
        handle = self._utimer
        if handle is not None:
            if self._uwhen <= when:
                return
            handle.cancel()
        self._uwhen = when
        self._utimer = self._loop.call_at(when, self._on_utimer)

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
            limit = (
                settings.header_read_timeout_s
                if self._fresh
                else (settings.client_keepalive_timeout_s)
            )
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

    def _on_utimer(self) -> None:
        """Exchange deadlines: response start (504) and, once streaming, the idle gap."""
        self._utimer = None
        if self._closing or self._cur is None or self._rev is None or self._splice:
            return
        now = self._loop.time()
        if not self._resp_started:
            deadline = self._start_deadline
            if not deadline:
                return
            if now < deadline:
                self._ensure_utimer(deadline)
                return
            self._metrics.upstream_timeouts += 1
            self._metrics.upstream_errors += 1
            self._upstream_failed(
                504,
                f"revision {self._rev.key} did not start a response within "
                f"{self._start_timeout:g} s",
            )
            return
        if self._idle_timeout <= 0 or self._cur.response_done:
            return
        deadline = self._last_io + self._idle_timeout
        if now < deadline:
            self._ensure_utimer(deadline)
            return
        self._metrics.upstream_timeouts += 1
        self._end_exchange(reuse=False)
        self._close_client()

    # -- flow control -----------------------------------------------------------------------

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


class ProxyFactory:
    """Protocol factory for `loop.create_server`; owns the worker's upstream pool."""

    def __init__(
        self, router: Router, settings: GatewaySettings, metrics: ProxyMetrics | None = None
    ) -> None:
        self.router = router
        self.settings = settings
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self._pool: UpstreamPool | None = None

    @property
    def pool(self) -> UpstreamPool:
        if self._pool is None:
            self._pool = UpstreamPool(asyncio.get_running_loop(), self.settings)
        return self._pool

    def __call__(self) -> asyncio.Protocol:
        return ProxyProtocol(
            self.router, self.settings, self.metrics, self.pool, asyncio.get_running_loop()
        )

    def close(self) -> None:
        """Close the idle upstream connections (at shutdown)."""
        if self._pool is not None:
            self._pool.close()


def make_proxy_factory(
    router: Router, settings: GatewaySettings, metrics: ProxyMetrics | None = None
) -> ProxyFactory:
    """A protocol factory for `loop.create_server(factory, sock=sock)`; see `ProxyFactory`."""
    return ProxyFactory(router, settings, metrics)
