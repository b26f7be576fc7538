"""A worker slot's listening sockets: opened once by the main process, adopted by every
incarnation of that slot's worker.

Slot i holds one SO_REUSEPORT TCP socket per proxy listener (the loopback `--host/--port` one,
then each `--listen` address, in order, then the `--peer-listen` one if any:
`GatewaySettings.tcp_addresses`) and, with more than one worker, the unix socket on which
the other workers forward requests to worker i (`gateway.home.proxy_socket_path`). The main
process binds them, listens on them and keeps its copies open while worker i is dead, so the
kernel queues that slot's connections (and the forwarded ones) until the next incarnation
accepts them: a worker's death loses only the requests in flight on it. Each incarnation gets
the sockets by fd number (the internal `--fds` flag: `format_fds`, `parse_fds`, `adopt`).

The exception is a crash loop with more than one worker (`gateway.server.close_slot_after_death`):
then the main process closes the slot's TCP listeners (`SlotSockets.close_tcp`) so the kernel
sends new connections to the other slots, and opens them again on the same ports
(`reopen_tcp`) just before the next incarnation starts. The forwarding socket stays open.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flint_common.addresses import format_hostport
from gateway.admin import bind_unix_socket

LISTEN_BACKLOG = 4096
"""Accept queue length of each slot's listening sockets."""


@dataclass(frozen=True, slots=True)
class SlotSockets:
    """One worker slot's listening sockets."""

    loopback: socket.socket
    """The `--host/--port` listener."""
    public: tuple[socket.socket, ...]
    """One per `--listen` address, in their order, then the `--peer-listen` one if any."""
    internal: socket.socket | None
    """The unix socket of the requests the other workers forward (None with one worker)."""

    def fds(self) -> tuple[int, ...]:
        """The fd numbers, in the order `adopt` takes them."""
        internal = () if self.internal is None else (self.internal,)
        return tuple(s.fileno() for s in (self.loopback, *self.public, *internal))

    def tcp_open(self) -> bool:
        """Whether this process's copies of the TCP listeners are open (not `close_tcp`d)."""
        return self.loopback.fileno() != -1

    def close_tcp(self) -> None:
        """Close this process's copies of the TCP listeners, keeping the forwarding socket: once
        no process holds them, the kernel sends the port's new connections to the other slots
        (and resets those still queued on them). Idempotent."""
        for s in (self.loopback, *self.public):
            s.close()

    def close(self) -> None:
        """Close this process's copies (the other processes' stay open). Idempotent."""
        for s in (self.loopback, *self.public):
            s.close()
        if self.internal is not None:
            self.internal.close()


def format_fds(fds: Sequence[int]) -> str:
    """The `--fds` value naming `fds`: `3,4,5`."""
    return ",".join(str(fd) for fd in fds)


def parse_fds(text: str) -> tuple[int, ...]:
    """The fd numbers of a `--fds` value; ValueError saying what is wrong with it."""
    try:
        fds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--fds: want comma-separated fd numbers, got {text!r}") from None
    if any(fd < 0 for fd in fds) or len(set(fds)) != len(fds):
        raise ValueError(f"--fds: want distinct non-negative fd numbers, got {text!r}")
    return fds


def adopt(fds: Sequence[int], listeners: int, internal: bool) -> SlotSockets:
    """The sockets a worker was handed as `fds`: `listeners` TCP listeners (the loopback one
    first), then the unix socket when `internal`. ValueError when they are not that."""
    want = listeners + int(internal)
    if len(fds) != want:
        raise ValueError(f"--fds names {len(fds)} sockets, want {want}: {listeners} listener(s)"
                         f"{' and the forwarding socket' if internal else ''}")
    socks = []
    for fd in fds:
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            raise ValueError(f"--fds: {fd} is not an open socket ({exc.strerror})") from None
        sock.setblocking(False)
        socks.append(sock)
    return SlotSockets(socks[0], tuple(socks[1:listeners]), socks[listeners] if internal else None)


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: any free port) that shares its port with
    the other slots' (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:  # `[::]` is IPv6 only, as the API's listeners are
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def reopen_tcp(slot: SlotSockets, addresses: Sequence[tuple[str, int]]) -> SlotSockets:
    """`slot` with new TCP listeners on `addresses` (its bound `host:port`s, the loopback one
    first), sharing their ports with the other slots', and the same forwarding socket. Raises
    OSError with nothing new left open."""
    tcp: list[socket.socket] = []
    try:
        for host, port in addresses:
            tcp.append(listen_socket(host, port))
    except BaseException:
        for sock in tcp:
            sock.close()
        raise
    return SlotSockets(tcp[0], tuple(tcp[1:]), slot.internal)


class ListenFailed(Exception):
    """A slot's socket could not be opened at `address`."""

    def __init__(self, address: str, error: OSError) -> None:
        super().__init__(f"cannot listen on {address}: {error}")
        self.address = address
        self.error = error


def open_slots(
    addresses: Sequence[tuple[str, int]], proxy_paths: Sequence[Path] | None
) -> list[SlotSockets]:
    """The sockets of `len(proxy_paths)` slots (of one, without forwarding sockets, when
    `proxy_paths` is None), listening on every TCP address (the loopback one first). A port 0
    is picked by the first slot and shared by the others. Blocking (the unix socket files): run
    it in a thread. Raises `ListenFailed` naming the address, with nothing left open."""
    ports = [port for _, port in addresses]
    opened: list[socket.socket] = []
    slots: list[SlotSockets] = []
    try:
        for index in range(1 if proxy_paths is None else len(proxy_paths)):
            tcp: list[socket.socket] = []
            for j, (host, _) in enumerate(addresses):
                try:
                    sock = listen_socket(host, ports[j])
                except OSError as exc:
                    raise ListenFailed(format_hostport(host, ports[j]), exc) from exc
                opened.append(sock)
                tcp.append(sock)
                ports[j] = int(sock.getsockname()[1])
            internal = None
            if proxy_paths is not None:
                internal = _listen_unix(proxy_paths[index])
                opened.append(internal)
            slots.append(SlotSockets(tcp[0], tuple(tcp[1:]), internal))
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return slots


def _listen_unix(path: Path) -> socket.socket:
    try:
        sock = bind_unix_socket(path)
    except OSError as exc:
        raise ListenFailed(str(path), exc) from exc
    try:
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenFailed(str(path), exc) from exc
    return sock
