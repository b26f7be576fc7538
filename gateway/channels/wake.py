"""Cross-process wake-ups: the log's writer tells the dispatcher at once that a log grew.

`SqliteChannelLog.wait` wakes waiters in the writing process only; the dispatcher reads the
logs from another process. After each committed append the broker ingress sends one unix
datagram naming the log (its id, e.g. the broker's uid) to the dispatcher's socket
(`wake_socket_path`). Datagrams are hints, never data: a lost one (no dispatcher yet, a full
socket buffer) costs latency only, because the dispatcher also re-reads every log's tail on a
slow timer. Sending never blocks the event loop: the socket is non-blocking and every error is
swallowed (and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["WakeReceiver", "WakeSender", "wake_socket_path"]

MAX_ID_BYTES = 512
"""Longest log id carried by one datagram."""


def wake_socket_path(state_dir: Path) -> Path:
    """The dispatcher's datagram socket in the state dir."""
    return state_dir / "eventing" / "dispatcher.wake.sock"


class WakeSender:
    """Sends "log X grew" datagrams to the dispatcher (fire and forget)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
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


class WakeReceiver:
    """The dispatcher's end: calls `on_wake(log_id)` for every datagram received."""

    def __init__(self, path: Path, on_wake: Callable[[str], None]) -> None:
        self.path = path
        self._on_wake = on_wake
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(self.path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_wake), sock=sock
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
