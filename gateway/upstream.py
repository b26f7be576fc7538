"""Upstream side of the proxy: one protocol per replica connection and the keep-alive pool.

The pool also bounds the connections being opened at once to one replica
(`upstream_connecting_per_replica`; the others wait for one of those, or for a pooled
connection) and sets `TCP_USER_TIMEOUT` on a fresh connection until its first response byte,
so that a replica whose accept queue overflowed is noticed in seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from flint_common.snapshot import Endpoint
from gateway.config import GatewaySettings
from gateway.headers import (
    R_CONNECTION,
    R_CONTENT_LENGTH,
    R_TRANSFER_ENCODING,
    R_UPGRADE,
    RESPONSE_KINDS,
    STANDARD_CONNECTION_TOKENS,
    connection_tokens,
    drop_named,
)
from gateway.home import UNIX_PREFIX

_PASS = -1
_kinds: dict[bytes, int] = {}
"""Response header name as sent → its kind in `RESPONSE_KINDS` or `_PASS` (bounded cache)."""
_KINDS_MAX = 1024

_PLAIN_CONNECTION = frozenset((b"keep-alive", b"Keep-Alive", b"close", b"Close"))


class UpstreamOwner(Protocol):
    """What an upstream connection reports to the exchange using it (`gateway.relay.Relay`)."""

    def up_headers(self, up: UpstreamConn, status: int) -> None: ...
    def up_body(self, data: bytes) -> None: ...
    def up_flush(self) -> None: ...
    def up_complete(self, up: UpstreamConn) -> None: ...
    def up_upgrade(self, up: UpstreamConn, tail: bytes) -> None: ...
    def up_lost(self, up: UpstreamConn, exc: Exception | None) -> None: ...
    def up_pause(self) -> None: ...
    def up_resume(self) -> None: ...
    def splice_to_client(self, data: bytes) -> None: ...


class UpstreamConn(asyncio.Protocol):
    """An HTTP/1.1 connection to one replica; parses responses for its current owner."""

    __slots__ = (
        "chunked",
        "closed",
        "complete",
        "conn_extra",
        "content_length",
        "endpoint_id",
        "fresh",
        "head_request",
        "headers",
        "idle_since",
        "in_pool",
        "interim",
        "junk",
        "keep_alive",
        "owner",
        "parser",
        "pool",
        "reason",
        "splice",
        "status",
        "transport",
        "upgrade",
        "write_paused",
    )

    def __init__(self, pool: UpstreamPool, endpoint_id: str) -> None:
        self.pool = pool
        self.endpoint_id = endpoint_id
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.owner: UpstreamOwner | None = None
        self.closed = False
        self.in_pool = False
        self.idle_since = 0.0
        self.splice = False
        self.write_paused = False
        self.head_request = False
        self.fresh = True
        """No byte of a response has come yet (a new connection): a failure now means the
        replica did not take the connection (`gateway.replica` treats it as overload)."""
        self._reset_response()

    def _reset_response(self) -> None:
        """Forget the response parsed last (or the interim one before the final response)."""
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.status = 0
        self.content_length: int | None = None
        self.chunked = False
        self.conn_extra: set[bytes] | None = None
        self.upgrade: bytes | None = None
        self.keep_alive = True
        self.complete = False
        self.interim = False
        self.junk = False

    # -- owner side ------------------------------------------------------------------------

    def begin(self, owner: UpstreamOwner, head_request: bool) -> None:
        """Attach to an exchange; the next response parsed belongs to `owner`."""
        if self.status or self.reason or self.headers:  # used before: start clean
            self._reset_response()
        self.owner = owner
        self.head_request = head_request
        if self.parser is None:
            self.parser = httptools.HttpResponseParser(self)

    def close(self) -> None:
        self.owner = None
        if self.transport is not None and not self.closed:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.pool.opened(self)

    def data_received(self, data: bytes) -> None:
        if self.fresh:
            self._answered()
        owner = self.owner
        if owner is None:
            # Data (or a late response) on an idle pooled connection: it cannot be trusted.
            self.close()
            return
        if self.splice:
            owner.splice_to_client(data)
            return
        parser = self.parser
        if parser is None:
            self.close()
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.parser = None
            if self.owner is owner:
                owner.up_upgrade(self, data[exc.args[0] :])
            return
        except httptools.HttpParserError:
            self.parser = None
            self.keep_alive = False
            attached = self.owner is owner
            self.close()  # detaches: connection_lost will not report again
            if attached:
                owner.up_lost(self, ConnectionError("malformed response from replica"))
            return
        if self.owner is not owner:
            return
        if self.complete:
            self.complete = False
            if self.head_request:
                self.parser = None  # it still expects the body a HEAD response never has
            owner.up_complete(self)
        else:
            owner.up_flush()

    def _answered(self) -> None:
        """The first response bytes: the replica took the connection; the accept-stall timeout
        is no longer wanted (a slow upload to a busy app must not be cut by it)."""
        self.fresh = False
        self.clear_user_timeout()

    def clear_user_timeout(self) -> None:
        """Drop the accept-stall timeout (`TCP_USER_TIMEOUT`) of this connection."""
        transport = self.transport
        if transport is not None and self.pool.user_timeout_ms:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.closed(self)
        if self.in_pool:
            self.pool.forget(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.up_lost(self, exc)

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.owner is not None:
            self.owner.up_pause()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.owner is not None:
            self.owner.up_resume()

    # -- httptools callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.junk = True
            return
        if self.interim:  # the final response after a 1xx
            self._reset_response()

    def on_status(self, status: bytes) -> None:
        self.reason = self.reason + status if self.reason else status

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        kind = _kinds.get(name)
        if kind is None:
            kind = RESPONSE_KINDS.get(name.lower(), _PASS)
            if len(_kinds) < _KINDS_MAX:
                _kinds[name] = kind
        if kind == _PASS:
            self.headers.append((name, value))
        elif kind == R_CONTENT_LENGTH:
            try:
                self.content_length = int(value)
            except ValueError:
                self.content_length = None
        elif kind == R_TRANSFER_ENCODING:
            self.chunked = value.rstrip().lower().endswith(b"chunked")
        elif kind == R_CONNECTION:
            if value in _PLAIN_CONNECTION:
                return
            tokens = connection_tokens(value)
            if not tokens <= STANDARD_CONNECTION_TOKENS:
                self.conn_extra = (self.conn_extra or set()) | tokens
        elif kind == R_UPGRADE:
            self.upgrade = value

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        parser = self.parser
        assert parser is not None
        status = parser.get_status_code()
        self.status = status
        self.keep_alive = parser.should_keep_alive()
        if self.conn_extra:
            self.headers = drop_named(self.headers, self.conn_extra)
        owner = self.owner
        if 100 <= status < 200 and status != 101:
            self.interim = True
            if owner is not None:
                owner.up_headers(self, status)
            return
        self.interim = False
        if owner is not None:
            owner.up_headers(self, status)
        if self.head_request and self.owner is owner:
            self.complete = True

    def on_body(self, data: bytes) -> None:
        if self.complete:
            self.junk = True
            return
        owner = self.owner
        if owner is not None:
            owner.up_body(data)

    def on_message_complete(self) -> None:
        if self.interim:
            return
        self.complete = True


class OverLimit(Exception):
    """`UpstreamPool.connect`'s `admit` said no: the endpoint is over its learned limit."""


class UpstreamPool:
    """Idle keep-alive connections per endpoint id, reused last-in first-out, and the bound
    on connections being opened at once per endpoint."""

    __slots__ = (
        "_connecting",
        "_idle",
        "_loop",
        "_max_connecting",
        "_open",
        "_settings",
        "_timer",
        "_waiting",
        "replay_limit",
        "user_timeout_ms",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: GatewaySettings) -> None:
        self._loop = loop
        self._settings = settings
        self._idle: dict[str, list[UpstreamConn]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._open: dict[str, int] = {}
        """endpoint id → open connections (idle or in use)."""
        self._connecting: dict[str, int] = {}
        """endpoint id → connections being opened."""
        self._waiting: dict[str, deque[asyncio.Future[None]]] = {}
        """endpoint id → requests waiting for one of its connect slots, in order."""
        self._max_connecting = max(1, settings.upstream_connecting_per_replica)
        self.user_timeout_ms = int(settings.upstream_user_timeout_s * 1000)
        self.replay_limit = settings.replay_buffer_bytes
        """Request bodies up to this size can be sent again (so the stall timeout is kept)."""

    async def connect(
        self, endpoint: Endpoint, admit: Callable[[], bool] | None = None, *, pooled: bool = True
    ) -> UpstreamConn:
        """A connection for a request to `endpoint`: a fresh one, or, when the request had to
        wait for a connect slot, one that came back to the pool meanwhile (`fresh` False; not
        when `pooled` is False).
        Raises OSError or TimeoutError (the connect timeout does not count the wait), or
        `OverLimit` when `admit()`, asked once a connect slot is had, says no.

        An endpoint whose host is `unix:<path>` is reached over that unix socket.
        """
        ep_id = endpoint.id
        n = self._connecting.get(ep_id, 0)
        if n < self._max_connecting:
            self._connecting[ep_id] = n + 1
        else:
            await self._wait_for_slot(ep_id)
            idle = self.get(ep_id) if pooled else None
            if idle is not None:
                self._slot_done(ep_id)
                return idle
        if admit is not None and not admit():
            self._slot_done(ep_id)
            raise OverLimit(ep_id)
        try:
            return await self._open_connection(endpoint)
        finally:
            self._slot_done(ep_id)

    async def _wait_for_slot(self, ep_id: str) -> None:
        """Wait until a connect slot of `ep_id` is handed over (FIFO)."""
        fut: asyncio.Future[None] = self._loop.create_future()
        self._waiting.setdefault(ep_id, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._slot_done(ep_id)  # handed over just as the request went away: pass it on
            raise

    def _slot_done(self, ep_id: str) -> None:
        """A connect of `ep_id` ended: hand its slot to the first waiter, or free it."""
        waiting = self._waiting.get(ep_id)
        while waiting:
            fut = waiting.popleft()
            if not fut.done():
                if not waiting:
                    del self._waiting[ep_id]
                fut.set_result(None)
                return
        self._waiting.pop(ep_id, None)
        n = self._connecting.get(ep_id, 0) - 1
        if n > 0:
            self._connecting[ep_id] = n
        else:
            self._connecting.pop(ep_id, None)

    async def _open_connection(self, endpoint: Endpoint) -> UpstreamConn:
        host = endpoint.host
        async with asyncio.timeout(self._settings.upstream_connect_timeout_s):
            if host.startswith(UNIX_PREFIX):  # another worker of this gateway (home worker)
                transport, proto = await self._loop.create_unix_connection(
                    lambda: UpstreamConn(self, endpoint.id), host[len(UNIX_PREFIX) :]
                )
            else:
                transport, proto = await self._loop.create_connection(
                    lambda: UpstreamConn(self, endpoint.id), host, endpoint.port
                )
                sock = transport.get_extra_info("socket")
                if self.user_timeout_ms and sock is not None:
                    with contextlib.suppress(OSError):  # not Linux, or already closed
                        sock.setsockopt(
                            socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, self.user_timeout_ms
                        )
        return proto

    def opened(self, conn: UpstreamConn) -> None:
        """`conn` is connected: one open connection more for its endpoint."""
        self._open[conn.endpoint_id] = self._open.get(conn.endpoint_id, 0) + 1

    def closed(self, conn: UpstreamConn) -> None:
        """`conn` is closed: one open connection fewer for its endpoint."""
        ep_id = conn.endpoint_id
        n = self._open.get(ep_id, 0) - 1
        if n > 0:
            self._open[ep_id] = n
        else:
            self._open.pop(ep_id, None)

    def serving(self, endpoint_id: str) -> int:
        """Connections to `endpoint_id` in use (open and not idle in the pool)."""
        return max(0, self._open.get(endpoint_id, 0) - len(self._idle.get(endpoint_id, ())))

    def connecting(self, endpoint_id: str) -> int:
        """Connections to `endpoint_id` being opened now."""
        return self._connecting.get(endpoint_id, 0)

    def get(self, endpoint_id: str) -> UpstreamConn | None:
        conns = self._idle.get(endpoint_id)
        if not conns:
            return None
        deadline = self._loop.time() - self._settings.upstream_keepalive_idle_s
        while conns:
            conn = conns.pop()
            conn.in_pool = False
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if conn.idle_since < deadline:
                conn.close()
                continue
            return conn
        return None

    def put(self, conn: UpstreamConn) -> None:
        """Keep `conn` for the next request to its endpoint, or close it if it cannot be reused."""
        limit = self._settings.upstream_keepalive_per_endpoint
        transport = conn.transport
        if (
            limit <= 0
            or not conn.keep_alive
            or conn.junk
            or conn.closed
            or conn.splice
            or conn.parser is None
            or transport is None
            or transport.is_closing()
        ):
            conn.close()
            return
        transport.resume_reading()
        conns = self._idle.get(conn.endpoint_id)
        if conns is None:
            conns = self._idle[conn.endpoint_id] = []
        if len(conns) >= limit:
            oldest = conns.pop(0)
            oldest.in_pool = False
            oldest.close()
        conn.owner = None
        conn.in_pool = True
        conn.idle_since = self._loop.time()
        conns.append(conn)
        if self._timer is None:
            self._arm()

    def forget(self, conn: UpstreamConn) -> None:
        conn.in_pool = False
        conns = self._idle.get(conn.endpoint_id)
        if conns:
            with contextlib.suppress(ValueError):
                conns.remove(conn)
            if not conns:
                del self._idle[conn.endpoint_id]

    def idle_count(self, endpoint_id: str | None = None) -> int:
        if endpoint_id is not None:
            return len(self._idle.get(endpoint_id, ()))
        return sum(len(c) for c in self._idle.values())

    def _arm(self) -> None:
        period = max(0.05, min(5.0, self._settings.upstream_keepalive_idle_s / 2))
        self._timer = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        deadline = self._loop.time() - self._settings.upstream_keepalive_idle_s
        for ep_id in list(self._idle):
            conns = self._idle[ep_id]
            keep = []
            for conn in conns:
                if conn.idle_since < deadline or conn.closed:
                    conn.in_pool = False
                    conn.close()
                else:
                    keep.append(conn)
            if keep:
                self._idle[ep_id] = keep
            else:
                del self._idle[ep_id]
        if self._idle:
            self._arm()

    def close(self) -> None:
        """Close every idle connection (worker shutdown, tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for conns in self._idle.values():
            for conn in conns:
                conn.in_pool = False
                conn.close()
        self._idle.clear()
