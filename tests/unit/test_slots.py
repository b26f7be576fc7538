"""The worker slots' sockets (`gateway.slots`): the `--fds` flag, what the main process opens,
and when it closes and reopens a crash-looping worker's slot."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from gateway.server import SLOT_CLOSE_QUICK_DEATHS, WORKER_STABLE_S, close_slot_after_death
from gateway.slots import ListenFailed, adopt, format_fds, open_slots, parse_fds, reopen_tcp


def test_fds_flag_round_trips() -> None:
    assert parse_fds(format_fds((3, 4, 10))) == (3, 4, 10)
    assert format_fds([7]) == "7"


@pytest.mark.parametrize("text", ["", "3,,4", "3,x", "-1", "3,3", " "])
def test_fds_flag_rejects_what_is_not_distinct_fd_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="--fds"):
        parse_fds(text)


def test_adopt_wants_one_fd_per_listener_and_the_forwarding_socket() -> None:
    with pytest.raises(ValueError, match=r"names 2 sockets, want 3: 2 listener\(s\) and the forwarding"):
        adopt((3, 4), listeners=2, internal=True)
    with pytest.raises(ValueError, match=r"names 2 sockets, want 1: 1 listener\(s\)$"):
        adopt((3, 4), listeners=1, internal=False)


def test_adopt_wants_open_sockets(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_CREAT | os.O_WRONLY)
    try:
        with pytest.raises(ValueError, match=rf"--fds: {fd} is not an open socket"):
            adopt((fd,), listeners=1, internal=False)
    finally:
        os.close(fd)


def test_slots_share_one_port_per_listener_and_queue_connections_nobody_accepts(
    tmp_path: Path,
) -> None:
    paths = [tmp_path / "worker-0.proxy.sock", tmp_path / "worker-1.proxy.sock"]
    slots = open_slots([("127.0.0.1", 0), ("127.0.0.2", 0)], paths)
    try:
        assert len(slots) == 2
        ports = [[s.getsockname()[1] for s in (slot.loopback, *slot.public)] for slot in slots]
        assert ports[0] == ports[1] and 0 not in ports[0]  # port 0: the first slot's, for all
        assert slots[0].public[0].getsockname()[0] == "127.0.0.2"
        # Listening, with no worker: the kernel takes the connection and holds it for one.
        with socket.create_connection(("127.0.0.1", ports[0][0]), timeout=5):
            pass
        with socket.socket(socket.AF_UNIX) as u:
            u.settimeout(5)
            u.connect(str(paths[1]))
        # What a worker gets: the same sockets under its own fd numbers, in `fds()` order.
        fds = [os.dup(fd) for fd in slots[1].fds()]
        adopted = adopt(fds, listeners=2, internal=True)
        try:
            assert adopted.fds() == tuple(fds)
            assert adopted.loopback.getsockname()[1] == ports[1][0]
            assert adopted.internal is not None and adopted.internal.family == socket.AF_UNIX
            assert adopted.internal.getsockname() == str(paths[1])
        finally:
            adopted.close()
    finally:
        for slot in slots:
            slot.close()
    assert all(fd == -1 for slot in slots for fd in slot.fds())


def test_one_worker_has_no_forwarding_socket() -> None:
    [slot] = open_slots([("127.0.0.1", 0)], None)
    try:
        assert slot.internal is None and slot.public == () and len(slot.fds()) == 1
    finally:
        slot.close()


def test_a_taken_port_fails_naming_the_address_and_leaves_nothing_open(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.2", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(ListenFailed) as info:
            open_slots([("127.0.0.1", 0), ("127.0.0.2", port)],
                       [tmp_path / "a.sock", tmp_path / "b.sock"])
        assert info.value.address == f"127.0.0.2:{port}"
        assert isinstance(info.value.error, OSError)
        assert set(os.listdir("/proc/self/fd")) <= before


def test_a_closed_slots_port_goes_to_the_other_slot_until_it_is_reopened(tmp_path: Path) -> None:
    paths = [tmp_path / "worker-0.proxy.sock", tmp_path / "worker-1.proxy.sock"]
    slots = open_slots([("127.0.0.1", 0), ("127.0.0.2", 0)], paths)
    reopened = None
    try:
        addresses = [(s.getsockname()[0], s.getsockname()[1])
                     for s in (slots[1].loopback, *slots[1].public)]
        internal = slots[1].internal
        slots[1].close_tcp()
        slots[1].close_tcp()  # idempotent
        assert not slots[1].tcp_open() and slots[0].tcp_open()
        assert internal is not None and internal.fileno() != -1  # forwarding stays open
        # Every new connection now queues on slot 0's listener (the only one left).
        slots[0].loopback.setblocking(True)
        slots[0].loopback.settimeout(5)
        for _ in range(8):
            with socket.create_connection(addresses[0], timeout=5):
                conn, _ = slots[0].loopback.accept()
                conn.close()
        reopened = reopen_tcp(slots[1], addresses)
        assert reopened.tcp_open() and reopened.internal is internal
        assert [s.getsockname() for s in (reopened.loopback, *reopened.public)] == addresses
        assert len(reopened.fds()) == 3
    finally:
        for slot in (*slots, *([] if reopened is None else [reopened])):
            slot.close()


def test_a_failed_reopen_raises_and_leaves_nothing_open(tmp_path: Path) -> None:
    [slot] = open_slots([("127.0.0.1", 0)], None)
    try:
        free = slot.loopback.getsockname()
        slot.close_tcp()
        with socket.socket() as taken:  # not SO_REUSEPORT: the port is no longer shareable
            taken.bind(("127.0.0.2", 0))
            taken.listen()
            before = set(os.listdir("/proc/self/fd"))
            with pytest.raises(OSError):
                reopen_tcp(slot, [free, taken.getsockname()])
            assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        slot.close()


@pytest.mark.parametrize(
    ("workers", "ran_s", "quick_deaths", "close"),
    [
        (2, 0.5, SLOT_CLOSE_QUICK_DEATHS, True),
        (4, WORKER_STABLE_S - 0.1, SLOT_CLOSE_QUICK_DEATHS + 5, True),
        (2, 0.5, SLOT_CLOSE_QUICK_DEATHS - 1, False),  # not a crash loop yet
        (2, WORKER_STABLE_S, SLOT_CLOSE_QUICK_DEATHS, False),  # ran long enough: not quick
        (1, 0.5, 100, False),  # one worker: nowhere else for the connections to go
    ],
)
def test_a_slot_is_closed_only_in_a_crash_loop_with_other_workers(
    workers: int, ran_s: float, quick_deaths: int, close: bool
) -> None:
    assert close_slot_after_death(workers, ran_s, quick_deaths) is close
