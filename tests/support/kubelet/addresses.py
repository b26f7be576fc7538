"""Pod IPs on loopback: the lowest free 127.0.1.N, reserved across processes with a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path

LOCKS = Path(tempfile.gettempdir()) / "flint-kubelet-pod-ips"
"""One lock file per IP: a test run holds an flock on each IP its Pods have (released when it
closes the file or dies), so concurrent test runs on one machine never share a pod IP."""


def _bindable(ip: str, port: int) -> bool:
    """Nobody listens on ip:port (a process that does not take the locks, say)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
        try:
            sock.bind((ip, port))
        except OSError:
            return False
    return True


class PodIPs:
    """The pod IPs this kubelet holds, by Pod uid (blocking calls, all short: a lock file each)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._held: dict[str, tuple[str, int]] = {}  # uid -> (ip, locked fd)

    def allocate(self, uid: str, ports: list[int]) -> str | None:
        if uid in self._held:
            return self._held[uid][0]
        LOCKS.mkdir(mode=0o777, exist_ok=True)
        mine = {ip for ip, _ in self._held.values()}
        for n in range(1, 255):
            ip = f"{self.prefix}{n}"
            if ip in mine:
                continue
            fd = os.open(LOCKS / ip, os.O_CREAT | os.O_RDWR, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue  # another test run's
            if all(_bindable(ip, port) for port in ports):
                self._held[uid] = (ip, fd)
                return ip
            os.close(fd)
        return None

    def release(self, uid: str) -> None:
        held = self._held.pop(uid, None)
        if held is not None:
            with contextlib.suppress(OSError):
                os.close(held[1])

    def release_all(self) -> None:
        for uid in list(self._held):
            self.release(uid)
