"""In-process watch fan-out: bounded per-watcher buffers; replay joins live with no gaps."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import orjson

from controller.store.base import Gone, Kind, WatchEvent
from controller.store.logic import matches

EventType = Literal["ADDED", "MODIFIED", "DELETED"]


@dataclass(frozen=True, slots=True)
class Change:
    """One committed write, with the object as JSON so each watcher decodes its own copy."""

    rv: int
    type: EventType
    kind: Kind
    namespace: str
    data: bytes

    def event(self) -> WatchEvent:
        return WatchEvent(self.type, orjson.loads(self.data), str(self.rv))


class Subscriber:
    """One watcher's bounded buffer; overflowing it turns the watch into `Gone`."""

    def __init__(self, kind: Kind | None, namespace: str | None, limit: int) -> None:
        self.kind = kind
        self.namespace = namespace
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self._items: deque[Change] = deque()
        self._wakeup = asyncio.Event()

    def offer(self, change: Change) -> None:
        if self.closed or self.overflowed:
            return
        if not matches(self.kind, self.namespace, change.kind, change.namespace):
            return
        if len(self._items) >= self.limit:
            self.overflowed = True
            self._items.clear()
        else:
            self._items.append(change)
        self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self._wakeup.set()

    async def get(self) -> Change | None:
        """The next change, None once closed; raises Gone if this watcher fell too far behind."""
        while True:
            if self.overflowed:
                raise Gone(
                    f"watch fell more than {self.limit} events behind; list again and watch "
                    "from the list's resourceVersion"
                )
            if self._items:
                return self._items.popleft()
            if self.closed:
                return None
            self._wakeup.clear()
            await self._wakeup.wait()


class FanOut:
    """Delivers changes to subscribers; every method runs on the event loop's thread."""

    def __init__(self, buffer: int = 1000) -> None:
        self.buffer = buffer
        self._subscribers: set[Subscriber] = set()
        self.closed = False

    def subscribe(self, kind: Kind | None, namespace: str | None) -> Subscriber:
        sub = Subscriber(kind, namespace, self.buffer)
        if self.closed:
            sub.close()
        else:
            self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        sub.close()

    def publish(self, changes: Iterable[Change]) -> None:
        for change in changes:
            for sub in self._subscribers:
                sub.offer(change)

    def close(self) -> None:
        self.closed = True
        for sub in self._subscribers:
            sub.close()
        self._subscribers.clear()


async def follow(
    fanout: FanOut,
    kind: Kind | None,
    namespace: str | None,
    since: int,
    read_replay: Callable[[], Awaitable[tuple[list[Change], int]]],
) -> AsyncIterator[WatchEvent]:
    """Yields the replay, then live changes newer than the replay; raises `Gone` from either.

    The subscription is made before `read_replay` runs, so nothing committed after the
    replay was read is missed; live changes at or below the replay's resourceVersion (or
    `since`, if newer) were replayed already and are skipped, so nothing is duplicated.
    """
    sub = fanout.subscribe(kind, namespace)
    try:
        replay, current = await read_replay()
        for change in replay:
            yield change.event()
        boundary = max(since, current)
        while True:
            live = await sub.get()
            if live is None:
                return
            if live.rv > boundary:
                yield live.event()
    finally:
        fanout.unsubscribe(sub)
