"""What changed between two routing snapshots, and applying that to the older one (pure).

At 10,000 Services a full snapshot is megabytes that every worker decodes and rebuilds its
table from on every change; a delta carries only the routes and revisions upserted or removed
since the version the worker serves (`SnapshotDelta.base`), and the brokers and peers when they
changed (both are small: sent whole). `apply_delta(a, diff(a, b)) == b` for any two snapshots
whose routes and revisions are sorted by (namespace, name), as `controller.routing` builds them
(the order is kept: an upsert goes to its sorted place). Wire form: `flint_common.wire.DeltaMessage`.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from flint_common.snapshot import BrokerEntry, Peer, RevisionTarget, RouteEntry, Snapshot

Key = tuple[str, str]
"""(namespace, name) of a route or a revision."""


@dataclass(frozen=True, slots=True)
class SnapshotDelta:
    """Snapshot `version` as the changes to snapshot `base`."""

    base: int
    """The version this delta applies to: a worker serving another one must not apply it."""
    version: int
    routes: tuple[RouteEntry, ...] = ()
    """Routes added or changed (whole entries)."""
    removed_routes: tuple[Key, ...] = ()
    revisions: tuple[RevisionTarget, ...] = ()
    """Revisions added or changed (whole entries, with all their endpoints)."""
    removed_revisions: tuple[Key, ...] = ()
    brokers: tuple[BrokerEntry, ...] | None = None
    """All the brokers when they changed; None: as in `base`."""
    peers: tuple[Peer, ...] | None = None
    """All the peers when they changed; None: as in `base`."""

    @property
    def size(self) -> int:
        """Entries it carries (what `worth_sending` weighs against the snapshot's)."""
        return (len(self.routes) + len(self.removed_routes) + len(self.revisions)
                + len(self.removed_revisions) + len(self.brokers or ()) + len(self.peers or ()))


class DeltaMismatch(ValueError):
    """A delta applied to a snapshot of another version than its base (a version gap)."""


def _key(entry: RouteEntry | RevisionTarget) -> Key:
    return (entry.namespace, entry.name)


E = TypeVar("E", RouteEntry, RevisionTarget)


def _changes(old: Sequence[E], new: Sequence[E]) -> tuple[tuple[E, ...], tuple[Key, ...]]:
    """(entries of `new` added or changed, keys of `old` gone). Entries present in both as the
    same object are passed over with set operations on their ids (in C, not per entry in
    Python: a snapshot builder that reuses untouched entries makes a diff cost its changes)."""
    if old is new:
        return (), ()
    old_by_id = dict(zip(map(id, old), old, strict=True))
    new_by_id = dict(zip(map(id, new), new, strict=True))
    before = {_key(e): e for i in old_by_id.keys() - new_by_id.keys() for e in (old_by_id[i],)}
    upserted = []
    for i in new_by_id.keys() - old_by_id.keys():
        e = new_by_id[i]
        was = before.pop(_key(e), None)
        if was is None or was != e:
            upserted.append(e)
    upserted.sort(key=_key)
    return tuple(upserted), tuple(sorted(before))


def diff(a: Snapshot, b: Snapshot) -> SnapshotDelta:
    """The delta that turns snapshot `a` into snapshot `b`."""
    routes, removed_routes = _changes(a.routes, b.routes)
    revisions, removed_revisions = _changes(a.revisions, b.revisions)
    return SnapshotDelta(
        base=a.version, version=b.version, routes=routes, removed_routes=removed_routes,
        revisions=revisions, removed_revisions=removed_revisions,
        brokers=None if a.brokers == b.brokers else b.brokers,
        peers=None if a.peers == b.peers else b.peers,
    )


def worth_sending(delta: SnapshotDelta, snapshot: Snapshot) -> bool:
    """Whether `delta` is smaller than half of `snapshot` (else the whole snapshot is sent)."""
    whole = len(snapshot.routes) + len(snapshot.revisions) + len(snapshot.brokers) + len(snapshot.peers)
    return delta.size * 2 < whole


def _merged(entries: tuple[E, ...], upserts: tuple[E, ...], removed: tuple[Key, ...]) -> tuple[E, ...]:
    if not upserts and not removed:
        return entries
    out = list(entries)
    for k in removed:
        i = bisect.bisect_left(out, k, key=_key)
        if i < len(out) and _key(out[i]) == k:
            del out[i]
    for e in upserts:
        k = _key(e)
        i = bisect.bisect_left(out, k, key=_key)
        if i < len(out) and _key(out[i]) == k:
            out[i] = e
        else:
            out.insert(i, e)
    return tuple(out)


def apply_delta(snapshot: Snapshot, delta: SnapshotDelta) -> Snapshot:
    """`snapshot` with `delta`'s changes, at `delta.version`; raises `DeltaMismatch` when
    `snapshot` is not the delta's base. Untouched entries are the same objects as before."""
    if snapshot.version != delta.base:
        raise DeltaMismatch(f"delta from version {delta.base} to {delta.version} does not apply "
                            f"to version {snapshot.version}")
    return Snapshot(
        version=delta.version,
        routes=_merged(snapshot.routes, delta.routes, delta.removed_routes),
        revisions=_merged(snapshot.revisions, delta.revisions, delta.removed_revisions),
        brokers=snapshot.brokers if delta.brokers is None else delta.brokers,
        peers=snapshot.peers if delta.peers is None else delta.peers,
    )


def replaced(
    entries: Sequence[E], upserts: Sequence[E], removed: Sequence[Key]
) -> tuple[list[E], list[E]]:
    """(the old entries an upsert or removal replaces, the new ones) of sorted `entries`:
    what a worker's incremental structures drop and add (`gateway.table`, `gateway.balancer`)."""
    gone: list[E] = []
    for k in [*removed, *(_key(e) for e in upserts)]:
        i = bisect.bisect_left(entries, k, key=_key)
        if i < len(entries) and _key(entries[i]) == k:
            gone.append(entries[i])
    return gone, list(upserts)
