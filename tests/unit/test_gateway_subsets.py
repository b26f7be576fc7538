"""A gateway's share of a subsetted snapshot (`gateway.subsets`) and its choice, owned or forwarded,
in the router and the activator (no sockets)."""

from __future__ import annotations

from dataclasses import replace

from unit.test_activator import W

from controller.routing_subsets import HANDOFF
from flint_common.snapshot import Endpoint, Peer, RevisionTarget, Snapshot
from gateway.activator import Activator
from gateway.config import GatewaySettings
from gateway.router import Router
from gateway.subsets import local_view, normal_ip, peer_endpoint

PEERS = (Peer("gw-a", "10.0.0.1", 8090), Peer("gw-b", "10.0.0.2", 8091),
         Peer("gw-c", "::ffff:10.0.0.3", 8092))


def target(name: str, cc: int, **owners: str) -> RevisionTarget:
    """A revision whose endpoints are `owners`' keys, each owned by its value."""
    return RevisionTarget(
        namespace="default", name=name, service="s", timeout_s=10.0, response_start_timeout_s=0.0,
        idle_timeout_s=0.0, container_concurrency=cc,
        endpoints=tuple(Endpoint(e, "10.1.0.1", 8080 + i, owner=g)
                        for i, (e, g) in enumerate(owners.items())),
    )


def snapshot(*revisions: RevisionTarget, version: int = 1, peers: tuple[Peer, ...] = PEERS) -> Snapshot:
    return Snapshot(version=version, routes=(), revisions=revisions, peers=peers)


SNAP = snapshot(
    target("shared", 1, r1="gw-a", r2="gw-b", r3="gw-a"),
    target("elsewhere", 2, e1="gw-b", e2="gw-c", e3="gw-b"),
    target("free", 0, f1="", f2=""),
)


def ids(rev: RevisionTarget) -> list[str]:
    return [e.id for e in rev.endpoints]


def test_a_gateway_keeps_the_endpoints_it_owns_and_forwards_what_it_owns_none_of() -> None:
    view = local_view(SNAP, "gw-a")
    shared, elsewhere, free = view.snapshot.revisions
    assert ids(shared) == ["r1", "r3"] and shared.key == "default/shared"
    assert ids(elsewhere) == [] and ids(free) == ["f1", "f2"]  # unlimited: every endpoint
    assert set(view.forwards) == {"default/elsewhere"}
    choice = view.forwards["default/elsewhere"]
    picks = [choice.next().id for _ in range(6)]  # weighted by the replicas each owns: b 2, c 1
    assert picks.count("@gateway-peer-gw-b") == 4 and picks.count("@gateway-peer-gw-c") == 2
    assert picks[:3] != ["@gateway-peer-gw-b"] * 2 + ["@gateway-peer-gw-c"]  # interleaved
    assert choice.next() == peer_endpoint(PEERS[1]) == Endpoint("@gateway-peer-gw-b", "10.0.0.2", 8091)
    assert view.peer_hosts == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}  # the mapped one as IPv4
    assert (view.snapshot.version, view.snapshot.peers) == (1, PEERS)


def test_without_a_peer_listener_or_peers_nothing_changes() -> None:
    assert local_view(SNAP, None).snapshot is SNAP and local_view(SNAP, None).forwards == {}
    plain = replace(SNAP, peers=())
    assert local_view(plain, "gw-a").snapshot is plain


def test_a_gateway_not_among_the_peers_yet_forwards_every_limited_revision() -> None:
    view = local_view(SNAP, "gw-new")
    assert set(view.forwards) == {"default/shared", "default/elsewhere"}
    assert [ids(r) for r in view.snapshot.revisions] == [[], [], ["f1", "f2"]]


def test_a_limited_revision_at_zero_waits_here_rather_than_forwarded() -> None:
    view = local_view(snapshot(target("cold", 1)), "gw-a")
    assert view.forwards == {} and ids(view.snapshot.revisions[0]) == []


def test_normal_ip() -> None:
    assert normal_ip("::ffff:127.0.0.1") == "127.0.0.1"
    assert normal_ip("fd00:0::1") == "fd00::1" and normal_ip("fe80::1%eth0") == "fe80::1"
    assert normal_ip("not-an-ip") == "not-an-ip"


def test_the_router_limits_owned_endpoints_only_and_names_the_peer_to_forward_to() -> None:
    router = Router(SNAP, gateway_id="gw-b")
    shared = router.current("default/shared")
    assert shared is not None and ids(shared) == ["r2"]
    assert router.acquire(shared) is not None and router.acquire(shared) is None  # CC 1, one replica
    assert router.forward_for("default/shared") is None and not router.forwarded("default/shared")
    assert router.snapshot.revisions[0] == shared and router.version == 1
    # A new snapshot takes gw-b's replica away: now it forwards; r2's request in flight drains.
    moved = snapshot(target("shared", 1, r1="gw-a", r2="gw-a", r3="gw-a"), version=2)
    router.apply(moved)
    assert router.forwarded("default/shared") and router.draining() == {"r2": 1}
    assert router.forward_for("default/shared") == peer_endpoint(PEERS[0])
    # Without peers (no gateway announces one any more): every endpoint, nothing forwarded.
    router.apply(replace(moved, version=3, peers=()))
    assert not router.forwarded("default/shared") and router.peer_hosts == frozenset()
    assert ids(router.current("default/shared") or shared) == ["r1", "r2", "r3"]


def test_a_router_without_a_gateway_id_ignores_owners() -> None:
    router = Router(SNAP)
    assert router.forward_for("default/elsewhere") is None
    assert ids(router.current("default/elsewhere") or SNAP.revisions[0]) == ["e1", "e2", "e3"]
    assert router.peer_hosts == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}


def test_queued_requests_go_to_the_owners_when_a_snapshot_gives_them_all_away() -> None:
    first = snapshot(target("shared", 1, r1="gw-a"))
    router = Router(first, gateway_id="gw-a", listeners=(lambda snap: act.on_snapshot(snap),))
    act = Activator(router, GatewaySettings(), clock=lambda: 0.0, controller_connected=lambda: True)
    rev = router.current("default/shared")
    assert rev is not None and router.acquire(rev) is not None  # full: the next ones wait
    waiters = [W("one"), W("two")]
    for w in waiters:
        act.enqueue(rev, w, 0.0, deadline=100.0)
    router.apply(snapshot(target("shared", 1, r1="gw-b"), version=2))
    assert [w.forwarded for w in waiters] == [1, 1] and act.waiting("default/shared") == 0
    assert all(w.eps == [] and w.failures == [] for w in waiters)


def test_a_replica_being_handed_over_is_nobodys() -> None:
    moving = snapshot(target("shared", 1, r1="gw-a", r2=HANDOFF), target("held", 1, h1=HANDOFF))
    view = local_view(moving, "gw-b")
    shared, held = view.snapshot.revisions
    assert ids(shared) == [] and [e.id for e in view.forwards["default/shared"].endpoints] == [
        "@gateway-peer-gw-a"]
    assert ids(held) == [] and "default/held" not in view.forwards  # waits here for its owner
    assert ids(local_view(moving, "gw-a").snapshot.revisions[0]) == ["r1"]
