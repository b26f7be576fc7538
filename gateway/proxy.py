"""The gateway's hot path: HTTP/1.1 reverse proxying with asyncio Protocols and httptools."""

from __future__ import annotations

import asyncio

import httptools

from gateway.activator import INF, Activator, Rejection, Ticket
from gateway.client import (
    P_PENDING,
    P_PIPELINE,
    P_QUEUED,
    P_UPGRADE,
    P_UPWRITE,
    ClientRequest,
    ProxyMetrics,
    RouteCounter,
)
from gateway.config import Endpoint, RevisionTarget
from gateway.context import WorkerContext
from gateway.headers import (
    COLON,
    CONTINUE,
    CRLF,
    H_INTERNAL_REVISION,
    H_INTERNAL_ROUTE,
    REASONS,
    STATUS_LINES,
    forwarding_headers,
    new_traceparent,
)
from gateway.ingress import HOST_PREFIXES
from gateway.proxy_ingress import IngressExchange
from gateway.router import RouteMiss
from gateway.stats import RevStats
from gateway.upstream import UpstreamConn

HOME_SLACK_S = 1.0
"""A request forwarded to its revision's home worker waits this much longer than the
revision's timeout, so that the home worker's own 504 (which knows why) reaches the client."""

__all__ = ["ProxyMetrics", "ProxyProtocol"]


# Response framing toward the client.
M_NONE = 0
M_SIZED = 1
M_CHUNKED = 2
M_CLOSE = 3

_LAST_CHUNK = b"0\r\n\r\n"
_NO_BODY_STATUS = frozenset((204, 304))


class ProxyProtocol(IngressExchange):
    """A client connection that routes each request to a replica and relays the exchange."""

    __slots__ = (
        "_connect_task",
        "_counter",
        "_ctx",
        "_ep",
        "_failed_over",
        "_fwd_block",
        "_fwd_host",
        "_head",
        "_idle_timeout",
        "_last_io",
        "_out_head",
        "_pool",
        "_public",
        "_resp_close",
        "_resp_mode",
        "_retried",
        "_reused",
        "_rev",
        "_route_key",
        "_router",
        "_rs",
        "_start_deadline",
        "_start_timeout",
        "_status",
        "_t0",
        "_ticket",
        "_total_deadline",
        "_up",
        "_uwhen",
        "_via_home",
    )

    def __init__(self, ctx: WorkerContext, *, trusted: bool = False, public: bool = False) -> None:
        """`trusted`: accepted on the unix socket on which the other workers forward requests
        (their `x-flint-*` headers are honoured; counted in `ctx.home_metrics`). `public`:
        accepted on a `--listen` address, where cluster-local routes are not served."""
        super().__init__(ctx.settings, ctx.home_metrics if trusted else ctx.metrics, ctx.loop)
        self._router = ctx.router
        self._pool = ctx.pool
        self._ctx = ctx
        self._trusted = trusted
        self._public = public
        self._ticket: Ticket | None = None
        self._rs: RevStats | None = None
        self._route_key = ""
        self._counter: RouteCounter | None = None
        self._status = 0
        self._t0 = 0.0
        self._total_deadline = INF
        self._via_home = False
        self._rev: RevisionTarget | None = None
        self._ep: Endpoint | None = None
        self._up: UpstreamConn | None = None
        self._reused = False
        self._retried = False
        self._failed_over = False
        self._connect_task: asyncio.Task[None] | None = None
        self._head = b""
        self._fwd_host = b""
        self._fwd_block = b""
        self._uwhen = 0.0
        self._start_deadline = 0.0
        self._start_timeout = 0.0
        self._out_head: bytes | None = None
        self._idle_timeout = 0.0
        self._last_io = 0.0
        self._resp_mode = M_NONE
        self._resp_close = False
        self._init_ingress()

    # -- flow control toward the upstream ---------------------------------------------------

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

    # -- the exchange -----------------------------------------------------------------------

    def _start(self, req: ClientRequest) -> None:
        """Route a request whose headers are complete and send it to a replica (or queue it)."""
        metrics = self._metrics
        metrics.requests_total += 1
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
        ctx = self._ctx
        if host.startswith(HOST_PREFIXES):
            ingress = ctx.ingress
            kind = ingress.kind_of(host)
            if kind is not None:
                self._start_ingress(ingress, kind, req, host)
                return
        router = self._router
        if req.internal_rev is not None:
            # Forwarded by another worker: this worker is the revision's home.
            key = req.internal_rev.decode("latin-1")
            current = router.current(key)
            if current is None:
                self._respond_error(
                    503, f"revision {key} is not in this worker's routing snapshot", retry_after=True
                )
                return
            target = current
            self._route_key = (req.internal_route or b"").decode("latin-1")
        else:
            found = router.route_raw(host, req.tag)
            if isinstance(found, RouteMiss):
                if found.reason == "unknown-host":
                    self._respond_unknown_host(found.host)
                else:
                    self._respond_error(503, found.message, retry_after=True)
                return
            if found.cluster_local and self._public:
                # Knative's cluster-local visibility: not exposed on a public listener, and
                # answered exactly as a host nothing routes (this worker accepted the client,
                # so a request forwarded to a home worker has passed here first).
                self._respond_unknown_host(host.decode("latin-1"))
                return
            self._route_key = found.route
            target = found.target
            key = target.key
        self._rev = target
        self._t0 = now = self._loop.time()
        self._status = 0
        metrics.inflight_requests += 1
        home = ctx.home
        if home is not None and target.container_concurrency > 0:
            home_ep = home.endpoint_for(key) if req.internal_rev is None else None
            if home_ep is not None:
                # Another worker owns this revision's limit, queue and stats.
                self._to_home(home_ep, req, host, key, target.timeout_s, now)
                return
        self._head = self._build_head(req, host)
        timeout = target.timeout_s
        self._total_deadline = now + timeout if timeout > 0 else INF
        act = ctx.activator
        self._rs = ctx.stats.enter(key, now)
        if target.failure or not target.endpoints:
            refusal = act.refuse(target)
            if refusal is not None:
                self._respond_error(refusal.status, refusal.message, retry_after=True)
                return
        ep = None if act.has_waiters(key) else router.acquire(target)
        if ep is not None:
            self._begin(ep, now)
            return
        self._enqueue(act, target, req, now)

    def _respond_unknown_host(self, host: str) -> None:
        self._respond_error(404, f"no route for host {host!r}")

    def _to_home(
        self, home_ep: Endpoint, req: ClientRequest, host: bytes, key: str, timeout: float, now: float
    ) -> None:
        """Forward the active request to the worker that owns `key` (a limited revision's limit
        and queue, or a log's writes); it waits a little longer than that worker would."""
        self._via_home = True
        self._metrics.home_forwards += 1
        self._head = self._build_head(req, host, key)
        self._total_deadline = now + timeout + HOME_SLACK_S if timeout > 0 else INF
        self._begin(home_ep, now)

    def _forward_ingress(
        self, target: RevisionTarget, home: Endpoint, req: ClientRequest, host: bytes
    ) -> None:
        self._rev = target
        self._route_key = "broker-ingress"
        self._t0 = now = self._loop.time()
        self._status = 0
        self._metrics.inflight_requests += 1
        self._to_home(home, req, host, target.key, target.timeout_s, now)

    def _enqueue(self, act: Activator, target: RevisionTarget, req: ClientRequest, now: float) -> None:
        """No routable replica or no free slot: wait in the revision's queue."""
        body_bytes = req.pending_size
        if req.body_expected and not req.complete:
            length = req.content_length
            if length is not None and length <= self._settings.queue_body_buffer_bytes:
                body_bytes = max(body_bytes, length)  # small: read and buffered while waiting
            else:
                self._pause(P_QUEUED)  # stays unread in the socket until forwarded
        res = act.enqueue(target, self, now, deadline=self._total_deadline, body_bytes=body_bytes)
        if isinstance(res, Rejection):
            self._resume(P_QUEUED)
            act.rejections += 1
            self._respond_error(res.status, res.message, retry_after=True)
            return
        self._ticket = res

    # -- Waiter (the activator's callbacks) ---------------------------------------------------

    def granted(self, rev: RevisionTarget, ep: Endpoint, ticket: Ticket, now: float) -> None:
        """A slot on `ep` was reserved for the queued request."""
        if self._ticket is not ticket or self._cur is None or self._closing:
            self._router.release(ep.id)
            return
        self._ticket = None
        if ticket.cold:
            self._ctx.activator.count_cold_start(rev.key, now - ticket.enqueued)
        self._rev = rev
        self._resume(P_QUEUED)
        self._begin(ep, now)

    def rejected(self, status: int, message: str) -> None:
        """The queued request failed (timed out, revision failed or gone)."""
        self._ticket = None
        self._resume(P_QUEUED)
        self._respond_error(status, message, retry_after=status == 503)

    def _begin(self, ep: Endpoint, now: float) -> None:
        """Send the active request to `ep` (a reserved slot, or a home worker)."""
        target = self._rev
        assert target is not None
        self._ep = ep
        self._failed_over = False
        self._retried = False
        deadline = self._total_deadline
        if not self._via_home:
            start = target.response_start_timeout_s
            if start > 0:
                deadline = min(deadline, now + start)
        self._start_timeout = (deadline - self._t0) if deadline < INF else 0.0
        self._idle_timeout = target.idle_timeout_s
        if deadline < INF:
            self._start_deadline = deadline
            if self._utimer is None or self._uwhen > deadline:
                self._ensure_utimer(deadline)
        else:
            self._start_deadline = 0.0
        self._dispatch(ep, fresh=False)

    def _build_head(self, req: ClientRequest, host: bytes, home_key: str | None = None) -> bytes:
        parts = [req.method, b" ", req.url, b" HTTP/1.1\r\n"]
        for name, value in req.headers:
            parts += (name, COLON, value, CRLF)
        if self._trusted:
            # From another worker, which already appended this hop's forwarding headers.
            if req.forwarded:
                parts += (b"Forwarded: ", req.forwarded, CRLF)
            if req.xff:
                parts += (b"X-Forwarded-For: ", req.xff, CRLF)
            parts += (b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: ", host, CRLF)
        elif req.forwarded or req.xff:
            forwarding_headers(parts, req.forwarded, req.xff, self._for_node, self._client_ip, host)
        else:  # the usual case: the same block for every request of this connection to `host`
            if host != self._fwd_host:
                block: list[bytes] = []
                forwarding_headers(block, None, None, self._for_node, self._client_ip, host)
                self._fwd_block = b"".join(block)
                self._fwd_host = host
            parts.append(self._fwd_block)
        if home_key is not None:
            parts += (
                H_INTERNAL_REVISION, b": ", home_key.encode("latin-1"), CRLF,
                H_INTERNAL_ROUTE, b": ", self._route_key.encode("latin-1"), CRLF,
            )
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
        """Attach a pooled connection to `ep` (unless `fresh`), or connect a new one."""
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
        if self._via_home:
            self._upstream_failed(
                503,
                f"the gateway worker that owns revision {rev.key} is not reachable: "
                f"{str(exc) or type(exc).__name__}",
                retry_after=True,
            )
            return
        if not self._failed_over:
            self._failed_over = True
            current = self._router.current(rev.key)  # never a stale (maybe removed) endpoint
            other = None if current is None else self._router.acquire(current, exclude=(ep.id,))
            if other is not None:
                self._ep = other
                self._dispatch(other, fresh=False)
                return
        reason = str(exc) or type(exc).__name__
        self._upstream_failed(502, f"could not connect to a replica of revision {rev.key}: {reason}")

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
        if req.pending:
            req.pending = []
            req.pending_size = 0
        if self._pmask & P_PENDING:
            self._resume(P_PENDING)
        self._up_ready = True

    def _forward_body(self, req: ClientRequest, data: bytes) -> None:
        up = self._up
        if up is None:  # answered here (broker ingress): collect the body
            self._ingress_body(req, data)
            return
        assert up.transport is not None
        if req.chunked:
            up.transport.writelines((b"%x\r\n" % len(data), data, CRLF))
        else:
            up.transport.write(data)

    def _forward_end(self) -> None:
        up = self._up
        if up is None:  # answered here (broker ingress): the body is complete
            self._ingress_run()
            return
        assert up.transport is not None
        up.transport.write(_LAST_CHUNK)

    def _splice_in(self, data: bytes) -> None:
        up = self._up
        if up is not None and up.transport is not None:
            up.transport.write(data)

    def _finish(self) -> None:
        """The exchange is over: count it (stats, metrics) and leave any queue. Idempotent."""
        ticket = self._ticket
        if ticket is not None:
            self._ticket = None
            self._ctx.activator.cancel(ticket)
        rev = self._rev
        if rev is None or not self._t0:
            return
        now = self._loop.time()
        rs = self._rs
        if rs is not None:
            self._rs = None
            rs.leave(now)
        self._metrics.inflight_requests -= 1
        if self._status and not self._trusted:
            counter = self._counter
            route = self._route_key
            key = rev.key
            if counter is None or counter.route != route or counter.revision != key:
                counter = self._counter = self._metrics.counter(route, key)
            counter.count(self._status, now - self._t0)
        self._t0 = 0.0

    def _respond_error(self, status: int, message: str, retry_after: bool = False) -> None:
        if self._rev is not None and not self._status:
            self._status = status
        super()._respond_error(status, message, retry_after)

    def _reset_exchange(self) -> None:
        self._finish()
        if self._local:
            self._reset_ingress()
        self._via_home = False
        self._status = 0
        self._rev = None
        self._resp_mode = M_NONE
        self._resp_close = False
        self._reused = False
        self._retried = False

    # -- UpstreamOwner ----------------------------------------------------------------------

    def up_headers(self, up: UpstreamConn, status: int) -> None:
        req = self._cur
        transport = self.transport
        if req is None or transport is None or self._closing:
            return
        if status < 200 and status != 101:
            if status == 100 and req.expect and not req.http10:
                transport.write(CONTINUE)
            return
        self._resp_started = True
        upgrade = status == 101 and req.upgrade
        line = STATUS_LINES.get(status)
        if line is None or up.reason != REASONS[status]:
            line = b"HTTP/1.1 %d %s\r\n" % (status, up.reason)
        parts = [line]
        for name, value in up.headers:
            parts += (name, COLON, value, CRLF)
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
        self._status = status
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
        self._upstream_failed(502, f"a replica of revision {key} closed the connection before responding")

    def up_complete_eof(self, req: ClientRequest) -> None:
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
            if not self._via_home:  # a home worker is not a balancer slot
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
            up.owner = None  # detach
            if reuse:
                self._pool.put(up)  # closes it unless reusable
            else:
                up.close()
        self._up_ready = False
        if self._pmask & P_UPWRITE:
            self._resume(P_UPWRITE)
        self._release_ep()
        if self._closing:
            self._finish()

    def _close_client(self, linger: bool = False) -> None:
        super()._close_client(linger)
        self._finish()  # a lingering close may take seconds: the exchange is over now

    def _upstream_failed(self, status: int, message: str, retry_after: bool = False) -> None:
        self._end_exchange(reuse=False)
        if self._resp_started:
            self._close_client()
        else:
            self._respond_error(status, message, retry_after)

    def _body_too_large(self, req: ClientRequest) -> None:
        self._metrics.client_errors += 1
        started = self._resp_started
        self._end_exchange(reuse=False)
        if started:
            self._close_client()
        else:
            self._respond_error(413, f"request body exceeds the limit of {self._max_body} bytes")

    # -- exchange timer ---------------------------------------------------------------------

    def _ensure_utimer(self, when: float) -> None:
        handle = self._utimer
        if handle is not None:
            if self._uwhen <= when:
                return
            handle.cancel()
        self._uwhen = when
        self._utimer = self._loop.call_at(when, self._on_utimer)

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
                f"revision {self._rev.key} did not start a response within {self._start_timeout:g} s",
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
