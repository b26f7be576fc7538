"""The proxy's exchange without sockets: a client connection and replica connections on fake
transports, driven by feeding bytes in and reading what was written (the real wiring of a
worker, `build_context`, with the pool's connect replaced)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.fakes import FakeTransport

from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TrafficSplit
from gateway.client import ClientConnection
from gateway.config import GatewaySettings
from gateway.context import WorkerContext
from gateway.upstream import UpstreamConn, UpstreamPool
from gateway.worker import build_context

HOST = b"hello.default.localhost"
KEY = "default/hello-1"


def snapshot(cc: int) -> Snapshot:
    rev = RevisionTarget(
        namespace="default", name="hello-1", service="hello", timeout_s=30.0,
        response_start_timeout_s=0.0, idle_timeout_s=0.0, container_concurrency=cc,
        endpoints=(Endpoint("a", "127.0.0.1", 9),),
    )
    route = RouteEntry("default", "hello", (HOST.decode(),), (TrafficSplit("hello-1", 100),), ())
    return Snapshot(version=1, routes=(route,), revisions=(rev,))


Upstreams = list[tuple[UpstreamConn, FakeTransport]]


def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cc: int = 0) -> tuple[WorkerContext, Upstreams]:
    """A worker's context over `snapshot(cc)`, whose pool 'connects' to fake transports."""
    settings = GatewaySettings(state_dir=tmp_path)
    ctx = build_context(settings, asyncio.get_running_loop(), snapshot=snapshot(cc))
    opened: Upstreams = []

    async def connect(pool: UpstreamPool, endpoint: Endpoint) -> UpstreamConn:
        up = UpstreamConn(pool, endpoint.id)
        transport = FakeTransport()
        up.connection_made(transport)  # type: ignore[arg-type]
        opened.append((up, transport))
        return up

    monkeypatch.setattr(UpstreamPool, "_open_connection", connect)
    return ctx, opened


def client(ctx: WorkerContext) -> tuple[ClientConnection, FakeTransport]:
    conn = ClientConnection(ctx)
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def test_a_request_goes_to_a_replica_and_its_answer_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opened = worker(tmp_path, monkeypatch)
    conn, out = client(ctx)
    conn.data_received(b"GET /x HTTP/1.1\r\nHost: %s\r\nConnection: keep-alive\r\n\r\n" % HOST)
    await asyncio.sleep(0)  # the connect task
    [(up, sent)] = opened
    head = sent.take()
    assert head.startswith(b"GET /x HTTP/1.1\r\nHost: %s\r\n" % HOST)
    assert b"Connection" not in head  # hop-by-hop
    assert b"X-Forwarded-For: 10.0.0.7\r\n" in head and b"\r\ntraceparent: 00-" in head
    assert ctx.router.inflight("a") == 1 and ctx.stats.current(KEY) == 1

    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\nok")
    assert out.take() == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert ctx.router.inflight("a") == 0 and ctx.stats.current(KEY) == 0
    assert ctx.pool.idle_count("a") == 1
    assert ctx.metrics.by_route == {("default/hello", KEY, "2xx"): 1}

    # The next request on the connection reuses the pooled replica connection at once.
    conn.data_received(b"GET /y HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
    assert sent.take().startswith(b"GET /y HTTP/1.1\r\n") and len(opened) == 1
    up.data_received(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert out.take() == b"HTTP/1.1 204 No Content\r\n\r\n" and not out.closed
    ctx.close()


async def test_an_unknown_host_is_answered_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, opened = worker(tmp_path, monkeypatch)
    conn, out = client(ctx)
    conn.data_received(b"GET / HTTP/1.1\r\nHost: nope.default.localhost\r\n\r\n")
    await asyncio.sleep(0)
    answer = out.take()
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"X-Flint-Error: gateway" in answer
    assert b"no route for host 'nope.default.localhost'" in answer
    assert opened == [] and not out.closed  # kept alive
    ctx.close()


async def test_an_unknown_broker_is_answered_by_the_ingress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opened = worker(tmp_path, monkeypatch)
    conn, out = client(ctx)
    conn.data_received(
        b"POST /default/nope HTTP/1.1\r\nHost: broker-ingress.localhost\r\nContent-Length: 2\r\n\r\n{}"
    )
    answer = out.take()
    assert answer.startswith(b"HTTP/1.1 404 Not Found\r\n") and b"broker default/nope not found" in answer
    assert opened == []
    ctx.close()


async def test_a_request_waits_for_a_slot_and_is_sent_when_one_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opened = worker(tmp_path, monkeypatch, cc=1)
    first, first_out = client(ctx)
    second, second_out = client(ctx)
    first.data_received(b"GET /1 HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
    await asyncio.sleep(0)
    second.data_received(b"GET /2 HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
    assert ctx.activator.waiting(KEY) == 1 and ctx.stats.current(KEY) == 2
    [(up, sent)] = opened
    assert sent.take().startswith(b"GET /1 ")

    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    # The released slot goes to the waiting request, over the connection just pooled.
    assert first_out.take().endswith(b"\r\n\r\n1")
    assert ctx.activator.waiting(KEY) == 0 and sent.take().startswith(b"GET /2 ")
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    assert second_out.take().endswith(b"\r\n\r\n2") and ctx.router.inflight("a") == 0
    ctx.close()


async def test_a_chunked_body_streams_to_the_replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, opened = worker(tmp_path, monkeypatch)
    conn, out = client(ctx)
    conn.data_received(
        b"POST /u HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" % HOST
    )
    await asyncio.sleep(0)  # connected: the head and the chunk read so far go out together
    [(up, sent)] = opened
    data = sent.take()
    assert b"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" in data
    conn.data_received(b"6\r\n world\r\n0\r\n\r\n")
    assert sent.take() == b"6\r\n world\r\n0\r\n\r\n"
    up.data_received(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert out.take() == b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    ctx.close()


async def test_pipelined_requests_are_answered_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, opened = worker(tmp_path, monkeypatch)
    conn, out = client(ctx)
    conn.data_received(
        b"GET /a HTTP/1.1\r\nHost: %s\r\n\r\nGET /b HTTP/1.1\r\nHost: nope.localhost\r\n\r\n" % HOST
    )
    await asyncio.sleep(0)
    assert out.take() == b""  # the 404 for /b waits for /a's answer
    [(up, _)] = opened
    up.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na")
    answers = out.take()
    assert answers.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\n\r\naHTTP/1.1 404 Not Found\r\n" in answers
    ctx.close()


async def test_a_busy_replica_that_drops_a_fresh_connection_gets_the_request_again_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 10 §2: a fresh connection lost before any response byte, with another request in
    # flight on that replica, is an overload signal, not a 502: the replica's learned limit
    # drops to what it was serving, the request waits again at the front of the queue and is
    # sent again, with its body, once a slot frees.
    ctx, opened = worker(tmp_path, monkeypatch)
    first, first_out = client(ctx)
    second, second_out = client(ctx)
    third, third_out = client(ctx)
    first.data_received(b"GET /1 HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
    await asyncio.sleep(0)
    second.data_received(b"POST /2 HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello" % HOST)
    await asyncio.sleep(0)
    [(up1, sent1), (up2, sent2)] = opened
    assert sent1.take().startswith(b"GET /1 ")
    assert sent2.take().endswith(b"\r\n\r\nhello") and up2.fresh
    assert ctx.router.inflight("a") == 2 and ctx.router.learned == {}

    up2.connection_lost(ConnectionResetError("reset by peer"))  # the replica did not take it
    assert ctx.router.learned == {"a": 1}  # it was serving one other request
    assert ctx.router.limit_changes() == {KEY: [1, 0]}
    assert ctx.activator.waiting(KEY) == 1 and ctx.router.inflight("a") == 1
    assert ctx.metrics.upstream_requeues == 1 and ctx.metrics.learned_limit_lowered == 1
    assert second_out.take() == b"" and not second_out.closed  # no 502

    # A request arriving now queues behind it (the learned limit is reached, one waits already).
    third.data_received(b"GET /3 HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST)
    await asyncio.sleep(0)
    assert ctx.activator.waiting(KEY) == 2 and len(opened) == 2

    up1.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    assert first_out.take().endswith(b"\r\n\r\n1")
    # The freed slot goes to the request queued again (at the front), over the pooled
    # connection, with its body replayed.
    resent = sent1.take()
    assert resent.startswith(b"POST /2 HTTP/1.1\r\n") and resent.endswith(b"\r\n\r\nhello")
    assert ctx.activator.waiting(KEY) == 1 and len(opened) == 2
    up1.data_received(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
    answer = second_out.take()
    assert answer.startswith(b"HTTP/1.1 201 Created\r\n") and answer.endswith(b"\r\n\r\nok")
    assert sent1.take().startswith(b"GET /3 ")
    up1.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3")
    assert third_out.take().endswith(b"\r\n\r\n3")
    assert ctx.router.inflight("a") == 0 and ctx.activator.waiting(KEY) == 0
    assert ctx.metrics.by_route == {("default/hello", KEY, "2xx"): 3}
    ctx.close()


@pytest.mark.parametrize(
    ("request_line", "conn_header", "http10", "keep_alive"),
    [
        (b"GET /v HTTP/1.1", b"", False, True),
        (b"GET /v HTTP/1.1", b"Connection: close\r\n", False, False),
        (b"GET /v HTTP/1.1", b"Proxy-Connection: close\r\n", False, False),
        (b"GET /v HTTP/1.0", b"", True, False),
        (b"GET /v HTTP/1.0", b"Connection: keep-alive\r\n", True, True),
        (b"GET /v HTTP/1.0", b"Proxy-Connection: keep-alive\r\n", True, True),
    ],
)
async def test_the_client_version_and_persistence_shape_the_response(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    request_line: bytes, conn_header: bytes, http10: bool, keep_alive: bool,
) -> None:
    """HTTP/1.0 is told when the connection stays open and never gets a chunked response, as
    llhttp decides persistence (a Proxy-Connection header counts, as Connection does)."""
    ctx, opened = worker(tmp_path, monkeypatch)
    conn, out = client(ctx)
    conn.data_received(request_line + b"\r\nHost: %s\r\n%s\r\n" % (HOST, conn_header))
    await asyncio.sleep(0)
    [(up, sent)] = opened
    assert b"Proxy-Connection" not in sent.take()
    up.data_received(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    answer = out.take()
    if http10:  # close-delimited, whatever the request asked
        assert answer == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok" and out.closed
    elif keep_alive:
        assert answer == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        assert not out.closed
    else:
        assert b"Connection: close\r\n" in answer and b"Transfer-Encoding: chunked" in answer
        assert out.closed
    up.data_received(b"")  # nothing more
    conn2, out2 = client(ctx)
    conn2.data_received(request_line + b"\r\nHost: %s\r\n%s\r\n" % (HOST, conn_header))
    await asyncio.sleep(0)
    up2, _ = opened[-1]
    up2.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    answer = out2.take()
    assert (b"Connection: keep-alive\r\n" in answer) == (http10 and keep_alive)
    assert (b"Connection: close\r\n" in answer) == (not keep_alive)
    assert out2.closed == (not keep_alive)
    ctx.close()
