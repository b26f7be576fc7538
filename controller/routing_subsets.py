"""Which gateway owns which replica of a revision with a `containerConcurrency` limit, when several
gateways route to it (the Kubernetes engine's gateway pods): each ready replica is assigned to
exactly one gateway, which alone sends it requests and enforces its limit; the other gateways
forward that revision's requests to the owners, as a gateway's workers forward to their home
worker today. So a replica with `containerConcurrency: 1` never sees two requests at once however
many gateways there are (Flint's choice (a) of issue 14, subsetting, over Knative's activator
capacity split, which can only approximate the limit while the split is re-learned). Pure.

The assignment is rendezvous hashing with bounded loads: every replica ranks the gateways by a
hash of (gateway, replica) and takes the first with room, where room means at most ⌈R/G⌉
replicas and at most R mod G gateways holding that many (⌊R/G⌋ for the rest), so the loads differ
by one at most. It depends only on the two sets (not their order), and a gateway joining or
leaving moves few replicas beyond those that must move (the leaver's, or the joiner's fair share:
at most five more, over the sizes `tests/unit/test_routing_subsets.py` tries).

`subset_snapshot` applies it to a whole snapshot (the publisher calls it on every build): every
endpoint of a limited revision, ready or starting, gets an `Endpoint.owner` among the gateways
that announced a peer address (`Hello.peer`), and the snapshot lists those gateways
(`Snapshot.peers`) — one snapshot for every gateway, each of which keeps its own share
(`gateway.subsets`). A replica whose owner changes (a gateway joining, replicas added or
removed) is handed over (`hold_moves`): nobody's until its old owner has let go of it. A draining
replica is in no snapshot (the publisher leaves it out): its requests in flight finish at the
gateways that sent them and no gateway sends it new ones, so it stays, in effect, with its
previous owner until it stops. Unlimited revisions keep `owner` ""
(every gateway balances over every replica, as without subsetting), and so does everything when
no gateway announced a peer address (the embedded engine: the snapshot is unchanged).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import replace

from flint_common.snapshot import Peer, RevisionTarget, Snapshot

__all__ = ["HANDOFF", "assign_owners", "hold_moves", "owned_by", "owned_target", "peer_table",
           "subset_snapshot"]


def _score(gateway: str, replica: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{gateway}\x00{replica}".encode()).digest()[:8], "big")


def assign_owners(replicas: Iterable[str], gateways: Iterable[str]) -> dict[str, str]:
    """Replica id → the gateway that owns it (see the module docstring); {} without gateways."""
    rs, gs = sorted(set(replicas)), sorted(set(gateways))
    if not rs or not gs:
        return {}
    floor, extra = divmod(len(rs), len(gs))
    ceil = floor + (1 if extra else 0)
    load = dict.fromkeys(gs, 0)
    at_ceil = 0
    owners: dict[str, str] = {}
    for r in rs:
        for g in sorted(gs, key=lambda g: (-_score(g, r), g)):
            if load[g] < floor or (load[g] < ceil and at_ceil < extra):
                if load[g] == floor and ceil > floor:
                    at_ceil += 1
                load[g] += 1
                owners[r] = g
                break
    return owners


def owned_by(owners: dict[str, str], gateway: str) -> list[str]:
    """The replicas `gateway` owns, sorted."""
    return sorted(r for r, g in owners.items() if g == gateway)


def subset_snapshot(snapshot: Snapshot, peers: Mapping[str, tuple[str, int]]) -> Snapshot:
    """`snapshot` with the owners of its limited revisions' endpoints among `peers` (gateway id →
    its peer listener's (host, port)) and `Snapshot.peers`; unchanged without peers."""
    if not peers:
        return snapshot
    gateways = sorted(peers)
    revisions = tuple(owned_target(rev, gateways) for rev in snapshot.revisions)
    return replace(snapshot, revisions=revisions, peers=peer_table(peers))


def peer_table(peers: Mapping[str, tuple[str, int]]) -> tuple[Peer, ...]:
    """`Snapshot.peers` of `peers` (gateway id → its peer listener), by gateway id."""
    return tuple(Peer(g, *peers[g]) for g in sorted(peers))


def owned_target(rev: RevisionTarget, gateways: Sequence[str]) -> RevisionTarget:
    """`rev` with an owner among `gateways` (sorted) for each endpoint when it is limited
    (containerConcurrency > 0); as it is otherwise, or without gateways."""
    if rev.container_concurrency <= 0 or not rev.endpoints or not gateways:
        return rev
    owners = assign_owners((ep.id for ep in rev.endpoints), gateways)
    return replace(rev, endpoints=tuple(replace(ep, owner=owners[ep.id]) for ep in rev.endpoints))


HANDOFF = "(handoff)"
"""`Endpoint.owner` of a replica moving between two gateways: nobody's (no gateway id is this)."""


def hold_moves(
    snapshot: Snapshot, claims: Mapping[str, AbstractSet[str]], *, unknown_held: bool = False
) -> tuple[Snapshot, set[str]]:
    """`snapshot` (owners assigned) with every replica that some other gateway may still be
    sending requests to held as nobody's (`HANDOFF`); and the ids held.

    `claims`: replica id → the gateways that may still serve it as its owner (the publisher's
    `_claims`: the owner it last published, unless released, linked or away for less than the
    bound, and the owners gateways reported when they linked). `unknown_held`: a new leader's
    rejoin window, when a replica nobody claims yet may belong to a gateway not back yet: held
    too. A held replica gets no new request from anyone, so a replica never has two owners at
    once, across the union of what every gateway serves, even while gateways move from one
    snapshot to the next or are away from the controller."""
    held: set[str] = set()
    revisions = []
    for rev in snapshot.revisions:
        if rev.container_concurrency > 0 and any(_moving(ep.id, ep.owner, claims, unknown_held)
                                                 for ep in rev.endpoints):
            eps = []
            for ep in rev.endpoints:
                if _moving(ep.id, ep.owner, claims, unknown_held):
                    held.add(ep.id)
                    ep = replace(ep, owner=HANDOFF)
                eps.append(ep)
            rev = replace(rev, endpoints=tuple(eps))
        revisions.append(rev)
    return (replace(snapshot, revisions=tuple(revisions)) if held else snapshot), held


def _moving(eid: str, owner: str, claims: Mapping[str, AbstractSet[str]], unknown_held: bool) -> bool:
    if not owner:
        return False
    claimed = claims.get(eid)
    if not claimed:
        return unknown_held
    return any(g != owner for g in claimed)
