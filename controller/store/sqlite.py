"""The embedded Store: one SQLite file (WAL) owned by one writer thread, watched in-process."""

from __future__ import annotations

import asyncio
import builtins
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from controller.store import logic
from controller.store.base import Kind, Obj, StoreError, WatchEvent
from controller.store.fanout import Change, EventType, FanOut, follow

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    grp TEXT NOT NULL, plural TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (grp, plural, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL, grp TEXT NOT NULL, plural TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('rv', 0), ('compacted', 0);
"""


class SqliteStore:
    """Objects as JSON text keyed (group, plural, namespace, name), plus a bounded event log.

    Every statement runs on one dedicated thread that owns the connection (never on the event
    loop). Each write bumps the global resourceVersion, stores the object and appends its event
    in one transaction, then hands the change to the in-process fan-out in commit order.

    `history`: how many events are kept for watches resuming from a resourceVersion (older →
    Gone); `watch_buffer`: how many undelivered events a live watcher may lag before it gets
    Gone; `compact_every`: events between deletions of rows beyond `history`.
    """

    def __init__(
        self,
        path: Path,
        *,
        history: int = 10_000,
        watch_buffer: int = 1000,
        compact_every: int = 100,
        rng: random.Random | None = None,
    ) -> None:
        self.path = path
        self._history = history
        self._compact_every = max(1, compact_every)
        self._rng = rng
        self._fanout = FanOut(watch_buffer)
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Owned by the writer thread:
        self._conn: sqlite3.Connection | None = None
        self._rv = 0
        self._compacted = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError(f"store {self.path} is already open")
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flint-store")
        self._fanout = FanOut(self._fanout.buffer)
        try:
            await self._call(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        executor = self._executor
        if executor is None:
            return
        self._fanout.close()
        try:
            await self._call(self._close_sync)
        finally:
            self._executor = None
            executor.shutdown(wait=False)

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None or self._loop is None:
            raise StoreError(f"store {self.path} is not open")
        return await self._loop.run_in_executor(self._executor, fn)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        rows = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self._conn = conn
        self._rv = int(rows["rv"])
        self._compacted = int(rows["compacted"])

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"store {self.path} is not open")
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- writes (writer thread) ------------------------------------------------------------

    def _write_sync(
        self, db: sqlite3.Connection, type_: EventType, kind: Kind, ns: str, name: str, obj: Obj
    ) -> tuple[Obj, Change, int]:
        """Stores one change in the caller's transaction; returns (object, change, compacted)."""
        rv = self._rv + 1
        logic.with_resource_version(obj, rv)
        data = logic.dumps(obj)
        text = data.decode()
        if type_ == "DELETED":
            db.execute(
                "DELETE FROM objects WHERE grp=? AND plural=? AND namespace=? AND name=?",
                (kind.group, kind.plural, ns, name),
            )
        else:
            db.execute(
                "INSERT OR REPLACE INTO objects (grp, plural, namespace, name, rv, data)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (kind.group, kind.plural, ns, name, rv, text),
            )
        db.execute(
            "INSERT INTO events (rv, type, grp, plural, namespace, name, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rv, type_, kind.group, kind.plural, ns, name, text),
        )
        db.execute("UPDATE meta SET value=? WHERE key='rv'", (rv,))
        compacted = self._compacted
        if rv % self._compact_every == 0 and rv - self._history > compacted:
            compacted = rv - self._history
            db.execute("DELETE FROM events WHERE rv <= ?", (compacted,))
            db.execute("UPDATE meta SET value=? WHERE key='compacted'", (compacted,))
        return obj, Change(rv, type_, kind, ns, data), compacted

    def _committed(self, change: Change, compacted: int) -> None:
        """After COMMIT: advance the counters and publish, in commit order, on the loop."""
        self._rv = change.rv
        self._compacted = compacted
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._fanout.publish, (change,))

    def _load_sync(self, kind: Kind, ns: str, name: str) -> Obj:
        row = self._db.execute(
            "SELECT data FROM objects WHERE grp=? AND plural=? AND namespace=? AND name=?",
            (kind.group, kind.plural, ns, name),
        ).fetchone()
        if row is None:
            raise logic.not_found(kind, name)
        return logic.loads(row[0])

    def _create_sync(self, kind: Kind, draft: Obj) -> Obj:
        ns = logic.namespace_of(draft)
        with self._transaction() as db:
            name = ""
            for candidate in logic.candidate_names(draft, self._rng):
                name = candidate
                taken = db.execute(
                    "SELECT 1 FROM objects WHERE grp=? AND plural=? AND namespace=? AND name=?",
                    (kind.group, kind.plural, ns, name),
                ).fetchone()
                if taken is None:
                    break
            else:
                raise logic.already_exists(kind, name)
            logic.meta(draft)["name"] = name
            obj, change, compacted = self._write_sync(db, "ADDED", kind, ns, name, draft)
        self._committed(change, compacted)
        return obj

    def _update_sync(self, kind: Kind, obj: Obj, status_only: bool) -> Obj:
        ns, name = logic.namespace_of(obj), logic.name_of(obj)
        with self._transaction() as db:
            stored = self._load_sync(kind, ns, name)
            logic.check_resource_version(kind, stored, obj)
            new = (logic.apply_status_update(stored, obj) if status_only
                   else logic.apply_update(kind, stored, obj))
            if new == stored:
                return stored
            type_: EventType = "DELETED" if logic.finalized(new) else "MODIFIED"
            result, change, compacted = self._write_sync(db, type_, kind, ns, name, new)
        self._committed(change, compacted)
        return result

    def _delete_sync(self, kind: Kind, ns: str, name: str) -> Obj:
        with self._transaction() as db:
            stored = self._load_sync(kind, ns, name)
            marked = logic.apply_delete(stored)
            if marked == stored:
                return stored  # being deleted already
            if marked is None:
                obj, change, compacted = self._write_sync(db, "DELETED", kind, ns, name, stored)
            else:
                obj, change, compacted = self._write_sync(db, "MODIFIED", kind, ns, name, marked)
        self._committed(change, compacted)
        return obj

    # -- reads (writer thread) -------------------------------------------------------------

    def _list_sync(self, kind: Kind, ns: str | None) -> tuple[builtins.list[Obj], str]:
        if ns is None:
            rows = self._db.execute(
                "SELECT data FROM objects WHERE grp=? AND plural=? ORDER BY namespace, name",
                (kind.group, kind.plural),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT data FROM objects WHERE grp=? AND plural=? AND namespace=? ORDER BY name",
                (kind.group, kind.plural, ns),
            ).fetchall()
        return [logic.loads(r[0]) for r in rows], str(self._rv)

    def _replay_sync(
        self, kind: Kind | None, ns: str | None, since: int
    ) -> tuple[builtins.list[Change], int]:
        where: builtins.list[str] = []
        args: builtins.list[str | int] = []
        if kind is not None:
            where += ["grp=?", "plural=?"]
            args += [kind.group, kind.plural]
        if ns is not None:
            where.append("namespace=?")
            args.append(ns)
        if since <= 0:
            sql = "SELECT rv, 'ADDED', grp, plural, namespace, data FROM objects"
            order = " ORDER BY grp, plural, namespace, name"
        else:
            if since < self._compacted:
                raise logic.gone(since, self._compacted)
            sql = "SELECT rv, type, grp, plural, namespace, data FROM events"
            where.append("rv > ?")
            args.append(since)
            order = " ORDER BY rv"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._db.execute(sql + order, args).fetchall()
        changes = [Change(rv, t, Kind(g, p), n, d.encode()) for rv, t, g, p, n, d in rows]
        return changes, self._rv

    # -- the Store protocol ----------------------------------------------------------------

    async def create(self, kind: Kind, obj: Obj) -> Obj:
        draft = logic.prepare_create(kind, obj)
        return await self._call(lambda: self._create_sync(kind, draft))

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        return await self._call(lambda: self._load_sync(kind, namespace, name))

    async def list(
        self, kind: Kind, namespace: str | None = None, *, not_older_than: str = ""
    ) -> tuple[builtins.list[Obj], str]:
        logic.parse_since(not_older_than, self._rv)
        return await self._call(lambda: self._list_sync(kind, namespace))

    async def update(self, kind: Kind, obj: Obj) -> Obj:
        obj = logic.copy_obj(obj)
        return await self._call(lambda: self._update_sync(kind, obj, status_only=False))

    async def update_status(self, kind: Kind, obj: Obj) -> Obj:
        obj = logic.copy_obj(obj)
        return await self._call(lambda: self._update_sync(kind, obj, status_only=True))

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        return await self._call(lambda: self._delete_sync(kind, namespace, name))

    def watch(
        self, kind: Kind, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        after = logic.parse_since(since, self._rv)

        async def read_replay() -> tuple[builtins.list[Change], int]:
            # Runs on the writer thread after the subscription exists: every write either
            # committed before (in the replay) or publishes after (live, rv > boundary).
            return await self._call(lambda: self._replay_sync(kind, namespace, after))

        return follow(self._fanout, kind, namespace, after, read_replay)


if TYPE_CHECKING:
    from controller.store.base import Store

    def _conforms(store: SqliteStore) -> Store:
        return store
