"""Store semantics, run against both the SQLite and the in-memory store so they behave the same."""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from controller.store import logic
from controller.store.base import (
    AlreadyExists,
    BadRequest,
    Conflict,
    Gone,
    Invalid,
    Kind,
    NotFound,
    Obj,
    TooLarge,
    WatchEvent,
)
from controller.store.memory import MemoryStore
from controller.store.sqlite import SqliteStore

SVC = Kind("serving.knative.dev", "services")
REV = Kind("serving.knative.dev", "revisions")

StoreFactory = Callable[..., Awaitable[Any]]


@pytest.fixture(params=["memory", "sqlite"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    opened: list[Any] = []

    async def make(**kwargs: Any) -> Any:
        if request.param == "memory":
            kwargs.pop("compact_every", None)
            store: Any = MemoryStore(**kwargs)
        else:
            store = SqliteStore(tmp_path / f"store{len(opened)}.db", **kwargs)
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> Any:
    return await make_store()


def svc(name: str = "hello", ns: str | None = None, **spec: Any) -> Obj:
    md: dict[str, Any] = {"name": name}
    if ns:
        md["namespace"] = ns
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": md,
        "spec": spec or {"image": "a"},
    }


async def until_watched(store: Any, watchers: int = 1) -> None:
    """Wait, with a deadline, until `watchers` watches have subscribed to the store's changes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while len(store._fanout._subscribers) < watchers:
        assert loop.time() < deadline, f"timed out waiting for {watchers} watchers to subscribe"
        await asyncio.sleep(0.001)


async def take(it: AsyncIterator[WatchEvent], n: int) -> list[WatchEvent]:
    return [await asyncio.wait_for(anext(it), 5) for _ in range(n)]


# -- create / get / list --


async def test_create_fills_metadata(store: Any) -> None:
    created = await store.create(SVC, svc())
    md = created["metadata"]
    assert md["namespace"] == "default"
    assert md["generation"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", md["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", md["creationTimestamp"])
    assert md["resourceVersion"] == "1"
    assert await store.get(SVC, "default", "hello") == created


async def test_create_ignores_client_resource_version_and_does_not_alias(store: Any) -> None:
    obj = svc()
    obj["metadata"]["resourceVersion"] = "99"
    created = await store.create(SVC, obj)
    assert created["metadata"]["resourceVersion"] == "1"
    assert "uid" not in obj["metadata"]  # the caller's object is not modified
    created["spec"]["image"] = "mutated"
    assert (await store.get(SVC, "default", "hello"))["spec"]["image"] == "a"


async def test_create_duplicate_is_already_exists(store: Any) -> None:
    await store.create(SVC, svc())
    with pytest.raises(
        AlreadyExists, match=r'services\.serving\.knative\.dev "hello" already exists'
    ):
        await store.create(SVC, svc())
    await store.create(SVC, svc(ns="other"))  # same name, other namespace: fine
    await store.create(REV, svc())  # same name, other kind: fine


async def test_create_needs_name_or_generate_name(store: Any) -> None:
    obj = svc()
    del obj["metadata"]["name"]
    with pytest.raises(BadRequest, match="name or generateName is required"):
        await store.create(SVC, obj)


async def test_generate_name_retries_on_collision(make_store: StoreFactory) -> None:
    draft = {"metadata": {"generateName": "hello-"}}
    first, second = list(logic.candidate_names(draft, random.Random(7)))[:2]
    store = await make_store(rng=random.Random(7))
    await store.create(SVC, svc(first))
    obj = svc()
    obj["metadata"] = {"generateName": "hello-"}
    created = await store.create(SVC, obj)
    assert created["metadata"]["name"] == second
    assert re.fullmatch(r"hello-[a-z0-9]{5}", second)


async def test_get_missing_is_not_found(store: Any) -> None:
    with pytest.raises(NotFound, match=r'services\.serving\.knative\.dev "nope" not found') as e:
        await store.get(SVC, "default", "nope")
    assert e.value.kind == SVC and e.value.name == "nope"


async def test_list_sorted_filtered_with_resource_version(store: Any) -> None:
    for ns, name in [("b", "x"), ("a", "z"), ("a", "y")]:
        await store.create(SVC, svc(name, ns))
    await store.create(REV, svc("r", "a"))
    items, rv = await store.list(SVC)
    assert [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in items] == [
        ("a", "y"),
        ("a", "z"),
        ("b", "x"),
    ]
    assert rv == "4"
    items, _ = await store.list(SVC, "a")
    assert [o["metadata"]["name"] for o in items] == ["y", "z"]
    assert (await store.list(SVC, "none"))[0] == []


# -- update / status / delete --


async def test_update_conflict_on_stale_resource_version(store: Any) -> None:
    created = await store.create(SVC, svc())
    fresh = await store.update(SVC, {**created, "spec": {"image": "b"}})
    with pytest.raises(Conflict) as e:
        await store.update(SVC, {**created, "spec": {"image": "c"}})
    assert str(e.value) == (
        'Operation cannot be fulfilled on services.serving.knative.dev "hello": the object has '
        "been modified; please apply your changes to the latest version and try again"
    )
    ok = await store.update(SVC, {**fresh, "spec": {"image": "c"}})
    assert ok["spec"] == {"image": "c"}


async def test_update_without_resource_version_is_unconditional(store: Any) -> None:
    await store.create(SVC, svc())
    updated = await store.update(SVC, svc(image="b"))
    assert updated["spec"] == {"image": "b"}
    assert updated["metadata"]["generation"] == 2


async def test_update_generation_only_on_spec_change_and_identity_immutable(store: Any) -> None:
    created = await store.create(SVC, svc())
    labelled = logic.copy_obj(created)
    labelled["metadata"]["labels"] = {"a": "b"}
    labelled["metadata"]["uid"] = "forged"
    labelled["metadata"]["creationTimestamp"] = "1970-01-01T00:00:00Z"
    labelled["metadata"]["generation"] = 42
    out = await store.update(SVC, labelled)
    assert out["metadata"]["labels"] == {"a": "b"}
    assert out["metadata"]["generation"] == 1
    assert out["metadata"]["uid"] == created["metadata"]["uid"]
    assert out["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert int(out["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    out["spec"]["image"] = "b"
    out2 = await store.update(SVC, out)
    assert out2["metadata"]["generation"] == 2


async def test_update_ignores_status_and_noop_keeps_resource_version(store: Any) -> None:
    created = await store.create(SVC, svc())
    with_status = await store.update_status(SVC, {**created, "status": {"ready": True}})
    attempt = logic.copy_obj(with_status)
    attempt["status"] = {"ready": False}
    out = await store.update(SVC, attempt)
    assert out["status"] == {"ready": True}
    assert out == with_status  # nothing else changed: no write, same resourceVersion
    assert (await store.list(SVC))[1] == with_status["metadata"]["resourceVersion"]


async def test_update_missing_is_not_found(store: Any) -> None:
    with pytest.raises(NotFound):
        await store.update(SVC, svc())
    with pytest.raises(NotFound):
        await store.update_status(SVC, svc())


async def test_update_status_replaces_only_status(store: Any) -> None:
    created = await store.create(SVC, svc())
    attempt = logic.copy_obj(created)
    attempt["spec"] = {"image": "ignored"}
    attempt["metadata"]["labels"] = {"ignored": "yes"}
    attempt["status"] = {"observedGeneration": 1, "conditions": [{"type": "Ready"}]}
    out = await store.update_status(SVC, attempt)
    assert out["spec"] == {"image": "a"}
    assert "labels" not in out["metadata"]
    assert out["metadata"]["generation"] == 1
    assert out["status"]["observedGeneration"] == 1
    with pytest.raises(Conflict):
        await store.update_status(SVC, attempt)  # attempt carries the old resourceVersion


async def test_delete_returns_object(store: Any) -> None:
    created = await store.create(SVC, svc())
    deleted = await store.delete(SVC, "default", "hello")
    assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(deleted["metadata"]["resourceVersion"]) == 2
    with pytest.raises(NotFound):
        await store.get(SVC, "default", "hello")
    with pytest.raises(NotFound):
        await store.delete(SVC, "default", "hello")


async def test_a_finalizer_holds_a_delete_until_it_is_removed(store: Any) -> None:
    created = await store.create(SVC, {**svc(), "metadata": {"name": "hello",
                                                              "finalizers": ["flint.dev/redis"]}})
    it = store.watch(SVC, since=created["metadata"]["resourceVersion"])
    marked = await store.delete(SVC, "default", "hello")
    md = marked["metadata"]
    assert md["deletionTimestamp"] and md["deletionGracePeriodSeconds"] == 0
    assert md["generation"] == 2  # as the API server bumps it when the deletion starts
    assert (await store.get(SVC, "default", "hello"))["metadata"]["deletionTimestamp"]
    again = await store.delete(SVC, "default", "hello")  # deleting again changes nothing
    assert again["metadata"]["resourceVersion"] == md["resourceVersion"]
    # The deletion fields are the store's; no new finalizer on an object being deleted.
    tampered = logic.copy_obj(marked)
    tampered["metadata"].pop("deletionTimestamp")
    kept = await store.update(SVC, {**tampered, "spec": {"image": "b"}})
    assert kept["metadata"]["deletionTimestamp"] == md["deletionTimestamp"]
    more = logic.copy_obj(kept)
    more["metadata"]["finalizers"].append("other")
    with pytest.raises(Invalid, match="no new finalizers can be added"):
        await store.update(SVC, more)
    done = logic.copy_obj(kept)
    done["metadata"]["finalizers"] = []
    gone = await store.update(SVC, done)
    with pytest.raises(NotFound):
        await store.get(SVC, "default", "hello")
    events = await take(it, 3)
    assert [e.type for e in events] == ["MODIFIED", "MODIFIED", "DELETED"]
    assert events[-1].resource_version == gone["metadata"]["resourceVersion"]


async def test_without_finalizers_a_delete_removes_the_object_at_once(store: Any) -> None:
    await store.create(SVC, {**svc(), "metadata": {"name": "hello", "finalizers": []}})
    deleted = await store.delete(SVC, "default", "hello")
    assert "deletionTimestamp" not in deleted["metadata"]
    with pytest.raises(NotFound):
        await store.get(SVC, "default", "hello")


# -- watch --


async def test_watch_from_zero_lists_then_follows(store: Any) -> None:
    await store.create(SVC, svc("b"))
    await store.create(SVC, svc("a"))
    await store.create(REV, svc("r"))
    it = store.watch(SVC)
    first = await take(it, 2)
    assert [(e.type, e.object["metadata"]["name"]) for e in first] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    await store.update(SVC, svc("a", image="x"))
    await store.delete(SVC, "default", "b")
    live = await take(it, 2)
    assert [(e.type, e.object["metadata"]["name"], e.resource_version) for e in live] == [
        ("MODIFIED", "a", "4"),
        ("DELETED", "b", "5"),
    ]
    await it.aclose()


async def test_watch_since_replays_then_follows(store: Any) -> None:
    await store.create(SVC, svc("a"))
    _, since = await store.list(SVC)
    await store.create(SVC, svc("b", ns="other"))
    await store.create(REV, svc("r"))
    await store.update(SVC, svc("a", image="x"))
    it = store.watch(SVC, "default", since=since)
    events = await take(it, 1)
    assert [(e.type, e.resource_version) for e in events] == [("MODIFIED", "4")]
    await store.delete(SVC, "other", "b")  # other namespace: filtered
    await store.delete(SVC, "default", "a")
    events = await take(it, 1)
    assert [(e.type, e.resource_version) for e in events] == [("DELETED", "6")]
    await it.aclose()


async def test_watch_refuses_versions_it_never_issued_at_once(store: Any) -> None:
    await store.create(SVC, svc("a"))
    with pytest.raises(BadRequest, match='resourceVersion "abc" is not a number'):
        store.watch(SVC, since="abc")  # before the first anext: an API error, not a stream's
    with pytest.raises(TooLarge, match="Too large resource version: 7, current: 1"):
        store.watch(SVC, since="7")
    with pytest.raises(TooLarge):
        await store.list(SVC, not_older_than="2")
    items, rv = await store.list(SVC, not_older_than="1")
    assert rv == "1" and len(items) == 1
    events = await take(store.watch(SVC, since="0"), 1)  # "0" as "": the current objects first
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "a")]


async def test_watch_has_no_gaps_or_duplicates_under_concurrent_writes(store: Any) -> None:
    await store.create(SVC, svc("counter"))
    total = 150

    async def writer() -> None:
        for i in range(total):
            await store.update(SVC, svc("counter", image=str(i)))
            if i % 7 == 0:
                await asyncio.sleep(0)

    async def watcher(since: str, until: int) -> list[int]:
        seen: list[int] = []
        async for ev in store.watch(SVC, since=since):
            seen.append(int(ev.resource_version))  # the embedded stores' counter, inside
            if int(ev.resource_version) >= until:
                break
        return seen

    final = 1 + total
    write_task = asyncio.create_task(writer())
    watchers = []
    for _ in range(15):
        _, rv = await store.list(SVC)
        watchers.append((rv, asyncio.create_task(watcher(rv, final))))
        await asyncio.sleep(0)
    await write_task
    for since, task in watchers:
        seen = await asyncio.wait_for(task, 10)
        if int(since) == final:
            continue
        assert seen == list(range(int(since) + 1, final + 1)), since


async def test_watch_gone_when_history_compacted(make_store: StoreFactory) -> None:
    store = await make_store(history=5, compact_every=1)
    await store.create(SVC, svc())
    for i in range(20):
        await store.update(SVC, svc(image=str(i)))
    with pytest.raises(Gone, match="too old resource version: 2"):
        await anext(store.watch(SVC, since="2"))
    # within the kept history, or from zero (list semantics): fine
    ev = await anext(store.watch(SVC, since="19"))
    assert ev.resource_version == "20"
    ev = await anext(store.watch(SVC))
    assert ev.type == "ADDED" and ev.resource_version == "21"


async def test_slow_watcher_gets_gone(make_store: StoreFactory) -> None:
    store = await make_store(watch_buffer=3)
    await store.create(SVC, svc())
    it = store.watch(SVC, since="1")
    first = asyncio.create_task(anext(it))
    await until_watched(store)
    await store.update(SVC, svc(image="0"))
    assert (await asyncio.wait_for(first, 5)).resource_version == "2"
    for i in range(1, 10):
        await store.update(SVC, svc(image=str(i)))
    with pytest.raises(Gone, match="behind"):
        await asyncio.wait_for(anext(it), 5)


async def test_close_ends_watches(make_store: StoreFactory) -> None:
    store = await make_store()
    it = store.watch(SVC)
    pending = asyncio.create_task(anext(it))
    await until_watched(store)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 5)


# -- SQLite only --


async def test_sqlite_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state" / "store.db"
    async with SqliteStore(path) as store:
        created = await store.create(SVC, svc())
        await store.update_status(SVC, {**created, "status": {"ready": True}})
        await store.create(SVC, svc("gone"))
        await store.delete(SVC, "default", "gone")
    async with SqliteStore(path) as store:
        got = await store.get(SVC, "default", "hello")
        assert got["status"] == {"ready": True}
        assert got["metadata"]["uid"] == created["metadata"]["uid"]
        items, rv = await store.list(SVC)
        assert rv == "4" and len(items) == 1
        replay = await take(store.watch(SVC, since="1"), 3)
        assert [(e.type, e.resource_version) for e in replay] == [
            ("MODIFIED", "2"),
            ("ADDED", "3"),
            ("DELETED", "4"),
        ]
        again = await store.create(SVC, svc("again"))
        assert again["metadata"]["resourceVersion"] == "5"
    async with SqliteStore(path) as store:
        assert (await store.list(SVC))[1] == "5"


async def test_sqlite_uses_wal(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        await store.create(SVC, svc())

    def journal_mode() -> str:
        conn = sqlite3.connect(tmp_path / "s.db")
        try:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        finally:
            conn.close()

    assert await asyncio.to_thread(journal_mode) == "wal"


async def test_sqlite_never_runs_on_the_event_loop_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[threading.Thread] = set()

    class Recording(sqlite3.Connection):
        def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
            threads.add(threading.current_thread())
            return super().execute(*args, **kwargs)

        def executescript(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
            threads.add(threading.current_thread())
            return super().executescript(*args, **kwargs)

        def close(self) -> None:
            threads.add(threading.current_thread())
            super().close()

    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        threads.add(threading.current_thread())
        return real_connect(*args, factory=Recording, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    created = await store.create(SVC, svc())
    await store.get(SVC, "default", "hello")
    await store.list(SVC)
    await store.update(SVC, {**created, "spec": {"image": "b"}})
    await store.update_status(SVC, {**created, "status": {"x": 1}, "metadata": {"name": "hello"}})
    await anext(store.watch(SVC, since="1"))
    await store.delete(SVC, "default", "hello")
    await store.close()
    assert threads, "the recording connection was not used"
    assert threading.main_thread() not in threads
    assert all(t.name.startswith("flint-store") for t in threads)
