"""Read-modify-write over any Store: on 409 Conflict read again and reapply the change."""

from __future__ import annotations

from collections.abc import Callable

from controller.store import logic
from controller.store.base import Conflict, Kind, Obj, Store

Change = Callable[[Obj], Obj | None]
"""Given a copy of the current object, the object to write (None: nothing to change)."""

DEFAULT_ATTEMPTS = 5


async def mutate(
    store: Store,
    kind: Kind,
    namespace: str,
    name: str,
    change: Change,
    *,
    status: bool = False,
    attempts: int = DEFAULT_ATTEMPTS,
) -> Obj:
    """Apply `change` to the current object and write it (`update`, or `update_status` with
    `status`) under the resourceVersion it was read at; on `Conflict` read it again and reapply,
    at most `attempts` times in all, then raise the last `Conflict`. `change` may run more than
    once, so it must be a function of the object it is given. Returns what the store wrote (the
    current object when `change` returns None); `NotFound` and other errors pass through."""
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts}")
    for attempt in range(1, attempts + 1):
        current = await store.get(kind, namespace, name)
        desired = change(logic.copy_obj(current))
        if desired is None:
            return current
        md = logic.meta(desired)
        md["resourceVersion"] = logic.meta(current).get("resourceVersion", "")
        md["name"], md["namespace"] = name, namespace
        try:
            if status:
                return await store.update_status(kind, desired)
            return await store.update(kind, desired)
        except Conflict:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
