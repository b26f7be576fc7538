"""Snapshot deltas: diff/apply (property-style, random changes), their wire form, and a worker
applying them (table, balancer, router) equal to a rebuild from the whole snapshot."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from flint_common.delta import DeltaMismatch, apply_delta, diff, replaced, worth_sending
from flint_common.snapshot import (
    Endpoint,
    Peer,
    RevisionTarget,
    RouteEntry,
    Snapshot,
    TagTarget,
    TrafficSplit,
)
from flint_common.wire import DeltaMessage, Hello, WireError, decode_down
from gateway.balancer import Balancer
from gateway.router import Router
from gateway.table import RoutingTable


def revision(ns: str, name: str, endpoints: int, port: int = 8080, cc: int = 0) -> RevisionTarget:
    return RevisionTarget(ns, name, name.rsplit("-", 1)[0], 300.0, 300.0, 0.0, cc,
                          tuple(Endpoint(f"{ns}-{name}-{k}", "10.0.0.1", port + k,
                                         starting=k == 2) for k in range(endpoints)))


def route(ns: str, name: str, percent: int = 100, tag: bool = False) -> RouteEntry:
    rev = f"{name}-00001"
    return RouteEntry(ns, name, (f"{name}.{ns}.example.com",), (TrafficSplit(rev, percent),),
                      (TagTarget("canary", rev, (f"canary-{name}.{ns}.example.com",)),) if tag else ())


def snapshot(version: int, routes: dict[tuple[str, str], RouteEntry],
             revisions: dict[tuple[str, str], RevisionTarget]) -> Snapshot:
    return Snapshot(version, tuple(routes[k] for k in sorted(routes)),
                    tuple(revisions[k] for k in sorted(revisions)))


def random_pair(rnd: random.Random, n: int = 40) -> tuple[Snapshot, Snapshot]:
    routes = {(f"ns{i % 3}", f"s{i}"): route(f"ns{i % 3}", f"s{i}", tag=i % 4 == 0) for i in range(n)}
    revs = {(f"ns{i % 3}", f"s{i}-00001"): revision(f"ns{i % 3}", f"s{i}-00001", 1 + i % 3)
            for i in range(n)}
    a = snapshot(10, routes, revs)
    for _ in range(rnd.randint(0, 8)):
        i = rnd.randrange(n + 10)
        ns, name = f"ns{i % 3}", f"s{i}"
        op = rnd.choice(("upsert", "remove", "endpoints", "tag"))
        if op == "remove":
            routes.pop((ns, name), None)
            revs.pop((ns, f"{name}-00001"), None)
        elif op == "tag":
            routes[(ns, name)] = route(ns, name, tag=rnd.random() < 0.5)
            revs.setdefault((ns, f"{name}-00001"), revision(ns, f"{name}-00001", 1))
        else:
            routes[(ns, name)] = route(ns, name)
            revs[(ns, f"{name}-00001")] = revision(ns, f"{name}-00001", rnd.randint(0, 4),
                                                   port=rnd.choice((8080, 9090)))
    return a, snapshot(11, routes, revs)


@pytest.mark.parametrize("seed", range(60))
def test_applying_the_diff_of_a_and_b_to_a_gives_b(seed: int) -> None:
    a, b = random_pair(random.Random(seed))
    delta = diff(a, b)
    got = apply_delta(a, delta)
    assert got == b
    untouched = {(r.namespace, r.name) for r in a.revisions} - {
        (r.namespace, r.name) for r in delta.revisions} - set(delta.removed_revisions)
    by_key = {(r.namespace, r.name): r for r in a.revisions}
    assert all(any(r is by_key[k] for r in got.revisions) for k in untouched)


def test_a_delta_for_another_base_is_refused_and_an_empty_one_is_cheap() -> None:
    a, b = random_pair(random.Random(1))
    with pytest.raises(DeltaMismatch, match="does not apply to version 11"):
        apply_delta(b, diff(a, b))
    same = diff(a, replace(a, version=12))
    assert same.size == 0 and worth_sending(same, a)
    everything = diff(Snapshot.empty(), a)
    assert not worth_sending(everything, a)


@pytest.mark.parametrize("seed", range(20))
def test_the_delta_survives_its_wire_form(seed: int) -> None:
    a, b = random_pair(random.Random(seed))
    delta = diff(a, b)
    assert decode_down(DeltaMessage(delta).encode()) == DeltaMessage(delta)


def test_the_wire_refuses_an_unknown_delta_format_and_bad_keys_naming_the_field() -> None:
    text = DeltaMessage(diff(Snapshot.empty(), Snapshot(1, (), ()))).encode()
    with pytest.raises(WireError, match=r"delta\.format: 2 is not a format"):
        decode_down(text.replace('"format":1', '"format":2'))
    with pytest.raises(WireError, match=r"delta.removed_routes\[0\]: expected '<namespace>/<name>'"):
        decode_down(text.replace('"removed_routes":[]', '"removed_routes":["nope"]'))


def test_hello_says_which_delta_format_it_reads_and_an_old_one_reads_none() -> None:
    assert Hello.decode(Hello("gw/0", 3, deltas=1).encode()).deltas == 1
    assert Hello.decode('{"type": "hello", "worker": "gw/0", "version": 3}').deltas == 0


@pytest.mark.parametrize("seed", range(40))
def test_the_table_updated_by_a_delta_equals_one_built_from_the_new_snapshot(seed: int) -> None:
    a, b = random_pair(random.Random(seed))
    delta = diff(a, b)
    gone_routes, new_routes = replaced(a.routes, delta.routes, delta.removed_routes)
    gone_revs, new_revs = replaced(a.revisions, delta.revisions, delta.removed_revisions)
    got = RoutingTable.from_snapshot(a).updated(gone_routes, new_routes, gone_revs, new_revs)
    want = RoutingTable.from_snapshot(b)
    assert got._by_host == want._by_host
    assert got._tags_by_route == want._tags_by_route
    assert got._revisions == want._revisions


@pytest.mark.parametrize("seed", range(40))
def test_the_balancer_updated_by_a_delta_ends_as_a_full_update_would(seed: int) -> None:
    rnd = random.Random(seed)
    a, b = random_pair(rnd)
    balancers = [Balancer(), Balancer()]
    for bal in balancers:
        bal.update(a)
    for rev in a.revisions:  # the same requests in flight, promotions and learned limits
        for ep in rev.endpoints:
            if rnd.random() < 0.3:
                for bal in balancers:
                    bal._inflight[ep.id] = 2
            if ep.starting and rnd.random() < 0.5:
                for bal in balancers:
                    bal.promote(ep.id)
    delta = diff(a, b)
    gone, new = replaced(a.revisions, delta.revisions, delta.removed_revisions)
    balancers[0].update(b)
    balancers[1].update_revisions(gone, new)
    full, incremental = balancers
    for name in ("_inflight", "_draining", "_rev_of", "_starting", "_promoted", "_routable",
                 "_rr", "learned", "changes"):
        assert getattr(incremental, name) == getattr(full, name), name


@pytest.mark.parametrize("seed", range(20))
def test_a_router_given_deltas_routes_as_one_given_whole_snapshots(seed: int) -> None:
    a, b = random_pair(random.Random(seed))
    by_delta, by_snapshot = Router(a), Router(a)
    assert by_delta.apply_delta(diff(a, b))
    by_snapshot.apply(b)
    assert by_delta.snapshot == by_snapshot.snapshot == b
    for r in (*a.routes, *b.routes):
        for host in (*r.hosts, *(h for t in r.tags for h in t.hosts)):
            assert by_delta.resolve(host) == by_snapshot.resolve(host), host


def test_a_router_refuses_a_delta_across_a_gap_and_ignores_an_old_one() -> None:
    a, b = random_pair(random.Random(3))
    router = Router(b)
    assert not router.apply_delta(replace(diff(a, b), base=5, version=12))
    assert router.version == 11
    assert router.apply_delta(diff(a, b)) and router.snapshot is b


def subsetted(s: Snapshot, gateways: tuple[str, ...]) -> Snapshot:
    """`s` with every other revision limited and its endpoints owned in turn by `gateways`,
    as `controller.routing_subsets` gives them, and the gateways as peers."""
    revs = []
    for i, rev in enumerate(s.revisions):
        if i % 2 == 0:
            rev = replace(rev, container_concurrency=5, endpoints=tuple(
                replace(ep, owner=gateways[(i + k) % len(gateways)]) for k, ep in enumerate(rev.endpoints)))
        revs.append(rev)
    peers = tuple(Peer(g, f"10.9.0.{n + 1}", 8090) for n, g in enumerate(gateways))
    return replace(s, revisions=tuple(revs), peers=peers)


@pytest.mark.parametrize("seed", range(20))
def test_with_subsetting_a_router_given_deltas_holds_the_local_view_a_whole_snapshot_gives(
        seed: int) -> None:
    a, b = random_pair(random.Random(seed))
    rnd = random.Random(seed)
    gateways = ("gw-a", "gw-b", "gw-c")[: rnd.randint(2, 3)]
    a, b = subsetted(a, gateways), subsetted(b, gateways)
    for me in gateways:
        by_delta, by_snapshot = Router(a, gateway_id=me), Router(a, gateway_id=me)
        delta = diff(a, b)
        assert delta.peers is None  # the peers stayed: the incremental path
        assert by_delta.apply_delta(delta)
        by_snapshot.apply(b)
        assert by_delta.received == b
        assert by_delta.snapshot == by_snapshot.snapshot != b  # this gateway's share only
        assert by_delta.peer_hosts == by_snapshot.peer_hosts
        for rev in b.revisions:
            assert by_delta.forwarded(rev.key) == by_snapshot.forwarded(rev.key), rev.key
        for r in (*a.routes, *b.routes):
            for host in (*r.hosts, *(h for t in r.tags for h in t.hosts)):
                assert by_delta.resolve(host) == by_snapshot.resolve(host), host


def test_with_subsetting_a_change_of_peers_makes_the_whole_local_view_again() -> None:
    a, b = random_pair(random.Random(5))
    a, b = subsetted(a, ("gw-a", "gw-b")), subsetted(b, ("gw-a", "gw-b", "gw-c"))
    by_delta, by_snapshot = Router(a, gateway_id="gw-a"), Router(a, gateway_id="gw-a")
    assert by_delta.apply_delta(diff(a, b))
    by_snapshot.apply(b)
    assert by_delta.snapshot == by_snapshot.snapshot and by_delta.peer_hosts == by_snapshot.peer_hosts
