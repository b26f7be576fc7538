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
    resource_version: str
    """Opaque: compare it only for equality, pass it back to `watch` to resume after it."""


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

    def details(self) -> Obj:
        """What the Status' `details` says beyond the object's name and kind."""
        return {}


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


class Invalid(StoreError):
    """A write the object's current state forbids (e.g. a new finalizer while it is deleted)."""

    code = 422
    reason = "Invalid"


class TooLarge(StoreError):
    """A resourceVersion newer than the store's (one from another store, or from before the
    store was restored from an older copy)."""

    code = 504
    reason = "Timeout"

    def details(self) -> Obj:
        return {"causes": [{"reason": "ResourceVersionTooLarge",
                            "message": "Too large resource version"}], "retryAfterSeconds": 1}


class Gone(StoreError):
    """A watch asked to resume from a resourceVersion older than the kept history."""

    code = 410
    reason = "Expired"


class Store(Protocol):
    """A resource store with Kubernetes semantics, so reconcilers run unchanged over the embedded
    stores (SQLite, memory) and over a Kubernetes API server.

    - `metadata.resourceVersion` is an opaque string: compare it only for equality, hand it back
      to `update` (optimistic concurrency) and to `watch` (resume after it). The embedded stores
      use a global counter inside; a Kubernetes store passes the API server's through;
    - `create` fills uid, creationTimestamp, generation=1, resourceVersion, and `generateName`;
    - `update` replaces everything but `status` and bumps `generation` when `spec` changes;
      a non-empty `metadata.resourceVersion` that is not current → `Conflict`; the deletion
      fields are the store's, and no finalizer may be added to an object being deleted
      (`Invalid`); removing the last finalizer of an object being deleted deletes it;
    - `update_status` replaces only `status` and never bumps `generation`;
    - `delete` of an object with finalizers only marks it (`deletionTimestamp`, a MODIFIED
      event; `generation` bumped) until they are removed; else it removes the object. Children
      go by owner references: the Kubernetes garbage collector's on Kubernetes, the
      reconcilers' on the embedded engine;
    - `watch` yields every change of one kind after `since` (a resourceVersion from `list` or an
      event; empty: every current object as ADDED first), then follows live changes; a version
      older than the kept history → `Gone` (list again), one it never issued → `BadRequest`,
      one newer than its own → `TooLarge`.
    """

    async def create(self, kind: Kind, obj: Obj) -> Obj: ...

    async def get(self, kind: Kind, namespace: str, name: str) -> Obj: ...

    async def list(
        self, kind: Kind, namespace: str | None = None, *, not_older_than: str = ""
    ) -> tuple[list[Obj], str]:
        """Objects (of one namespace, or all when None) and the resourceVersion they are as of;
        with `not_older_than`, as of that version or newer (`TooLarge` when the store is older,
        `BadRequest` for a version it never issued)."""
        ...

    async def update(self, kind: Kind, obj: Obj) -> Obj: ...

    async def update_status(self, kind: Kind, obj: Obj) -> Obj: ...

    async def delete(self, kind: Kind, namespace: str, name: str) -> Obj:
        """The object as deleted, or as marked for deletion while finalizers remain."""
        ...

    def watch(
        self, kind: Kind, namespace: str | None = None, since: str = ""
    ) -> AsyncIterator[WatchEvent]:
        """Raises `BadRequest`/`TooLarge` at once for a `since` it cannot resume from."""
        ...

    async def close(self) -> None: ...
