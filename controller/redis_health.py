"""Whether the controller's Redis keeps what it acknowledges, learned at connect and re-checked.

The brokers' `Durable` condition comes from here: `INFO persistence` (and `CONFIG GET
appendfsync`, when allowed) every `every_s` seconds on a background task, so a Redis restarted
with other settings updates the condition within one period; a Redis that does not answer makes
the condition Unknown. Each change (and the first answer) is logged like
`flint_common.redis_conn.check_connection`'s: `event=redis_connected role=controller url=…
durable=…`, or `event=redis_unreachable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from flint_common import redis_conn
from flint_common.redis_conn import Durability

__all__ = ["CHECK_EVERY_S", "RedisHealth", "RedisView"]

log = logging.getLogger("flint.redis")

CHECK_EVERY_S = 30.0
"""Seconds between two durability checks of the controller's Redis."""


@dataclass(frozen=True)
class RedisView:
    """What the controller last learned of its Redis (the broker reconciler reads it)."""

    durability: Durability | None = None
    """The last answer; None before the first one or while Redis does not answer."""
    error: str = ""
    """Why the last check failed ("" when it answered, or before the first check)."""

    @property
    def checked(self) -> bool:
        return self.durability is not None or bool(self.error)


class RedisHealth:
    """Checks the Redis of `client` every `every_s` seconds; `on_change()` after each change."""

    def __init__(
        self,
        client: aioredis.Redis,
        url: str,
        *,
        on_change: Callable[[], None] = lambda: None,
        every_s: float = CHECK_EVERY_S,
        role: str = "controller",
    ) -> None:
        self._client = client
        self._url = url
        self._on_change = on_change
        self._every_s = every_s
        self._role = role
        self.view = RedisView()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Check now and every `every_s` seconds, on a background task."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-health")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def check(self) -> bool:
        """One check; True when what we know changed (then `on_change` was called)."""
        try:
            found = await redis_conn.durability(self._client)
            view = RedisView(durability=found)
        except (RedisError, OSError, ValueError) as exc:
            view = RedisView(error=f"{type(exc).__name__}: {exc}")
        if view == self.view:
            return False
        old, self.view = self.view, view
        if view.durability is not None:
            d = view.durability
            log.info("event=redis_connected role=%s url=%s durable=%s reason=%s appendfsync=%s",
                     self._role, self._url, d.durable, d.reason or "-", d.appendfsync or "-")
        elif old.error != view.error:  # the same failure again is not news
            log.warning("event=redis_unreachable role=%s url=%s error=%s", self._role, self._url,
                        view.error)
        self._on_change()
        return True

    async def _run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # never let the checks stop; the next round tries again
                log.exception("event=redis_check_failed role=%s", self._role)
            await asyncio.sleep(self._every_s)
