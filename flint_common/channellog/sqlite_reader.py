"""Read-only access to a SQLite channel log from another process (SQLite off the loop).

The log's writer (`SqliteChannelLog`, in the gateway's home worker) is the file's only writer;
a reader in another process (the dispatcher) reads committed records through its own connection
(WAL lets readers run beside the writer), with the writer's own queries (`read_records`,
`read_tail`, in `flint_common.channellog.format`), so the log's SQL lives in one place. The file
appears with the log's first record: until then the log is empty, and the reader never creates it
(`mode=rw` opens an existing file only).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from flint_common.channellog.format import read_records, read_tail

__all__ = ["SqliteLogReader"]


class SqliteLogReader:
    """The read side of a `ChannelLog` in one SQLite file; every call runs in its own thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"log-reader:{path.name}")

    def _connection(self) -> sqlite3.Connection | None:
        if self._conn is None:
            if not self.path.exists():
                return None
            try:
                conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, check_same_thread=False)
            except sqlite3.OperationalError:
                return None
            conn.execute("PRAGMA query_only = 1")
            conn.execute("PRAGMA busy_timeout = 5000")
            self._conn = conn
        return self._conn

    def _read(self, channel: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        conn = self._connection()
        if conn is None or limit <= 0:
            return []
        try:
            return read_records(conn, channel, after, limit)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise

    def _tail(self, channel: str) -> int:
        conn = self._connection()
        if conn is None:
            return 0
        try:
            return read_tail(conn, channel)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise

    async def read(self, channel: str, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` committed records of `channel` with offset > `after`, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, channel, after, limit)

    async def tail(self, channel: str) -> int:
        """The last committed offset of `channel` (0 when it has no record or no file yet)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._tail, channel)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)
