"""The channel log interface: an append-only, per-channel sequence of opaque records.

Brokers and channels store their events here (the bytes of `Event.to_log()`); the dispatcher
reads them back in order, remembers a position (the last offset it handled) per trigger or
subscription, and asks the log to forget what every consumer has passed.

Contract every backend (SQLite here; Redis Streams, Kafka next) keeps:

* offsets are integers, strictly increasing per channel, starting at 1; 0 means "before the
  first record", so `read(channel, after=0, ...)` reads from the start and `tail()` of an empty
  channel is 0. Offsets are never reused while the channel exists, not even after compaction;
* `append` resolves only after the records are stored as durably as the backend promises (for
  the durable SQLite log: fsynced), so a 202 may be sent when it returns. One call's records are
  stored all or nothing, with consecutive offsets;
* `wait` returns as soon as a record past `after` is committed (no polling interval) and
  `False` on timeout; spurious `True` is allowed, so callers always `read` after it;
* `compact` and `apply_retention` only delete a prefix of the channel and never at or above the
  position the caller passes as the slowest consumer's (`keep_from`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["ChannelLog", "ChannelLogClosed"]


class ChannelLogClosed(RuntimeError):
    """The log was closed (or failed to open); no further operations are possible."""


@runtime_checkable
class ChannelLog(Protocol):
    """An async, durable, per-channel append-only log of byte records."""

    async def append(self, channel: str, records: Sequence[bytes]) -> list[int]:
        """Store `records` at the end of `channel` (created on first use); returns their offsets.

        Resolves only after the commit that covers them."""
        ...

    async def read(self, channel: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` committed records with offset > `after`, in offset order."""
        ...

    async def tail(self, channel: str) -> int:
        """The last committed offset of `channel`; 0 if it never had a record."""
        ...

    async def wait(self, channel: str, after: int, timeout: float) -> bool:  # noqa: ASYNC109 - the API
        """Wait until `channel` has a committed record with offset > `after`.

        Returns at once if it already has; `False` if `timeout` seconds pass first."""
        ...

    async def compact(self, channel: str, below: int) -> int:
        """Delete the records with offset < `below`; returns how many were deleted."""
        ...

    async def apply_retention(
        self,
        channel: str,
        *,
        max_age_s: float | None,
        max_records: int | None,
        keep_from: int,
    ) -> int:
        """Delete records older than `max_age_s` or beyond the newest `max_records`, but never
        one at or above `keep_from` (the slowest consumer's position). `None` is no limit on
        that axis. Returns how many were deleted. `compact(channel, keep_from)` is the same with
        both limits at zero."""
        ...

    async def delete_channel(self, channel: str) -> None:
        """Drop the channel and all its records (its broker or channel was deleted)."""
        ...

    async def close(self) -> None:
        """Finish pending writes, release resources. Idempotent."""
        ...
