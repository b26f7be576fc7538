"""Home workers: each revision with a concurrency limit is owned by exactly one worker.

The kernel spreads *connections* across the workers sharing the port, not requests, so a
per-replica limit split among workers cannot be exact (limit × replicas < workers). Instead,
worker `home_of(key)` owns a limited revision: it alone queues its requests, enforces the
limit and counts its stats. Any other worker forwards such a request to the home worker over a
unix socket (`proxy_socket_path`) speaking the same HTTP/1.1, naming the revision already
picked in the `x-flint-revision` header; it treats the home worker as the revision's single
unlimited upstream and reports nothing for it.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from flint_common.snapshot import Endpoint

UNIX_PREFIX = "unix:"
"""`Endpoint.host` of an upstream reached over a unix socket: `unix:<path>` (port 0)."""


def proxy_socket_path(state_dir: Path, index: int) -> Path:
    """Where worker `index` accepts requests forwarded by the other workers."""
    return state_dir / "gateway" / f"worker-{index}.proxy.sock"


def home_index(key: str, workers: int) -> int:
    """The home worker of revision `key` among `workers` (stable across processes and runs)."""
    return zlib.crc32(key.encode()) % workers if workers > 1 else 0


class HomeRouter:
    """Where this worker sends requests for limited revisions it does not own."""

    __slots__ = ("_cache", "_endpoints", "index", "workers")

    def __init__(self, index: int, workers: int, state_dir: Path) -> None:
        self.index = index
        self.workers = workers
        self._endpoints = [
            Endpoint(f"@gateway-worker-{i}", UNIX_PREFIX + str(proxy_socket_path(state_dir, i)), 0)
            for i in range(workers)
        ]
        self._cache: dict[str, int] = {}

    def home_of(self, key: str) -> int:
        i = self._cache.get(key)
        if i is None:
            if len(self._cache) >= 65536:
                self._cache.clear()
            i = self._cache[key] = home_index(key, self.workers)
        return i

    def endpoint_for(self, key: str) -> Endpoint | None:
        """The home worker's endpoint, or None when this worker is the home of `key`."""
        i = self.home_of(key)
        return None if i == self.index else self._endpoints[i]
