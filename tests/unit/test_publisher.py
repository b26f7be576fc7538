"""SnapshotPublisher: snapshots from routes, revisions and ready replicas; drain before stop."""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from controller.gatewayhub import GatewayHub, WorkerState
from controller.informer import Informer
from controller.reconcilers import publisher as publisher_module
from controller.reconcilers.publisher import SnapshotPublisher
from controller.routing_subsets import HANDOFF
from controller.runtime.base import ChangeCallback, ReplicaSpec, ReplicaState, ReplicaStatus
from flint_common.snapshot import Endpoint, Snapshot
from flint_common.wire import LINK_PATH, SnapshotMessage

Obj = dict[str, Any]
WAIT = 2.0
TIMEOUT_S = 30.0
GRACE_S = 7.0


class FakeRuntime:
    """A `Runtime` (mypy checks it against the protocol where the publisher takes it) whose
    replicas the test adds; the publisher only lists and stops them."""

    def __init__(self) -> None:
        self.reps: dict[str, ReplicaStatus] = {}
        self.stopped: list[tuple[str, float]] = []
        self.fail_stop = False
        self._stopped = asyncio.Event()

    def add(self, rid: str, state: ReplicaState = "ready", rev: str = "default/hello-00001",
            port: int = 0) -> None:
        self.reps[rid] = ReplicaStatus(
            id=rid, revision_key=rev, host="127.0.0.1", port=port or 40000 + len(self.reps),
            pid=None, state=state,
        )

    def replicas(self, revision_key: str | None = None) -> list[ReplicaStatus]:
        return [r for r in self.reps.values() if revision_key in (None, r.revision_key)]

    async def stop_replica(self, replica_id: str, grace_s: float = 10.0) -> None:
        self.stopped.append((replica_id, grace_s))
        self._stopped.set()
        if self.fail_stop:
            raise RuntimeError("kill failed")
        self.reps.pop(replica_id, None)

    async def wait_stopped(self, count: int = 1) -> None:
        async with asyncio.timeout(WAIT):
            while len(self.stopped) < count:
                self._stopped.clear()
                await self._stopped.wait()

    # The rest of the protocol: the publisher never calls it.

    async def start(self) -> None:
        raise NotImplementedError("start")

    async def close(self, stop_replicas: bool) -> None:
        raise NotImplementedError("close")

    def subscribe(self, callback: ChangeCallback) -> None:
        raise NotImplementedError("subscribe")

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaStatus:
        raise NotImplementedError("start_replica")

    def log_paths(self, revision_key: str) -> list[Path]:
        raise NotImplementedError("log_paths")

    async def alog_paths(self, revision_key: str) -> list[Path]:
        raise NotImplementedError("alog_paths")


class FakeHub(GatewayHub):
    """The things the publisher asks of the hub, with versions 1, 2, 3..., workers the test acks
    for and the gateway peers the test sets (`set_peers` republishes, as a gateway joining does).
    Subclasses the real hub only so that mypy checks every override against it;
    never calls its __init__ (no sockets), so anything not faked here fails at once."""

    def __init__(self) -> None:
        self._snap = Snapshot.empty()
        self.published: list[Snapshot] = []
        self.acks: dict[str, WorkerState] = {}
        self._peer_table: dict[str, tuple[str, int]] = {}
        self._peer_callbacks: list[Callable[[], None]] = []
        self.reports: dict[str, frozenset[str]] = {}
        self.rejoin_open = False

    def reported(self) -> dict[str, frozenset[str]]:
        return dict(self.reports)

    def rejoining(self) -> bool:
        return self.rejoin_open

    def peers(self) -> dict[str, tuple[str, int]]:
        return dict(self._peer_table)

    def on_peers_changed(self, callback: Callable[[], None]) -> None:
        self._peer_callbacks.append(callback)

    def set_peers(self, peers: dict[str, tuple[str, int]]) -> None:
        self._peer_table = dict(peers)
        for callback in self._peer_callbacks:
            callback()

    @property
    def version(self) -> int:
        return self._snap.version

    @property
    def snapshot(self) -> Snapshot:
        return self._snap

    def publish(self, snapshot: Snapshot) -> int:
        old = self._snap
        if self.version and (snapshot.routes, snapshot.revisions, snapshot.brokers, snapshot.peers) == (
            old.routes, old.revisions, old.brokers, old.peers
        ):
            return self.version
        self._snap = replace(snapshot, version=self.version + 1)
        self.published.append(self._snap)
        return self.version

    def acked_by_all(self, version: int) -> bool:
        return all(w.version >= version for w in self.acks.values())

    def draining(self, endpoint_id: str) -> bool:
        return any(endpoint_id in w.draining for w in self.acks.values())

    def connected(self) -> int:
        return len(self.acks)

    def ack(self, worker: str, version: int, draining: dict[str, int] | None = None) -> None:
        self.acks[worker] = WorkerState(worker, version, dict(draining or {}))


class ListInformer(Informer):
    """An informer over a list the test edits in place; the publisher only iterates it.
    Subclasses the real informer only so that mypy checks the override; never calls its
    __init__ (no store), so anything not faked here fails at once."""

    def __init__(self, objs: list[Obj]) -> None:
        self.objs = objs

    def __iter__(self) -> Iterator[Obj]:
        return iter(list(self.objs))


def route(name: str = "hello", rev: str = "hello-00001") -> Obj:
    return {
        "metadata": {
            "name": name, "namespace": "default", "creationTimestamp": "2024-01-01T00:00:00Z",
        },
        "spec": {"traffic": [{"configurationName": name, "percent": 100}]},
        "status": {"traffic": [{"revisionName": rev, "percent": 100, "latestRevision": True}]},
    }


def revision(name: str = "hello-00001") -> Obj:
    return {"metadata": {"name": name, "namespace": "default"}, "spec": {}}


HubT = TypeVar("HubT", bound=GatewayHub)


class Env(Generic[HubT]):
    def __init__(self, hub: HubT, runtime: FakeRuntime, routes: list[Obj], revs: list[Obj]) -> None:
        self.hub = hub
        self.runtime = runtime
        self.routes = routes
        self.revisions = revs
        self.published: list[int] = []
        self.pub = SnapshotPublisher(
            hub,
            runtime,
            ListInformer(routes),
            ListInformer(revs),
            "localhost",
            drain_timeout_s=TIMEOUT_S,
            stop_grace_s=GRACE_S,
            on_published=self.published.append,
        )

    async def flush(self) -> None:
        """Run what mark_dirty scheduled (call_soon) and the stop tasks it started."""
        for _ in range(3):
            await asyncio.sleep(0)

    def endpoint_ids(self) -> list[str]:
        snap = self.hub.snapshot
        return [e.id for t in snap.revisions for e in t.endpoints]


@pytest.fixture
async def env() -> AsyncIterator[Env[FakeHub]]:
    e = Env(FakeHub(), FakeRuntime(), [route()], [revision()])
    yield e
    await e.pub.close()


# ------------------------------------------------------------------------------------------
# snapshots
# ------------------------------------------------------------------------------------------


async def test_build_uses_ready_and_starting_replicas_as_endpoints(env: Env[FakeHub]) -> None:
    """Starting replicas go out marked `starting` (the gateway probes them itself); crashed
    ones do not go out at all."""
    env.runtime.add("r2", port=40002)
    env.runtime.add("r1", port=40001)
    env.runtime.add("r3", "starting")
    env.runtime.add("r4", "crashed")
    env.runtime.add("other", rev="default/unrouted")
    snap = env.pub.build()
    assert [(r.namespace, r.name) for r in snap.routes] == [("default", "hello")]
    (target,) = snap.revisions
    assert target.name == "hello-00001"
    assert target.endpoints == (
        Endpoint("r1", "127.0.0.1", 40001),
        Endpoint("r2", "127.0.0.1", 40002),
        Endpoint("r3", "127.0.0.1", env.runtime.reps["r3"].port, starting=True),
    )
    assert target.failure == ""
    assert set(env.pub.endpoints()) == {("default", "hello-00001"), ("default", "unrouted")}


async def test_mark_dirty_coalesces_and_publishes(env: Env[FakeHub]) -> None:
    env.runtime.add("r1")
    env.pub.mark_dirty()
    env.pub.mark_dirty()
    env.pub.mark_dirty()
    assert env.hub.published == []  # nothing before the loop runs
    await env.flush()
    assert len(env.hub.published) == 1
    assert env.published == [env.hub.version]
    assert env.endpoint_ids() == ["r1"]
    env.pub.mark_dirty()
    await env.flush()
    assert env.published == [env.hub.version, env.hub.version]  # unchanged content
    env.runtime.add("r2")
    env.pub.mark_dirty()
    await env.flush()
    assert len(env.hub.published) == 2
    assert env.endpoint_ids() == ["r1", "r2"]


# ------------------------------------------------------------------------------------------
# draining
# ------------------------------------------------------------------------------------------


async def published_with_worker(env: Env[FakeHub], *rids: str) -> int:
    for rid in rids:
        env.runtime.add(rid)
    env.pub.mark_dirty()
    await env.flush()
    v = env.hub.version
    env.hub.ack("gw/0", v)
    env.pub.check_drains()
    return int(v)


async def test_drained_replica_leaves_the_snapshot_at_once(env: Env[FakeHub]) -> None:
    v1 = await published_with_worker(env, "r1", "r2")
    assert env.endpoint_ids() == ["r1", "r2"]
    env.pub.drain("r1")
    assert env.pub.is_draining("r1")
    await env.flush()
    assert env.hub.version > v1
    assert env.endpoint_ids() == ["r2"]
    # later snapshots keep it out while it is still running
    env.runtime.add("r3")
    env.pub.mark_dirty()
    await env.flush()
    assert env.endpoint_ids() == ["r2", "r3"]


async def test_drained_replica_stops_only_after_every_worker_acks_and_lets_go(env: Env[FakeHub]) -> None:
    v1 = await published_with_worker(env, "r1", "r2")
    env.hub.ack("gw/1", v1)
    env.pub.drain("r1")
    await env.flush()
    v2 = env.hub.version
    assert env.runtime.stopped == []

    # an ack of the old version does not release it
    env.hub.ack("gw/0", v1)
    env.pub.check_drains()
    await env.flush()
    assert env.runtime.stopped == []

    # one worker on the new version with nothing in flight, the other still on the old one
    env.hub.ack("gw/0", v2)
    env.pub.check_drains()
    await env.flush()
    assert env.runtime.stopped == []

    # both on the new version, but one still has requests in flight to r1
    env.hub.ack("gw/1", v2, {"r1": 2})
    env.pub.check_drains()
    await env.flush()
    assert env.runtime.stopped == []
    assert env.pub.is_draining("r1")

    env.hub.ack("gw/1", v2, {})
    env.pub.check_drains()
    await env.runtime.wait_stopped()
    await env.flush()
    assert env.runtime.stopped == [("r1", GRACE_S)]
    assert not env.pub.is_draining("r1")
    assert "r1" not in env.runtime.reps
    assert "r2" in env.runtime.reps


async def test_in_flight_on_another_endpoint_does_not_hold_the_drain(env: Env[FakeHub]) -> None:
    await published_with_worker(env, "r1", "r2")
    env.pub.drain("r1")
    await env.flush()
    env.hub.ack("gw/0", env.hub.version, {"old-replica": 1})
    env.pub.check_drains()
    await env.runtime.wait_stopped()
    assert env.runtime.stopped == [("r1", GRACE_S)]


async def test_newer_ack_than_the_drain_version_releases(env: Env[FakeHub]) -> None:
    await published_with_worker(env, "r1", "r2")
    env.pub.drain("r1")
    await env.flush()
    env.runtime.add("r3")
    env.pub.mark_dirty()
    await env.flush()
    env.hub.ack("gw/0", env.hub.version)
    env.pub.check_drains()
    await env.runtime.wait_stopped()
    assert [rid for rid, _ in env.runtime.stopped] == ["r1"]


async def test_without_workers_a_drained_replica_waits_for_one_to_ack(env: Env[FakeHub]) -> None:
    """No gateway connected: a restarting gateway may still route to the replica from its
    persisted snapshot, so the drain waits until a worker has acked a snapshot without it."""
    env.runtime.add("r1")
    env.pub.drain("r1")
    await env.flush()
    env.pub.check_drains()
    await asyncio.sleep(0)
    assert env.runtime.stopped == []
    env.hub.ack("gw/0", env.hub.version)
    env.pub.check_drains()
    await env.runtime.wait_stopped()
    assert env.runtime.stopped == [("r1", GRACE_S)]


async def test_drain_before_the_first_publish_waits_for_it(env: Env[FakeHub]) -> None:
    env.runtime.add("r1")
    env.hub.ack("gw/0", 0)
    env.pub.drain("r1")
    env.pub.check_drains()  # no version without it yet
    await asyncio.sleep(0)
    assert env.runtime.stopped == []
    await env.flush()
    env.hub.ack("gw/0", env.hub.version)
    env.pub.check_drains()
    await env.runtime.wait_stopped()


async def test_drain_twice_stops_once(env: Env[FakeHub]) -> None:
    gate = asyncio.Event()
    calls: list[str] = []

    async def slow_stop(replica_id: str, grace_s: float = 10.0) -> None:
        calls.append(replica_id)
        await gate.wait()
        env.runtime.reps.pop(replica_id, None)

    env.runtime.stop_replica = slow_stop  # type: ignore[method-assign]
    env.runtime.add("r1")
    env.hub.ack("gw/0", 10**12)  # a connected worker that has seen everything
    env.pub.drain("r1")
    env.pub.drain("r1")
    await env.flush()
    assert calls == ["r1"]
    env.pub.drain("r1")  # while it is being stopped: nothing more
    await env.flush()
    env.pub.check_drains()
    await env.flush()
    gate.set()
    await env.pub.close()
    assert calls == ["r1"]


async def test_replica_being_stopped_is_not_routed(env: Env[FakeHub]) -> None:
    gate = asyncio.Event()
    stopping = asyncio.Event()

    async def slow_stop(replica_id: str, grace_s: float = 10.0) -> None:
        stopping.set()
        await gate.wait()
        env.runtime.reps.pop(replica_id, None)

    env.runtime.stop_replica = slow_stop  # type: ignore[method-assign]
    env.runtime.add("r1")
    env.hub.ack("gw/0", 10**12)  # a connected worker that has seen everything
    env.pub.drain("r1")
    await env.flush()
    await asyncio.wait_for(stopping.wait(), WAIT)
    assert env.pub.is_draining("r1")
    assert env.pub.endpoints() == {}
    env.pub.mark_dirty()
    await env.flush()
    assert env.endpoint_ids() == []
    gate.set()
    await env.pub.close()
    assert not env.pub.is_draining("r1")


async def test_drain_timeout(env: Env[FakeHub], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    fake_time = types.SimpleNamespace(monotonic=lambda: now[0])
    monkeypatch.setattr(publisher_module, "time", fake_time)
    await published_with_worker(env, "r1", "r2")
    env.pub.drain("r1")
    await env.flush()
    # the worker never acks the version without r1
    now[0] += TIMEOUT_S - 0.5
    env.pub.check_drains()
    await env.flush()
    assert env.runtime.stopped == []
    now[0] += 1.0
    env.pub.check_drains()
    await env.runtime.wait_stopped()
    await env.pub.close()
    assert env.runtime.stopped == [("r1", GRACE_S)]
    assert not env.pub.is_draining("r1")


async def test_drain_timeout_before_any_publish(env: Env[FakeHub], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [50.0]
    monkeypatch.setattr(publisher_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    env.runtime.add("r1")
    env.pub.drain("r1")
    now[0] += TIMEOUT_S + 1
    env.pub.check_drains()
    await env.runtime.wait_stopped()


async def test_failed_stop_is_logged_and_forgotten(
    env: Env[FakeHub], caplog: pytest.LogCaptureFixture
) -> None:
    env.runtime.fail_stop = True
    env.runtime.add("r1")
    env.hub.ack("gw/0", 10**12)  # a connected worker that has seen everything
    env.pub.drain("r1")
    await env.flush()
    await env.runtime.wait_stopped()
    await env.pub.close()
    assert not env.pub.is_draining("r1")
    assert any("r1" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")


# ------------------------------------------------------------------------------------------
# with the real hub over the loopback websocket
# ------------------------------------------------------------------------------------------


async def test_drain_end_to_end_with_the_real_hub() -> None:
    runtime = FakeRuntime()
    holder: dict[str, Callable[[], None]] = {}
    progress = asyncio.Event()

    def on_progress() -> None:  # what the controller app wires
        holder["check"]()
        progress.set()

    async def progressed() -> None:
        await asyncio.wait_for(progress.wait(), WAIT)
        progress.clear()

    hub = GatewayHub(on_progress=on_progress)
    e = Env(hub, runtime, [route()], [revision()])
    holder["check"] = e.pub.check_drains
    app = web.Application()
    app.router.add_get(LINK_PATH, hub.handle)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        runtime.add("r1")
        runtime.add("r2")
        e.pub.mark_dirty()
        await e.flush()
        ws = await client.ws_connect(LINK_PATH)

        async def receive() -> Snapshot:
            msg = await ws.receive(timeout=WAIT)
            assert msg.type == WSMsgType.TEXT
            return SnapshotMessage.decode(msg.data).snapshot

        async def ack(version: int, draining: dict[str, int]) -> None:
            await ws.send_str(orjson.dumps(
                {"type": "ack", "version": version, "draining": draining}).decode())

        await ws.send_str(orjson.dumps({"type": "hello", "worker": "gw/0", "version": 0}).decode())
        first = await receive()
        assert [x.id for x in first.revisions[0].endpoints] == ["r1", "r2"]
        await ack(first.version, {})
        await progressed()

        e.pub.drain("r1")
        second = await receive()
        assert [x.id for x in second.revisions[0].endpoints] == ["r2"]
        await ack(second.version, {"r1": 1})
        await progressed()
        await e.flush()
        assert runtime.stopped == []  # acked, but a request to r1 is still in flight
        assert e.pub.is_draining("r1")
        await ack(second.version, {})
        await runtime.wait_stopped()
        assert runtime.stopped == [("r1", GRACE_S)]
        await ws.close()
    finally:
        await hub.close()
        await client.close()
        await e.pub.close()


async def test_every_replica_crashed_before_ready_fails_fast(env: Env[FakeHub]) -> None:
    env.runtime.add("r1", "crashed")
    env.runtime.reps["r1"].message = "exit code 3; restarting in 1s\nboom"
    (target,) = env.pub.build().revisions
    assert target.failure.startswith('every replica of revision "hello-00001" exited')
    assert "exit code 3" in target.failure
    env.runtime.add("r2", "starting")
    (target,) = env.pub.build().revisions
    assert target.failure == ""  # one is still on its way: keep waiting


# ------------------------------------------------------------------------------------------
# subsetting
# ------------------------------------------------------------------------------------------


async def test_peer_gateways_own_a_limited_revisions_replicas_and_a_join_republishes(
        env: Env[FakeHub]) -> None:
    env.revisions[0]["spec"] = {"containerConcurrency": 1}
    for rid in ("r1", "r2", "r3"):
        env.runtime.add(rid)
    env.runtime.add("r4", "starting")
    env.pub.mark_dirty()
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    assert [e.owner for e in rev.endpoints] == ["", "", "", ""] and not env.hub.snapshot.peers
    env.hub.set_peers({"gw-a": ("10.0.0.1", 8090)})  # a gateway joins: a new snapshot at once
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    assert [e.owner for e in rev.endpoints] == ["gw-a"] * 4
    env.hub.set_peers({"gw-a": ("10.0.0.1", 8090), "gw-b": ("10.0.0.2", 8090)})
    await env.flush()
    env.hub.ack("gw-a/0", env.hub.version)  # gw-a let go of what moves to gw-b
    env.pub.check_drains()
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    owners = {e.id: e.owner for e in rev.endpoints}
    assert sorted(owners.values()) == ["gw-a", "gw-a", "gw-b", "gw-b"]  # the starting one too
    assert [peer.gateway for peer in env.hub.snapshot.peers] == ["gw-a", "gw-b"]
    # A drained replica leaves every snapshot (its requests in flight finish where they were
    # sent); the others are shared again, the loads differing by one at most.
    env.pub.drain("r1")
    await env.flush()
    env.hub.ack("gw-a/0", env.hub.version)  # both let go of what moves (a handoff, if any)
    env.hub.ack("gw-b/0", env.hub.version)
    env.pub.check_drains()
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    assert [e.id for e in rev.endpoints] == ["r2", "r3", "r4"]
    assert sorted(e.owner for e in rev.endpoints) in (["gw-a", "gw-a", "gw-b"], ["gw-a", "gw-b", "gw-b"])


async def test_an_unlimited_revision_has_no_owners_with_peers(env: Env[FakeHub]) -> None:
    env.runtime.add("r1")
    env.hub.set_peers({"gw-a": ("10.0.0.1", 8090)})
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    assert [e.owner for e in rev.endpoints] == [""] and len(env.hub.snapshot.peers) == 1


async def test_a_replica_changing_owner_is_handed_over_once_its_old_owner_let_go(
        env: Env[FakeHub]) -> None:
    env.revisions[0]["spec"] = {"containerConcurrency": 1}
    env.runtime.add("r1")
    env.runtime.add("r2")
    env.hub.set_peers({"gw-a": ("10.0.0.1", 8090)})
    await env.flush()
    env.hub.ack("gw-a/0", env.hub.version)
    env.hub.set_peers({"gw-a": ("10.0.0.1", 8090), "gw-b": ("10.0.0.2", 8090)})  # gw-b joins
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    held = [e.id for e in rev.endpoints if e.owner == HANDOFF]
    assert len(held) == 1 and sorted(e.owner for e in rev.endpoints) == [HANDOFF, "gw-a"]
    holding = env.hub.version
    env.hub.ack("gw-a/0", holding, {held[0]: 1})  # gw-a still has a request in flight there
    env.pub.check_drains()
    await env.flush()
    assert env.hub.version == holding
    env.hub.ack("gw-a/0", holding)  # done: gw-b gets it
    env.pub.check_drains()
    await env.flush()
    (rev,) = env.hub.snapshot.revisions
    assert env.hub.version > holding and sorted(e.owner for e in rev.endpoints) == ["gw-a", "gw-b"]


PEER_A, PEER_B = ("10.0.0.1", 8090), ("10.0.0.2", 8090)


def owned(snap: Snapshot, gateway: str) -> set[str]:
    return {e.id for r in snap.revisions for e in r.endpoints if e.owner == gateway}


class Serving:
    """What each gateway may be sending requests to: every snapshot from the one it acked last
    to the newest (it may apply any of them), or its last one while it is unlinked."""

    def __init__(self, hub: FakeHub) -> None:
        self.hub = hub
        self.frozen: dict[str, set[str]] = {}
        self.acked: dict[str, int] = {}

    def may_serve(self, gateway: str) -> set[str]:
        if gateway in self.frozen:
            return self.frozen[gateway]
        since = self.acked.get(gateway, 0)
        return set().union(*(owned(s, gateway) for s in self.hub.published if s.version >= since))

    def check(self, *gateways: str) -> None:
        for i, g in enumerate(gateways):
            for h in gateways[i + 1:]:
                both = self.may_serve(g) & self.may_serve(h)
                assert not both, f"{sorted(both)} owned by {g} and {h} at once"


async def test_a_new_term_never_gives_a_replica_two_owners_as_gateways_rejoin_one_by_one(
        env: Env[FakeHub]) -> None:
    env.revisions[0]["spec"] = {"containerConcurrency": 1}
    for rid in ("r1", "r2", "r3", "r4", "r5", "r6"):
        env.runtime.add(rid)
    hub = env.hub
    hub.set_peers({"gw-a": PEER_A, "gw-b": PEER_B})  # the last term: both linked, all acked
    await env.flush()
    last = hub.snapshot
    share = {g: owned(last, g) for g in ("gw-a", "gw-b")}
    assert share["gw-a"] and share["gw-b"]
    # The leader goes: a new term, every gateway unlinked, each serving its last snapshot.
    watch = Serving(hub)
    watch.frozen = {g: set(share[g]) for g in share}
    hub.set_peers({})
    env.pub.new_term()
    hub.rejoin_open = True
    # gw-a is back first and says what it owns; gw-b still serves its share.
    hub.reports = {"gw-a": frozenset(share["gw-a"])}
    del watch.frozen["gw-a"]
    watch.acked["gw-a"] = hub.version + 1
    hub.set_peers({"gw-a": PEER_A})
    await env.flush()
    watch.check("gw-a", "gw-b")
    assert owned(hub.snapshot, "gw-a") == share["gw-a"]  # what it already served, no more
    # gw-b is back too, then both ack: no report left, still one owner each.
    hub.reports["gw-b"] = frozenset(share["gw-b"])
    del watch.frozen["gw-b"]
    watch.acked["gw-b"] = watch.acked["gw-a"]
    hub.set_peers({"gw-a": PEER_A, "gw-b": PEER_B})
    await env.flush()
    watch.check("gw-a", "gw-b")
    hub.reports = {}
    hub.ack("gw-a/0", hub.version)
    hub.ack("gw-b/0", hub.version)
    watch.acked = {"gw-a": hub.version, "gw-b": hub.version}
    hub.rejoin_open = False  # the window ends (the hub tells the publisher as peers change)
    for callback in hub._peer_callbacks:
        callback()
    await env.flush()
    env.pub.check_drains()
    await env.flush()
    watch.check("gw-a", "gw-b")
    (rev,) = hub.snapshot.revisions
    assert HANDOFF not in {e.owner for e in rev.endpoints}
    assert owned(hub.snapshot, "gw-a") | owned(hub.snapshot, "gw-b") == set(env.runtime.reps)


async def test_an_unlinked_gateway_keeps_its_replicas_until_it_rejoins_or_the_bound(
        env: Env[FakeHub], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(publisher_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    env.revisions[0]["spec"] = {"containerConcurrency": 1}
    for rid in ("r1", "r2", "r3", "r4"):
        env.runtime.add(rid)
    hub = env.hub
    hub.set_peers({"gw-a": PEER_A, "gw-b": PEER_B})
    await env.flush()
    hub.ack("gw-a/0", hub.version)
    hub.ack("gw-b/0", hub.version)
    share_b = owned(hub.snapshot, "gw-b")
    # gw-b's link drops; it keeps serving its share: nobody else gets it, acks or not.
    del hub.acks["gw-b/0"]
    hub.set_peers({"gw-a": PEER_A})
    await env.flush()
    hub.ack("gw-a/0", hub.version)
    env.pub.check_drains()
    await env.flush()
    assert not owned(hub.snapshot, "gw-a") & share_b
    # It rejoins: its share again, at once.
    hub.set_peers({"gw-a": PEER_A, "gw-b": PEER_B})
    await env.flush()
    assert owned(hub.snapshot, "gw-b") == share_b
    hub.ack("gw-b/0", hub.version)
    # It goes for good: after the drain timeout its replicas go to gw-a.
    del hub.acks["gw-b/0"]
    hub.set_peers({"gw-a": PEER_A})
    await env.flush()
    assert not owned(hub.snapshot, "gw-a") & share_b
    now[0] += TIMEOUT_S + 1
    env.pub.check_drains()
    await env.flush()
    env.pub.check_drains()
    await env.flush()
    assert owned(hub.snapshot, "gw-a") == set(env.runtime.reps)


async def test_no_handoff_is_released_on_a_standby(env: Env[FakeHub]) -> None:
    env.revisions[0]["spec"] = {"containerConcurrency": 1}
    env.runtime.add("r1")
    env.runtime.add("r2")
    env.hub.set_peers({"gw-a": PEER_A})
    await env.flush()
    env.hub.ack("gw-a/0", env.hub.version)
    env.hub.set_peers({"gw-a": PEER_A, "gw-b": PEER_B})
    await env.flush()
    holding = env.hub.version
    env.hub.acks.clear()  # the term ended: no gateway linked (vacuously all acked)
    env.pub.check_drains()
    await env.flush()
    assert not env.pub._released and env.pub._moves
    env.pub.new_term()
    assert not env.pub._owners and not env.pub._moves and env.hub.version >= holding
