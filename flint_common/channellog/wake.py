"""Cross-process wake-ups: the log's writer tells the dispatcher at once that a log grew.

`SqliteChannelLog.wait` wakes waiters in the writing process only; the dispatcher reads the
logs from another process. After each committed append the broker ingress sends one unix
datagram naming the log (its id, e.g. the broker's uid) to the dispatcher's socket,
`<state>/eventing/wake.sock`.

It is a socket *file* in the 0700 state dir, so only the owner can send to it or bind it: an
abstract socket has no permissions, its name is listed in the world-readable /proc/net/unix, and
another user could take it over when a dispatcher restarts. The dispatcher binds it under its
single-instance lock (`eventing/dispatcher.lock`, in `controller.eventing.dispatcher`), so a
second dispatcher for the same state dir fails before it could take the socket from the first.
Its path must fit a unix socket address (107 bytes), as the gateway's worker sockets must.

Datagrams are hints, never data: a lost one (no dispatcher yet, a full socket buffer) costs
latency only, because the dispatcher also re-reads every log's tail on a slow timer. Sending
never blocks the event loop: the socket is non-blocking and every error is swallowed (and
counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAX_SOCKET_PATH_BYTES", "WakeReceiver", "WakeSender", "wake_path"]

MAX_ID_BYTES = 512
"""Longest log id carried by one datagram."""
MAX_SOCKET_PATH_BYTES = 107
"""Longest unix socket path (sun_path is 108 bytes including the NUL)."""


def wake_path(state_dir: Path) -> Path:
    """The dispatcher's datagram socket."""
    return state_dir / "eventing" / "wake.sock"


class WakeSender:
    """Sends "log X grew" datagrams to the dispatcher of `state_dir` (fire and forget)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = str(wake_path(state_dir))
        self.sent = 0
        self.failed = 0
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def notify(self, log_id: str) -> None:
        data = log_id.encode()[:MAX_ID_BYTES]
        try:
            self._sock.sendto(data, self.path)
            self.sent += 1
        except OSError:  # no dispatcher listening, or its buffer is full: it polls anyway
            self.failed += 1

    def close(self) -> None:
        self._sock.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_wake: Callable[[str], None]) -> None:
        self._on_wake = on_wake

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._on_wake(data.decode(errors="replace"))


def _bind(path: Path) -> socket.socket:
    """A datagram socket bound at `path`, replacing a stale one (the caller holds the
    dispatcher lock, so no live dispatcher owns it). Blocking: file I/O."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"the wake socket path is too long for a unix socket "
                         f"({len(os.fsencode(path))} bytes, {MAX_SOCKET_PATH_BYTES} at most): {path}")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # the 0700 directory keeps others out already; the file too
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class WakeReceiver:
    """The dispatcher's end: binds `wake.sock` (hold the dispatcher's lock first) and calls
    `on_wake(log_id)` for every datagram received."""

    def __init__(self, state_dir: Path, on_wake: Callable[[str], None]) -> None:
        self.path = wake_path(state_dir)
        self._on_wake = on_wake
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        sock = await asyncio.to_thread(_bind, self.path)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_wake), sock=sock
        )

    def close(self) -> None:
        """Stop receiving (the socket file stays until the next dispatcher replaces it)."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
