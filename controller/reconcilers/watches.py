"""Which changes wake which reconciler, declared by each reconciler beside its code (Knative's
`controller.go` habit: `EnqueueControllerOf`, label and reference handlers) instead of by hand in
the controller's wiring.

A reconciler module exports `WATCHES`: a tuple of `Watch(kind, keys)`, where `keys` maps a change
of an object of `kind` (`Change`) to the keys of the reconciler's own kind to reconcile, reading
the informers' caches (`Caches`) when it needs to. The mappers below cover the usual shapes;
`controller.app` subscribes each watch to its kind's informer and puts the keys on the
reconciler's queue. Pure: no I/O, tested without a store.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from controller.store.base import Kind

__all__ = [
    "ADDED",
    "DELETED",
    "MODIFIED",
    "Caches",
    "Change",
    "Key",
    "Mapper",
    "Reconciler",
    "Watch",
    "all_in_namespace",
    "every",
    "itself",
    "itself_even_deleted",
    "matching",
    "named_by_label",
    "on",
    "owners",
    "unless_deleted",
]

Obj = dict[str, Any]
Key = tuple[str, str]
"""(namespace, name)."""

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"


@dataclass(frozen=True, slots=True)
class Change:
    """One informer event: its type, the object (the last state of a deleted one) and, for a
    modification, the object before."""

    type: str
    obj: Obj
    old: Obj | None = None

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", "default"))

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def key(self) -> Key:
        return self.namespace, self.name

    @property
    def deleted(self) -> bool:
        return self.type == DELETED

    def versions(self) -> Iterator[Obj]:
        """The object, then its state before the change when there is one."""
        yield self.obj
        if self.old is not None:
            yield self.old


class Caches(Protocol):
    """What a mapper reads: the informers' objects of a kind (in a namespace, or all)."""

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]: ...


Mapper = Callable[[Change, Caches], Iterable[Key]]
"""A change of a watched object → the keys of the watching reconciler's kind to reconcile."""


@dataclass(frozen=True, slots=True)
class Watch:
    """Changes of `kind` enqueue the keys `keys` gives, on the declaring reconciler's queue."""

    kind: Kind
    keys: Mapper


C = TypeVar("C", contravariant=True)


@dataclass(frozen=True, slots=True)
class Reconciler(Generic[C]):
    """A reconciler as the controller runs it: its kind (its queue), the function reconciling one
    key with its context `C`, and the watches that put keys on its queue."""

    kind: Kind
    reconcile: Callable[[C, Key], Awaitable[float | None]]
    watches: tuple[Watch, ...]


def _key(obj: Obj) -> Key:
    meta = obj["metadata"]
    return str(meta.get("namespace", "default")), str(meta["name"])


def itself(change: Change, caches: Caches) -> Iterable[Key]:
    """The changed object itself, unless it was deleted (nothing is left to reconcile)."""
    return () if change.deleted else (change.key,)


def itself_even_deleted(change: Change, caches: Caches) -> Iterable[Key]:
    """The changed object itself, deleted or not (its reconciler cleans up what it left)."""
    return (change.key,)


def named_by_label(label: str) -> Mapper:
    """The object in the same namespace that the changed object's label `label` names (its
    owner, the way Knative's children carry their parent's name)."""

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        value = (change.obj["metadata"].get("labels") or {}).get(label)
        return ((change.namespace, str(value)),) if value else ()

    return keys


def owners(owner_kind: str) -> Mapper:
    """The changed object's owners of kind `owner_kind` (its `ownerReferences`)."""

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        refs = change.obj["metadata"].get("ownerReferences") or []
        return [(change.namespace, str(r["name"])) for r in refs
                if r.get("kind") == owner_kind and r.get("name")]

    return keys


def all_in_namespace(kind: Kind) -> Mapper:
    """Every object of `kind` in the changed object's namespace (something they may refer to
    changed: cheap to reconcile, an unchanged status is not written again)."""

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        return [_key(o) for o in caches.list(kind, change.namespace)]

    return keys


def every(kind: Kind) -> Mapper:
    """Every object of `kind`, in every namespace."""

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        return [_key(o) for o in caches.list(kind)]

    return keys


def matching(kind: Kind, refers: Callable[[Obj, Change], bool]) -> Mapper:
    """The objects of `kind` in the changed object's namespace for which `refers(obj, change)`
    holds (a trigger naming the changed broker, a route sending traffic to a configuration)."""

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        return [_key(o) for o in caches.list(kind, change.namespace) if refers(o, change)]

    return keys


def unless_deleted(mapper: Mapper) -> Mapper:
    """`mapper`, for changes other than a deletion."""

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        return () if change.deleted else mapper(change, caches)

    return keys


def on(types: Iterable[str], mapper: Mapper) -> Mapper:
    """`mapper`, for changes of these types only (ADDED, MODIFIED, DELETED)."""
    wanted = frozenset(types)

    def keys(change: Change, caches: Caches) -> Iterable[Key]:
        return mapper(change, caches) if change.type in wanted else ()

    return keys
