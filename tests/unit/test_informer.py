"""Informer over the in-memory store: the cache follows the store and handlers see every change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.informer import Informer, key_of
from controller.store.base import Kind, Obj, StoreError
from controller.store.memory import MemoryStore

SVC = Kind("serving.knative.dev", "services")
ROUTES = Kind("serving.knative.dev", "routes")
WAIT = 2.0


def svc(name: str, ns: str | None = None, image: str = "/srv/a") -> Obj:
    meta: Obj = {"name": name}
    if ns is not None:
        meta["namespace"] = ns
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"template": {"spec": {"containers": [{"image": image}]}}},
    }


class Events:
    def __init__(self) -> None:
        self.items: list[tuple[str, Obj, Obj | None]] = []
        self._changed = asyncio.Event()

    def __call__(self, type_: str, obj: Obj, old: Obj | None) -> None:
        self.items.append((type_, obj, old))
        self._changed.set()

    async def until(self, count: int) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.items) < count:
                self._changed.clear()
                await self._changed.wait()

    def summary(self) -> list[tuple[str, str, str | None]]:
        return [
            (t, o["metadata"]["name"], old["metadata"]["resourceVersion"] if old else None)
            for t, o, old in self.items
        ]


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    s = MemoryStore()
    await s.open()
    yield s
    await s.close()


@pytest.fixture
async def informers() -> AsyncIterator[list[Informer]]:
    made: list[Informer] = []
    yield made
    for inf in made:
        await inf.stop()


async def start(informers: list[Informer], store: Any, kind: Kind = SVC) -> tuple[Informer, Events]:
    inf = Informer(store, kind)
    events = Events()
    inf.on_change(events)
    informers.append(inf)
    await asyncio.wait_for(inf.start(), WAIT)
    return inf, events


def test_key_of() -> None:
    assert key_of({"metadata": {"name": "a"}}) == ("default", "a")
    assert key_of({"metadata": {"name": "a", "namespace": "x"}}) == ("x", "a")


async def test_start_lists_existing_objects(store: MemoryStore, informers: list[Informer]) -> None:
    await store.create(SVC, svc("a"))
    await store.create(SVC, svc("b", "prod"))
    await store.create(ROUTES, {"metadata": {"name": "a"}, "spec": {}})
    inf, events = await start(informers, store)
    # synced when start returns: reads are served from the cache
    assert inf.get("default", "a") is not None
    assert inf.get("prod", "b") is not None
    assert inf.get("default", "b") is None
    assert sorted(o["metadata"]["name"] for o in inf) == ["a", "b"]
    assert [o["metadata"]["name"] for o in inf.list("prod")] == ["b"]
    assert sorted(o["metadata"]["name"] for o in inf.list()) == ["a", "b"]
    assert sorted((t, name, old) for t, name, old in events.summary()) == [
        ("ADDED", "a", None),
        ("ADDED", "b", None),
    ]


async def test_cache_follows_create_update_delete(
    store: MemoryStore, informers: list[Informer]
) -> None:
    inf, events = await start(informers, store)
    assert list(inf) == []

    created = await store.create(SVC, svc("a"))
    await events.until(1)
    assert events.items[0] == ("ADDED", created, None)
    assert inf.get("default", "a") == created

    changed = dict(created, spec={"template": {"spec": {"containers": [{"image": "/srv/b"}]}}})
    updated = await store.update(SVC, changed)
    await events.until(2)
    assert events.items[1] == ("MODIFIED", updated, created)
    assert inf.get("default", "a") == updated
    assert updated["metadata"]["generation"] == 2

    with_status = await store.update_status(SVC, dict(updated, status={"observedGeneration": 2}))
    await events.until(3)
    assert events.items[2] == ("MODIFIED", with_status, updated)
    assert (inf.get("default", "a") or {})["status"] == {"observedGeneration": 2}

    deleted = await store.delete(SVC, "default", "a")
    await events.until(4)
    t, obj, old = events.items[3]
    assert t == "DELETED"
    assert obj["metadata"]["name"] == "a"
    assert obj["metadata"]["uid"] == deleted["metadata"]["uid"]
    assert old == with_status
    assert inf.get("default", "a") is None
    assert list(inf) == []


async def test_other_kinds_are_not_seen(store: MemoryStore, informers: list[Informer]) -> None:
    inf, events = await start(informers, store)
    await store.create(ROUTES, {"metadata": {"name": "r"}, "spec": {}})
    await store.create(SVC, svc("s"))
    await events.until(1)
    assert events.summary() == [("ADDED", "s", None)]
    assert inf.get("default", "r") is None


async def test_every_handler_is_called_and_a_failing_one_does_not_stop_the_rest(
    store: MemoryStore, informers: list[Informer]
) -> None:
    inf = Informer(store, SVC)
    seen: list[str] = []

    def broken(type_: str, obj: Obj, old: Obj | None) -> None:
        raise RuntimeError("handler bug")

    events = Events()
    inf.on_change(broken)
    inf.on_change(lambda t, o, old: seen.append(t))
    inf.on_change(events)
    informers.append(inf)
    await inf.start()
    await store.create(SVC, svc("a"))
    await events.until(1)
    await store.delete(SVC, "default", "a")
    await events.until(2)
    assert seen == ["ADDED", "DELETED"]


async def test_handler_sees_the_cache_already_updated(
    store: MemoryStore, informers: list[Informer]
) -> None:
    inf = Informer(store, SVC)
    observed: list[Obj | None] = []
    inf.on_change(lambda t, o, old: observed.append(inf.get(*key_of(o))))
    events = Events()
    inf.on_change(events)
    informers.append(inf)
    await inf.start()
    created = await store.create(SVC, svc("a"))
    await events.until(1)
    await store.delete(SVC, "default", "a")
    await events.until(2)
    assert observed == [created, None]


async def test_cache_returns_are_snapshots_of_iteration(
    store: MemoryStore, informers: list[Informer]
) -> None:
    inf, events = await start(informers, store)
    await store.create(SVC, svc("a"))
    await store.create(SVC, svc("b"))
    await events.until(2)
    it = iter(inf)
    first = next(it)
    await store.create(SVC, svc("c"))
    await events.until(3)
    # iterating while the cache changes neither fails nor sees the new object
    rest = list(it)
    assert {first["metadata"]["name"], *(o["metadata"]["name"] for o in rest)} == {"a", "b"}


async def test_relist_after_falling_behind(informers: list[Informer]) -> None:
    # A watch buffer of 2 overflows when many writes land without the informer running:
    # the watch ends with Gone and the informer lists again, emitting the differences.
    store = MemoryStore(watch_buffer=2)
    await store.open()
    lists: list[Kind] = []
    real_list = store.list

    async def counting_list(kind: Kind, namespace: str | None = None, *,
                            not_older_than: str = "") -> Any:
        lists.append(kind)
        return await real_list(kind, namespace, not_older_than=not_older_than)

    store.list = counting_list  # type: ignore[method-assign]
    try:
        keep = await store.create(SVC, svc("keep"))
        doomed = await store.create(SVC, svc("doomed"))
        inf, events = await start(informers, store)
        await events.until(2)
        base = len(events.items)
        # no await yields in between: the informer cannot keep up
        changed = await store.update(SVC, dict(keep, spec={"changed": True}))
        await store.delete(SVC, "default", "doomed")
        new = [await store.create(SVC, svc(f"n{i}")) for i in range(4)]
        await events.until(base + 6)
        after = events.items[base:]
        kinds = sorted((t, o["metadata"]["name"]) for t, o, _ in after)
        assert kinds == [
            ("ADDED", "n0"), ("ADDED", "n1"), ("ADDED", "n2"), ("ADDED", "n3"),
            ("DELETED", "doomed"), ("MODIFIED", "keep"),
        ]
        modified = next(e for e in after if e[0] == "MODIFIED")
        assert modified[1] == changed
        assert modified[2] == keep
        deleted = next(e for e in after if e[0] == "DELETED")
        assert deleted[1]["metadata"]["uid"] == doomed["metadata"]["uid"]
        assert sorted(o["metadata"]["name"] for o in inf) == ["keep", "n0", "n1", "n2", "n3"]
        assert inf.get("default", "n3") == new[3]
        assert lists == [SVC, SVC]  # it did list again
        # and it keeps watching afterwards
        await store.create(SVC, svc("later"))
        await events.until(base + 7)
        assert events.items[-1][0] == "ADDED"
        assert inf.get("default", "later") is not None
    finally:
        for inf in informers:
            await inf.stop()
        informers.clear()
        await store.close()


async def test_stop_ends_the_watch(store: MemoryStore, informers: list[Informer]) -> None:
    inf, events = await start(informers, store)
    await inf.stop()
    await store.create(SVC, svc("a"))
    # give a (wrongly) running watch every chance to deliver
    for _ in range(20):
        await asyncio.sleep(0)
    assert events.items == []
    assert inf.get("default", "a") is None


class _Spinning(Exception):
    """Raised by the test store to break an informer out of a relist loop."""


async def test_closed_store_does_not_make_the_informer_spin() -> None:
    store = MemoryStore()
    await store.open()
    lists: list[Kind] = []
    real_list = store.list

    async def guarded_list(kind: Kind, namespace: str | None = None, *,
                           not_older_than: str = "") -> Any:
        lists.append(kind)
        if len(lists) > 50:
            raise _Spinning  # without this guard the loop would never get control back
        return await real_list(kind, namespace, not_older_than=not_older_than)

    store.list = guarded_list  # type: ignore[method-assign]
    inf = Informer(store, SVC)
    await inf.start()
    try:
        await store.close()
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(lists) <= 3
    finally:
        with contextlib.suppress(Exception):
            await inf.stop()


class FlakyStore(MemoryStore):
    """A store whose first `list_failures` lists and first `watch_failures` watches fail, as a
    Kubernetes API server does when it throttles (429), restarts (503) or refuses (403)."""

    def __init__(self, list_failures: int = 0, watch_failures: int = 0) -> None:
        super().__init__()
        self.list_failures, self.watch_failures = list_failures, watch_failures
        self.lists = 0
        self.healthy_list = asyncio.Event()
        """Set by a list made once no failure is left: the informer's watch after it holds."""

    async def list(self, kind: Kind, namespace: str | None = None, *,
                   not_older_than: str = "") -> tuple[list[Obj], str]:
        self.lists += 1
        if self.list_failures > 0:
            self.list_failures -= 1
            err = StoreError("the API server is unavailable")
            err.code = 503
            raise err
        listed = await super().list(kind, namespace, not_older_than=not_older_than)
        if self.watch_failures == 0:
            self.healthy_list.set()
        return listed

    def watch(self, kind: Kind, namespace: str | None = None, since: str = "") -> Any:
        if self.watch_failures > 0:
            self.watch_failures -= 1
            return self._failing()
        return super().watch(kind, namespace, since)

    async def _failing(self) -> AsyncIterator[Any]:
        err = StoreError("Too many requests")
        err.code = 429
        raise err
        yield  # an async generator that fails at its first step


async def test_a_failed_list_is_tried_again_and_start_waits_for_it(informers: list[Informer]) -> None:
    store = FlakyStore(list_failures=2)
    await store.open()
    await store.create(SVC, svc("a"))
    inf = Informer(store, SVC)
    informers.append(inf)
    await asyncio.wait_for(inf.start(), 5.0)  # synced once a list succeeded
    assert inf.get("default", "a") is not None and store.lists == 3
    await store.close()


async def test_a_failed_watch_relists_and_the_cache_keeps_following(informers: list[Informer]) -> None:
    store = FlakyStore(watch_failures=2)
    await store.open()
    inf = Informer(store, SVC)
    informers.append(inf)
    events = Events()
    inf.on_change(events)
    await inf.start()
    await store.create(SVC, svc("during-the-errors"))  # seen by a relist
    await events.until(1)
    await asyncio.wait_for(store.healthy_list.wait(), WAIT)  # two failed watches, two relists
    assert store.lists == 3
    await store.create(SVC, svc("after"))  # seen by the watch that now holds
    await events.until(2)
    assert [e[:2] for e in events.summary()] == [("ADDED", "during-the-errors"), ("ADDED", "after")]
    await store.close()
