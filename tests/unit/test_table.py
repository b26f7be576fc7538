"""Routing table: hosts, tags, ports, case and weighted picks, without any I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TagTarget, TrafficSplit
from gateway.router import Routed, RouteMiss, Router
from gateway.table import Resolution, RoutingTable, normalize_host, pick


def rev(name: str, *eps: str) -> RevisionTarget:
    return RevisionTarget(
        namespace="default",
        name=name,
        service="hello",
        timeout_s=300.0,
        response_start_timeout_s=0.0,
        idle_timeout_s=0.0,
        container_concurrency=0,
        endpoints=tuple(Endpoint(e, "127.0.0.1", 9000 + i) for i, e in enumerate(eps)),
    )


SNAP = Snapshot(
    version=3,
    routes=(
        RouteEntry(
            namespace="default",
            name="hello",
            hosts=("hello.default.localhost", "hello.example.com"),
            traffic=(
                TrafficSplit("hello-1", 50),
                TrafficSplit("hello-2", 50),
                TrafficSplit("hello-3", 0),
            ),
            tags=(
                TagTarget("blue", "hello-2", ("blue-hello.default.localhost",)),
                TagTarget("old", "hello-3", ("old-hello.default.localhost",)),
            ),
        ),
        RouteEntry(
            namespace="other",
            name="api",
            hosts=("api.other.localhost",),
            traffic=(TrafficSplit("api-9", 100),),
            tags=(),
        ),
    ),
    revisions=(rev("hello-1", "e1"), rev("hello-2", "e2"), rev("hello-3", "e3")),
)


@pytest.fixture
def table() -> RoutingTable:
    return RoutingTable.from_snapshot(SNAP)


def names(res: Resolution | None) -> list[tuple[str, int]]:
    assert res is not None
    return list(res.candidates)


def test_exact_hosts_route_to_default_traffic(table: RoutingTable) -> None:
    for host in ("hello.default.localhost", "hello.example.com"):
        res = table.resolve(host, None)
        assert res is not None and (res.namespace, res.route, res.tag) == ("default", "hello", None)
        assert names(res) == [("hello-1", 50), ("hello-2", 50)]
    assert table.resolve("api.other.localhost", None) is not None
    assert table.resolve("nope.default.localhost", None) is None
    assert table.resolve("default.localhost", None) is None


def test_tag_hosts_route_to_their_revision(table: RoutingTable) -> None:
    res = table.resolve("blue-hello.default.localhost", None)
    assert res is not None and res.tag == "blue"
    assert names(res) == [("hello-2", 100)]
    # A tag host ignores the tag header.
    assert names(table.resolve("blue-hello.default.localhost", "old")) == [("hello-2", 100)]
    # A tag targeting a 0 % revision is still reachable through its own host.
    assert names(table.resolve("old-hello.default.localhost", None)) == [("hello-3", 100)]


def test_tag_header_on_route_host(table: RoutingTable) -> None:
    assert names(table.resolve("hello.default.localhost", "blue")) == [("hello-2", 100)]
    assert names(table.resolve("hello.default.localhost", "old")) == [("hello-3", 100)]


def test_unknown_tag_header_falls_back_to_default(table: RoutingTable) -> None:
    res = table.resolve("hello.default.localhost", "green")
    assert res is not None and res.tag is None
    assert names(res) == [("hello-1", 50), ("hello-2", 50)]
    assert table.resolve("api.other.localhost", "blue") is not None


def test_port_and_case_are_ignored(table: RoutingTable) -> None:
    for host in (
        "hello.default.localhost:8080",
        "HELLO.Default.LOCALHOST",
        "Hello.default.localhost:80",
        "hello.default.localhost.",
    ):
        res = table.resolve(host, None)
        assert res is not None and res.route == "hello", host
    assert table.resolve("BLUE-hello.default.localhost:1", None) is not None


def test_normalize_host() -> None:
    assert normalize_host("A.b:90") == "a.b"
    assert normalize_host("[::1]:8080") == "[::1]"
    assert normalize_host("[::1]") == "[::1]"
    assert normalize_host("x.y.") == "x.y"


def test_fifty_fifty_split_over_deterministic_draws(table: RoutingTable) -> None:
    res = table.resolve("hello.default.localhost", None)
    assert res is not None
    counts: dict[str, int] = {}
    for i in range(10_000):
        name = pick(res, i / 10_000)
        counts[name] = counts.get(name, 0) + 1
    assert counts == {"hello-1": 5000, "hello-2": 5000}


def test_zero_percent_entries_are_never_picked() -> None:
    res = Resolution("d", "r", (("a", 1), ("b", 99)), 100)
    assert pick(res, 0.0) == "a"
    assert pick(res, 0.0099) == "a"
    assert pick(res, 0.01) == "b"
    assert pick(res, 0.999999) == "b"
    table = RoutingTable.from_snapshot(SNAP)
    res2 = table.resolve("hello.default.localhost", None)
    assert res2 is not None
    assert all(pick(res2, i / 1000) != "hello-3" for i in range(1000))


def test_revision_lookup(table: RoutingTable) -> None:
    target = table.revision("default", "hello-2")
    assert target is not None and target.endpoints[0].id == "e2"
    assert table.revision("other", "hello-2") is None


def test_router_resolves_and_explains_misses() -> None:
    draws = iter([0.25, 0.75])
    router = Router(SNAP, rnd=lambda: next(draws))
    first = router.resolve("hello.default.localhost", None)
    second = router.resolve("hello.default.localhost", None)
    assert isinstance(first, RevisionTarget) and first.name == "hello-1"
    assert isinstance(second, RevisionTarget) and second.name == "hello-2"
    miss = router.resolve("x.default.localhost", None)
    assert isinstance(miss, RouteMiss) and miss.reason == "unknown-host"
    assert "x.default.localhost" in miss.message
    router2 = Router(SNAP, rnd=lambda: 0.0)
    missing = router2.resolve("api.other.localhost", None)
    assert isinstance(missing, RouteMiss) and missing.reason == "missing-revision"
    assert missing.revision == "api-9" and missing.route == "other/api"


def test_router_ignores_stale_versions() -> None:
    router = Router(SNAP)
    assert router.version == 3
    router.apply(Snapshot(version=2, routes=(), revisions=()))
    assert router.version == 3
    assert isinstance(router.resolve("hello.default.localhost", None), RevisionTarget)
    router.apply(Snapshot(version=4, routes=(), revisions=()))
    assert router.version == 4
    assert isinstance(router.resolve("hello.default.localhost", None), RouteMiss)


# -- cluster-local routes ---------------------------------------------------------------------

LOCAL_SNAP = Snapshot(
    version=5,
    routes=(
        RouteEntry(
            namespace="default",
            name="internal",
            hosts=("internal.default.localhost",),
            traffic=(TrafficSplit("internal-1", 100),),
            tags=(TagTarget("canary", "internal-1", ("canary-internal.default.localhost",)),),
            cluster_local=True,
        ),
        RouteEntry(
            namespace="default",
            name="split",
            hosts=("split.default.localhost",),
            traffic=(TrafficSplit("internal-1", 50), TrafficSplit("public-1", 50)),
            tags=(),
            cluster_local=True,
        ),
        RouteEntry(
            namespace="default",
            name="public",
            hosts=("public.default.localhost",),
            traffic=(TrafficSplit("public-1", 100),),
            tags=(TagTarget("canary", "public-1", ("canary-public.default.localhost",)),),
        ),
    ),
    revisions=(rev("internal-1", "i1"), rev("public-1", "p1")),
)


def test_resolutions_carry_the_routes_visibility() -> None:
    table = RoutingTable.from_snapshot(LOCAL_SNAP)
    for host, tag in (
        ("internal.default.localhost", None),
        ("INTERNAL.default.localhost:8080", None),
        ("canary-internal.default.localhost", None),  # a tag host
        ("internal.default.localhost", "canary"),  # the tag header on the route host
        ("split.default.localhost", None),
    ):
        res = table.resolve(host, tag)
        assert res is not None and res.cluster_local, (host, tag)
    for host, tag in (
        ("public.default.localhost", None),
        ("canary-public.default.localhost", None),
        ("public.default.localhost", "canary"),
    ):
        res = table.resolve(host, tag)
        assert res is not None and not res.cluster_local, (host, tag)
    default = RoutingTable.from_snapshot(SNAP).resolve("hello.default.localhost")
    assert default is not None and not default.cluster_local  # public unless the entry says so


def test_route_raw_carries_the_visibility_cached_or_not() -> None:
    router = Router(LOCAL_SNAP, rnd=lambda: 0.75)
    for host, tag in (
        (b"internal.default.localhost", None),
        (b"canary-internal.default.localhost", None),
        (b"internal.default.localhost", b"canary"),
        (b"split.default.localhost", None),  # two targets: never cached
    ):
        first, again = router.route_raw(host, tag), router.route_raw(host, tag)
        assert isinstance(first, Routed) and isinstance(again, Routed)
        assert first.cluster_local and again.cluster_local, (host, tag)
    assert router.route_raw(b"internal.default.localhost") is router.route_raw(
        b"internal.default.localhost"
    )  # single target: cached, flag and all
    for host in (b"public.default.localhost", b"canary-public.default.localhost"):
        found = router.route_raw(host)
        assert isinstance(found, Routed) and not found.cluster_local
        assert found.target.name == "public-1"


def test_a_new_snapshot_changes_the_cached_visibility() -> None:
    router = Router(LOCAL_SNAP)
    found = router.route_raw(b"internal.default.localhost")
    assert isinstance(found, Routed) and found.cluster_local
    public = replace(LOCAL_SNAP.routes[0], cluster_local=False)
    router.apply(replace(LOCAL_SNAP, version=6, routes=(public, *LOCAL_SNAP.routes[1:])))
    found = router.route_raw(b"internal.default.localhost")
    assert isinstance(found, Routed) and not found.cluster_local
