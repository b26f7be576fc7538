"""Cross-process wake-ups: the log's writer tells the dispatcher at once that a log grew.

`SqliteChannelLog.wait` wakes waiters in the writing process only; the dispatcher reads the
logs from another process. After each committed append the broker ingress sends one unix
datagram naming the log (its id, e.g. the broker's uid) to the dispatcher's socket.

The socket is abstract (no file: no stale socket after a crash, no 108-byte path limit) and its
name is random, made anew each time a dispatcher starts and kept in `<state>/eventing/wake.name`
(0600, in the 0700 state dir): abstract names have no permissions, so a predictable one could be
bound first by another user of the machine, who would then receive the wake-ups (broker ids) and
keep the dispatcher from starting. Only the owner can read the name; a restarted dispatcher has
a new one, which senders read again when the old one stops answering.

Datagrams are hints, never data: a lost one (no dispatcher yet, a full socket buffer, a name not
read yet) costs latency only, because the dispatcher also re-reads every log's tail on a slow
timer. Sending never blocks the event loop: the socket is non-blocking, the name file is read in
a thread, and every error is swallowed (and counted).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from pathlib import Path

from flint_common.private import write_private

__all__ = ["WakeReceiver", "WakeSender", "wake_name_path"]

MAX_ID_BYTES = 512
"""Longest log id carried by one datagram."""
REREAD_AFTER_S = 1.0
"""A sender reads the name file again at most this often (seconds) while it cannot send."""
PREFIX = "flint-wake-"


def wake_name_path(state_dir: Path) -> Path:
    """Where the running dispatcher keeps its socket's name."""
    return state_dir / "eventing" / "wake.name"


def _read_name(path: Path) -> str | None:
    try:
        name = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return "\0" + name if name.startswith(PREFIX) else None


class WakeSender:
    """Sends "log X grew" datagrams to the dispatcher of `state_dir` (fire and forget)."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._name_path = wake_name_path(state_dir)
        self._clock = clock
        self.address: str | None = None
        self.sent = 0
        self.failed = 0
        self._read_at = float("-inf")
        self._reading: asyncio.Future[str | None] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._reread()  # ready before the first append, if a dispatcher runs

    def notify(self, log_id: str) -> None:
        if self.address is None:
            self._reread()
        if self.address is None:
            self.failed += 1
            return
        try:
            self._sock.sendto(log_id.encode()[:MAX_ID_BYTES], self.address)
            self.sent += 1
        except (ConnectionRefusedError, FileNotFoundError):  # that dispatcher is gone
            self.failed += 1
            self.address = None
            self._reread()
        except OSError:  # its buffer is full: it polls anyway
            self.failed += 1

    def _reread(self) -> None:
        """Read the name file again (throttled): in a thread when on a loop, else at once."""
        now = self._clock()
        if self._reading is not None or now - self._read_at < REREAD_AFTER_S:
            return
        self._read_at = now
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.address = _read_name(self._name_path)
            return
        self._reading = loop.run_in_executor(None, _read_name, self._name_path)
        self._reading.add_done_callback(self._read)

    def _read(self, done: asyncio.Future[str | None]) -> None:
        self._reading = None
        if not done.cancelled() and done.exception() is None:
            self.address = done.result()

    def close(self) -> None:
        self._sock.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on_wake: Callable[[str], None]) -> None:
        self._on_wake = on_wake

    def datagram_received(self, data: bytes, addr: object) -> None:
        self._on_wake(data.decode(errors="replace"))


class WakeReceiver:
    """The dispatcher's end: binds a socket of a new random name, publishes the name in the
    state dir, and calls `on_wake(log_id)` for every datagram received."""

    def __init__(self, state_dir: Path, on_wake: Callable[[str], None]) -> None:
        self._name_path = wake_name_path(state_dir)
        self._on_wake = on_wake
        self.address: str | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        name = PREFIX + secrets.token_hex(16)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind("\0" + name)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            await asyncio.to_thread(write_private, self._name_path, name.encode() + b"\n")
        except BaseException:
            sock.close()
            raise
        self.address = "\0" + name
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_wake), sock=sock
        )

    def close(self) -> None:
        """Stop receiving. The name file stays: senders find the name dead and read it again
        (throttled) until the next dispatcher writes its own."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        self.address = None
