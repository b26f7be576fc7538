"""Wake-ups from the log's writer to the dispatcher: datagrams to a socket file in the private
state dir, hints only; one dispatcher per state dir."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from controller.eventing.dispatcher import DispatcherLock
from flint_common.channellog.wake import WakeReceiver, WakeSender, wake_path


async def eventually(check: Callable[[], bool], what: str, deadline_s: float = 5.0) -> None:
    """Poll `check` (a datagram arriving from another socket) with a deadline."""
    for _ in range(int(deadline_s / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_sender_wakes_the_receiver_with_the_log_id(tmp_path: Path) -> None:
    got: list[str] = []
    receiver = WakeReceiver(tmp_path, got.append)
    await receiver.start()
    sender = WakeSender(tmp_path)
    try:
        sender.notify("uid-1")
        await eventually(lambda: len(got) == 1, "the datagram")
        assert got == ["uid-1"] and sender.sent == 1 and sender.failed == 0
    finally:
        sender.close()
        receiver.close()


async def test_the_socket_is_a_file_only_the_owner_may_use(tmp_path: Path) -> None:
    receiver = WakeReceiver(tmp_path, lambda _: None)
    await receiver.start()
    try:
        st = await asyncio.to_thread(wake_path(tmp_path).stat)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) & 0o077 == 0
        mode = await asyncio.to_thread(lambda: stat.S_IMODE((tmp_path / "eventing").stat().st_mode))
        assert mode == 0o700
    finally:
        receiver.close()


async def test_a_restarted_dispatcher_replaces_a_stale_socket(tmp_path: Path) -> None:
    got: list[str] = []
    first = WakeReceiver(tmp_path, got.append)
    await first.start()
    first.close()  # as a killed dispatcher leaves it: the file stays
    second = WakeReceiver(tmp_path, got.append)
    await second.start()
    sender = WakeSender(tmp_path)
    try:
        sender.notify("after")
        await eventually(lambda: got == ["after"], "the datagram")
    finally:
        sender.close()
        second.close()


def test_a_second_dispatcher_for_a_state_dir_is_refused(tmp_path: Path) -> None:
    first, second = DispatcherLock(tmp_path), DispatcherLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(RuntimeError, match="another dispatcher"):
            second.acquire()
    finally:
        first.release()
    second.acquire()  # free once the first is gone
    second.release()


async def test_a_state_dir_too_deep_for_a_socket_says_so(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(ValueError, match="too long for a unix socket"):
        await WakeReceiver(deep, lambda _: None).start()


def test_without_a_receiver_notify_neither_blocks_nor_raises(tmp_path: Path) -> None:
    sender = WakeSender(tmp_path / "nobody")
    try:
        sender.notify("uid-1")
        assert sender.sent == 0 and sender.failed == 1
    finally:
        sender.close()
