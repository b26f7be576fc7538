"""Cross-process wake-ups: the log's writer tells the dispatcher at once that a log grew.

`SqliteChannelLog.wait` wakes waiters in the writing process only; the dispatcher reads the
logs from another process. After each committed append the broker ingress sends one unix
datagram naming the log (its id, e.g. the broker's uid) to the dispatcher's socket
(`wake_address`: an abstract unix socket named after the state dir — no file, so no stale socket
after a crash and no 108-byte path limit, and a second dispatcher for the same state dir cannot
bind it). Datagrams are hints, never data: a lost one (no dispatcher yet, a full
socket buffer) costs latency only, because the dispatcher also re-reads every log's tail on a
slow timer. Sending never blocks the event loop: the socket is non-blocking and every error is
swallowed (and counted).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

__all__ = ["WakeReceiver", "WakeSender", "wake_address"]

MAX_ID_BYTES = 512
"""Longest log id carried by one datagram."""


def wake_address(state_dir: Path) -> str:
    """The dispatcher's datagram socket: abstract (leading NUL), one per state dir."""
    digest = hashlib.sha256(os.path.abspath(state_dir).encode()).hexdigest()[:24]
    return f"\0flint-dispatcher-wake-{digest}"


class WakeSender:
    """Sends "log X grew" datagrams to the dispatcher (fire and forget)."""

    def __init__(self, address: str) -> None:
        self.path = address
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

    def __init__(self, address: str, on_wake: Callable[[str], None]) -> None:
        self.address = address
        self._on_wake = on_wake
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.address)
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_wake), sock=sock
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
