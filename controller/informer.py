"""Informers: an in-memory cache of one kind kept current by list + watch, with change handlers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from controller.store.base import Gone, Kind, Obj, Store, StoreError
from flint_common.backoff import backoff_delay

log = logging.getLogger("flint.informer")

RELIST_FIRST_S = 0.2
RELIST_MAX_S = 30.0
"""Pause before listing again after a failed list or watch: doubling from the first, capped."""

Handler = Callable[[str, Obj, Obj | None], None]
"""(event type, new object (the deleted one for DELETED), old object or None)."""


def key_of(obj: Obj) -> tuple[str, str]:
    meta: dict[str, Any] = obj["metadata"]
    return meta.get("namespace", "default"), meta["name"]


class Informer:
    """Caches every object of one kind. Reads are synchronous and never touch the store."""

    def __init__(self, store: Store, kind: Kind) -> None:
        self.kind = kind
        self._store = store
        self._cache: dict[tuple[str, str], Obj] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def on_change(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def get(self, namespace: str, name: str) -> Obj | None:
        return self._cache.get((namespace, name))

    def list(self, namespace: str | None = None) -> list[Obj]:
        return [o for (ns, _), o in self._cache.items() if namespace is None or ns == namespace]

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self._cache.values()))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.kind}")
        await self._synced.wait()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                items, rv = await self._store.list(self.kind)
            except (StoreError, OSError) as exc:  # the API server away, throttling, forbidden…
                failures += 1
                delay = backoff_delay(RELIST_FIRST_S, RELIST_MAX_S, failures - 1)
                log.warning("list failed kind=%s error=%s; again in %.1f s", self.kind, exc, delay)
                await asyncio.sleep(delay)
                continue
            fresh = {key_of(o): o for o in items}
            for k, gone in list(self._cache.items()):
                if k not in fresh:
                    del self._cache[k]
                    self._emit("DELETED", gone, None)
            for k, obj in fresh.items():
                old_obj = self._cache.get(k)
                self._cache[k] = obj
                if old_obj is None:
                    self._emit("ADDED", obj, None)
                elif old_obj["metadata"].get("resourceVersion") != obj["metadata"].get(
                    "resourceVersion"
                ):
                    self._emit("MODIFIED", obj, old_obj)
            self._synced.set()
            try:
                async for ev in self._store.watch(self.kind, None, since=rv):
                    failures = 0
                    k = key_of(ev.object)
                    old = self._cache.get(k)
                    if ev.type == "DELETED":
                        self._cache.pop(k, None)
                        self._emit("DELETED", ev.object, old)
                    else:
                        self._cache[k] = ev.object
                        self._emit(ev.type, ev.object, old)
            except Gone:
                log.info("watch expired kind=%s; relisting", self.kind)
                continue
            except (StoreError, OSError) as exc:
                # Any other error of the watch (a 429, a 500, an ERROR event): the cache stays
                # as it is and is listed again after a pause, never left to go stale.
                failures += 1
                delay = backoff_delay(RELIST_FIRST_S, RELIST_MAX_S, failures - 1)
                log.warning("watch failed kind=%s error=%s; relisting in %.1f s", self.kind, exc, delay)
                await asyncio.sleep(delay)
                continue
            # The watch ended without an error: the store is closing. Stop following it.
            return

    def _emit(self, type_: str, obj: Obj, old: Obj | None) -> None:
        for h in self._handlers:
            try:
                h(type_, obj, old)
            except Exception:
                log.exception("informer handler failed kind=%s", self.kind)
