"""A level-triggered work queue: keys deduplicated, one worker per key at a time, retry with backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from flint_common.backoff import backoff_delay

K = TypeVar("K", bound=Hashable)

log = logging.getLogger("flint.queue")


@dataclass(frozen=True)
class BackoffSettings:
    """Per-key retry backoff after a failed reconcile (client-go's default rate limiter shape)."""

    initial_s: float = 0.005
    """First retry delay in seconds; doubles each consecutive failure."""
    max_s: float = 30.0
    """Cap on the retry delay in seconds."""

    def delay(self, failures: int) -> float:
        return backoff_delay(self.initial_s, self.max_s, failures - 1)


class WorkQueue(Generic[K]):
    """Keys waiting to be reconciled. A key added while it is being processed is processed again
    after (never concurrently); a key added many times while waiting is processed once."""

    def __init__(
        self,
        name: str,
        handler: Callable[[K], Awaitable[float | None]],
        *,
        workers: int = 2,
        backoff: BackoffSettings | None = None,
    ) -> None:
        self.name = name
        self._handler = handler
        self._workers = workers
        self._backoff = backoff or BackoffSettings()
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._active: set[K] = set()
        self._dirty: set[K] = set()
        self._failures: dict[K, int] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: K) -> None:
        if key in self._active:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def add_after(self, key: K, delay_s: float) -> None:
        """Requeue `key` after `delay_s` seconds (an earlier pending timer wins)."""
        loop = asyncio.get_running_loop()
        existing = self._timers.get(key)
        due = loop.time() + delay_s
        if existing is not None:
            if existing.when() <= due:
                return
            existing.cancel()
        self._timers[key] = loop.call_at(due, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def start(self) -> None:
        """Start the workers (again after `stop`: what is queued is kept; a key whose reconcile
        `stop` cancelled is not, its owner adds it again); a no-op while they run."""
        if self._tasks:
            return
        for i in range(self._workers):
            self._tasks.append(asyncio.create_task(self._work(), name=f"{self.name}-{i}"))

    async def stop(self) -> None:
        for t in self._timers.values():
            t.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def idle(self) -> bool:
        return not self._queued and not self._active

    async def _work(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._active.add(key)
            started = time.monotonic()
            try:
                requeue = await self._handler(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = self._backoff.delay(failures)
                level = logging.DEBUG if failures < 3 else logging.WARNING
                log.log(
                    level,
                    "reconcile failed queue=%s key=%s failures=%d retry_in=%.3fs error=%r",
                    self.name, key, failures, delay, exc,
                    exc_info=failures >= 3,
                )
                self.add_after(key, delay)
            else:
                self._failures.pop(key, None)
                if requeue is not None:
                    self.add_after(key, requeue)
                log.debug(
                    "reconciled queue=%s key=%s in=%.1fms",
                    self.name, key, (time.monotonic() - started) * 1000,
                )
            finally:
                self._active.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.add(key)
