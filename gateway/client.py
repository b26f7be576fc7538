"""The client side of an exchange: one HTTP/1.1 connection from a client, parsed with httptools.

`ClientConnection` is the asyncio protocol of an accepted connection. It parses requests
(bounding the head in bytes and time, the body in bytes), keeps pipelined requests in order,
applies keep-alive and client-side deadlines, and writes the answers the gateway makes itself.
Everything between a request's head and its answer is its `Exchange`'s job; the connection
talks to that exchange by method calls, and sends request bodies to the upstream port the
exchange has made ready (`ClientSink.sink`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import cast

import httptools

from gateway.context import WorkerContext
from gateway.exchange import Exchange
from gateway.headers import (
    H_CONNECTION,
    H_CONTENT_LENGTH,
    H_EXPECT,
    H_FORWARDED,
    H_HOST,
    H_INTERNAL_PEER,
    H_INTERNAL_REVISION,
    H_INTERNAL_ROUTE,
    H_PROXY_CONNECTION,
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
    peer_refused_response,
)
from gateway.ports import P_PENDING, P_PIPELINE, P_UPGRADE, UpstreamPort
from gateway.request import ClientRequest
from gateway.subsets import normal_ip

__all__ = ["ClientConnection", "PeerConnection"]

log = logging.getLogger("flint.gateway.client")

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


class ClientConnection(asyncio.Protocol):
    """One client connection: request parsing, limits, pipelining, keep-alive, error replies.

    Its public attributes and methods are the `ClientSink` its exchange and upstream ports use.
    """

    __slots__ = (
        "_abort_status",
        "_advance_again",
        "_advancing",
        "_ctimer",
        "_cwhen",
        "_exchange",
        "_fresh",
        "_head_bytes",
        "_head_since",
        "_header_timeout",
        "_idle_since",
        "_in_head",
        "_keepalive_timeout",
        "_last",
        "_loop",
        "_max_body",
        "_max_header",
        "_metrics",
        "_parser",
        "_queue",
        "_replay_limit",
        "_req",
        "broken",
        "client_ip",
        "closing",
        "cur",
        "for_node",
        "pmask",
        "response_started",
        "sink",
        "splice",
        "transport",
        "trusted",
        "write_paused",
    )

    def __init__(
        self, ctx: WorkerContext, *, trusted: bool = False, public: bool = False, peer: bool = False
    ) -> None:
        """`trusted`: accepted on the unix socket on which the other workers forward requests
        (their `x-flint-*` headers are honoured, the forwarding headers they set are kept, and
        they are counted in `ctx.home_metrics`). `public`: accepted on a `--listen` address,
        where cluster-local routes are not served. `peer` (with `trusted`): accepted on the
        peer listener, from another gateway (`PeerConnection`)."""
        settings = ctx.settings
        metrics = ctx.home_metrics if trusted else ctx.metrics
        self._metrics = metrics
        self._loop = ctx.loop
        self._max_header = settings.max_header_bytes
        self._max_body = settings.max_request_body_bytes
        self._replay_limit = settings.replay_buffer_bytes
        self._header_timeout = settings.header_read_timeout_s
        """A header block must arrive within this (0: no limit)."""
        self._keepalive_timeout = settings.client_keepalive_timeout_s
        """An idle keep-alive connection is closed after this (0: never)."""
        self.trusted = trusted
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.for_node = b"unknown"
        self.client_ip = b"unknown"
        self._req: ClientRequest | None = None
        """The request being parsed."""
        self._last: ClientRequest | None = None
        self.cur: ClientRequest | None = None
        self._queue: list[ClientRequest] = []
        """Pipelined requests after `cur`, in order."""
        self._in_head = False
        self._head_bytes = 0
        self._abort_status: tuple[int, str] | None = None
        self.pmask = 0
        self.closing = False
        self.broken = False
        self.write_paused = False
        self._ctimer: asyncio.TimerHandle | None = None
        self._cwhen = 0.0
        self._idle_since = 0.0
        self._fresh = True
        self._head_since = 0.0
        self.sink: UpstreamPort | None = None
        self.response_started = False
        self.splice = False
        self._advancing = False
        self._advance_again = False
        self._exchange = Exchange(ctx, self, metrics, trusted=trusted, public=public, peer=peer)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.for_node, self.client_ip = forwarded_node(transport.get_extra_info("peername"))
        self._metrics.active_connections += 1
        self._idle_since = now = self._loop.time()
        if self._header_timeout > 0:
            self._ensure_ctimer(now + self._header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.splice:
            self._exchange.splice_in(data)
            return
        if self.closing:
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
            if req is not None and req.upgrade and not self.closing:
                req.tail = data[exc.args[0] :]
                self.pause(P_UPGRADE)
            else:
                self.close()  # CONNECT: its 405 is already written
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
            if req is not None and req is self.cur and not self._head_since:
                self._head_since = now = self._loop.time()
                if self._header_timeout > 0:
                    self._ensure_ctimer(now + self._header_timeout)

    def pause_writing(self) -> None:
        self.write_paused = True
        self._exchange.client_paused(True)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._exchange.client_paused(False)

    def eof_received(self) -> bool | None:
        # A client that stops sending has gone away (like nginx without
        # proxy_ignore_client_abort): close, which aborts the exchange and frees its slot.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._metrics.active_connections -= 1
        if self.splice:
            self._metrics.active_upgrades -= 1
        self.closing = True
        self._cancel_ctimer()
        self._exchange.abandon()
        self.cur = None
        self._queue.clear()

    # -- httptools request callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        req = ClientRequest()
        self._req = req
        self._in_head = True
        self._head_bytes = 0
        if self.cur is None:
            self.cur = req
            self._head_since = 0.0
        else:
            self._queue.append(req)
            self.pause(P_PIPELINE)

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
            if self.trusted:
                lname = name.lower()
                if lname == H_INTERNAL_REVISION:
                    req.internal_rev = value
                elif lname == H_INTERNAL_ROUTE:
                    req.internal_route = value
                elif lname == H_INTERNAL_PEER:
                    req.from_peer = True
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
        elif kind == H_PROXY_CONNECTION:
            req.proxy_connection = True

    def on_headers_complete(self) -> None:
        req = self._req
        parser = self._parser
        assert req is not None and parser is not None
        self._in_head = False
        if req.chunked and req.content_length is not None:
            self._abort_status = (400, "both Content-Length and Transfer-Encoding present")
            raise _Abort
        req.method = parser.get_method()
        keep_alive = req.keep_alive = parser.should_keep_alive()
        # Persistent without a Connection (or Proxy-Connection) header: llhttp says so for
        # HTTP/1.1 only. Otherwise ask the version (a str.format in httptools: not for free).
        req.http10 = not (
            keep_alive and req.conn is None and not req.proxy_connection
        ) and parser.get_http_version() == "1.0"
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
        if req is self.cur:
            self._exchange.start(req)

    def on_body(self, data: bytes) -> None:
        req = self._req
        assert req is not None
        req.body_size += len(data)
        if req.discard:
            return
        if req.body_size > self._max_body:
            req.discard = True
            if req is self.cur:
                self._exchange.too_large()
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
        sink = self.sink
        if sink is not None and req is self.cur:
            sink.body(req, data)
        else:
            req.pending.append(data)
            req.pending_size += len(data)
            if req is self.cur and req.pending_size > PENDING_HIGH_WATER:
                self.pause(P_PENDING)

    def on_message_complete(self) -> None:
        req = self._req
        assert req is not None
        self._req = None
        self._last = req
        req.complete = True
        if req is not self.cur:
            return
        if req.response_done:
            self.advance()
        else:
            sink = self.sink
            if sink is not None and (req.chunked or sink.needs_end) and not req.discard:
                sink.end(req)

    # -- answers and endings ----------------------------------------------------------------

    def respond_error(self, status: int, message: str, retry_after: bool = False) -> None:
        """Answer the active request with a short text/plain error (the reason in the body)."""
        req = self.cur
        if req is not None and not req.status:
            req.status = status
        self.respond_local(status, lambda close: error_response(status, message, close, retry_after))

    def respond_local(self, status: int, render: Callable[[bool], bytes]) -> None:
        """Answer the active request from the gateway itself: `render(close)` is the whole
        response; the connection is kept when the request allows it."""
        req = self.cur
        transport = self.transport
        if req is None or transport is None or self.closing:
            return
        body_pending = not req.complete and req.body_expected
        close = not req.keep_alive or body_pending or req.upgrade or self.broken or req.method == b"CONNECT"
        transport.write(render(close))
        self._metrics.count_status(status)
        self.response_started = True
        req.response_done = True
        if close:
            req.keep_alive = False
            self.close(linger=body_pending)
        elif req.complete:
            self.advance()
        else:
            req.discard = True

    def _protocol_error(self, status: int, message: str) -> None:
        """The request stream is unusable: answer `status` if nothing was answered, close."""
        self._metrics.client_errors += 1
        self._parser = None
        cur = self.cur
        if self.closing:
            return
        if cur is not None and cur is not self._req:
            # A pipelined request is broken: finish the active exchange, then close.
            self.broken = True
            cur.keep_alive = False
            self.pause(P_PIPELINE)
            return
        started = self.response_started
        self._exchange.abandon()
        transport = self.transport
        if started or transport is None:
            self.close()
            return
        transport.write(error_response(status, message, True))
        self._metrics.count_status(status)
        self.close(linger=True)

    def advance(self) -> None:
        """The active exchange is over: start the next pipelined request or wait for one.

        Iterative, so a long run of pipelined requests answered at once cannot recurse deeply:
        an `advance` from within (the next request answered at once) runs as the next turn.
        """
        if self._advancing:
            self._advance_again = True
            return
        self._advancing = True
        try:
            again = True
            while again:
                self._advance_again = False
                req = self.cur
                self.cur = None
                self.response_started = False
                now = self._loop.time()
                self._exchange.next(now)
                if req is None or not req.keep_alive or self.broken:
                    self.close()
                elif self._queue:
                    nxt = self.cur = self._queue.pop(0)
                    if not self._queue:
                        self.resume(P_PIPELINE)
                    if nxt.head_done:
                        self._exchange.start(nxt)
                    else:
                        self._head_since = now
                        if self._header_timeout > 0:
                            self._ensure_ctimer(now + self._header_timeout)
                else:
                    if self.pmask & P_PIPELINE:
                        self.resume(P_PIPELINE)
                    self._fresh = False
                    self._idle_since = now
                    timeout = self._keepalive_timeout
                    if timeout > 0 and (self._ctimer is None or self._cwhen > now + timeout):
                        self._ensure_ctimer(now + timeout)
                again = self._advance_again
        finally:
            self._advancing = False

    def close(self, linger: bool = False) -> None:
        """Close the connection once what is written is sent. With `linger`, half-close and
        read and discard for `LINGER_S` first, so that a client still sending sees the answer.
        The exchange is over now, even if the close takes seconds."""
        transport = self.transport
        if not self.closing and transport is not None:
            self.closing = True
            self._cancel_ctimer()
            if linger and transport.can_write_eof() and not transport.is_closing():
                transport.write_eof()
                self.pmask = 0
                transport.resume_reading()
                self._ctimer = self._loop.call_later(LINGER_S, transport.close)
            else:
                transport.close()
        self._exchange.close()

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

    def _cancel_ctimer(self) -> None:
        if self._ctimer is not None:
            self._ctimer.cancel()
            self._ctimer = None

    def _on_ctimer(self) -> None:
        """Client-side deadlines: idle keep-alive connection, slow header block."""
        self._ctimer = None
        if self.closing:
            return
        now = self._loop.time()
        header_timeout = self._header_timeout
        cur = self.cur
        if cur is None:
            limit = header_timeout if self._fresh else self._keepalive_timeout
            deadline = self._idle_since + limit
            if limit <= 0:
                return
            if now >= deadline:
                self.close()
            else:
                self._ensure_ctimer(deadline)
            return
        if not cur.head_done and self._req is cur and header_timeout > 0:
            since = self._head_since or self._idle_since
            deadline = since + header_timeout
            if now < deadline:
                self._ensure_ctimer(deadline)
                return
            self._metrics.client_errors += 1
            self._parser = None
            transport = self.transport
            assert transport is not None
            transport.write(error_response(408, "request headers not received in time", True))
            self._metrics.count_status(408)
            self.close(linger=True)
        # Otherwise an exchange is under way; `_advance` re-arms when it ends.

    def pause(self, reason: int) -> None:
        """Stop reading from the client for `reason` (a `P_*` bit) until `resume(reason)`."""
        if not self.pmask:
            transport = self.transport
            if transport is not None and not transport.is_closing():
                transport.pause_reading()
        self.pmask |= reason

    def resume(self, reason: int) -> None:
        if self.pmask & reason:
            self.pmask &= ~reason
            if not self.pmask:
                transport = self.transport
                if transport is not None and not transport.is_closing():
                    transport.resume_reading()


class PeerConnection(ClientConnection):
    """A connection to the peer listener (`GatewaySettings.peer_listen`): served as a trusted one
    (another gateway names the revision in `x-flint-revision`) only when it comes from the
    address of a peer of the current or the previous snapshot (`Router.peer_hosts`). Anyone else
    gets a 503 with `Retry-After` and `x-flint-peer-refused`, unread, and the connection closed,
    so nobody bypasses routing or limits through it. Not a 403: at connect time a gateway that
    joined in a snapshot newer than ours (a real peer, and we are behind) looks the same as a
    stranger, and the forwarding gateway sends a refused request again (it was never read)
    rather than pass the refusal on (`ReplicaUpstream.peer_refused`)."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: WorkerContext) -> None:
        super().__init__(ctx, trusted=True, peer=True)
        self._ctx = ctx

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        source = normal_ip(str(peer[0])) if isinstance(peer, tuple) and peer else ""
        if source not in self._ctx.router.peer_hosts:
            self._ctx.metrics.peer_refusals += 1
            log.warning("event=peer_refused source=%s (not a gateway peer of the snapshot)", source)
            cast(asyncio.Transport, transport).write(peer_refused_response())
            self.close()
