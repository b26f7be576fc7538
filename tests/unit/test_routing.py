"""The controller's pure routing decisions: which route owns which host, and gateway snapshots."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from controller.api.serving import route_from_service
from controller.reconcilers.route import published_in
from controller.routing import HostPlan, build_snapshot, is_cluster_local, plan_hosts
from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, TagTarget, TrafficSplit

Obj = dict[str, Any]

T0 = "2024-01-01T00:00:00Z"
T1 = "2024-01-01T00:00:01Z"
T2 = "2024-01-02T00:00:00Z"


def route(
    name: str,
    ns: str | None = "default",
    *,
    created: str = T0,
    tags: tuple[str, ...] = (),
    status: list[Obj] | None = None,
) -> Obj:
    meta: Obj = {"name": name, "creationTimestamp": created}
    if ns is not None:
        meta["namespace"] = ns
    traffic: list[Obj] = [{"configurationName": name, "percent": 100}]
    traffic += [{"configurationName": name, "tag": t, "percent": 0} for t in tags]
    obj: Obj = {"metadata": meta, "spec": {"traffic": traffic}}
    if status is not None:
        obj["status"] = {"traffic": status}
    return obj


def revision(
    name: str, ns: str = "default", *, service: str | None = None, **spec: Any
) -> Obj:
    meta: Obj = {"name": name, "namespace": ns}
    if service is not None:
        meta["labels"] = {"serving.knative.dev/service": service}
    return {"metadata": meta, "spec": spec}


# ------------------------------------------------------------------------------------------
# plan_hosts
# ------------------------------------------------------------------------------------------


def test_route_and_tag_hosts() -> None:
    plan = plan_hosts([route("hello", tags=("blue", "green"))], "example.com")
    assert plan.owners == {
        "hello.default.example.com": ("default", "hello", None),
        "blue-hello.default.example.com": ("default", "hello", "blue"),
        "green-hello.default.example.com": ("default", "hello", "green"),
    }
    assert plan.conflicts == {}


def test_route_without_namespace_is_in_default() -> None:
    plan = plan_hosts([route("hello", ns=None)], "localhost")
    assert plan.owners == {"hello.default.localhost": ("default", "hello", None)}


def test_same_name_in_two_namespaces_does_not_collide() -> None:
    plan = plan_hosts([route("hello", "a"), route("hello", "b")], "localhost")
    assert set(plan.owners) == {"hello.a.localhost", "hello.b.localhost"}
    assert plan.conflicts == {}


def test_no_routes() -> None:
    assert plan_hosts([], "localhost") == HostPlan({}, {})


@pytest.mark.parametrize("order", list(itertools.permutations([0, 1])))
def test_tag_vs_tag_ambiguity_older_route_wins(order: tuple[int, ...]) -> None:
    # tag "a-b" on route "c" and tag "a" on route "b-c" both want a-b-c.default.localhost.
    older = route("c", created=T0, tags=("a-b",))
    younger = route("b-c", created=T1, tags=("a",))
    routes = [older, younger]
    plan = plan_hosts([routes[i] for i in order], "localhost")
    assert plan.owners["a-b-c.default.localhost"] == ("default", "c", "a-b")
    assert ("default", "c") not in plan.conflicts
    msg = plan.conflicts[("default", "b-c")]
    assert '"a-b-c.default.localhost"' in msg
    assert "default/c" in msg
    assert 'tag "a-b" of route "default/c"' in msg


@pytest.mark.parametrize("order", list(itertools.permutations([0, 1])))
def test_route_vs_tag_ambiguity_older_tag_wins(order: tuple[int, ...]) -> None:
    # route "b-c" (no tags) vs tag "b" on route "c": both b-c.default.localhost.
    older = route("c", created=T0, tags=("b",))
    younger = route("b-c", created=T2)
    routes = [older, younger]
    plan = plan_hosts([routes[i] for i in order], "localhost")
    assert plan.owners["b-c.default.localhost"] == ("default", "c", "b")
    msg = plan.conflicts[("default", "b-c")]
    assert '"b-c.default.localhost"' in msg
    assert "default/c" in msg


@pytest.mark.parametrize("order", list(itertools.permutations([0, 1])))
def test_route_vs_tag_ambiguity_older_route_wins(order: tuple[int, ...]) -> None:
    older = route("b-c", created=T0)
    younger = route("c", created=T1, tags=("b",))
    routes = [older, younger]
    plan = plan_hosts([routes[i] for i in order], "localhost")
    assert plan.owners["b-c.default.localhost"] == ("default", "b-c", None)
    msg = plan.conflicts[("default", "c")]
    assert '"b-c.default.localhost"' in msg
    assert 'taken by route "default/b-c"' in msg


def test_loser_loses_only_the_colliding_host() -> None:
    older = route("b-c", created=T0)
    younger = route("c", created=T1, tags=("b", "green"))
    plan = plan_hosts([younger, older], "localhost")
    assert plan.owners["b-c.default.localhost"] == ("default", "b-c", None)
    # the younger route keeps its unambiguous hosts: a tag collision takes nothing else offline
    assert plan.owners["c.default.localhost"] == ("default", "c", None)
    assert plan.owners["green-c.default.localhost"] == ("default", "c", "green")
    assert set(plan.conflicts) == {("default", "c")}


def test_same_creation_time_is_decided_by_name() -> None:
    a = route("b-c", created=T0)
    b = route("c", created=T0, tags=("b",))
    for routes in ([a, b], [b, a]):
        plan = plan_hosts(routes, "localhost")
        # "b-c" < "c": route b-c is considered older
        assert plan.owners["b-c.default.localhost"] == ("default", "b-c", None)
        assert set(plan.conflicts) == {("default", "c")}


def test_a_younger_route_cannot_take_a_host_the_loser_still_owns() -> None:
    oldest = route("b-c", created=T0)
    middle = route("c", created=T1, tags=("b", "x"))  # loses b-c.*, keeps x-c.*
    youngest = route("x-c", created=T2)
    plan = plan_hosts([youngest, middle, oldest], "localhost")
    assert plan.owners["x-c.default.localhost"] == ("default", "c", "x")
    assert set(plan.conflicts) == {("default", "c"), ("default", "x-c")}


def test_domain_is_used_for_collisions() -> None:
    plan = plan_hosts([route("b-c", created=T0), route("c", created=T1, tags=("b",))], "d.io")
    assert "b-c.default.d.io" in plan.conflicts[("default", "c")]


# ------------------------------------------------------------------------------------------
# build_snapshot
# ------------------------------------------------------------------------------------------


def snapshot_of(
    routes: list[Obj],
    revisions: list[Obj],
    endpoints: dict[tuple[str, str], tuple[Endpoint, ...]] | None = None,
    version: int = 7,
    domain: str = "localhost",
) -> Any:
    revs = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in revisions}
    return build_snapshot(routes, revs, endpoints or {}, plan_hosts(routes, domain), version)


def test_snapshot_routes_come_from_status_traffic() -> None:
    r = route(
        "hello",
        status=[
            {"revisionName": "hello-00002", "percent": 90, "latestRevision": True},
            {"revisionName": "hello-00001", "percent": 10, "latestRevision": False},
        ],
    )
    snap = snapshot_of([r], [revision("hello-00001"), revision("hello-00002")], version=42)
    assert snap.version == 42
    assert snap.routes == (
        RouteEntry(
            namespace="default",
            name="hello",
            hosts=("hello.default.localhost",),
            traffic=(TrafficSplit("hello-00001", 10), TrafficSplit("hello-00002", 90)),
            tags=(),
        ),
    )
    assert [t.name for t in snap.revisions] == ["hello-00001", "hello-00002"]


def test_snapshot_percents_are_summed_per_revision() -> None:
    r = route(
        "hello",
        tags=("blue",),
        status=[
            {"revisionName": "hello-00001", "percent": 60},
            {"revisionName": "hello-00001", "percent": 40, "tag": "blue"},
        ],
    )
    snap = snapshot_of([r], [revision("hello-00001")])
    (entry,) = snap.routes
    assert entry.traffic == (TrafficSplit("hello-00001", 100),)
    assert entry.tags == (TagTarget("blue", "hello-00001", ("blue-hello.default.localhost",)),)


def test_snapshot_zero_percent_tag_is_kept_and_its_revision_shipped() -> None:
    r = route(
        "hello",
        tags=("canary",),
        status=[
            {"revisionName": "hello-00001", "percent": 100},
            {"revisionName": "hello-00002", "percent": 0, "tag": "canary"},
        ],
    )
    snap = snapshot_of([r], [revision("hello-00001"), revision("hello-00002")])
    (entry,) = snap.routes
    assert dict((s.revision, s.percent) for s in entry.traffic) == {
        "hello-00001": 100,
        "hello-00002": 0,
    }
    assert entry.tags == (
        TagTarget("canary", "hello-00002", ("canary-hello.default.localhost",)),
    )
    assert {t.name for t in snap.revisions} == {"hello-00001", "hello-00002"}


def test_snapshot_skips_status_tags_that_have_no_host() -> None:
    # status still carries tag "old" but spec no longer does: no host is planned for it
    r = route(
        "hello",
        status=[
            {"revisionName": "hello-00001", "percent": 100},
            {"revisionName": "hello-00001", "percent": 0, "tag": "old"},
        ],
    )
    (entry,) = snapshot_of([r], [revision("hello-00001")]).routes
    assert entry.tags == ()


def test_snapshot_skips_routes_without_traffic_or_hosts() -> None:
    no_status = route("a", created=T0)
    empty_status = route("b", created=T0, status=[])
    owner = route("b-c", created=T0, status=[{"revisionName": "x", "percent": 100}])
    loser = route("c", created=T1, tags=("b",), status=[{"revisionName": "y", "percent": 100}])
    snap = snapshot_of([no_status, empty_status, owner, loser], [revision("x"), revision("y")])
    assert [(e.namespace, e.name) for e in snap.routes] == [("default", "b-c"), ("default", "c")]
    # the loser keeps its own host but not the tag host it lost
    assert snap.routes[1].hosts == ("c.default.localhost",) and snap.routes[1].tags == ()
    assert [t.name for t in snap.revisions] == ["x", "y"]


def test_snapshot_skips_revisions_only_unshipped_routes_reference() -> None:
    no_status = route("a", created=T0)
    owner = route("b-c", created=T0, status=[{"revisionName": "x", "percent": 100}])
    snap = snapshot_of([no_status, owner], [revision("x"), revision("y")])
    assert [(e.namespace, e.name) for e in snap.routes] == [("default", "b-c")]
    assert [t.name for t in snap.revisions] == ["x"]


def test_snapshot_targets_without_revision_name_are_ignored() -> None:
    r = route("hello", status=[{"percent": 0}, {"revisionName": "x", "percent": 100}])
    (entry,) = snapshot_of([r], [revision("x")]).routes
    assert entry.traffic == (TrafficSplit("x", 100),)


def test_snapshot_revision_targets() -> None:
    r = route(
        "hello",
        status=[{"revisionName": "slow", "percent": 50}, {"revisionName": "plain", "percent": 50}],
    )
    slow = revision(
        "slow",
        service="hello",
        timeoutSeconds=30,
        responseStartTimeoutSeconds=5,
        idleTimeoutSeconds=10,
        containerConcurrency=2,
    )
    plain = revision("plain")
    eps = (Endpoint("r1", "127.0.0.1", 40001), Endpoint("r2", "127.0.0.1", 40002))
    snap = snapshot_of([r], [slow, plain], {("default", "slow"): eps})
    assert snap.revisions == (
        RevisionTarget(
            namespace="default",
            name="plain",
            service="",
            timeout_s=300.0,
            response_start_timeout_s=300.0,  # defaults to timeoutSeconds
            idle_timeout_s=0.0,
            container_concurrency=0,
            endpoints=(),
        ),
        RevisionTarget(
            namespace="default",
            name="slow",
            service="hello",
            timeout_s=30.0,
            response_start_timeout_s=5.0,
            idle_timeout_s=10.0,
            container_concurrency=2,
            endpoints=eps,
        ),
    )


def test_snapshot_response_start_timeout_defaults_to_a_custom_timeout() -> None:
    r = route("hello", status=[{"revisionName": "x", "percent": 100}])
    (target,) = snapshot_of([r], [revision("x", timeoutSeconds=12)]).revisions
    assert target.timeout_s == 12.0
    assert target.response_start_timeout_s == 12.0


def test_snapshot_missing_revisions_are_skipped_but_route_kept() -> None:
    r = route(
        "hello",
        status=[{"revisionName": "gone", "percent": 50}, {"revisionName": "here", "percent": 50}],
    )
    snap = snapshot_of([r], [revision("here"), revision("unrelated")])
    assert [t.name for t in snap.revisions] == ["here"]
    (entry,) = snap.routes
    assert {s.revision for s in entry.traffic} == {"gone", "here"}


def test_snapshot_revisions_are_per_namespace() -> None:
    r1 = route("hello", "a", status=[{"revisionName": "x", "percent": 100}])
    r2 = route("hello", "b", status=[{"revisionName": "x", "percent": 100}])
    eps_a = (Endpoint("ra", "127.0.0.1", 1),)
    eps_b = (Endpoint("rb", "127.0.0.1", 2),)
    snap = snapshot_of(
        [r2, r1],
        [revision("x", "a"), revision("x", "b")],
        {("a", "x"): eps_a, ("b", "x"): eps_b},
    )
    assert [(e.namespace, e.hosts) for e in snap.routes] == [
        ("a", ("hello.a.localhost",)),
        ("b", ("hello.b.localhost",)),
    ]
    assert [(t.namespace, t.endpoints) for t in snap.revisions] == [("a", eps_a), ("b", eps_b)]


def test_snapshot_is_deterministic() -> None:
    routes = [
        route("b", status=[{"revisionName": "y", "percent": 100}]),
        route("a", tags=("t2", "t1"), status=[
            {"revisionName": "x", "percent": 100},
            {"revisionName": "y", "percent": 0, "tag": "t2"},
            {"revisionName": "x", "percent": 0, "tag": "t1"},
        ]),
    ]
    revs = [revision("y"), revision("x")]
    one = snapshot_of(routes, revs)
    two = snapshot_of(list(reversed(routes)), list(reversed(revs)))
    assert one == two
    assert [e.name for e in one.routes] == ["a", "b"]
    assert [t.tag for t in one.routes[0].tags] == ["t1", "t2"]


def test_snapshot_marks_cluster_local_routes_from_their_label() -> None:
    traffic = [{"revisionName": "a-00001", "percent": 100}]
    local = route("a", tags=("blue",), status=[*traffic, {"revisionName": "a-00001", "tag": "blue",
                                                          "percent": 0}])
    local["metadata"]["labels"] = {"networking.knative.dev/visibility": "cluster-local",
                                   "serving.knative.dev/service": "a"}
    other = route("b", status=[{"revisionName": "b-00001", "percent": 100}])
    other["metadata"]["labels"] = {"networking.knative.dev/visibility": "public"}  # not ours
    plain = route("c", status=[{"revisionName": "c-00001", "percent": 100}])
    snap = snapshot_of([local, other, plain], [revision("a-00001"), revision("b-00001"),
                                               revision("c-00001")])
    by_name = {e.name: e for e in snap.routes}
    assert by_name["a"].cluster_local
    assert by_name["a"].tags == (TagTarget("blue", "a-00001", ("blue-a.default.localhost",)),)
    assert not by_name["b"].cluster_local and not by_name["c"].cluster_local


def test_a_services_visibility_label_reaches_its_route() -> None:
    svc: Obj = {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "a", "namespace": "default", "uid": "u1",
                     "labels": {"networking.knative.dev/visibility": "cluster-local"}},
        "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}},
    }
    assert is_cluster_local(route_from_service(svc))
    del svc["metadata"]["labels"]
    assert not is_cluster_local(route_from_service(svc))


def test_a_route_is_published_only_once_the_snapshot_has_its_visibility() -> None:
    r = route("a", status=[{"revisionName": "a-00001", "percent": 100}])
    public = snapshot_of([r], [revision("a-00001")])
    assert published_in(public, r)
    r["metadata"]["labels"] = {"networking.knative.dev/visibility": "cluster-local"}
    assert not published_in(public, r)  # IngressReady waits until the gateways hide it
    assert published_in(snapshot_of([r], [revision("a-00001")]), r)
