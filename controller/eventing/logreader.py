"""Read-only access to a broker's channel log from the dispatcher process (SQLite off the loop).

The gateway's home worker is the log's only writer (`gateway.channels.sqlite`); the dispatcher
reads committed records through its own connection (WAL lets readers run beside the writer).
The file appears with the broker's first event: until then the log is empty, and the reader
never creates it (`mode=rw` opens an existing file only).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.ingress import CHANNEL

__all__ = ["LogReader"]


class LogReader:
    """Reads one log file; every call runs in the reader's own thread."""

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

    def _read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        conn = self._connection()
        if conn is None:
            return []
        try:
            rows = conn.execute(
                "SELECT off, data FROM records WHERE channel = ? AND off > ? ORDER BY off LIMIT ?",
                (CHANNEL, after, limit),
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [(int(off), bytes(data)) for off, data in rows]

    def _tail(self) -> int:
        conn = self._connection()
        if conn is None:
            return 0
        try:
            row = conn.execute("SELECT last FROM channels WHERE name = ?", (CHANNEL,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise
        return int(row[0]) if row else 0

    async def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` committed records with offset > `after`, in order."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._read, after, limit)

    async def tail(self) -> int:
        """The last committed offset (0 when the log has no record or no file yet)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._tail)

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False)
