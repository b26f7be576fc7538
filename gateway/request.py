"""One HTTP/1.1 request as the client side has parsed it so far (plain data, no I/O).

The client connection fills it from httptools' callbacks; the exchange reads its head to route
it, and the upstream ports send its buffered body on (`pending`) or again after a reset
connection (`replay`).
"""

from __future__ import annotations

__all__ = ["ClientRequest"]


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
        "from_peer",
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
        "proxy_connection",
        "replay",
        "replay_size",
        "response_done",
        "status",
        "tag",
        "tail",
        "traceparent",
        "upgrade",
        "upgrade_value",
        "url",
        "xff",
    )

    from_peer: bool
    """Forwarded by another gateway (see `from_peer_hop`); set only when true, never in __init__."""

    def __init__(self) -> None:
        self.method = b"GET"
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.hsize = 0
        self.host: bytes | None = None
        self.tag: bytes | None = None
        self.conn: bytes | None = None
        self.proxy_connection = False
        """A Proxy-Connection header came (dropped; llhttp reads it as it reads Connection)."""
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
        self.status = 0
        """The status answered, once a response has begun (0 before): a replica's, or the
        gateway's own error or answer. Counted per route when the exchange finishes."""
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
        # `from_peer` is set only on the rare request that has it (read it with `from_peer`):
        # the hot path does not pay for one more attribute per request.

    @property
    def from_peer_hop(self) -> bool:
        """Forwarded by another gateway (`x-flint-peer`, from a worker whose peer listener took
        it; trusted socket only): it is never forwarded to a gateway again."""
        return getattr(self, "from_peer", False)

    @property
    def body_expected(self) -> bool:
        """The request announced a body (chunked, or a Content-Length above 0)."""
        return self.chunked or bool(self.content_length)
