"""Store semantics both stores share: metadata filling, generation and conflict rules, errors."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

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
)
from flint_common.timefmt import rfc3339

DEFAULT_NAMESPACE = "default"
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""Kubernetes' generateName alphabet: lowercase alphanumerics without vowels (no words)."""
GENERATE_NAME_SUFFIX_LEN = 5
GENERATE_NAME_ATTEMPTS = 8
"""How many random suffixes `create` tries before giving up with AlreadyExists."""


def copy_obj(obj: Obj) -> Obj:
    """A deep copy through JSON: what a caller gets can never alias what the store keeps."""
    copied: Obj = orjson.loads(orjson.dumps(obj))
    return copied


def copy_value(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value))


def dumps(obj: Obj) -> bytes:
    return orjson.dumps(obj)


def loads(data: bytes | str) -> Obj:
    obj: Obj = orjson.loads(data)
    return obj


def now_rfc3339() -> str:
    """The current time as Kubernetes writes timestamps: RFC 3339, UTC, seconds, `Z`."""
    return rfc3339(time.time())


def meta(obj: Obj) -> dict[str, Any]:
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = {}
        obj["metadata"] = md
    return md


def namespace_of(obj: Obj) -> str:
    ns = meta(obj).get("namespace")
    return ns if isinstance(ns, str) and ns else DEFAULT_NAMESPACE


def name_of(obj: Obj) -> str:
    name = meta(obj).get("name")
    return name if isinstance(name, str) else ""


def resource_version_of(obj: Obj) -> int:
    """The object's `metadata.resourceVersion` as an int, 0 when absent or not a number."""
    rv = meta(obj).get("resourceVersion")
    try:
        return int(rv) if rv not in (None, "") else 0
    except (TypeError, ValueError):
        return 0


def prepare_create(kind: Kind, obj: Obj, *, now: str | None = None) -> Obj:
    """A copy of `obj` ready to insert, minus the name when only `generateName` is given.

    Fills namespace (`default`), uid, creationTimestamp and generation 1; drops any
    client-sent resourceVersion (the store sets it).
    """
    draft = copy_obj(obj)
    md = meta(draft)
    name = md.get("name")
    generate = md.get("generateName")
    if not name and not generate:
        raise BadRequest(
            f"{kind}: metadata.name: Required value: name or generateName is required", kind=kind
        )
    md["namespace"] = namespace_of(draft)
    md["uid"] = str(uuid.uuid4())
    md["creationTimestamp"] = now or now_rfc3339()
    md["generation"] = 1
    md.pop("resourceVersion", None)
    return draft


def candidate_names(draft: Obj, rng: random.Random | None = None) -> Iterator[str]:
    """The name to try (once), or `GENERATE_NAME_ATTEMPTS` names `generateName` + 5 random chars."""
    md = meta(draft)
    name = md.get("name")
    if name:
        yield str(name)
        return
    prefix = str(md.get("generateName", ""))
    choose = (rng or random.SystemRandom()).choice
    for _ in range(GENERATE_NAME_ATTEMPTS):
        suffix = "".join(choose(GENERATE_NAME_ALPHABET) for _ in range(GENERATE_NAME_SUFFIX_LEN))
        yield prefix + suffix


def check_resource_version(kind: Kind, stored: Obj, incoming: Obj) -> None:
    """Optimistic concurrency: a set `metadata.resourceVersion` must be the stored one."""
    sent = meta(incoming).get("resourceVersion")
    if sent in (None, ""):
        return
    if str(sent) != str(meta(stored).get("resourceVersion")):
        raise conflict(kind, name_of(stored))


DELETION_FIELDS = ("deletionTimestamp", "deletionGracePeriodSeconds")
"""Set by the store when an object with finalizers is deleted; clients cannot change them."""


def apply_update(kind: Kind, stored: Obj, incoming: Obj) -> Obj:
    """The object after a user write: everything from `incoming` except status and identity.

    `generation` is bumped only when `spec` changed (deep compare); uid, creationTimestamp,
    name, namespace and the deletion fields stay; `status` stays as stored; resourceVersion is
    left as stored so that `result == stored` detects a no-op write (the caller then skips it).
    An object being deleted takes no new finalizer (`Invalid`, the API server's words).
    """
    new = copy_obj(incoming)
    md = meta(new)
    smd = stored.get("metadata", {})
    for key in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
        if key in smd:
            md[key] = smd[key]
    for key in DELETION_FIELDS:
        if key in smd:
            md[key] = smd[key]
        else:
            md.pop(key, None)
    if smd.get("deletionTimestamp"):
        added = [f for f in md.get("finalizers") or [] if f not in (smd.get("finalizers") or [])]
        if added:
            raise Invalid(
                f'{kind} "{name_of(stored)}" is invalid: metadata.finalizers: Forbidden: no new '
                f"finalizers can be added if the object is being deleted, found new finalizers "
                f"{added}", kind=kind, name=name_of(stored))
    generation = int(smd.get("generation", 1))
    md["generation"] = generation + 1 if new.get("spec") != stored.get("spec") else generation
    if "status" in stored:
        new["status"] = copy_value(stored["status"])
    else:
        new.pop("status", None)
    return new


def apply_delete(stored: Obj, *, now: str | None = None) -> Obj | None:
    """What `delete` leaves: None (remove it now) without finalizers; else the object marked as
    being deleted (`deletionTimestamp`, grace 0, `generation` + 1 the first time), which goes
    once its finalizers are removed (`finalized`)."""
    if not meta(stored).get("finalizers"):
        return None
    marked = copy_obj(stored)
    md = meta(marked)
    if not md.get("deletionTimestamp"):
        md["deletionTimestamp"] = now or now_rfc3339()
        md["deletionGracePeriodSeconds"] = 0
        md["generation"] = int(md.get("generation", 1)) + 1
    return marked


def finalized(obj: Obj) -> bool:
    """An object being deleted whose last finalizer went: it is removed by this write."""
    md = meta(obj)
    return bool(md.get("deletionTimestamp")) and not md.get("finalizers")


def parse_since(since: str, current: int) -> int:
    """A watch's `since` as this store's counter (0: from the current objects). One the store
    never issued → `BadRequest`; newer than `current` → `TooLarge`. (One older than the kept
    history is the replay's to refuse: `Gone`.)"""
    if since in ("", "0"):
        return 0
    try:
        rv = int(since)
    except ValueError:
        raise BadRequest(f'resourceVersion "{since}" is not a number') from None
    if rv < 0:
        raise BadRequest(f'resourceVersion "{since}" must not be negative')
    if rv > current:
        raise TooLarge(f"Too large resource version: {rv}, current: {current}")
    return rv


def apply_status_update(stored: Obj, incoming: Obj) -> Obj:
    """The stored object with only `status` replaced by the incoming one (generation unchanged)."""
    new = copy_obj(stored)
    if "status" in incoming:
        new["status"] = copy_value(incoming["status"])
    else:
        new.pop("status", None)
    return new


def with_resource_version(obj: Obj, rv: int) -> Obj:
    meta(obj)["resourceVersion"] = str(rv)
    return obj


def matches(
    kind_filter: Kind | None, namespace_filter: str | None, kind: Kind, namespace: str
) -> bool:
    """Whether a change to (kind, namespace) belongs to a watch on the given filters."""
    if kind_filter is not None and kind_filter != kind:
        return False
    return namespace_filter is None or namespace_filter == namespace


def not_found(kind: Kind, name: str) -> NotFound:
    return NotFound(f'{kind} "{name}" not found', kind=kind, name=name)


def already_exists(kind: Kind, name: str) -> AlreadyExists:
    return AlreadyExists(f'{kind} "{name}" already exists', kind=kind, name=name)


def conflict(kind: Kind, name: str) -> Conflict:
    return Conflict(
        f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        kind=kind,
        name=name,
    )


def gone(since: int, oldest: int) -> Gone:
    return Gone(
        f"too old resource version: {since} ({oldest}); list again and watch from the "
        "list's resourceVersion"
    )
