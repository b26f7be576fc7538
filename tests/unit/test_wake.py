"""Wake-ups from the log's writer to the dispatcher: abstract unix datagrams of a secret name,
hints only."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Callable
from pathlib import Path

from gateway.channels.wake import PREFIX, WakeReceiver, WakeSender, wake_name_path


async def eventually(check: Callable[[], bool], what: str, deadline_s: float = 5.0) -> None:
    """Poll `check` (it is a state change in another thread or socket) with a deadline."""
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
        sender.notify("uid-1")  # the first one only starts reading the name (in a thread)
        await eventually(lambda: sender.address is not None, "the name read")
        sender.notify("uid-2")
        await eventually(lambda: len(got) == 1, "the datagram")
        assert got == ["uid-2"] and sender.sent == 1 and sender.failed == 1
    finally:
        sender.close()
        receiver.close()


async def test_the_name_is_random_private_and_new_at_every_start(tmp_path: Path) -> None:
    first = WakeReceiver(tmp_path, lambda _: None)
    await first.start()
    name_file = wake_name_path(tmp_path)
    a = (await asyncio.to_thread(name_file.read_text)).strip()
    assert a.startswith(PREFIX) and len(a) == len(PREFIX) + 32
    assert stat.S_IMODE((await asyncio.to_thread(name_file.stat)).st_mode) == 0o600
    first.close()
    second = WakeReceiver(tmp_path, lambda _: None)
    await second.start()
    try:
        b = (await asyncio.to_thread(name_file.read_text)).strip()
        assert b != a and second.address == "\0" + b
    finally:
        second.close()


async def test_a_sender_follows_a_restarted_dispatcher(tmp_path: Path) -> None:
    got: list[str] = []
    now = [0.0]
    sender = WakeSender(tmp_path, clock=lambda: now[0])
    first = WakeReceiver(tmp_path, got.append)
    await first.start()
    try:
        now[0] += 2  # the sender looked (and found no name) when it was made: past its throttle
        sender.notify("x")
        await eventually(lambda: sender.address == first.address, "the first name")
        old = first.address
        first.close()
        second = WakeReceiver(tmp_path, got.append)
        await second.start()
        now[0] += 2  # past the re-read throttle
        sender.notify("lost")  # refused by the closed socket: the name is read again
        assert sender.address is None
        await eventually(lambda: sender.address == second.address, "the new name")
        assert second.address != old
        sender.notify("after")
        await eventually(lambda: len(got) == 1, "the datagram")
        assert got == ["after"]
        second.close()
    finally:
        sender.close()
        first.close()


def test_without_a_receiver_notify_neither_blocks_nor_raises(tmp_path: Path) -> None:
    sender = WakeSender(tmp_path / "nobody")
    try:
        sender.notify("uid-1")
        sender.notify("uid-2")
        assert sender.sent == 0 and sender.failed == 2 and sender.address is None
    finally:
        sender.close()
