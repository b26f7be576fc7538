"""Consumer floors: how far every consumer of a log has got, so its writer may compact below it.

The dispatcher knows each trigger's position; the log's writer (a gateway worker) is the only
process that may delete records. The dispatcher therefore writes, next to each log file, the
lowest position over the triggers of that log (`{log}.floor`, written atomically by rename),
and the writer deletes the records at or below it from time to time. A missing or unreadable
floor file means "unknown": nothing is deleted.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["floor_path", "read_floor", "write_floor"]


def floor_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + ".floor")


def write_floor(log_path: Path, position: int) -> None:
    """Record that every consumer of the log has handled the records up to `position`."""
    path = floor_path(log_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(str(int(position)))
    os.replace(tmp, path)


def read_floor(log_path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(floor_path(log_path).read_text().strip())
    return None
