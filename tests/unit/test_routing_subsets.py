"""Which gateway owns which limited replica, and the owners in the snapshot (`controller.routing_subsets`)."""

from __future__ import annotations

import random

import pytest

from controller.routing_subsets import HANDOFF, assign_owners, hold_moves, owned_by, subset_snapshot
from flint_common.snapshot import Endpoint, Peer, RevisionTarget, Snapshot


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(n)]


@pytest.mark.parametrize(("replicas", "gateways"), [(1, 1), (1, 3), (4, 3), (5, 3), (12, 4), (7, 1), (3, 7)])
def test_every_replica_has_exactly_one_owner_and_the_loads_differ_by_one_at_most(
        replicas: int, gateways: int) -> None:
    rs, gs = names("ns/r", replicas), names("gw", gateways)
    owners = assign_owners(rs, gs)
    assert sorted(owners) == sorted(rs) and set(owners.values()) <= set(gs)
    loads = [len(owned_by(owners, g)) for g in gs]
    assert sum(loads) == replicas and max(loads) - min(loads) <= 1


def test_it_depends_on_the_sets_only() -> None:
    rs, gs = names("ns/r", 9), names("gw", 4)
    shuffled_r, shuffled_g = random.Random(7).sample(rs, len(rs)), random.Random(8).sample(gs, len(gs))
    assert assign_owners(rs, gs) == assign_owners(shuffled_r, shuffled_g) == assign_owners(rs + rs, gs)


def test_nothing_to_assign() -> None:
    assert assign_owners([], ["gw-0"]) == {} and assign_owners(["ns/r-0"], []) == {}


def test_a_gateway_joining_or_leaving_moves_few_replicas() -> None:
    """Beyond the replicas that must move (a leaver's; a joiner's fair share), at most a few more
    change owner, over a grid of sizes."""
    for r in range(1, 30):
        for g in range(1, 7):
            rs, gs = names("ns/r", r), names("gw", g)
            before = assign_owners(rs, gs)
            joined = assign_owners(rs, [*gs, "gw-new"])
            assert sum(before[x] != joined[x] for x in rs) - r // (g + 1) <= 5, (r, g)
            if g > 1:
                left = assign_owners(rs, gs[1:])
                must = len(owned_by(before, "gw-0"))
                assert sum(before[x] != left[x] for x in rs) - must <= 5, (r, g)


# ------------------------------------------------------------------------------------------
# subset_snapshot: the owners in the snapshot
# ------------------------------------------------------------------------------------------


def target(name: str, cc: int, *endpoint_ids: str, starting: str = "") -> RevisionTarget:
    return RevisionTarget(
        namespace="default", name=name, service="s", timeout_s=300.0, response_start_timeout_s=300.0,
        idle_timeout_s=0.0, container_concurrency=cc,
        endpoints=tuple(Endpoint(e, "10.0.0.1", 8080 + i, starting=e == starting)
                        for i, e in enumerate(endpoint_ids)),
    )


def snapshot(*revisions: RevisionTarget) -> Snapshot:
    return Snapshot(version=3, routes=(), revisions=revisions)


PEERS = {"gw-b": ("10.1.0.2", 8090), "gw-a": ("10.1.0.1", 8090)}


def test_without_peers_the_snapshot_is_unchanged() -> None:
    snap = snapshot(target("limited", 1, "r1", "r2"))
    assert subset_snapshot(snap, {}) is snap


def test_every_endpoint_of_a_limited_revision_gets_one_owner_ready_or_starting() -> None:
    snap = subset_snapshot(snapshot(target("limited", 1, "r1", "r2", "r3", starting="r3"),
                                    target("free", 0, "f1", "f2")), PEERS)
    limited, free = snap.revisions
    owners = {e.id: e.owner for e in limited.endpoints}
    assert owners == assign_owners(["r1", "r2", "r3"], ["gw-a", "gw-b"])
    assert sorted(owners.values()) in (["gw-a", "gw-a", "gw-b"], ["gw-a", "gw-b", "gw-b"])
    assert [e.starting for e in limited.endpoints] == [False, False, True]  # the rest kept
    assert [e.owner for e in free.endpoints] == ["", ""]  # unlimited: every gateway balances
    assert snap.peers == (Peer("gw-a", "10.1.0.1", 8090), Peer("gw-b", "10.1.0.2", 8090))
    assert (snap.version, snap.routes, limited.key) == (3, (), "default/limited")


def test_a_revision_without_endpoints_and_a_gateway_leaving() -> None:
    empty = subset_snapshot(snapshot(target("limited", 1)), PEERS)
    assert empty.revisions[0].endpoints == () and len(empty.peers) == 2
    both = subset_snapshot(snapshot(target("limited", 1, "r1", "r2")), PEERS)
    alone = subset_snapshot(snapshot(target("limited", 1, "r1", "r2")), {"gw-a": PEERS["gw-a"]})
    assert sorted(e.owner for e in both.revisions[0].endpoints) == ["gw-a", "gw-b"]
    assert [e.owner for e in alone.revisions[0].endpoints] == ["gw-a", "gw-a"]
    assert alone.peers == (Peer("gw-a", "10.1.0.1", 8090),)


def test_a_replica_changing_owner_is_nobodys_until_released() -> None:
    two = subset_snapshot(snapshot(target("limited", 1, "r1", "r2")), PEERS)
    new = {e.id: e.owner for e in two.revisions[0].endpoints}
    moved = next(r for r, g in new.items() if g == "gw-b")
    claims = {"r1": {"gw-a"}, "r2": {"gw-a"}}  # gw-b joined: gw-a owned both
    held_snap, held = hold_moves(two, claims)
    assert held == {moved}
    owners = {e.id: e.owner for e in held_snap.revisions[0].endpoints}
    assert owners[moved] == HANDOFF and all(g == new[r] for r, g in owners.items() if r != moved)
    released = {r: c for r, c in claims.items() if r != moved}  # its old owner let go
    assert hold_moves(two, released) == (two, set())
    # New replicas and unchanged owners are never held.
    assert hold_moves(two, {}) == (two, set())
    assert hold_moves(two, {r: {g} for r, g in new.items()}) == (two, set())


def test_in_a_rejoin_window_an_unclaimed_replica_is_nobodys() -> None:
    two = subset_snapshot(snapshot(target("limited", 1, "r1", "r2")), PEERS)
    held_snap, held = hold_moves(two, {}, unknown_held=True)
    assert held == {"r1", "r2"}
    assert {e.owner for e in held_snap.revisions[0].endpoints} == {HANDOFF}
    # Two claimants (a stale report beside the published owner): held until one is left.
    owner = two.revisions[0].endpoints[0].owner
    other = "gw-a" if owner == "gw-b" else "gw-b"
    _, held = hold_moves(two, {"r1": {owner, other}, "r2": {two.revisions[0].endpoints[1].owner}})
    assert held == {"r1"}
