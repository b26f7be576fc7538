"""The response side of an exchange with a replica (or with another worker): relay it.

`Relay` is what the exchange hands a routed request to. Its `ReplicaUpstream` sends the request;
the relay gets the response's events from the connection (`UpstreamOwner`) and writes the
response to the client with the framing the client's HTTP version allows (length, chunked, or
close-delimited; a head and the first body bytes of one read in one write), splices an upgraded
connection, and enforces the revision's deadlines: a response must start in time (else 504),
and a streaming response must not stall longer than its idle timeout. One per client
connection, reused by its requests.
"""

from __future__ import annotations

import asyncio

from flint_common.snapshot import Endpoint, RevisionTarget
from gateway.activator import INF
from gateway.headers import COLON, CONTINUE, CRLF, REASONS, STATUS_LINES
from gateway.ports import P_PENDING, P_PIPELINE, P_UPGRADE, P_UPWRITE, ClientSink
from gateway.proxy_metrics import ProxyMetrics
from gateway.replica import LAST_CHUNK, ReplicaUpstream, Requeue
from gateway.router import Router
from gateway.upstream import UpstreamConn, UpstreamPool

__all__ = ["Relay"]

# Response framing toward the client.
M_NONE = 0
M_SIZED = 1
M_CHUNKED = 2
M_CLOSE = 3

_NO_BODY_STATUS = frozenset((204, 304))


class Relay:
    """Sends one client connection's requests to replicas and relays their responses."""

    __slots__ = (
        "_client",
        "_idle_timeout",
        "_last_io",
        "_loop",
        "_metrics",
        "_out_head",
        "_replica",
        "_resp_close",
        "_resp_mode",
        "_rev",
        "_start_deadline",
        "_start_timeout",
        "_utimer",
        "_uwhen",
    )

    def __init__(
        self,
        client: ClientSink,
        router: Router,
        pool: UpstreamPool,
        loop: asyncio.AbstractEventLoop,
        metrics: ProxyMetrics,
        on_requeue: Requeue | None = None,
    ) -> None:
        """`on_requeue`: the exchange's, for a request a busy replica did not take."""
        self._client = client
        self._loop = loop
        self._metrics = metrics
        self._replica = ReplicaUpstream(
            client, router, pool, loop, metrics, owner=self, on_failed=self._failed,
            on_requeue=on_requeue,
        )
        self._rev: RevisionTarget | None = None
        self._utimer: asyncio.TimerHandle | None = None
        self._uwhen = 0.0
        self._start_deadline = 0.0
        self._start_timeout = 0.0
        self._idle_timeout = 0.0
        self._last_io = 0.0
        self._out_head: bytes | None = None
        self._resp_mode = M_NONE
        self._resp_close = False

    def begin(
        self, rev: RevisionTarget, ep: Endpoint, head: bytes, now: float, t0: float,
        deadline: float, via_home: bool,
    ) -> None:
        """Send the active request to `ep` (a slot reserved on a replica of `rev`, or a home
        worker: `via_home`) and relay the response. `deadline` bounds the whole exchange,
        which started at `t0`."""
        self._rev = rev
        self._resp_mode = M_NONE
        self._resp_close = False
        if not via_home:  # a home worker applies the revision's own response-start timeout
            start = rev.response_start_timeout_s
            if start > 0 and now + start < deadline:
                deadline = now + start
        self._start_timeout = (deadline - t0) if deadline < INF else 0.0
        self._idle_timeout = rev.idle_timeout_s
        if deadline < INF:
            self._start_deadline = deadline
            if self._utimer is None or self._uwhen > deadline:
                self._ensure_utimer(deadline)
        else:
            self._start_deadline = 0.0
        self._replica.begin(rev, ep, head, via_home)

    def splice_in(self, data: bytes) -> None:
        """Raw bytes from the client of an upgraded connection."""
        self._replica.splice_in(data)

    def client_paused(self, paused: bool) -> None:
        """The client's write buffer filled up (or drained): stop (or resume) reading the replica."""
        self._replica.client_paused(paused)

    # -- UpstreamOwner: the response ----------------------------------------------------------

    def up_headers(self, up: UpstreamConn, status: int) -> None:
        client = self._client
        req = client.cur
        transport = client.transport
        if req is None or transport is None or client.closing:
            return
        if status < 200 and status != 101:
            if status == 100 and req.expect and not req.http10:
                transport.write(CONTINUE)
            return
        if status == 503 and self._replica.peer_refused(up):
            return
        client.response_started = True
        upgrade = status == 101 and req.upgrade
        line = STATUS_LINES.get(status)
        if line is None or up.reason != REASONS[status]:
            line = b"HTTP/1.1 %d %s\r\n" % (status, up.reason)
        parts = [line]
        for name, value in up.headers:
            parts += (name, COLON, value, CRLF)
        close = not req.keep_alive or client.broken or (req.upgrade and not upgrade)
        length = up.content_length
        if upgrade:
            mode = M_NONE
            parts += (b"Connection: Upgrade\r\nUpgrade: ", up.upgrade or b"", CRLF)
        elif req.method == b"HEAD" or status in _NO_BODY_STATUS:
            mode = M_NONE
            if length is not None:
                parts.append(b"Content-Length: %d\r\n" % length)
        elif length is not None and not up.chunked:
            mode = M_SIZED
            parts.append(b"Content-Length: %d\r\n" % length)
        elif up.chunked and not req.http10:
            mode = M_CHUNKED
            parts.append(b"Transfer-Encoding: chunked\r\n")
        else:
            mode = M_CLOSE
            close = True
        if upgrade or mode >= M_CHUNKED:  # long-lived: not counted against a learned limit
            self._replica.streaming()
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
        req.status = status
        if self._idle_timeout > 0 and not upgrade:
            self._last_io = now = self._loop.time()
            self._ensure_utimer(now + self._idle_timeout)

    def up_flush(self) -> None:
        """End of one upstream read: write a response head still held back."""
        head = self._out_head
        if head is not None:
            self._out_head = None
            client = self._client
            transport = client.transport
            if transport is not None and not client.closing:
                transport.write(head)

    def up_body(self, data: bytes) -> None:
        client = self._client
        transport = client.transport
        if transport is None or client.closing:
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
        client = self._client
        req = client.cur
        if req is None or up is not self._replica.up:
            up.close()
            return
        if up.status == 101 and req.upgrade:
            self.up_upgrade(up, b"")
            return
        transport = client.transport
        if transport is not None and not client.closing:
            head = self._out_head
            if head is not None:
                self._out_head = None
                if self._resp_mode == M_CHUNKED:
                    head += LAST_CHUNK
                transport.write(head)
            elif self._resp_mode == M_CHUNKED:
                transport.write(LAST_CHUNK)
        # `stop` less its start-deadline reset, moot once a response has started (hot path)
        self._replica.stop(reuse=req.complete)
        req.response_done = True
        if self._resp_close or not req.complete:
            req.keep_alive = False
            client.close(linger=not req.complete)
        else:
            client.advance()

    def up_upgrade(self, up: UpstreamConn, tail: bytes) -> None:
        client = self._client
        req = client.cur
        transport = client.transport
        self.up_flush()
        if req is None or transport is None or not (up.status == 101 and req.upgrade):
            self.stop(reuse=False)
            client.close()
            return
        client.splice = True
        up.splice = True
        self._metrics.active_upgrades += 1
        if tail:
            transport.write(tail)
        if req.tail and up.transport is not None:
            up.transport.write(req.tail)
        client.pmask &= ~(P_UPGRADE | P_PIPELINE | P_PENDING)
        if not client.pmask:
            transport.resume_reading()

    def up_lost(self, up: UpstreamConn, exc: Exception | None) -> None:
        replica = self._replica
        if up is not replica.up:
            return
        self.up_flush()
        client = self._client
        replica.lost()
        if client.splice:
            replica.release()
            client.close()
            return
        req = client.cur
        if req is None:
            replica.release()
            return
        if client.response_started:
            if self._resp_mode == M_CLOSE:
                # Close-delimited response: the upstream's EOF ends it.
                replica.answered()
                self.stop(reuse=False)
                req.response_done = True
                req.keep_alive = False
                client.close(linger=not req.complete)
            else:
                self._metrics.upstream_errors += 1
                self.stop(reuse=False)
                client.close()
            return
        self._metrics.upstream_errors += 1
        if replica.retry(req, up.fresh):
            return
        rev = self._rev
        key = rev.key if rev is not None else "?"
        self._failed(502, f"a replica of revision {key} closed the connection before responding")

    def up_pause(self) -> None:
        self._client.pause(P_UPWRITE)

    def up_resume(self) -> None:
        self._client.resume(P_UPWRITE)

    def splice_to_client(self, data: bytes) -> None:
        transport = self._client.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    # -- endings ----------------------------------------------------------------------------

    def stop(self, reuse: bool) -> None:
        """End the upstream side: the connection pooled (if `reuse`) or closed, the slot
        released, no deadline left. Idempotent."""
        self._start_deadline = 0.0
        self._replica.stop(reuse)

    def _failed(self, status: int, message: str, retry_after: bool = False) -> None:
        """The exchange failed before or while relaying: answer `status` if nothing was."""
        self.stop(reuse=False)
        client = self._client
        if client.response_started:
            client.close()
        else:
            client.respond_error(status, message, retry_after)

    # -- exchange timer ---------------------------------------------------------------------

    def _ensure_utimer(self, when: float) -> None:
        handle = self._utimer
        if handle is not None:
            if self._uwhen <= when:
                return
            handle.cancel()
        self._uwhen = when
        self._utimer = self._loop.call_at(when, self._on_utimer)

    def waiting(self) -> None:
        """The request went back to its queue: no response-start deadline while it waits
        (`timeoutSeconds` still bounds it there); `begin` sets one again."""
        self._start_deadline = 0.0

    def cancel_timer(self) -> None:
        if self._utimer is not None:
            self._utimer.cancel()
            self._utimer = None

    def _on_utimer(self) -> None:
        """Exchange deadlines: response start (504) and, once streaming, the idle gap."""
        self._utimer = None
        client = self._client
        cur = client.cur
        rev = self._rev
        if client.closing or cur is None or rev is None or client.splice:
            return
        now = self._loop.time()
        if not client.response_started:
            deadline = self._start_deadline
            if not deadline:
                return
            if now < deadline:
                self._ensure_utimer(deadline)
                return
            self._metrics.upstream_timeouts += 1
            self._metrics.upstream_errors += 1
            self._failed(
                504, f"revision {rev.key} did not start a response within {self._start_timeout:g} s"
            )
            return
        if self._idle_timeout <= 0 or cur.response_done:
            return
        deadline = self._last_io + self._idle_timeout
        if now < deadline:
            self._ensure_utimer(deadline)
            return
        self._metrics.upstream_timeouts += 1
        self.stop(reuse=False)
        client.close()
