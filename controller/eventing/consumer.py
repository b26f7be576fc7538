"""The seams of one consumer's delivery loop (`ConsumerRunner`): where its events come from and
where its delivery state goes, as Protocols, so a backend is a pair of implementations.

A *consumer* is a Trigger of a broker or a Subscription of a channel; it reads one log.
Event ids are opaque strings at this seam: the SQLite backend's are the log's offsets
(`controller.eventing.sqlite_consumer`); a Redis Streams backend's would be stream ids.

* `ConsumerSource` hands out the consumer's next events and takes acks. An acked event is
  never handed out again; one read but not acked may be, after a crash (at least once). The
  runner acks in read order, over the contiguous prefix it has handled (delivered, filtered
  out, stored as a pending retry or dead-lettered), so a source that keeps only a position
  (SQLite) and one that acks ids one by one (Redis) both fit. `pending` and `claim` are the
  events read but not acked by an earlier reader of the same consumer (a crashed dispatcher's)
  that this one may take over; a backend with exactly one reader per log (SQLite) has none.
  `blocks` says whether `read` waits for new events itself (Redis: `XREADGROUP … BLOCK`), so
  the runner reads again at once after an empty read, or returns at once (SQLite: the runner
  waits for a wake-up or `POLL_S`). `maintain` is the source's upkeep while the runner runs
  (heartbeats, an ordered consumer's lease); when it raises, the runner fails and is restarted.
  `check_turn` is asked before each attempt of an ordered consumer (which retries in place): it
  raises when this reader's turn may be over (its lease ran out), so a reader that stalled does
  not go on delivering what another reader now delivers.
* `ConsumerState` keeps what outlives a delivery attempt: pending retries (event, attempt,
  when due) and dead letters, and turns dead letters back into retries (`redeliver`). Several
  dispatchers may share one consumer's retries (Redis), so the runner *takes* due retries
  (`take_due`) with a lease: a retry taken is not handed to another taker until its lease
  expires or it is updated, removed or dead-lettered; the taker's later `take_due` calls renew
  the leases of the retries it holds, and `hold` renews one and tells whether it still holds it
  (asked before an outcome that cannot be taken back, such as sending to a dead-letter sink).
  Times (`now`, `next_at`) are unix seconds on the caller's clock; a state shared by several
  machines must not compare them with another machine's clock: the Redis state reads them as
  distances from its own clock's present (which must be the caller's) and keeps due times and
  leases on Redis's clock (`controller.eventing.redis_state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.eventing.state import DeadLetter

__all__ = ["ConsumerSource", "ConsumerState", "DeadLetter", "DueRetry"]


@dataclass(frozen=True, slots=True)
class DueRetry:
    """A pending retry of one consumer: `id` is the state's own, `event_id` the source's."""

    id: int
    event_id: str
    event: bytes
    attempt: int
    """The number of the next attempt (1-based; 0 for a redelivered dead letter)."""
    next_at: float


class ConsumerSource(Protocol):
    """One consumer's events, read in order, acked once handled."""

    blocks: bool
    """`read` waits (a while) for events when there are none: read again at once when empty."""

    async def open(self) -> None:
        """Find where the consumer starts: its stored position, else (a new consumer) the tail."""
        ...

    async def read(self, limit: int) -> list[tuple[str, bytes]]:
        """Up to `limit` events after the last one read, as `(id, Event.to_log() bytes)`."""
        ...

    async def ack(self, ids: Sequence[str]) -> None:
        """These events (a prefix of what was read, in read order) are handled."""
        ...

    async def pending(self) -> list[str]:
        """Ids read by an earlier reader of this consumer and never acked."""
        ...

    async def claim(self, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        """Take over `ids` from `pending` (to deliver and ack them here); the ones still there."""
        ...

    async def backlog(self) -> int:
        """Events in the log that the consumer has not acked yet (a gauge, may lag)."""
        ...

    async def maintain(self) -> None:
        """Upkeep for as long as the runner runs (started after `open`, cancelled at stop); may
        return at once. Raising (e.g. an ordered consumer lost its lease) fails the runner."""
        ...

    async def check_turn(self) -> None:
        """Raise (failing the runner) when this reader may no longer deliver the consumer's
        events in order: an ordered consumer's lease ran out. A no-op where one reader is the
        only one (SQLite) and for unordered consumers."""
        ...


class ConsumerState(Protocol):
    """One consumer's pending retries and dead letters."""

    async def retries(self) -> list[DueRetry]:
        """The pending retries (taken ones too), soonest due first."""
        ...

    async def take_due(self, now: float, limit: int) -> list[DueRetry]:
        """Take up to `limit` retries due at `now` (the caller's present, on its clock) or whose
        taker's lease expired, for this taker, leased to it; renews the leases of the retries it
        holds (`limit` 0: only that)."""
        ...

    async def hold(self, retry_id: int) -> bool:
        """Whether this taker still holds retry `retry_id` (taken by it, not updated, removed or
        dead-lettered since, not taken over by another taker), renewing its lease if so. False:
        leave its outcome to whoever holds it now."""
        ...

    async def add_retry(self, event_id: str, event: bytes, attempt: int, next_at: float) -> int:
        """Keep `event` for attempt `attempt` at `next_at` (unix seconds, the caller's clock);
        returns the retry's id."""
        ...

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        """Another attempt failed: the next is `attempt`, due at `next_at` (the retry is no
        longer taken; a missing id is not an error and is not brought back)."""
        ...

    async def remove_retry(self, retry_id: int) -> None:
        """The retry was delivered (a missing id is not an error)."""
        ...

    async def add_dead_letter(
        self,
        event_id: str,
        event: bytes,
        reason: str,
        status: int | None,
        detail: str,
        at: float,
        *,
        retry_id: int | None = None,
    ) -> int:
        """Keep `event` as a dead letter (removing pending retry `retry_id` with it, atomically);
        its id, or 0 when nothing was kept because retry `retry_id` is no longer this taker's
        (another taker holds it now, or it is gone: a shared state's answer)."""
        ...

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        """Up to `limit` dead letters, oldest first."""
        ...

    async def redeliver(self, ids: Sequence[int] | None, next_at: float) -> int:
        """Turn the dead letters `ids` (all when None) into retries due at `next_at`; how many."""
        ...
