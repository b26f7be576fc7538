"""The two narrow interfaces between a client connection and the upstream side of its exchange.

`ClientSink` is what an exchange may do to its client connection (write, pause or resume its
reading, answer, move on, close); `gateway.client.ClientConnection` implements it.
`UpstreamPort` is where the client connection sends the active request's body once the
upstream side is ready: `gateway.replica.ReplicaUpstream` (a replica, or another worker) and
`gateway.local_upstream.LocalUpstream` (the broker ingress, answered by the gateway itself).
Typing against these keeps the modules free of import cycles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from gateway.request import ClientRequest

__all__ = [
    "P_PENDING",
    "P_PIPELINE",
    "P_QUEUED",
    "P_UPGRADE",
    "P_UPWRITE",
    "ClientSink",
    "UpstreamPort",
]

# Reasons the client transport's reading is paused (bit mask, `ClientSink.pause`).
P_PIPELINE = 1
"""A pipelined request waits for the active one to finish."""
P_PENDING = 2
"""Too much request body is buffered while the upstream connection is being set up."""
P_UPWRITE = 4
"""The upstream connection's write buffer is full."""
P_UPGRADE = 8
"""An upgrade request waits for the replica's 101."""
P_QUEUED = 16
"""The request waits in an activator queue with its body unread."""


class UpstreamPort(Protocol):
    """Takes the active request's body once the upstream side is ready for it."""

    needs_end: bool
    """Whether `end` must be called at the end of every body; otherwise only of a chunked one
    (a sized body ends by its length)."""

    def body(self, req: ClientRequest, data: bytes) -> None: ...
    def end(self, req: ClientRequest) -> None: ...


class ClientSink(Protocol):
    """The client connection, as its exchange and the upstream ports see it."""

    transport: asyncio.Transport | None
    cur: ClientRequest | None
    """The active request (the one being answered), if any."""
    closing: bool
    broken: bool
    """A pipelined request was malformed: close once the active exchange is over."""
    trusted: bool
    """The connection comes from another worker of this gateway (the unix listener)."""
    for_node: bytes
    """The peer as a `Forwarded: for=` value."""
    client_ip: bytes
    """The peer's address for `X-Forwarded-For`."""
    pmask: int
    """Why reading is paused now (`P_*` bits)."""
    write_paused: bool
    """The client transport's write buffer is full (the upstream's reading is paused too)."""
    response_started: bool
    """Bytes of the active request's response have been written."""
    splice: bool
    """The connection was upgraded: raw bytes both ways."""
    sink: UpstreamPort | None
    """Where the active request's body goes; None while the upstream side is not ready (the
    body is buffered in `ClientRequest.pending`)."""

    def pause(self, reason: int) -> None: ...
    def resume(self, reason: int) -> None: ...
    def respond_error(self, status: int, message: str, retry_after: bool = False) -> None: ...
    def respond_local(self, status: int, render: Callable[[bool], bytes]) -> None: ...
    def advance(self) -> None: ...
    def close(self, linger: bool = False) -> None: ...
