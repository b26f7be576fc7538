"""`controller.store.retry.mutate` over the in-memory store: read-modify-write that survives 409s."""

from __future__ import annotations

import pytest

from controller.store.base import Conflict, Kind, NotFound, Obj
from controller.store.memory import MemoryStore
from controller.store.retry import mutate

SVC = Kind("serving.knative.dev", "services")


async def test_a_conflicting_write_is_reread_and_the_change_reapplied() -> None:
    store = MemoryStore()
    await store.create(SVC, {"metadata": {"name": "s"}, "spec": {"n": 0}})
    seen: list[int] = []

    def bump(obj: Obj) -> Obj:
        seen.append(obj["spec"]["n"])
        obj["spec"]["n"] += 1
        return obj

    real_update = store.update
    raced = False

    async def racing_update(kind: Kind, obj: Obj) -> Obj:
        nonlocal raced
        if not raced:  # another writer gets in between the read and the write
            raced = True
            await real_update(kind, {"metadata": {"name": "s"}, "spec": {"n": 10}})
        return await real_update(kind, obj)

    store.update = racing_update  # type: ignore[method-assign]
    out = await mutate(store, SVC, "default", "s", bump)
    assert seen == [0, 10] and out["spec"]["n"] == 11


async def test_status_changes_none_and_errors() -> None:
    store = MemoryStore()
    created = await store.create(SVC, {"metadata": {"name": "s"}, "spec": {}})

    def ready(obj: Obj) -> Obj:
        obj["status"] = {"ready": True}
        return obj

    out = await mutate(store, SVC, "default", "s", ready, status=True)
    assert out["status"] == {"ready": True} and out["metadata"]["generation"] == 1
    assert await mutate(store, SVC, "default", "s", lambda obj: None) == out
    with pytest.raises(NotFound):
        await mutate(store, SVC, "default", "missing", ready)
    with pytest.raises(ValueError, match="at least 1"):
        await mutate(store, SVC, "default", "s", ready, attempts=0)

    async def always_conflict(kind: Kind, obj: Obj) -> Obj:
        raise Conflict("stale", kind=kind, name="s")

    store.update = always_conflict  # type: ignore[method-assign]
    with pytest.raises(Conflict):
        await mutate(store, SVC, "default", "s", ready, attempts=2)
    assert created["metadata"]["uid"] == out["metadata"]["uid"]
