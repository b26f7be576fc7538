"""The controller's end of the gateway link: versioned snapshots and the workers' acks.

The websocket tests run a real aiohttp server on loopback with the hub's handler at LINK_PATH.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer

from controller.gatewayhub import GatewayHub
from flint_common.snapshot import Endpoint, Peer, RevisionTarget, RouteEntry, Snapshot, TrafficSplit
from flint_common.wire import LINK_PATH, NOT_LEADER, Ack, BucketLoad, Hello, Poke, SnapshotMessage, Stats

WAIT = 2.0


def snap(*endpoint_ids: str, percent: int = 100, version: int = 0) -> Snapshot:
    return Snapshot(
        version=version,
        routes=(
            RouteEntry(
                namespace="default",
                name="hello",
                hosts=("hello.default.localhost",),
                traffic=(TrafficSplit("hello-00001", percent),),
                tags=(),
            ),
        ),
        revisions=(
            RevisionTarget(
                namespace="default",
                name="hello-00001",
                service="hello",
                timeout_s=300.0,
                response_start_timeout_s=300.0,
                idle_timeout_s=0.0,
                container_concurrency=0,
                endpoints=tuple(Endpoint(e, "127.0.0.1", 40000 + i)
                                for i, e in enumerate(endpoint_ids)),
            ),
        ),
    )


# ------------------------------------------------------------------------------------------
# publishing (no sockets)
# ------------------------------------------------------------------------------------------


async def test_publish_assigns_increasing_versions() -> None:
    hub = GatewayHub()
    assert hub.version == 0
    assert hub.snapshot == Snapshot.empty()
    before_ms = int(time.time() * 1000)
    v1 = hub.publish(snap("a", version=99))
    assert v1 >= before_ms  # wall-clock milliseconds, not the caller's version
    assert hub.version == v1 == hub.snapshot.version
    assert hub.snapshot.routes == snap("a").routes
    v2 = hub.publish(snap("a", "b"))
    v3 = hub.publish(snap("b"))
    assert v1 < v2 < v3
    assert hub.snapshot.revisions == snap("b").revisions


async def test_publish_unchanged_content_keeps_the_version() -> None:
    hub = GatewayHub()
    v1 = hub.publish(snap("a"))
    assert hub.publish(snap("a", version=12345)) == v1
    assert hub.version == v1
    assert hub.publish(snap("a", percent=100)) == v1


async def test_first_publish_of_empty_content_gets_a_version() -> None:
    hub = GatewayHub()
    v = hub.publish(Snapshot.empty())
    assert v > 0
    assert hub.publish(Snapshot.empty()) == v


async def test_acked_by_all_and_draining_without_workers() -> None:
    hub = GatewayHub()
    hub.publish(snap("a"))
    assert hub.acked_by_all(hub.version)
    assert hub.connected() == 0
    assert hub.workers() == []
    assert not hub.draining("a")


# ------------------------------------------------------------------------------------------
# the websocket link
# ------------------------------------------------------------------------------------------


class Progress:
    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def wait(self, count: int) -> None:
        """Until on_progress has been called `count` times in total."""
        async with asyncio.timeout(WAIT):
            while self.count < count:
                self._event.clear()
                await self._event.wait()


class Link:
    def __init__(
        self, hub: GatewayHub, progress: Progress, client: TestClient[Any, Any],
        reports: list[tuple[str, Stats | Poke]], gone: list[str],
    ) -> None:
        self.hub = hub
        self.progress = progress
        self.client = client
        self.reports = reports
        """(worker, message) of every `stats` and `poke` message, as the hub decoded it."""
        self.gone = gone
        """The worker ids the hub reported disconnected, in order."""

    async def connect(self) -> Any:
        return await self.client.ws_connect(LINK_PATH)


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    progress = Progress()
    reports: list[tuple[str, Stats | Poke]] = []
    gone: list[str] = []
    hub = GatewayHub(on_progress=progress, on_report=lambda w, m: reports.append((w, m)),
                     on_disconnect=gone.append)
    app = web.Application()
    app.router.add_get(LINK_PATH, hub.handle)
    server = TestServer(app, host="127.0.0.1")
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        yield Link(hub, progress, client, reports, gone)
    finally:
        await hub.close()
        await client.close()


async def hello(ws: Any, worker: str, version: int = 0) -> None:
    msg = {"type": "hello", "worker": worker, "version": version}
    await ws.send_str(orjson.dumps(msg).decode())


async def ack(ws: Any, version: int, draining: dict[str, int] | None = None) -> None:
    msg: dict[str, Any] = {"type": "ack", "version": version}
    if draining is not None:
        msg["draining"] = draining
    await ws.send_str(orjson.dumps(msg).decode())


async def receive_snapshot(ws: Any) -> Snapshot:
    msg = await ws.receive(timeout=WAIT)
    assert msg.type == WSMsgType.TEXT, msg
    return SnapshotMessage.decode(msg.data).snapshot


async def test_hello_receives_the_current_snapshot(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await hello(ws, "gw/0")
    got = await receive_snapshot(ws)
    assert got == link.hub.snapshot
    assert got.version == v
    assert [w.id for w in link.hub.workers()] == ["gw/0"]
    assert link.hub.connected() == 1
    # connected but not yet acked: the version is not served by everyone
    assert not link.hub.acked_by_all(v)
    await ws.close()


async def test_ack_records_version_and_draining(link: Link) -> None:
    v1 = link.hub.publish(snap("a"))
    ws = await link.connect()
    await hello(ws, "gw/0")
    await receive_snapshot(ws)
    await ack(ws, v1)
    await link.progress.wait(1)
    (state,) = link.hub.workers()
    assert state.version == v1
    assert link.hub.acked_by_all(v1)

    v2 = link.hub.publish(snap("b"))
    assert (await receive_snapshot(ws)).version == v2
    assert not link.hub.acked_by_all(v2)
    await ack(ws, v2, {"a": 3})
    await link.progress.wait(2)
    assert link.hub.acked_by_all(v2)
    assert link.hub.draining("a")
    assert not link.hub.draining("b")
    assert link.hub.workers()[0].draining == {"a": 3}

    await ack(ws, v2, {})
    await link.progress.wait(3)
    assert not link.hub.draining("a")

    # an older ack (reordered) never lowers the worker's version
    await ack(ws, v1)
    await link.progress.wait(4)
    assert link.hub.workers()[0].version == v2
    await ws.close()


async def test_hello_without_a_published_snapshot_gets_the_first_one(link: Link) -> None:
    ws = await link.connect()
    await hello(ws, "gw/0")
    await ack(ws, 0)  # processed after the hello: syncs us with the handler
    await link.progress.wait(1)
    assert link.hub.connected() == 1
    v = link.hub.publish(snap("a"))
    got = await receive_snapshot(ws)
    assert got.version == v
    assert got.routes == snap("a").routes
    await ws.close()


@pytest.mark.parametrize("ahead", [0, 1, 10**6])
async def test_hello_at_or_beyond_the_hubs_version_forces_a_newer_one(
    link: Link, ahead: int
) -> None:
    v = link.hub.publish(snap("a"))
    seen = v + ahead
    ws = await link.connect()
    await hello(ws, "gw/0", version=seen)
    got = await receive_snapshot(ws)
    assert got.version > seen
    assert link.hub.version == got.version
    assert got.routes == snap("a").routes
    assert got.revisions == snap("a").revisions
    await ws.close()


async def test_hello_behind_gets_the_current_version_unchanged(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await hello(ws, "gw/0", version=v - 1)
    assert (await receive_snapshot(ws)).version == v
    assert link.hub.version == v
    await ws.close()


async def test_disconnect_removes_the_worker(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await hello(ws, "gw/0")
    await receive_snapshot(ws)
    await ack(ws, v - 1, {"a": 1})
    await link.progress.wait(1)
    assert not link.hub.acked_by_all(v)
    assert link.hub.draining("a")
    assert link.gone == []
    await ws.close()
    await link.progress.wait(2)
    assert link.hub.connected() == 0
    assert link.hub.acked_by_all(v)
    assert not link.hub.draining("a")
    assert link.gone == ["gw/0"]  # the autoscaler forgets what it reported


async def test_every_worker_must_ack(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    ws0, ws1 = await link.connect(), await link.connect()
    await hello(ws0, "gw/0")
    await hello(ws1, "gw/1")
    await receive_snapshot(ws0)
    await receive_snapshot(ws1)
    assert link.hub.connected() == 2
    await ack(ws0, v)
    await link.progress.wait(1)
    assert not link.hub.acked_by_all(v)
    await ack(ws1, v, {"x": 1})
    await link.progress.wait(2)
    assert link.hub.acked_by_all(v)
    assert link.hub.draining("x")

    # a publish reaches every connected worker
    v2 = link.hub.publish(snap("b"))
    assert (await receive_snapshot(ws0)).version == v2
    assert (await receive_snapshot(ws1)).version == v2
    await ws0.close()
    await ws1.close()


async def test_reconnect_with_the_same_id_replaces_the_old_socket(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    old = await link.connect()
    await hello(old, "gw/0")
    await receive_snapshot(old)
    new = await link.connect()
    await hello(new, "gw/0")
    await receive_snapshot(new)
    # the hub closed the old socket
    msg = await old.receive(timeout=WAIT)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
    await ack(new, v)
    await link.progress.wait(1)
    # the old socket going away did not unregister the worker's new connection
    assert [w.id for w in link.hub.workers()] == ["gw/0"]
    assert link.gone == []
    assert link.hub.workers()[0].version == v
    v2 = link.hub.publish(snap("b"))
    assert (await receive_snapshot(new)).version == v2
    await new.close()
    await link.progress.wait(2)
    assert link.hub.connected() == 0
    assert link.gone == ["gw/0"]


async def test_garbage_and_early_acks_are_ignored(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await ws.send_str("{not json")
    await ws.send_bytes(b"\x00\x01")
    await ack(ws, v)  # before hello: no worker to credit
    await hello(ws, "gw/0")
    got = await receive_snapshot(ws)  # the connection survived
    assert got.version == v
    assert link.progress.count == 0
    assert link.hub.workers()[0].version == 0
    await ws.close()


async def test_first_publish_after_a_hello_is_newer_than_what_the_worker_serves(
    link: Link,
) -> None:
    seen = 10**15  # the worker serves a version from a controller whose clock ran ahead
    ws = await link.connect()
    await hello(ws, "gw/0", version=seen)
    await ack(ws, seen)  # what gateway.link sends right after its hello
    await link.progress.wait(1)
    v = link.hub.publish(snap("a"))
    got = await receive_snapshot(ws)
    assert got.version == v
    try:
        assert v > seen
        assert not link.hub.acked_by_all(v)
    finally:
        await ws.close()


# ------------------------------------------------------------------------------------------
# the messages, typed by flint_common.wire
# ------------------------------------------------------------------------------------------


async def test_the_previous_gateways_frames_are_understood(link: Link) -> None:
    """Frames byte for byte as a gateway sent them before the typed link messages (now
    `flint_common.wire`)."""
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await ws.send_str('{"type":"hello","worker":"gw/0","version":0}')
    frame = await ws.receive(timeout=WAIT)
    # and the frame is what that gateway decodes: the snapshot as orjson serialises it
    assert frame.data == orjson.dumps({"type": "snapshot", "snapshot": link.hub.snapshot}).decode()
    await ws.send_str(f'{{"type":"ack","version":{v},"draining":{{"a":2}}}}')
    await link.progress.wait(1)
    assert link.hub.workers()[0].version == v and link.hub.draining("a")
    await ws.send_str('{"type":"stats","bucket":1733480000,"revisions":{"default/hello-00001":'
                      '{"concurrency":2.333333,"requests":7}}}')
    await ws.send_str('{"type":"poke","revision":"default/hello-00001","waiting":1}')
    await ack(ws, v, {})  # processed after the two reports
    await link.progress.wait(2)
    assert link.reports == [
        ("gw/0", Stats(1733480000, {"default/hello-00001": BucketLoad(2.333333, 7)})),
        ("gw/0", Poke("default/hello-00001", 1)),
    ]
    await ws.close()


async def test_the_gateways_own_encodings_are_understood(link: Link) -> None:
    ws = await link.connect()
    await ws.send_str(Hello("gw/0", 0).encode())
    await ws.send_str(Poke("ns/a", 3).encode())
    await ws.send_str(Ack(0).encode())
    await link.progress.wait(1)
    assert link.reports == [("gw/0", Poke("ns/a", 3))]
    await ws.close()


async def test_unknown_fields_and_types_from_a_newer_gateway_are_ignored(link: Link) -> None:
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await ws.send_str(orjson.dumps(
        {"type": "hello", "worker": "gw/0", "version": 0, "features": ["zstd"]}).decode())
    await receive_snapshot(ws)
    await ws.send_str('{"type": "metrics", "rss": 1024}')
    await ws.send_str(orjson.dumps(
        {"type": "ack", "version": v, "draining": {"a": 1}, "queued": 4}).decode())
    await link.progress.wait(1)
    assert link.hub.workers()[0].version == v
    assert link.hub.workers()[0].draining == {"a": 1}
    await ws.close()


async def test_a_malformed_message_is_refused_with_the_reason_and_the_link_survives(
    link: Link, caplog: pytest.LogCaptureFixture
) -> None:
    v = link.hub.publish(snap("a"))
    ws = await link.connect()
    await hello(ws, "gw/0")
    await receive_snapshot(ws)
    with caplog.at_level("WARNING", logger="flint.gatewayhub"):
        await ws.send_str('{"type": "ack", "version": "soon"}')
        await ws.send_str('{"type": "stats", "bucket": 1, "revisions": {"ns/a": {"requests": 1}}}')
        await ws.send_str('{"type": "hello", "worker": 7, "version": 0}')
        await ack(ws, v)
        await link.progress.wait(1)
    assert link.progress.count == 1 and link.reports == []
    assert [w.id for w in link.hub.workers()] == ["gw/0"]  # the bad hello changed nothing
    assert link.hub.workers()[0].version == v
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 3
    assert "ack.version: expected an integer, got string" in refused[0]
    assert "stats.revisions['ns/a'].concurrency: missing" in refused[1]
    assert "hello.worker: expected a string, got integer" in refused[2]
    await ws.close()


# ------------------------------------------------------------------------------------------
# a standby controller, and a new leader's gateways rejoining
# ------------------------------------------------------------------------------------------


async def test_a_new_terms_acks_wait_for_the_gateways_to_rejoin() -> None:
    now = [100.0]
    progress = Progress()
    hub = GatewayHub(on_progress=progress, monotonic=lambda: now[0])
    hub.publish(snap("a"))
    assert hub.acked_by_all(hub.version)  # nobody linked: vacuously
    hub.rejoin(0.01)
    assert not hub.acked_by_all(hub.version)  # the last leader's gateways may still be away
    now[0] += 0.01
    assert hub.acked_by_all(hub.version)
    await progress.wait(1)  # told when the window ends, so what waited on acks is looked at again


async def test_a_standby_closes_links_with_not_leader_and_a_lost_term_closes_the_open_ones() -> None:
    leading = [False]
    hub = GatewayHub(accepting=lambda: leading[0])
    hub.publish(snap("a"))
    app = web.Application()
    app.router.add_get(LINK_PATH, hub.handle)
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        ws = await client.ws_connect(LINK_PATH)
        msg = await ws.receive(timeout=WAIT)
        assert msg.type == WSMsgType.CLOSE and ws.close_code == NOT_LEADER
        assert hub.connected() == 0

        leading[0] = True
        ws = await client.ws_connect(LINK_PATH)
        await hello(ws, "gw/0")
        await receive_snapshot(ws)
        assert hub.connected() == 1
        leading[0] = False
        await hub.refuse_all()
        msg = await ws.receive(timeout=WAIT)
        assert msg.type == WSMsgType.CLOSE and ws.close_code == NOT_LEADER
    finally:
        await hub.close()
        await client.close()


async def test_gateways_announcing_a_peer_listener_are_the_peers_joining_and_leaving(link: Link) -> None:
    changes: list[dict[str, tuple[str, int]]] = []
    link.hub.on_peers_changed(lambda: changes.append(link.hub.peers()))
    link.hub.publish(snap("a"))
    a0, a1, b0, plain = [await link.connect() for _ in range(4)]
    for ws, worker, peer in ((a0, "gw-a/0", "10.0.0.1:8090"), (a1, "gw-a/1", "10.0.0.1:8090"),
                             (b0, "gw-b/0", "[fd00::2]:8090"), (plain, "gw-c/0", None)):
        msg: dict[str, Any] = {"type": "hello", "worker": worker, "version": 0}
        if peer is not None:
            msg["peer"] = peer
        await ws.send_str(orjson.dumps(msg).decode())
        await receive_snapshot(ws)
    both = {"gw-a": ("10.0.0.1", 8090), "gw-b": ("fd00::2", 8090)}
    assert link.hub.peers() == both
    assert changes == [{"gw-a": ("10.0.0.1", 8090)}, both]  # gw-a's second worker, gw-c: no change
    await a0.close()
    await link.progress.wait(1)
    assert link.hub.peers() == both  # gw-a's other worker is still linked
    await b0.close()
    await link.progress.wait(2)
    assert link.hub.peers() == {"gw-a": ("10.0.0.1", 8090)}
    assert changes[-1] == {"gw-a": ("10.0.0.1", 8090)} and len(changes) == 3
    await a1.close()
    await plain.close()


async def test_publish_sends_a_change_of_the_peers_alone() -> None:
    hub = GatewayHub()
    v1 = hub.publish(snap("a"))
    assert hub.publish(replace(snap("a"), peers=(Peer("gw-a", "10.0.0.1", 8090),))) > v1


async def test_what_a_gateway_owns_is_reported_until_it_acks_a_snapshot_of_ours(link: Link) -> None:
    link.hub.publish(snap("a"))
    ws = await link.connect()
    await ws.send_str(Hello("gw/0", 5, ("10.0.0.1", 8090), ("r1", "r2")).encode())
    await ws.send_str(Ack(5).encode())  # what it serves already: still its own snapshot
    v = (await receive_snapshot(ws)).version
    await link.progress.wait(1)
    assert link.hub.reported() == {"gw": frozenset({"r1", "r2"})}
    await ack(ws, v, {})
    await link.progress.wait(2)
    assert link.hub.reported() == {}
    await ws.close()


def many(*extra: str) -> Snapshot:
    """Ten revisions (a one-revision change goes as a delta), `extra` endpoints on the first."""
    base = snap(*extra)
    revs = (*base.revisions, *(replace(base.revisions[0], name=f"other-{i}", endpoints=())
                               for i in range(9)))
    return replace(base, revisions=tuple(sorted(revs, key=lambda r: (r.namespace, r.name))))


async def test_a_worker_reading_deltas_gets_one_per_change_and_its_ack_counts(link: Link) -> None:
    from flint_common.wire import DeltaMessage, decode_down

    v1 = link.hub.publish(many("a"))
    new, old = await link.connect(), await link.connect()
    await new.send_str(Hello("gw/0", 0, deltas=1).encode())
    await hello(old, "gw/1")
    assert (await receive_snapshot(new)).version == v1  # a (re)link: the whole snapshot
    assert (await receive_snapshot(old)).version == v1
    v2 = link.hub.publish(many("a", "b"))
    msg = decode_down((await new.receive(timeout=WAIT)).data)
    assert isinstance(msg, DeltaMessage)
    assert (msg.delta.base, msg.delta.version) == (v1, v2)
    assert [r.name for r in msg.delta.revisions] == ["hello-00001"]
    assert (await receive_snapshot(old)).version == v2  # no `deltas` in its hello: whole ones
    await ack(new, v2)
    await ack(old, v2)
    await link.progress.wait(2)
    assert link.hub.acked_by_all(v2)
    await new.close()
    await old.close()
