"""The activator in-process on loopback: scale from zero, starting replicas, limits, queue bounds."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from integration.test_proxy import (
    HELLO,
    Proxy,
    RawClient,
    revision,
    route,
    snapshot,
    start_upstream,
    stop_upstream,
    url,
    wait_for,
)

from flint_common.snapshot import Endpoint, Snapshot
from gateway.activator import Activator, Rejection, Ticket
from gateway.config import GatewaySettings
from gateway.worker import build_context, protocol_factory

KEY = "default/hello-1"


@contextlib.asynccontextmanager
async def activating_proxy(
    snap: Snapshot, settings: GatewaySettings | None = None, connected: bool = True
) -> AsyncIterator[Proxy]:
    """The proxy as a worker runs it, with a controller link that is up (or not)."""
    loop = asyncio.get_running_loop()
    ctx = build_context(
        settings or GatewaySettings(), loop, snapshot=snap, controller_connected=lambda: connected
    )
    server = await loop.create_server(protocol_factory(ctx), "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield Proxy(ctx.router, ctx, server, port)
    finally:
        server.close()
        ctx.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class OverlapApp:
    """Answers 500 whenever it sees two requests at once (a `containerConcurrency: 1` app)."""

    active: int = 0
    served: int = 0
    overlaps: int = 0
    runner: web.AppRunner | None = None
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.active += 1
        try:
            if self.active > 1:
                self.overlaps += 1
                return web.Response(status=500, text="overlap")
            await asyncio.sleep(0.002)
            self.served += 1
            return web.Response(text="ok")
        finally:
            self.active -= 1

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.port = int(self.runner.addresses[0][1])

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def one_revision(*eps: Endpoint, **kw: float) -> Snapshot:
    return snapshot(1, [route("hello", [("hello-1", 100)])], [revision("hello-1", eps, **kw)])  # type: ignore[arg-type]


async def test_starting_endpoint_listening_300ms_later_gets_the_request() -> None:
    port = free_port()
    app = OverlapApp()
    snap = one_revision(Endpoint("s1", "127.0.0.1", port, starting=True))
    async with activating_proxy(snap) as p, aiohttp.ClientSession() as s:
        act = p.ctx.activator
        assert act is not None
        req = asyncio.create_task(s.get(url(p, "/cold"), headers={"Host": HELLO}))
        await wait_for(lambda: act.waiting(KEY) == 1, what="request queued")
        assert p.ctx.prober is not None and p.ctx.prober.probing == ["s1"]
        await asyncio.sleep(0.3)  # the replica takes 300 ms to listen (the scenario, not a wait)
        # still held, not failed, while nothing listens
        assert not req.done() and act.waiting(KEY) == 1 and p.ctx.prober.probing == ["s1"]
        await app.start(port)
        try:
            async with await req as resp:
                assert resp.status == 200 and await resp.text() == "ok"
            assert act.cold_starts == {KEY: 1}
            assert p.ctx.prober.probing == []
            assert p.router.has_ready(p.router.snapshot.revisions[0])
            # the controller later marks it ready: nothing changes for the data plane
            p.router.apply(replace(one_revision(Endpoint("s1", "127.0.0.1", port)), version=2))
            async with s.get(url(p), headers={"Host": HELLO}) as resp:
                assert resp.status == 200
            await p.settled()
        finally:
            await app.stop()


async def test_requests_wait_at_zero_until_a_snapshot_adds_an_endpoint() -> None:
    up = await start_upstream("a")
    try:
        async with activating_proxy(one_revision()) as p, aiohttp.ClientSession() as s:
            act = p.ctx.activator
            assert act is not None
            reqs = [
                asyncio.create_task(s.get(url(p, f"/q{i}"), headers={"Host": HELLO}))
                for i in range(8)
            ]
            await wait_for(lambda: act.waiting(KEY) == 8, what="8 requests queued")
            assert p.ctx.stats is not None and p.ctx.stats.current(KEY) == 8
            p.router.apply(replace(one_revision(up.endpoint), version=2))
            paths = []
            for r in reqs:
                async with await r as resp:
                    assert resp.status == 200
                    paths.append((await resp.json())["path"])
            assert sorted(paths) == sorted(f"/q{i}" for i in range(8))
            assert act.waiting(KEY) == 0 and act.used == 0
            await p.settled()
            await wait_for(lambda: p.ctx.stats is not None and p.ctx.stats.current(KEY) == 0)
    finally:
        await stop_upstream(up)


async def test_container_concurrency_1_is_never_exceeded() -> None:
    app = OverlapApp()
    await app.start()
    try:
        snap = one_revision(Endpoint("r1", "127.0.0.1", app.port), container_concurrency=1)
        async with activating_proxy(snap) as p:

            async def client() -> list[int]:
                codes = []
                async with aiohttp.ClientSession() as s:
                    for i in range(50):
                        async with s.get(url(p, f"/{i}"), headers={"Host": HELLO}) as resp:
                            await resp.read()
                            codes.append(resp.status)
                return codes

            results = await asyncio.gather(*(client() for _ in range(5)))
            assert all(code == 200 for codes in results for code in codes), results
            assert app.overlaps == 0 and app.served == 250
            await p.settled()
    finally:
        await app.stop()


async def test_queue_overflow_is_503_with_retry_after() -> None:
    settings = GatewaySettings(queue_limit_per_revision=2)
    async with activating_proxy(one_revision(), settings) as p, aiohttp.ClientSession() as s:
        act = p.ctx.activator
        assert act is not None
        waiting = [asyncio.create_task(s.get(url(p), headers={"Host": HELLO})) for _ in range(2)]
        await wait_for(lambda: act.waiting(KEY) == 2, what="2 requests queued")
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
            body = await resp.text()
            assert "queue limit" in body and KEY in body
        assert act.rejections == 1
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await wait_for(lambda: act.waiting(KEY) == 0, what="cancelled clients to leave the queue")


def record_enqueues(act: Activator) -> list[Ticket | Rejection]:
    """What every `act.enqueue` call returned, from now on."""
    results: list[Ticket | Rejection] = []
    enqueue = act.enqueue

    def recording(*args: Any, **kwargs: Any) -> Ticket | Rejection:
        res = enqueue(*args, **kwargs)
        results.append(res)
        return res

    act.enqueue = recording  # type: ignore[method-assign]
    return results


async def test_waiting_past_the_timeout_is_504() -> None:
    async with activating_proxy(one_revision(timeout_s=0.3)) as p, aiohttp.ClientSession() as s:
        act = p.ctx.activator
        assert act is not None
        queued = record_enqueues(act)
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert resp.status == 504
            body = await resp.text()
        assert "timed out" in body and "waiting for capacity" in body
        # It waited in the queue with the revision's timeout as its deadline, and the expiry of
        # that deadline (not a refusal, nor the proxy's own timer) answered it.
        [ticket] = queued
        assert isinstance(ticket, Ticket) and not ticket.live
        assert ticket.deadline == pytest.approx(ticket.enqueued + 0.3)
        assert act.timeouts == 1 and act.rejections == 0
        assert act.waiting(KEY) == 0


async def test_failed_revision_and_unreachable_controller_fail_fast() -> None:
    failed = replace(
        one_revision(Endpoint("s1", "127.0.0.1", free_port(), starting=True)),
        revisions=(
            replace(
                revision("hello-1", [Endpoint("s1", "127.0.0.1", 9, starting=True)]),
                failure="replica exited before becoming ready (exit code 1)",
            ),
        ),
    )
    async with activating_proxy(failed) as p, aiohttp.ClientSession() as s:
        act = p.ctx.activator
        assert act is not None
        queued = record_enqueues(act)
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert resp.status == 503
            text = await resp.text()
            assert "cannot serve" in text and "exit code 1" in text
            assert resp.headers["Retry-After"] == "1"
        # Refused before queueing: it never waited for the (30 s) timeout nor for a replica.
        assert queued == [] and act.timeouts == 0 and act.waiting(KEY) == 0
    async with activating_proxy(one_revision(), connected=False) as p, aiohttp.ClientSession() as s:
        assert p.ctx.activator is not None
        queued = record_enqueues(p.ctx.activator)
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert resp.status == 503
            assert "controller is unreachable" in await resp.text()
        assert queued == []


async def test_failure_published_while_waiting_answers_503_at_once() -> None:
    snap = one_revision(Endpoint("s1", "127.0.0.1", free_port(), starting=True))
    async with activating_proxy(snap) as p, aiohttp.ClientSession() as s:
        act = p.ctx.activator
        assert act is not None
        req = asyncio.create_task(s.get(url(p), headers={"Host": HELLO}))
        await wait_for(lambda: act.waiting(KEY) == 1, what="request queued")
        rev = replace(snap.revisions[0], endpoints=(), failure="replica crashed (exit code 2)")
        p.router.apply(replace(snap, version=2, revisions=(rev,)))
        async with await req as resp:
            assert resp.status == 503
            assert "exit code 2" in await resp.text()
        assert p.ctx.prober is not None and p.ctx.prober.probing == []


async def test_queued_client_disconnecting_leaves_no_entry() -> None:
    async with activating_proxy(one_revision()) as p:
        act = p.ctx.activator
        stats = p.ctx.stats
        assert act is not None and stats is not None
        clients = []
        for i in range(3):
            c = await RawClient.connect(p.port)
            await c.send(b"GET /%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (i, HELLO.encode()))
            clients.append(c)
        await wait_for(lambda: act.waiting(KEY) == 3, what="3 requests queued")
        for c in clients:
            await c.close()
        await wait_for(lambda: act.waiting(KEY) == 0, what="the queue to empty")
        assert act.used == 0 and act.depths() == {}
        await wait_for(lambda: stats.current(KEY) == 0, what="stats to drop the requests")
        assert p.metrics.inflight_requests == 0


async def test_queued_bodies_small_buffered_large_left_in_the_socket() -> None:
    up = await start_upstream("a")
    try:
        async with activating_proxy(one_revision()) as p:
            act = p.ctx.activator
            assert act is not None
            small = await RawClient.connect(p.port)
            await small.send(
                b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n\r\nhello" % HELLO.encode()
            )
            big = await RawClient.connect(p.port)
            size = 16 * 1024 * 1024
            await big.send(
                b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (HELLO.encode(), size)
            )
            writer = asyncio.create_task(big.send(b"x" * size))
            await wait_for(lambda: act.waiting(KEY) == 2, what="both queued")
            await asyncio.sleep(0.05)
            assert not writer.done()  # the gateway stopped reading: the body waits in the socket
            p.router.apply(replace(one_revision(up.endpoint), version=2))
            await writer
            r1 = await small.read_response()
            r2 = await big.read_response()
            assert r1.status == 200 and r1.json()["body_len"] == 5
            assert r2.status == 200 and r2.json()["body_len"] == size
            await small.close()
            await big.close()
            await p.settled()
    finally:
        await stop_upstream(up)
