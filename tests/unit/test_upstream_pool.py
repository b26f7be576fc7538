"""The upstream pool's connect cap, without sockets: `_open_connection` is replaced by futures the
test resolves, and the event loop only runs ready callbacks (`settle`), never waits on a clock.

At most `upstream_connecting_per_replica` connections are opened at once per replica; the other
requests wait in order, are handed the slot of a connect that ended, take a pooled connection
that came back meanwhile, and a waiter that goes away never loses (or keeps) a slot.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import httptools
import pytest
from support.fakes import FakeTransport

from flint_common.snapshot import Endpoint
from gateway.config import GatewaySettings
from gateway.upstream import OverLimit, UpstreamConn, UpstreamPool

A = Endpoint("a", "127.0.0.1", 9)
B = Endpoint("b", "127.0.0.1", 10)


class FakeSocket:
    def __init__(self, family: socket.AddressFamily = socket.AF_INET) -> None:
        self.family = family
        self.options: list[tuple[int, int, int]] = []

    def setsockopt(self, level: int, name: int, value: int) -> None:
        self.options.append((level, name, value))


class Opener:
    """Stands in for `UpstreamPool._open_connection`: each call waits on a future of `pending`."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, asyncio.Future[None]]] = []
        self.conns: list[UpstreamConn] = []

    async def __call__(self, pool: UpstreamPool, endpoint: Endpoint) -> UpstreamConn:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((endpoint.id, fut))
        await fut  # the test resolves it (or fails it)
        conn = UpstreamConn(pool, endpoint.id)
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        self.conns.append(conn)
        return conn

    def calls(self, ep_id: str = "a") -> int:
        return sum(1 for e, _ in self.pending if e == ep_id)

    def finish(self, i: int, exc: BaseException | None = None) -> None:
        fut = self.pending[i][1]
        if exc is None:
            fut.set_result(None)
        else:
            fut.set_exception(exc)


async def settle(rounds: int = 10) -> None:
    """Run the callbacks that are ready (no clock involved)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


@pytest.fixture
def opener(monkeypatch: pytest.MonkeyPatch) -> Opener:
    o = Opener()

    async def open_connection(pool: UpstreamPool, endpoint: Endpoint) -> UpstreamConn:
        return await o(pool, endpoint)

    monkeypatch.setattr(UpstreamPool, "_open_connection", open_connection)
    return o


def make_pool(connecting: int = 2, **kw: object) -> UpstreamPool:
    settings = GatewaySettings(upstream_connecting_per_replica=connecting, **kw)  # type: ignore[arg-type]
    return UpstreamPool(asyncio.get_running_loop(), settings)


def start(
    pool: UpstreamPool, ep: Endpoint = A, admit: Callable[[], bool] | None = None
) -> asyncio.Task[UpstreamConn]:
    return asyncio.get_running_loop().create_task(pool.connect(ep, admit))


def idle_conn(pool: UpstreamPool, ep_id: str = "a") -> UpstreamConn:
    """An open connection that answered a response before, ready to be pooled."""
    conn = UpstreamConn(pool, ep_id)
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    conn.parser = httptools.HttpResponseParser(conn)
    conn.fresh = False
    return conn


async def test_at_most_n_connections_are_opened_at_once_per_replica(opener: Opener) -> None:
    pool = make_pool(connecting=2)
    tasks = [start(pool) for _ in range(5)]
    other = start(pool, B)
    await settle()
    assert opener.calls("a") == 2 and pool.connecting("a") == 2
    assert opener.calls("b") == 1 and pool.connecting("b") == 1  # another replica: its own cap
    opener.finish(0)
    await settle()
    assert tasks[0].done() and opener.calls("a") == 3 and pool.connecting("a") == 2
    for i in (1, 3, 4, 5):  # pending index 2 is b's
        opener.finish(i)
        await settle()
        assert pool.connecting("a") <= 2
    opener.finish(2)
    await settle()
    assert all(t.done() for t in [*tasks, other])
    assert opener.calls("a") == 5
    assert pool.connecting("a") == 0 and pool.connecting("b") == 0
    assert pool.serving("a") == 5 and pool.serving("b") == 1
    pool.close()


async def test_waiters_get_slots_in_arrival_order(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    order: list[int] = []

    def admit(i: int) -> Callable[[], bool]:
        def asked() -> bool:
            order.append(i)
            return True

        return asked

    tasks = []
    for i in range(5):
        tasks.append(start(pool, admit=admit(i)))
        await settle()  # arrive one after another
    assert order == [0]
    for n in range(1, 5):
        opener.finish(n - 1)
        await settle()
        assert order == list(range(n + 1))
    opener.finish(4)
    await settle()
    assert all(t.done() and t.exception() is None for t in tasks)
    assert pool.connecting("a") == 0
    pool.close()


async def test_a_cancelled_waiter_does_not_lose_a_slot(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    first, second, third = start(pool), start(pool), start(pool)
    await settle()
    assert opener.calls() == 1
    second.cancel()
    await settle()
    assert second.cancelled() and pool.connecting("a") == 1
    opener.finish(0)
    await settle()
    assert first.done() and opener.calls() == 2  # the slot went to the third, past the second
    opener.finish(1)
    await settle()
    assert third.done() and third.exception() is None
    assert pool.connecting("a") == 0
    # The cap is whole again: two new requests in a row, one opens at once, one waits.
    start(pool), start(pool)
    await settle()
    assert opener.calls() == 3 and pool.connecting("a") == 1
    opener.finish(2)
    await settle()
    opener.finish(3)
    await settle()
    assert pool.connecting("a") == 0
    pool.close()


async def test_a_slot_handed_to_a_waiter_that_was_just_cancelled_is_passed_on(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    first, second, third = start(pool), start(pool), start(pool)
    await settle()
    opener.finish(0)
    # Step by step until the first connect has ended: in that step it handed its slot to the
    # second, whose task has not run since. Cancelling it now must give the slot to the third.
    for _ in range(10):
        if first.done():
            break
        await asyncio.sleep(0)
    assert first.done() and not second.done() and opener.calls() == 1
    second.cancel()
    await settle()
    assert second.cancelled()
    assert opener.calls() == 2 and pool.connecting("a") == 1
    opener.finish(1)
    await settle()
    assert third.done() and third.exception() is None
    assert pool.connecting("a") == 0
    pool.close()


async def test_a_waiter_takes_a_connection_pooled_meanwhile(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    first, second = start(pool), start(pool)
    await settle()
    back = idle_conn(pool)
    pool.put(back)
    assert pool.idle_count("a") == 1
    opener.finish(0)
    await settle()
    assert first.done() and second.done()
    assert second.result() is back and not back.fresh and not back.in_pool
    assert opener.calls() == 1  # no second connect
    assert pool.connecting("a") == 0 and pool.idle_count("a") == 0
    pool.close()


async def test_a_request_with_a_slot_at_once_does_not_take_a_pooled_connection(opener: Opener) -> None:
    # `connect` is called when the caller found no pooled connection; with a free slot it opens.
    pool = make_pool(connecting=1)
    pool.put(idle_conn(pool))
    task = start(pool)
    await settle()
    assert opener.calls() == 1 and pool.idle_count("a") == 1
    opener.finish(0)
    await settle()
    assert task.result().fresh
    pool.close()


async def test_admit_saying_no_raises_over_limit_and_frees_the_slot(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    refused = start(pool, admit=lambda: False)
    await settle()
    assert isinstance(refused.exception(), OverLimit)
    assert opener.calls() == 0 and pool.connecting("a") == 0
    # A waiter refused after being handed a slot passes it on.
    first = start(pool)
    await settle()
    second = start(pool, admit=lambda: False)
    third = start(pool, admit=lambda: True)
    await settle()
    assert opener.calls() == 1
    opener.finish(0)
    await settle()
    assert first.done() and isinstance(second.exception(), OverLimit)
    assert opener.calls() == 2 and pool.connecting("a") == 1
    opener.finish(1)
    await settle()
    assert third.exception() is None and pool.connecting("a") == 0
    pool.close()


async def test_admit_is_not_asked_of_a_waiter_that_takes_a_pooled_connection(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    asked: list[int] = []
    first = start(pool)
    await settle()
    def refuse() -> bool:
        asked.append(1)
        return False

    second = start(pool, admit=refuse)
    await settle()
    back = idle_conn(pool)
    pool.put(back)
    opener.finish(0)
    await settle()
    assert first.done() and second.result() is back and asked == []
    pool.close()


async def test_a_failed_or_cancelled_connect_frees_its_slot(opener: Opener) -> None:
    pool = make_pool(connecting=1)
    failing, waiting = start(pool), start(pool)
    await settle()
    opener.finish(0, ConnectionRefusedError("refused"))
    await settle()
    assert isinstance(failing.exception(), ConnectionRefusedError)
    assert opener.calls() == 2 and pool.connecting("a") == 1  # handed to the waiter
    waiting.cancel()  # cancelled while opening
    await settle()
    assert waiting.cancelled() and pool.connecting("a") == 0
    again = start(pool)
    await settle()
    assert opener.calls() == 3 and pool.connecting("a") == 1
    again.cancel()
    await settle()
    assert pool.connecting("a") == 0
    pool.close()


async def test_serving_counts_open_connections_not_idle_in_the_pool(opener: Opener) -> None:
    pool = make_pool(connecting=4)
    tasks = [start(pool) for _ in range(3)]
    await settle()
    assert pool.serving("a") == 0 and pool.connecting("a") == 3  # not open yet
    for i in range(3):
        opener.finish(i)
    await settle()
    c1, c2, c3 = (t.result() for t in tasks)
    assert pool.serving("a") == 3 and pool.connecting("a") == 0
    c1.parser = httptools.HttpResponseParser(c1)
    pool.put(c1)
    assert pool.serving("a") == 2 and pool.idle_count("a") == 1
    c2.connection_lost(ConnectionResetError())  # in use, closed by the replica
    assert pool.serving("a") == 1
    c1.connection_lost(None)  # pooled, closed: forgotten by the pool as well
    assert pool.idle_count("a") == 0 and pool.serving("a") == 1
    c3.connection_lost(None)
    assert pool.serving("a") == 0
    c3.connection_lost(None)  # a second report never makes the count negative
    assert pool.serving("a") == 0
    assert pool.serving("zz") == 0 and pool.connecting("zz") == 0
    pool.close()


def test_opened_and_closed_pair_per_endpoint() -> None:
    pool = UpstreamPool(asyncio.new_event_loop(), GatewaySettings())
    try:
        conns = [UpstreamConn(pool, "a") for _ in range(3)] + [UpstreamConn(pool, "b")]
        for c in conns:
            c.connection_made(FakeTransport())  # type: ignore[arg-type]
        assert pool.serving("a") == 3 and pool.serving("b") == 1
        conns[0].connection_lost(None)
        conns[3].connection_lost(None)
        assert pool.serving("a") == 2 and pool.serving("b") == 0
        conns[1].connection_lost(None)
        conns[2].connection_lost(None)
        assert pool.serving("a") == 0
    finally:
        pool._loop.close()


# -- TCP_USER_TIMEOUT until the first response byte ------------------------------------------


def is_fresh(conn: UpstreamConn) -> bool:
    """`conn.fresh`, read through a call (an assert on the attribute would narrow it for mypy,
    which would then take the lines after `data_received` as unreachable)."""
    return conn.fresh


def test_the_first_response_byte_clears_the_user_timeout() -> None:
    loop = asyncio.new_event_loop()
    try:
        pool = UpstreamPool(loop, GatewaySettings(upstream_user_timeout_s=2.0))
        assert pool.user_timeout_ms == 2000
        sock = FakeSocket()
        conn = UpstreamConn(pool, "a")
        conn.connection_made(FakeTransport(sock))  # type: ignore[arg-type]
        assert is_fresh(conn)
        conn.data_received(b"HTTP/1.1 200 OK\r\n")  # no owner: the connection is closed too
        assert not is_fresh(conn)
        assert sock.options == [(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0)]
        conn.data_received(b"more")
        assert len(sock.options) == 1  # only once

        unix = FakeSocket(socket.AF_UNIX)
        conn = UpstreamConn(pool, "a")
        conn.connection_made(FakeTransport(unix))  # type: ignore[arg-type]
        conn.data_received(b"H")
        assert not is_fresh(conn) and unix.options == []

        off = UpstreamPool(loop, GatewaySettings(upstream_user_timeout_s=0.0))
        plain = FakeSocket()
        conn = UpstreamConn(off, "a")
        conn.connection_made(FakeTransport(plain))  # type: ignore[arg-type]
        conn.data_received(b"H")
        assert not is_fresh(conn) and plain.options == []
    finally:
        loop.close()


async def test_a_fresh_tcp_connection_gets_the_user_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    pool = UpstreamPool(loop, GatewaySettings(upstream_user_timeout_s=1.5))
    sock = FakeSocket()

    async def create_connection(
        factory: Callable[[], UpstreamConn], host: str, port: int
    ) -> tuple[FakeTransport, UpstreamConn]:
        assert (host, port) == ("127.0.0.1", 9)
        proto = factory()
        transport = FakeTransport(sock)
        proto.connection_made(transport)  # type: ignore[arg-type]
        return transport, proto

    monkeypatch.setattr(loop, "create_connection", create_connection)
    conn = await pool.connect(A)
    assert conn.fresh and conn.endpoint_id == "a"
    assert sock.options == [(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1500)]
    assert pool.serving("a") == 1 and pool.connecting("a") == 0
    pool.close()
