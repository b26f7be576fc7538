"""An in-memory Store with the SQLite store's exact semantics, for other components' unit tests."""

from __future__ import annotations

import builtins
import random
from collections import deque
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from controller.store import logic
from controller.store.base import Kind, Obj, WatchEvent
from controller.store.fanout import Change, EventType, FanOut, follow

_Key = tuple[str, str, str, str]
"""(group, plural, namespace, name)"""


class MemoryStore:
    """Objects in a dict, events in a bounded deque; nothing survives the process.

    Every method completes without yielding to the loop before its write is published, so
    writes are atomic with respect to other coroutines, like the SQLite store's transactions.
    """

    def __init__(
        self, *, history: int = 10_000, watch_buffer: int = 1000, rng: random.Random | None = None
    ) -> None:
        self._objects: dict[_Key, tuple[int, bytes]] = {}
        self._events: deque[Change] = deque()
        self._history = history
        self._compacted = 0
        self._rv = 0
        self._rng = rng
        self._fanout = FanOut(watch_buffer)

    async def open(self) -> None:
        """Nothing to open; present so both stores are started the same way."""

    async def close(self) -> None:
        self._fanout.close()

    @property
    def resource_version(self) -> int:
        return self._rv

    def _write(self, type_: EventType, kind: Kind, namespace: str, name: str, obj: Obj) -> Obj:
        self._rv += 1
        logic.with_resource_version(obj, self._rv)
        data = logic.dumps(obj)
        key = (kind.group, kind.plural, namespace, name)
        if type_ == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = (self._rv, data)
        change = Change(self._rv, type_, kind, namespace, data)
        self._events.append(change)
        while len(self._events) > self._history:
            self._compacted = self._events.popleft().rv
        self._fanout.publish([change])
        return logic.loads(data)

    def _load(self, kind: Kind, namespace: str, name: str) -> Obj:
        row = self._objects.get((kind.group, kind.plural, namespace, name))
        if row is None:
            raise logic.not_found(kind, name)
        return logic.loads(row[1])

    async def create(self, kind: Kind, obj: Obj) -> Obj:
        draft = logic.prepare_create(kind, obj)
        namespace = logic.namespace_of(draft)
        name = ""
        for candidate in logic.candidate_names(draft, self._rng):
            name = candidate
            if (kind.group, kind.plural, namespace, name) not in self._objects:
                break
        else:
            raise logic.already_exists(kind, name)
        logic.meta(draft)["name"] = name
        return self._write("ADDED", kind, namespace, name, draft)

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj:
        return self._load(kind, namespace, name)

    async def list(
        self, kind: Kind, namespace: str | None = None, *, not_older_than: str = ""
    ) -> tuple[list[Obj], str]:
        logic.parse_since(not_older_than, self._rv)
        items = [
            logic.loads(data)
            for (group, plural, ns, _), (_, data) in sorted(self._objects.items())
            if group == kind.group and plural == kind.plural and namespace in (None, ns)
        ]
        return items, str(self._rv)

    async def update(self, kind: Kind, obj: Obj) -> Obj:
        namespace, name = logic.namespace_of(obj), logic.name_of(obj)
        stored = self._load(kind, namespace, name)
        logic.check_resource_version(kind, stored, obj)
        new = logic.apply_update(kind, stored, obj)
        if new == stored:
            return stored
        if logic.finalized(new):
            return self._write("DELETED", kind, namespace, name, new)
        return self._write("MODIFIED", kind, namespace, name, new)

    async def update_status(self, kind: Kind, obj: Obj) -> Obj:
        namespace, name = logic.namespace_of(obj), logic.name_of(obj)
        stored = self._load(kind, namespace, name)
        logic.check_resource_version(kind, stored, obj)
        new = logic.apply_status_update(stored, obj)
        if new == stored:
            return stored
        return self._write("MODIFIED", kind, namespace, name, new)

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        stored = self._load(kind, namespace, name)
        marked = logic.apply_delete(stored)
        if marked is None:
            return self._write("DELETED", kind, namespace, name, stored)
        if marked == stored:
            return stored  # being deleted already
        return self._write("MODIFIED", kind, namespace, name, marked)

    def watch(
        self, kind: Kind, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        after = logic.parse_since(since, self._rv)

        async def read_replay() -> tuple[builtins.list[Change], int]:
            # No await in here: the replay and the subscription see the same state.
            return self._replay(kind, namespace, after), self._rv

        return follow(self._fanout, kind, namespace, after, read_replay)

    def _replay(
        self, kind: Kind | None, namespace: str | None, since: int
    ) -> builtins.list[Change]:
        if since <= 0:
            return [
                Change(rv, "ADDED", Kind(group, plural), ns, data)
                for (group, plural, ns, _), (rv, data) in sorted(self._objects.items())
                if logic.matches(kind, namespace, Kind(group, plural), ns)
            ]
        if since < self._compacted:
            raise logic.gone(since, self._compacted)
        return [
            c
            for c in self._events
            if c.rv > since and logic.matches(kind, namespace, c.kind, c.namespace)
        ]


if TYPE_CHECKING:
    from controller.store.base import Store

    def _conforms(store: MemoryStore) -> Store:
        return store
