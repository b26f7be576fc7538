"""Requests a replica did not take: the learned limit holds back those already waiting for a
connect slot, a re-dispatched exchange keeps its connect task, a requeued body waits in the
socket, a busy replica behind another worker is retried past the dead-replica budget, and
close-delimited answers count toward the limit's growth (fake transports, no sockets)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.fakes import FakeTransport

from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TrafficSplit
from gateway.client import ClientConnection
from gateway.config import GatewaySettings
from gateway.context import WorkerContext
from gateway.exchange import ALONE_RETRIES, REQUEUE_LIMIT
from gateway.ports import P_QUEUED
from gateway.upstream import UpstreamConn, UpstreamPool
from gateway.worker import build_context

HOST = b"hello.default.localhost"
KEY = "default/hello-1"
GET = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST


def revision(*ids: str) -> RevisionTarget:
    return RevisionTarget(
        namespace="default", name="hello-1", service="hello", timeout_s=30.0,
        response_start_timeout_s=0.0, idle_timeout_s=0.0, container_concurrency=0,
        endpoints=tuple(Endpoint(i, "127.0.0.1", 9 + n) for n, i in enumerate(ids)),
    )


def snapshot(version: int, *ids: str) -> Snapshot:
    route = RouteEntry("default", "hello", (HOST.decode(),), (TrafficSplit("hello-1", 100),), ())
    other = RevisionTarget(
        namespace="default", name="other-1", service="other", timeout_s=30.0,
        response_start_timeout_s=0.0, idle_timeout_s=0.0, container_concurrency=0,
        endpoints=(Endpoint("z", "127.0.0.1", 99),),
    )
    return Snapshot(version=version, routes=(route,), revisions=(revision(*ids), other))


class Opener:
    """Stands in for the TCP connect: each attempt waits until the test settles it."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, asyncio.Future[None]]] = []
        self.conns: list[tuple[UpstreamConn, FakeTransport]] = []

    async def open(self, pool: UpstreamPool, ep: Endpoint) -> UpstreamConn:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.attempts.append((ep.id, fut))
        await fut
        up = UpstreamConn(pool, ep.id)
        transport = FakeTransport()
        up.connection_made(transport)  # type: ignore[arg-type]
        self.conns.append((up, transport))
        return up


def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connecting: int = 1,
          *ids: str) -> tuple[WorkerContext, Opener]:
    settings = GatewaySettings(state_dir=tmp_path, upstream_connecting_per_replica=connecting)
    ctx = build_context(settings, asyncio.get_running_loop(), snapshot=snapshot(1, *(ids or ("a",))))
    opener = Opener()

    async def open_connection(pool: UpstreamPool, ep: Endpoint) -> UpstreamConn:
        return await opener.open(pool, ep)

    monkeypatch.setattr(UpstreamPool, "_open_connection", open_connection)
    return ctx, opener


def client(ctx: WorkerContext) -> tuple[ClientConnection, FakeTransport]:
    c = ClientConnection(ctx)
    t = FakeTransport()
    c.connection_made(t)  # type: ignore[arg-type]
    return c, t


async def settle(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_requests_waiting_for_a_connect_slot_respect_a_limit_learned_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opener = setup(tmp_path, monkeypatch)
    clients = [client(ctx) for _ in range(3)]
    for c, _ in clients:
        c.data_received(GET)
        await settle()
    assert ctx.router.inflight("a") == 3 and len(opener.attempts) == 1  # one connect at a time
    opener.attempts[0][1].set_exception(ConnectionRefusedError())
    await settle()
    assert ctx.router.learned == {"a": 1}
    # The two that waited for the connect slot before the limit existed: one goes on, the
    # other waits in the queue instead of connecting too.
    assert len(opener.attempts) == 2
    assert ctx.activator.waiting(KEY) == 2 and ctx.router.inflight("a") == 1


async def test_a_request_granted_anew_while_it_goes_back_keeps_its_connect_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opener = setup(tmp_path, monkeypatch)
    ctx.router.lower("z", 100)  # a limit learned elsewhere already
    clients = [client(ctx) for _ in range(3)]
    for c, _ in clients:
        c.data_received(GET)
        await settle()
    ctx.router.apply(snapshot(2, "a", "b"))  # a second replica appears
    opener.attempts[0][1].set_exception(ConnectionRefusedError())
    await settle()
    replicas = [c._exchange._relay._replica for c, _ in clients]
    for r in replicas:
        if r._ep is not None and r.up is None:  # connecting: its task is known, so stop() cancels it
            assert r._connect_task is not None and not r._connect_task.done()
    c, _ = clients[1]
    c.connection_lost(None)
    await settle()
    assert not any("_connect" in repr(t.get_coro()) and t is replicas[1]._connect_task
                   for t in asyncio.all_tasks())


async def test_a_requeued_request_leaves_the_rest_of_its_body_in_the_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opener = setup(tmp_path, monkeypatch, 8)
    c1, _ = client(ctx)
    c1.data_received(GET)
    await settle()
    opener.attempts[0][1].set_result(None)
    await settle()
    c2, t2 = client(ctx)
    c2.data_received(b"POST /2 HTTP/1.1\r\nHost: %s\r\nContent-Length: 5000\r\n\r\n" % HOST + b"x" * 1000)
    await settle()
    opener.attempts[1][1].set_result(None)
    await settle()
    up2, _ = opener.conns[1]
    up2.connection_lost(ConnectionResetError())  # before any response byte: not taken
    assert ctx.activator.waiting(KEY) == 1
    assert c2.pmask & P_QUEUED and t2.paused
    up1, _ = opener.conns[0]
    up1.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")  # room again
    await settle()
    assert not c2.pmask & P_QUEUED and not t2.paused  # granted: the body flows again
    assert len(opener.conns) == 2  # sent again on the pooled connection the GET gave back
    _, t1 = opener.conns[0]
    assert bytes(t1.out).endswith(b"\r\n\r\n" + b"x" * 1000)  # the head, then the replayed part


async def test_a_busy_replica_with_nothing_in_flight_here_is_retried_past_the_dead_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reset (not refused) with nothing else in flight in this worker: another worker may be
    filling that replica, so it is retried beyond `ALONE_RETRIES`, up to `REQUEUE_LIMIT`."""
    ctx, opener = setup(tmp_path, monkeypatch)
    c, t = client(ctx)
    c.data_received(GET)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(opener.attempts) <= ALONE_RETRIES + 1 and loop.time() < deadline:
        await settle()
        pending = [f for _, f in opener.attempts if not f.done()]
        for fut in pending:
            fut.set_exception(TimeoutError())
        await asyncio.sleep(0.01)
    assert len(opener.attempts) > ALONE_RETRIES + 1
    assert not t.out  # no answer yet: still waiting for the replica
    assert c._exchange._requeues <= REQUEUE_LIMIT
    c.connection_lost(None)


async def test_a_close_delimited_answer_counts_toward_the_limits_growth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opener = setup(tmp_path, monkeypatch)
    ctx.router.lower("a", 0)  # learned: 1
    ctx.router._balancer.growth = 1
    c, t = client(ctx)
    c.data_received(GET)
    await settle()
    opener.attempts[0][1].set_result(None)
    await settle()
    up, _ = opener.conns[0]
    up.data_received(b"HTTP/1.0 200 OK\r\n\r\nbody")  # no length: ends with the connection
    up.connection_lost(None)
    await settle()
    assert b"body" in bytes(t.out)
    assert ctx.router.learned == {"a": 2}
