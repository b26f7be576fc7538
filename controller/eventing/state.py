"""The dispatcher's durable memory: positions, pending retries and dead letters, in one SQLite file.

The event dispatcher reads channel logs and delivers each event to its consumers (a Trigger or a
Subscription, keyed by a string such as the trigger's uid). Delivery is at least once: after a
crash the dispatcher may deliver an event again, but never skip one. That promise rests on what
this file remembers, and on the order it is told things:

* **positions** — per consumer, the last log offset it has handled (delivered, queued for retry,
  or dead-lettered). A restart resumes after it. Positions only move forward (the stored value is
  the max of every value ever set), and many `set_position` calls between two commits cost one
  row write per consumer (coalescing), so a busy consumer does not pay a write per event;
* **pending retries** — events whose delivery failed and will be tried again at `next_at`;
* **dead letters** — events that ran out of attempts (or were refused for good), kept for
  inspection and for `redeliver` (`take_dead_letters`, `requeue_dead_letters`).

Order is the safety argument: operations submitted in order (by one task awaiting each in turn,
or queued without awaiting) commit in that order, each in the same transaction as its neighbours
or an earlier one. So "await `add_retry`, then `set_position` past the event" can never persist
the position without the retry; a crash in between only means the event is delivered again.
`add_dead_letter(..., retry_id=...)` moves a failed retry to the dead letters in one transaction.

Threads and commits follow `gateway.channels.sqlite` (the house style, simplified; both subclass
`flint_common.sqlite_writer.SqliteWriter`): SQLite is never called on the event loop. One
writer thread owns the only writing connection (a lock file next to the database makes it the only
writer in the host); operations that arrive while a commit is in flight queue up and go into the
next transaction together (**group commit**, up to `group_max` operations), and every awaiting call
resolves only after the commit that covers it. Each operation runs under its own savepoint, so one
failing operation fails only its caller; a failed commit fails the whole group. Reads go to a
separate read-only connection in a reader thread and see committed data only (WAL lets them run
while the writer commits). The writer checkpoints the WAL itself (every `checkpoint_every` commits
or past `checkpoint_bytes`, and on close).

`durable=True` (the default) commits with ``synchronous=FULL``: a returned call survives a killed
process and a power cut. `durable=False` uses ``synchronous=NORMAL``: it survives a killed process,
but a power cut may lose the last commits (the dispatcher then redelivers: duplicates, no loss of
events still in the channel log).

A call whose caller is cancelled may still be committed (it was already queued): at least once.
`transactions`, `operations`, `position_writes` and `checkpoints` count the writer's work.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flint_common.sqlite_writer import Answer, SqliteWriter, Stop, post

__all__ = ["DeadLetter", "DispatcherState", "DispatcherStateClosed", "PendingRetry"]

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS positions (consumer TEXT PRIMARY KEY, off INTEGER NOT NULL) WITHOUT ROWID",
    # AUTOINCREMENT: ids are shown to operators (`redeliver --id`) and must never be reused.
    "CREATE TABLE IF NOT EXISTS retries ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, consumer TEXT NOT NULL, off INTEGER NOT NULL,"
    " event BLOB NOT NULL, attempt INTEGER NOT NULL, next_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS retries_by_consumer ON retries (consumer, next_at, id)",
    "CREATE TABLE IF NOT EXISTS dead_letters ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, consumer TEXT NOT NULL, off INTEGER NOT NULL,"
    " event BLOB NOT NULL, reason TEXT NOT NULL, status INTEGER, detail TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS dead_letters_by_consumer ON dead_letters (consumer, id)",
)

_UPSERT_POSITION = (
    "INSERT INTO positions (consumer, off) VALUES (?, ?)"
    " ON CONFLICT (consumer) DO UPDATE SET off = MAX(off, excluded.off)"
)

_ID_CHUNK = 500  # ids per `IN (...)`, well under SQLite's bound-variable limit


class DispatcherStateClosed(RuntimeError):
    """The dispatcher state was closed (or failed to open); no further operations are possible."""


@dataclass(frozen=True, slots=True)
class PendingRetry:
    """An event waiting to be delivered to `consumer` again at `next_at` (unix seconds)."""

    id: int
    consumer: str
    offset: int
    event: bytes
    attempt: int
    next_at: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An event `consumer` gave up on: why (`reason`, the last HTTP `status` if any, `detail`) and when.

    `event_id` is the source's id of the event (`controller.eventing.consumer`: a SQLite log's
    offset as a string, a Redis stream id); `offset` is the SQLite log's offset (0 for a Redis
    stream, whose ids are not offsets), kept for the admin endpoint's JSON."""

    id: int
    consumer: str
    offset: int
    event: bytes
    reason: str
    status: int | None
    detail: str
    at: float
    event_id: str = ""

    def __post_init__(self) -> None:
        if not self.event_id:
            object.__setattr__(self, "event_id", str(self.offset))


# -- what the loop side hands the writer ---------------------------------------------------------


@dataclass(slots=True)
class _Op:
    """A write: runs in the writer's current transaction, under its own savepoint."""

    fn: Callable[[sqlite3.Connection], Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    # The consumer whose position the op deletes (`forget`): a position set earlier in the same
    # group and not yet written must not be written after it.
    forgets: str | None = None


@dataclass(slots=True)
class _Position:
    """`set_position`: coalesced per consumer and written once per transaction."""

    consumer: str
    offset: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


_Item = _Op | _Position


def _id_chunks(ids: Sequence[int]) -> list[list[int]]:
    unique = sorted({int(i) for i in ids})
    return [unique[i : i + _ID_CHUNK] for i in range(0, len(unique), _ID_CHUNK)]


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _dead_letter(row: tuple[Any, ...]) -> DeadLetter:
    id_, consumer, off, event, reason, status, detail, at = row
    return DeadLetter(
        int(id_),
        str(consumer),
        int(off),
        bytes(event),
        str(reason),
        None if status is None else int(status),
        str(detail),
        float(at),
        str(int(off)),
    )


_DEAD_LETTER_COLUMNS = "id, consumer, off, event, reason, status, detail, at"


class DispatcherState(SqliteWriter[_Item]):
    """Positions, pending retries and dead letters of the dispatcher's consumers, in one SQLite file.

    See the module docstring for ordering, group commit, threads and durability."""

    closed_error = DispatcherStateClosed
    noun = "dispatcher state"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        group_max: int = 512,
        checkpoint_every: int = 1000,
        checkpoint_bytes: int = 64 << 20,
        connection_factory: type[sqlite3.Connection] = sqlite3.Connection,
    ) -> None:
        # Counters, like `transactions` and `checkpoints` (read from any thread, written by the writer).
        self.operations = 0  # calls those transactions covered (set_position calls included)
        self.position_writes = 0  # position rows written (after coalescing)
        super().__init__(  # starts the writer: last
            path,
            durable=durable,
            group_max=group_max,
            checkpoint_every=checkpoint_every,
            checkpoint_bytes=checkpoint_bytes,
            connection_factory=connection_factory,
        )

    # -- positions ---------------------------------------------------------------------------

    async def positions(self) -> dict[str, int]:
        """Every consumer's last handled offset (committed values)."""

        def q(conn: sqlite3.Connection) -> dict[str, int]:
            return {str(c): int(o) for c, o in conn.execute("SELECT consumer, off FROM positions")}

        return await self._read(q)

    async def set_position(self, consumer: str, offset: int) -> None:
        """Record that `consumer` has handled everything up to `offset`; never moves it backwards."""
        self._check_open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.put(_Position(consumer, int(offset), loop, fut))
        await fut

    # -- pending retries ---------------------------------------------------------------------

    async def add_retry(self, consumer: str, offset: int, event: bytes, attempt: int, next_at: float) -> int:
        """Queue `event` (from log `offset`) for another delivery attempt at `next_at`; returns its id."""

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO retries (consumer, off, event, attempt, next_at) VALUES (?, ?, ?, ?, ?)",
                (consumer, offset, event, attempt, next_at),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(op)

    async def update_retry(self, retry_id: int, attempt: int, next_at: float) -> None:
        """Note another failed attempt and the next due time (a missing id is not an error)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE retries SET attempt = ?, next_at = ? WHERE id = ?", (attempt, next_at, retry_id)
            )

        await self._write(op)

    async def remove_retry(self, retry_id: int) -> None:
        """Drop a pending retry (delivered at last); a missing id is not an error."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM retries WHERE id = ?", (retry_id,))

        await self._write(op)

    async def due_retries(self, consumer: str, now: float, limit: int) -> list[PendingRetry]:
        """Up to `limit` of `consumer`'s pending retries due at `now`, soonest due first."""

        def q(conn: sqlite3.Connection) -> list[PendingRetry]:
            rows = conn.execute(
                "SELECT id, consumer, off, event, attempt, next_at FROM retries"
                " WHERE consumer = ? AND next_at <= ? ORDER BY next_at, id LIMIT ?",
                (consumer, now, limit),
            ).fetchall()
            return [
                PendingRetry(int(i), str(c), int(o), bytes(e), int(a), float(n)) for i, c, o, e, a, n in rows
            ]

        if limit <= 0:
            return []
        return await self._read(q)

    async def has_retry(self, retry_id: int) -> bool:
        """Whether pending retry `retry_id` still exists (committed)."""

        def q(conn: sqlite3.Connection) -> bool:
            return conn.execute("SELECT 1 FROM retries WHERE id = ?", (retry_id,)).fetchone() is not None

        return await self._read(q)

    async def retries(self, consumer: str) -> list[PendingRetry]:
        """`consumer`'s pending retries, soonest due first (then oldest)."""

        def q(conn: sqlite3.Connection) -> list[PendingRetry]:
            rows = conn.execute(
                "SELECT id, consumer, off, event, attempt, next_at FROM retries"
                " WHERE consumer = ? ORDER BY next_at, id",
                (consumer,),
            ).fetchall()
            return [
                PendingRetry(int(i), str(c), int(o), bytes(e), int(a), float(n)) for i, c, o, e, a, n in rows
            ]

        return await self._read(q)

    # -- dead letters ------------------------------------------------------------------------

    async def add_dead_letter(
        self,
        consumer: str,
        offset: int,
        event: bytes,
        reason: str,
        status: int | None,
        detail: str,
        at: float,
        *,
        retry_id: int | None = None,
    ) -> int:
        """Keep `event` as a dead letter of `consumer`; returns its id.

        With `retry_id`, that pending retry is removed in the same transaction (a failed retry
        moves to the dead letters atomically; a retry already gone is not an error)."""

        def op(conn: sqlite3.Connection) -> int:
            if retry_id is not None:
                conn.execute("DELETE FROM retries WHERE id = ?", (retry_id,))
            cur = conn.execute(
                "INSERT INTO dead_letters (consumer, off, event, reason, status, detail, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (consumer, offset, event, reason, status, detail, at),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

        return await self._write(op)

    async def dead_letters(self, consumer: str, limit: int = 1000) -> list[DeadLetter]:
        """Up to `limit` of `consumer`'s dead letters, oldest (first recorded) first."""

        def q(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(
                f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE consumer = ? ORDER BY id LIMIT ?",
                (consumer, limit),
            ).fetchall()
            return [_dead_letter(r) for r in rows]

        if limit <= 0:
            return []
        return await self._read(q)

    async def take_dead_letters(self, consumer: str, ids: Sequence[int] | None = None) -> list[DeadLetter]:
        """Remove and return `consumer`'s dead letters (those of `ids` only, if given), oldest first.

        Ids of other consumers' dead letters, or of none, are ignored."""
        chunks = None if ids is None else _id_chunks(ids)

        def op(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows: list[tuple[Any, ...]] = []
            where: list[tuple[str, list[Any]]]
            if chunks is None:
                where = [("consumer = ?", [consumer])]
            else:
                where = [(f"consumer = ? AND id IN ({_marks(len(c))})", [consumer, *c]) for c in chunks]
            for cond, args in where:
                rows += conn.execute(f"SELECT {_DEAD_LETTER_COLUMNS} FROM dead_letters WHERE {cond}", args)
                conn.execute(f"DELETE FROM dead_letters WHERE {cond}", args)
            return sorted((_dead_letter(r) for r in rows), key=lambda d: d.id)

        if chunks == []:
            return []
        return await self._write(op)

    async def requeue_dead_letters(self, consumer: str, ids: Sequence[int] | None, next_at: float) -> int:
        """Turn `consumer`'s dead letters (those of `ids` only, if not None) back into pending
        retries with attempt 0, due at `next_at`, in one transaction; returns how many."""
        chunks = None if ids is None else _id_chunks(ids)

        def op(conn: sqlite3.Connection) -> int:
            where: list[tuple[str, list[Any]]]
            if chunks is None:
                where = [("consumer = ?", [consumer])]
            else:
                where = [(f"consumer = ? AND id IN ({_marks(len(c))})", [consumer, *c]) for c in chunks]
            moved = 0
            for cond, args in where:
                conn.execute(
                    "INSERT INTO retries (consumer, off, event, attempt, next_at)"
                    f" SELECT consumer, off, event, 0, ? FROM dead_letters WHERE {cond} ORDER BY id",
                    [next_at, *args],
                )
                moved += conn.execute(f"DELETE FROM dead_letters WHERE {cond}", args).rowcount
            return moved

        if chunks == []:
            return 0
        return int(await self._write(op))

    # -- consumers ---------------------------------------------------------------------------

    async def forget(self, consumer: str) -> None:
        """The consumer was deleted: drop its position, pending retries and dead letters."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM positions WHERE consumer = ?", (consumer,))
            conn.execute("DELETE FROM retries WHERE consumer = ?", (consumer,))
            conn.execute("DELETE FROM dead_letters WHERE consumer = ?", (consumer,))

        await self._write(op, forgets=consumer)

    async def counts(self) -> dict[str, tuple[int, int]]:
        """consumer → (pending retries, dead letters), for consumers with at least one of either."""

        def q(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            rows = conn.execute(
                "SELECT consumer, SUM(r), SUM(d) FROM ("
                " SELECT consumer, COUNT(*) AS r, 0 AS d FROM retries GROUP BY consumer"
                " UNION ALL"
                " SELECT consumer, 0 AS r, COUNT(*) AS d FROM dead_letters GROUP BY consumer"
                ") GROUP BY consumer"
            ).fetchall()
            return {str(c): (int(r), int(d)) for c, r, d in rows}

        return await self._read(q)

    # -- helpers for the loop side (`close()` is `SqliteWriter.close`) -------------------------

    def _failed(self) -> DispatcherStateClosed:
        return DispatcherStateClosed(f"dispatcher state {self.path} failed: {self._open_error}")

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, forgets: str | None = None) -> T:
        self._check_open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Op(fn, loop, fut, forgets))
        return await fut

    # -- writer thread -----------------------------------------------------------------------

    def _open_writer(self) -> sqlite3.Connection:
        self._acquire_lock()  # creates the parent folders too
        try:
            conn = self._connect_writer("FULL" if self.durable else "NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                conn.execute(stmt)
            conn.execute("COMMIT")
        except BaseException:
            self._release_lock()
            raise
        return conn

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop: Stop | None = None
        while stop is None:
            first = self._queue.get()
            if isinstance(first, Stop):
                stop = first
                break
            # Group commit: everything that queued up while the last commit ran goes in this one.
            batch: list[_Item] = [first]
            while len(batch) < self.group_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(nxt, Stop):
                    stop = nxt
                    break
                batch.append(nxt)
            self._commit(conn, batch)
            self._maybe_checkpoint(conn)
        self._finish(conn, stop)

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        """Run `batch` in one transaction, in order; answer every caller after the commit."""
        positions: dict[str, int] = {}  # coalesced set_position calls, written last
        answers: list[tuple[asyncio.AbstractEventLoop, Answer]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for it in batch:
                if isinstance(it, _Position):
                    seen = positions.get(it.consumer)
                    if seen is None or it.offset > seen:
                        positions[it.consumer] = it.offset
                    answers.append((it.loop, (it.future, None, None)))
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    result = it.fn(conn)
                except Exception as exc:  # this caller's error only; the rest of the group goes on
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    answers.append((it.loop, (it.future, None, exc)))
                    continue
                conn.execute("RELEASE op")
                if it.forgets is not None:
                    positions.pop(it.forgets, None)  # set before the forget: forgotten with it
                answers.append((it.loop, (it.future, result, None)))
            if positions:
                conn.executemany(_UPSERT_POSITION, list(positions.items()))
            conn.execute("COMMIT")
        except BaseException as exc:  # the commit failed: nothing of the group is stored
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            finally:
                post([(it.loop, (it.future, None, exc)) for it in batch])
            return
        self.transactions += 1
        self.operations += len(batch)
        self.position_writes += len(positions)
        post(answers)
