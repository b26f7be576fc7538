"""The SQLite channel log's file format: its schema and the queries every reader of a log runs.

The writer (`gateway.channels.sqlite.SqliteChannelLog`, in a gateway worker) creates the file and
reads it through these queries too; the dispatcher reads it from another process
(`SqliteLogReader`). Keeping the SQL here, apart from both, is what keeps the two in step.
"""

from __future__ import annotations

import sqlite3

__all__ = ["CHANNEL", "SCHEMA", "read_records", "read_tail"]

CHANNEL = "events"
"""The channel name inside a broker's log file (one broker per file)."""

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS channels (name TEXT PRIMARY KEY, last INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS records ("
    " channel TEXT NOT NULL, off INTEGER NOT NULL, ts REAL NOT NULL, data BLOB NOT NULL,"
    " PRIMARY KEY (channel, off))",
)
"""Created by the writer when it opens the file: the committed tail of each channel, and its records."""

# -- the queries every reader of a log file runs (the writer's reader thread, and the
# dispatcher's `SqliteLogReader` in another process) -------------------------------------------


def read_records(conn: sqlite3.Connection, channel: str, after: int, limit: int) -> list[tuple[int, bytes]]:
    """Up to `limit` committed records of `channel` with offset > `after`, in offset order."""
    rows = conn.execute(
        "SELECT off, data FROM records WHERE channel = ? AND off > ? ORDER BY off LIMIT ?",
        (channel, after, limit),
    ).fetchall()
    return [(int(o), bytes(d)) for o, d in rows]


def read_tail(conn: sqlite3.Connection, channel: str) -> int:
    """The last committed offset of `channel`; 0 if it never had a record."""
    row = conn.execute("SELECT last FROM channels WHERE name = ?", (channel,)).fetchone()
    return int(row[0]) if row else 0
