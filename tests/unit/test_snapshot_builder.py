"""SnapshotBuilder and HostPlanner give what build_snapshot and plan_hosts give, after any
sequence of changes (random, seeded), and reuse every entry a change did not touch."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from controller.routing import build_snapshot, plan_hosts
from controller.routing_subsets import peer_table, subset_snapshot
from controller.snapshot_builder import HostPlanner, SnapshotBuilder
from flint_common.snapshot import Endpoint, Snapshot

Obj = dict[str, Any]
Key = tuple[str, str]


class World:
    """Routes, revisions, endpoints, failures and peers, changed the way informers change them:
    a changed object is a new object."""

    def __init__(self, rng: random.Random, n: int) -> None:
        self.rng = rng
        self.routes: dict[Key, Obj] = {}
        self.revisions: dict[Key, Obj] = {}
        self.endpoints: dict[Key, tuple[Endpoint, ...]] = {}
        self.failures: dict[Key, str] = {}
        self.peers: dict[str, tuple[str, int]] = {}
        self.port = 9000
        for i in range(n):
            self.add_route(f"ns-{i % 3}", f"r-{i}")

    def revision(self, ns: str, name: str) -> None:
        self.revisions[(ns, name)] = {
            "metadata": {"namespace": ns, "name": name, "labels": {"serving.knative.dev/service": name}},
            "spec": {"containerConcurrency": self.rng.choice([0, 0, 5]), "timeoutSeconds": 300}}
        self.set_endpoints((ns, name), self.rng.randint(0, 3))

    def set_endpoints(self, key: Key, count: int) -> None:
        eps = []
        for _ in range(count):
            self.port += 1
            eps.append(Endpoint(f"{key[1]}-{self.port}", "127.0.0.1", self.port))
        self.endpoints[key] = tuple(eps)

    def add_route(self, ns: str, name: str, created: str | None = None) -> None:
        revs = [f"{name}-a"] + ([f"{name}-b"] if self.rng.random() < 0.4 else [])
        for rev in revs:
            if (ns, rev) not in self.revisions and self.rng.random() < 0.95:
                self.revision(ns, rev)
        traffic: list[Obj] = [{"revisionName": revs[0], "percent": 100 if len(revs) == 1 else 70}]
        if len(revs) == 2:
            traffic.append({"revisionName": revs[1], "percent": 30, "tag": self.rng.choice(["canary", "b"])})
        self.routes[(ns, name)] = {
            "metadata": {"namespace": ns, "name": name, "creationTimestamp": created or f"t{self.port:08d}",
                         "labels": {}},
            "spec": {"traffic": [dict(t) for t in traffic]},
            "status": {"traffic": traffic} if self.rng.random() < 0.9 else {}}

    def change(self) -> None:
        """One change of a random sort."""
        rng = self.rng
        what = rng.randrange(9)
        keys = sorted(self.routes)
        if what == 0 or not keys:
            self.add_route(f"ns-{rng.randrange(3)}", f"r-{rng.randrange(10**6)}")
        elif what == 1:
            del self.routes[rng.choice(keys)]
        elif what == 2:  # a status update: the same content, a new object
            k = rng.choice(keys)
            self.routes[k] = {**self.routes[k], "status": dict(self.routes[k].get("status") or {})}
        elif what == 3:  # the route re-resolved: its traffic changes
            ns, name = rng.choice(keys)
            self.add_route(ns, name, self.routes[(ns, name)]["metadata"]["creationTimestamp"])
        elif what == 4 and self.endpoints:
            self.set_endpoints(rng.choice(sorted(self.endpoints)), rng.randint(0, 3))
        elif what == 5 and self.revisions:
            k = rng.choice(sorted(self.revisions))
            if rng.random() < 0.3:
                del self.revisions[k]
            else:
                self.revision(*k)
        elif what == 6 and self.revisions:
            k = rng.choice(sorted(self.revisions))
            if self.failures.pop(k, None) is None:
                self.failures[k] = f'revision "{k[1]}" failed: boom'
        elif what == 7:  # a name that collides with another route's tag host: r-1 + tag x / r + tag 1-x
            self.add_route("ns-0", f"r-{rng.randrange(3)}-canary")
        else:
            g = f"gw-{rng.randrange(3)}"
            if self.peers.pop(g, None) is None:
                self.peers[g] = ("127.0.0.1", 9100 + len(self.peers))

    def expected(self) -> Snapshot:
        routes = list(self.routes.values())
        built = build_snapshot(routes, self.revisions, self.endpoints, plan_hosts(routes, "example.com"),
                               version=0, failures=self.failures)
        return subset_snapshot(built, self.peers)

    def built(self, planner: HostPlanner, builder: SnapshotBuilder) -> Snapshot:
        routes = list(self.routes.values())
        snap = builder.build(routes, dict(self.revisions), dict(self.endpoints),
                             planner.plan(routes, "example.com"), version=0, failures=dict(self.failures),
                             gateways=sorted(self.peers))
        return replace(snap, peers=peer_table(self.peers)) if self.peers else snap


def test_after_any_changes_the_same_snapshot_as_a_full_build() -> None:
    for seed in range(12):
        world = World(random.Random(seed), 40)
        planner, builder = HostPlanner(), SnapshotBuilder()
        assert world.built(planner, builder) == world.expected()
        for step in range(150):
            world.change()
            assert world.built(planner, builder) == world.expected(), (seed, step)
            routes = list(world.routes.values())
            assert planner.plan(routes, "example.com") == plan_hosts(routes, "example.com"), (seed, step)


def test_a_change_makes_only_its_own_entries_again() -> None:
    world = World(random.Random(7), 30)
    world.peers.clear()
    planner, builder = HostPlanner(), SnapshotBuilder()
    before = world.built(planner, builder)
    target = before.revisions[3]
    key = (target.namespace, target.name)
    world.set_endpoints(key, 3)
    after = world.built(planner, builder)
    assert after.routes is before.routes  # no route changed: the very tuple
    changed = [a for a, b in zip(after.revisions, before.revisions, strict=True) if a is not b]
    assert [(c.namespace, c.name) for c in changed] == [key]
    again = world.built(planner, builder)
    assert again.revisions is after.revisions  # nothing changed: nothing made


def test_a_status_update_with_the_same_hosts_keeps_the_plan() -> None:
    world = World(random.Random(3), 20)
    planner = HostPlanner()
    first = planner.plan(list(world.routes.values()), "example.com")
    k = sorted(world.routes)[0]
    world.routes[k] = {**world.routes[k], "status": {}}
    assert planner.plan(list(world.routes.values()), "example.com") is first
    assert planner.plan(list(world.routes.values()), "other.example") != first  # another domain


def test_another_domain_plans_again_even_with_no_routes() -> None:
    planner = HostPlanner()
    world = World(random.Random(1), 5)
    assert planner.plan(list(world.routes.values()), "one.example").owners
    assert planner.plan([], "two.example") == plan_hosts([], "two.example")
