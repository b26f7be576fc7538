"""The SQLite backend of a consumer's seams (`controller.eventing.consumer`).

Event ids are the log's offsets (decimal strings). The source reads the log file with the
gateway's read-only reader (`gateway.channels.SqliteLogReader`) and keeps the consumer's
position (the last offset it handled) in the dispatcher's database; the state keeps its
pending retries and dead letters there too. Exactly one dispatcher reads a SQLite log (the
state dir's lock), so nothing is ever pending with another reader. The gateway's datagram
wake-ups and the floor files next to the log (`flint_common.channellog.floor`) stay with the
dispatcher, which reads `position` for them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from controller.eventing.consumer import DueRetry
from controller.eventing.state import DeadLetter, DispatcherState
from flint_common.channellog.format import CHANNEL
from flint_common.channellog.sqlite_reader import SqliteLogReader

__all__ = ["SqliteConsumerSource", "SqliteConsumerState"]

log = logging.getLogger("flint.dispatcher")


class SqliteConsumerSource:
    """Reads one consumer's events from a SQLite log, from its stored position on."""

    blocks = False
    """`read` returns at once: the runner waits for the gateway's wake-up (or `POLL_S`)."""

    def __init__(
        self,
        reader: SqliteLogReader,
        state: DispatcherState,
        consumer: str,
        stored: int | None,
        *,
        label: str = "",
    ) -> None:
        self._reader = reader
        self._state = state
        self.consumer = consumer
        self._stored = stored
        self._label = label or consumer
        self.position = stored or 0
        """The last offset handled (acked): what the consumer's floor is made of."""
        self._fetched = self.position

    async def open(self) -> None:
        stored = self._stored
        if stored is None:
            # A new consumer starts at the log's tail, as Knative's triggers do.
            stored = await self._reader.tail(CHANNEL)
            await self._state.set_position(self.consumer, stored)
            log.info("event=trigger_started trigger=%s position=%d (the tail)", self._label, stored)
            self._stored = stored
        self.position = self._fetched = stored

    async def read(self, limit: int) -> list[tuple[str, bytes]]:
        batch = await self._reader.read(CHANNEL, self._fetched, limit)
        if batch:
            self._fetched = batch[-1][0]
        return [(str(off), raw) for off, raw in batch]

    async def ack(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        self.position = max(self.position, max(int(i) for i in ids))
        await self._state.set_position(self.consumer, self.position)

    async def pending(self) -> list[str]:
        return []  # one reader per log: what it read and did not ack is read again from the position

    async def claim(self, ids: Sequence[str]) -> list[tuple[str, bytes]]:
        return []

    async def backlog(self) -> int:
        tail = await self._reader.tail(CHANNEL)
        return max(tail, self._fetched) - self.position

    async def maintain(self) -> None:
        return  # nothing to keep up: one reader per log, no lease

    async def check_turn(self) -> None:
        return  # one reader per log: its turn never ends


class SqliteConsumerState:
    """One consumer's pending retries and dead letters in the dispatcher's database.

    One dispatcher reads a SQLite log, so the leases of `take_due` are a set in memory: the
    retries this state handed out and that were not updated, removed or dead-lettered since (a
    new state, as a restarted runner makes, takes them all again). No other taker can take one
    over: `hold` only says whether the retry still exists."""

    def __init__(self, state: DispatcherState, consumer: str) -> None:
        self._state = state
        self.consumer = consumer
        self._held: set[int] = set()

    async def retries(self) -> list[DueRetry]:
        return [
            DueRetry(r.id, str(r.offset), r.event, r.attempt, r.next_at)
            for r in await self._state.retries(self.consumer)
        ]

    async def take_due(self, now: float, limit: int) -> list[DueRetry]:
        if limit <= 0:
            return []
        taken: list[DueRetry] = []
        for r in await self._state.due_retries(self.consumer, now, limit + len(self._held)):
            if r.id in self._held:
                continue
            self._held.add(r.id)
            taken.append(DueRetry(r.id, str(r.offset), r.event, r.attempt, r.next_at))
            if len(taken) == limit:
                break
        return taken

    async def hold(self, retry_id: int) -> bool:
        return await self._state.has_retry(retry_id)

    async def add_retry(self, event_id: str, event: bytes, attempt: int, next_at: float) -> int:
        return await self._state.add_retry(self.consumer, int(event_id), event, attempt, next_at)

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        await self._state.update_retry(retry_id, attempt, next_at)
        self._held.discard(retry_id)

    async def remove_retry(self, retry_id: int) -> None:
        await self._state.remove_retry(retry_id)
        self._held.discard(retry_id)

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
        dead = await self._state.add_dead_letter(
            self.consumer, int(event_id), event, reason, status, detail, at, retry_id=retry_id
        )
        if retry_id is not None:
            self._held.discard(retry_id)
        return dead

    async def dead_letters(self, limit: int = 1000) -> list[DeadLetter]:
        return await self._state.dead_letters(self.consumer, limit)

    async def redeliver(self, ids: Sequence[int] | None, next_at: float) -> int:
        return await self._state.requeue_dead_letters(self.consumer, ids, next_at)
