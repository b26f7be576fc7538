"""Wake-ups from the log's writer to the dispatcher: abstract unix datagrams, hints only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.channels.wake import WakeReceiver, WakeSender, wake_address


def test_the_address_is_abstract_short_and_one_per_state_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 200) / "state"
    a = wake_address(deep)
    assert a.startswith("\0") and len(a.encode()) < 64
    assert wake_address(deep) == a
    assert wake_address(tmp_path / "other") != a


async def test_a_sender_wakes_the_receiver_with_the_log_id(tmp_path: Path) -> None:
    got: list[str] = []
    arrived = asyncio.Event()

    def on_wake(log_id: str) -> None:
        got.append(log_id)
        arrived.set()

    receiver = WakeReceiver(wake_address(tmp_path), on_wake)
    await receiver.start()
    sender = WakeSender(wake_address(tmp_path))
    try:
        sender.notify("uid-1")
        await asyncio.wait_for(arrived.wait(), 5)
        assert got == ["uid-1"] and sender.sent == 1 and sender.failed == 0
        # A second dispatcher for the same state dir cannot bind the address.
        with pytest.raises(OSError):
            await WakeReceiver(wake_address(tmp_path), on_wake).start()
    finally:
        sender.close()
        receiver.close()


def test_without_a_receiver_notify_neither_blocks_nor_raises(tmp_path: Path) -> None:
    sender = WakeSender(wake_address(tmp_path / "nobody"))
    try:
        sender.notify("uid-1")
        assert sender.sent == 0 and sender.failed == 1
    finally:
        sender.close()
