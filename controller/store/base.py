"""The Store protocol and its errors: what reconcilers and the API server need from a store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Obj = dict[str, Any]
"""A resource as a Kubernetes-shaped JSON object (apiVersion, kind, metadata, spec, status)."""


@dataclass(frozen=True, slots=True)
class Kind:
    """Identifies a resource type in the store: API group plus plural name."""

    group: str
    plural: str

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["ADDED", "MODIFIED", "DELETED"]
    object: Obj
    resource_version: int


class StoreError(Exception):
    """Base of store errors; `code` is the HTTP status the API server answers with.

    `kind` and `name`, when given, say which object the error is about (the API server puts
    them in the Status' `details`).
    """

    code = 500
    reason = "InternalError"

    def __init__(self, message: str, *, kind: Kind | None = None, name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.name = name


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    """A write carried a stale `metadata.resourceVersion` (optimistic concurrency)."""

    code = 409
    reason = "Conflict"


class BadRequest(StoreError):
    """The object cannot be stored as given (e.g. neither `name` nor `generateName`)."""

    code = 400
    reason = "BadRequest"


class Gone(StoreError):
    """A watch asked to resume from a resourceVersion older than the kept history."""

    code = 410
    reason = "Expired"


class Store(Protocol):
    """A resource store with Kubernetes semantics.

    - `metadata.resourceVersion` is a global monotonic counter (as a string on the wire);
    - `create` fills uid, creationTimestamp, generation=1, resourceVersion, and `generateName`;
    - `update` replaces everything but `status` and bumps `generation` when `spec` changes;
      a non-empty `metadata.resourceVersion` that is not current → `Conflict`;
    - `update_status` replaces only `status` and never bumps `generation`;
    - `delete` removes the object; children are removed by reconcilers through ownerReferences;
    - `watch` yields every change after `since` (a resourceVersion) then follows live changes.
    """

    async def create(self, kind: Kind, obj: Obj) -> Obj: ...

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj: ...

    async def list(self, kind: Kind, namespace: str | None = None) -> tuple[list[Obj], int]:
        """Objects (of one namespace, or all when None) and the store's current resourceVersion."""
        ...

    async def update(self, kind: Kind, obj: Obj) -> Obj: ...

    async def update_status(self, kind: Kind, obj: Obj) -> Obj: ...

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj: ...

    def watch(
        self, kind: Kind | None = None, namespace: str | None = None, since: int = 0
    ) -> AsyncIterator[WatchEvent]: ...

    async def close(self) -> None: ...
