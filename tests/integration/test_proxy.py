"""The proxy in-process against real loopback upstreams: routing, hygiene, bodies, limits, pool."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TagTarget, TrafficSplit
from gateway.config import GatewaySettings
from gateway.context import WorkerContext
from gateway.exchange import ALONE_RETRIES
from gateway.proxy_metrics import ProxyMetrics
from gateway.router import Router
from gateway.upstream import UpstreamConn, UpstreamPool
from gateway.worker import build_context, protocol_factory

if os.environ.get("FLINT_TEST_LOOP") == "uvloop":
    # The worker runs on uvloop; `test_whole_module_under_uvloop` reruns this file that way.
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def wait_for(check: Callable[[], bool], limit_s: float = 5.0, what: str = "") -> None:
    """Poll `check` with a deadline (no fixed sleeps)."""
    deadline = time.monotonic() + limit_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s}s waiting for {what or check}")
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------------
# Upstream app
# --------------------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A real aiohttp server on 127.0.0.1 that records what it received."""

    name: str
    runner: web.AppRunner | None = None
    port: int = 0
    requests: list[dict[str, object]] = field(default_factory=list)
    peers: set[tuple[str, int]] = field(default_factory=set)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    progress: int = 0
    """Bytes of the current /stream response written so far (backpressure tests)."""

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.name, "127.0.0.1", self.port)


def _record(up: Upstream, request: web.Request, body: bytes) -> dict[str, object]:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if peer:
        up.peers.add((peer[0], peer[1]))
    info: dict[str, object] = {
        "upstream": up.name,
        "method": request.method,
        "path": request.path_qs,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
        "body_len": len(body),
        "chunked": request.headers.get("Transfer-Encoding", "").lower() == "chunked",
        "peer_port": peer[1] if peer else 0,
    }
    up.requests.append(info)
    return info


def make_app(up: Upstream) -> web.Application:
    async def echo(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        info = _record(up, request, body)
        return web.json_response(info, headers={"X-Upstream": up.name, "Server": "up/1"})

    async def upload(request: web.Request) -> web.StreamResponse:
        total = 0
        digest = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
            digest = (digest + sum(chunk[:16])) % 1_000_003
        info = _record(up, request, b"")
        info["body_len"] = total
        return web.json_response(info)

    async def sized(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "1000"))
        _record(up, request, b"")
        return web.Response(body=bytes(i % 251 for i in range(256)) * (n // 256) + b"x" * (n % 256))

    async def stream(request: web.Request) -> web.StreamResponse:
        n = int(request.query.get("n", "1000"))
        chunk = int(request.query.get("chunk", "65536"))
        _record(up, request, b"")
        resp = web.StreamResponse(headers={"X-Streamed": "1"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = 0
        block = b"s" * chunk
        while sent < n:
            size = min(chunk, n - sent)
            await resp.write(block if size == chunk else block[:size])
            sent += size
            up.progress = sent
        await resp.write_eof()
        return resp

    async def hold_upload(request: web.Request) -> web.StreamResponse:
        await up.release.wait()
        total = 0
        async for chunk in request.content.iter_any():
            total += len(chunk)
        info = _record(up, request, b"")
        info["body_len"] = total
        return web.json_response(info)

    async def slow(request: web.Request) -> web.StreamResponse:
        _record(up, request, b"")
        delay = float(request.query.get("delay", "5"))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(up.release.wait(), delay)
        return web.Response(text="late")

    async def hang_stream(request: web.Request) -> web.StreamResponse:
        _record(up, request, b"")
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(up.release.wait(), 10)
        return resp

    async def status(request: web.Request) -> web.StreamResponse:
        _record(up, request, b"")
        code = int(request.match_info["code"])
        return web.Response(status=code)

    async def hop(request: web.Request) -> web.StreamResponse:
        _record(up, request, b"")
        return web.Response(
            text="hop",
            headers={"Connection": "keep-alive, X-Secret", "X-Secret": "s", "Keep-Alive": "5"},
        )

    async def ws(request: web.Request) -> web.StreamResponse:
        _record(up, request, b"")
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    app = web.Application(client_max_size=200 * 1024 * 1024)
    app.router.add_route("*", "/upload", upload)
    app.router.add_get("/sized", sized)
    app.router.add_get("/stream", stream)
    app.router.add_get("/slow", slow)
    app.router.add_post("/hold-upload", hold_upload)
    app.router.add_get("/hang-stream", hang_stream)
    app.router.add_route("*", "/status/{code}", status)
    app.router.add_get("/hop", hop)
    app.router.add_get("/ws", ws)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


async def start_upstream(name: str) -> Upstream:
    up = Upstream(name)
    runner = web.AppRunner(make_app(up), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    sockets = getattr(server, "sockets", None)
    assert sockets
    up.runner = runner
    up.port = int(sockets[0].getsockname()[1])
    return up


async def stop_upstream(up: Upstream) -> None:
    up.release.set()
    if up.runner is not None:
        await up.runner.cleanup()
        up.runner = None


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def revision(
    name: str,
    endpoints: Sequence[Endpoint],
    *,
    namespace: str = "default",
    timeout_s: float = 30.0,
    response_start_timeout_s: float = 0.0,
    idle_timeout_s: float = 0.0,
    container_concurrency: int = 0,
) -> RevisionTarget:
    return RevisionTarget(
        namespace=namespace,
        name=name,
        service=name.rsplit("-", 1)[0],
        timeout_s=timeout_s,
        response_start_timeout_s=response_start_timeout_s,
        idle_timeout_s=idle_timeout_s,
        container_concurrency=container_concurrency,
        endpoints=tuple(endpoints),
    )


def route(
    name: str,
    traffic: Sequence[tuple[str, int]],
    tags: Sequence[tuple[str, str]] = (),
    namespace: str = "default",
) -> RouteEntry:
    return RouteEntry(
        namespace=namespace,
        name=name,
        hosts=(f"{name}.{namespace}.localhost",),
        traffic=tuple(TrafficSplit(r, p) for r, p in traffic),
        tags=tuple(TagTarget(tag, rev, (f"{tag}-{name}.{namespace}.localhost",)) for tag, rev in tags),
    )


def snapshot(version: int, routes: Sequence[RouteEntry], revisions: Sequence[RevisionTarget]) -> Snapshot:
    return Snapshot(version=version, routes=tuple(routes), revisions=tuple(revisions))


# --------------------------------------------------------------------------------------------
# The proxy under test
# --------------------------------------------------------------------------------------------


@dataclass
class Proxy:
    router: Router
    ctx: WorkerContext
    server: asyncio.Server
    port: int

    @property
    def metrics(self) -> ProxyMetrics:
        return self.ctx.metrics

    def all_endpoint_ids(self) -> list[str]:
        return [ep.id for rev in self.router.snapshot.revisions for ep in rev.endpoints]

    async def settled(self, limit_s: float = 5.0) -> None:
        """Every acquired slot released (the invariant every scenario must restore)."""
        await wait_for(
            lambda: self.router.total_inflight() == 0,
            limit_s,
            "in-flight counts to return to 0",
        )


@contextlib.asynccontextmanager
async def running_proxy(
    snap: Snapshot, settings: GatewaySettings | None = None, on_drained: Callable[[], None] | None = None
) -> AsyncIterator[Proxy]:
    loop = asyncio.get_running_loop()
    ctx = build_context(settings or GatewaySettings(), loop, snapshot=snap, on_drained=on_drained)
    server = await loop.create_server(protocol_factory(ctx), "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield Proxy(ctx.router, ctx, server, port)
    finally:
        server.close()
        ctx.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)


# --------------------------------------------------------------------------------------------
# Raw HTTP over a socket
# --------------------------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> dict[str, object]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


class RawClient:
    """A minimal HTTP/1.1 client over one connection, for protocol edge cases."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @staticmethod
    async def connect(port: int, limit: int = 2**22) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=limit)
        return RawClient(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_response(self, head_request: bool = False, limit_s: float = 10.0) -> RawResponse:
        return await asyncio.wait_for(self._read_response(head_request), limit_s)

    async def _read_response(self, head_request: bool) -> RawResponse:
        while True:
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _, code, *rest = lines[0].split(" ", 2)
            headers = []
            for line in lines[1:]:
                if line:
                    k, _, v = line.partition(":")
                    headers.append((k.strip(), v.strip()))
            status = int(code)
            if status >= 200 or status == 101:
                break
        resp = RawResponse(status, rest[0] if rest else "", headers, b"")
        if head_request or status in (101, 204, 304):
            return resp
        te = resp.header("transfer-encoding")
        length = resp.header("content-length")
        if te and te.lower() == "chunked":
            parts = []
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size))
                await self.reader.readexactly(2)
            resp.body = b"".join(parts)
        elif length is not None:
            resp.body = await self.reader.readexactly(int(length))
        else:
            resp.body = await self.reader.read()
        return resp

    async def closed_by_peer(self, limit_s: float = 5.0) -> bool:
        """True when the server closes (EOF or reset) within `limit_s`."""
        try:
            data = await asyncio.wait_for(self.reader.read(65536), limit_s)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


# --------------------------------------------------------------------------------------------
# A raw upstream for connection-level scenarios aiohttp cannot produce on demand
# --------------------------------------------------------------------------------------------


@dataclass
class RawUpstream:
    """Answers each connection's first request; later ones per `mode`."""

    mode: str
    server: asyncio.Server | None = None
    port: int = 0
    connections: int = 0
    requests: int = 0
    bodies: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests += 1
                if self.mode == "close-second" and served >= 1:
                    writer.close()  # a keep-alive connection the replica dropped
                    return
                self.bodies.append(body)
                served += 1
                if self.mode == "truncate":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..")
                    await writer.drain()
                    writer.close()
                    return
                if self.mode == "garbage":
                    writer.write(b"THIS IS NOT HTTP\r\n\r\n")
                    await writer.drain()
                    continue
                if self.mode == "until-close":
                    writer.write(b"HTTP/1.1 200 OK\r\nX-Mode: eof\r\n\r\nall of it until close")
                    await writer.drain()
                    writer.close()
                    return
                payload = b"served %d on connection %d" % (served, self.connections)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("raw-" + self.mode, "127.0.0.1", self.port)


@contextlib.asynccontextmanager
async def raw_upstream(mode: str) -> AsyncIterator[RawUpstream]:
    up = RawUpstream(mode)
    up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
    up.port = int(up.server.sockets[0].getsockname()[1])
    try:
        yield up
    finally:
        up.server.close()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(up.server.wait_closed(), 2.0)


def dead_endpoint(name: str) -> Endpoint:
    """An endpoint on a loopback port nobody listens on (connect is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return Endpoint(name, "127.0.0.1", port)


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

HELLO = "hello.default.localhost"


@pytest.fixture
async def upstreams() -> AsyncIterator[tuple[Upstream, Upstream]]:
    a = await start_upstream("a")
    b = await start_upstream("b")
    try:
        yield a, b
    finally:
        await stop_upstream(a)
        await stop_upstream(b)


def hello_snapshot(a: Upstream, b: Upstream, **rev_kw: float) -> Snapshot:
    return snapshot(
        1,
        [
            route("hello", [("hello-1", 100), ("hello-2", 0)], tags=[("blue", "hello-2")]),
            route("ghost", [("ghost-1", 100)]),
            route("empty", [("empty-1", 100)]),
        ],
        [
            revision("hello-1", [a.endpoint], **rev_kw),  # type: ignore[arg-type]
            revision("hello-2", [b.endpoint], **rev_kw),  # type: ignore[arg-type]
            revision("empty-1", []),
        ],
    )


@pytest.fixture
async def proxy(upstreams: tuple[Upstream, Upstream]) -> AsyncIterator[Proxy]:
    a, b = upstreams
    async with running_proxy(hello_snapshot(a, b)) as p:
        yield p
        await p.settled()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def url(p: Proxy, path: str = "/") -> str:
    return f"http://127.0.0.1:{p.port}{path}"


def header_pairs(info: dict[str, object]) -> list[tuple[str, str]]:
    raw = info["headers"]
    assert isinstance(raw, list)
    return [(str(k), str(v)) for k, v in raw]


def get_header(info: dict[str, object], name: str) -> list[str]:
    return [v for k, v in header_pairs(info) if k.lower() == name.lower()]


# --------------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------------


async def test_routes_by_host_tag_host_and_tag_header(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    cases = [
        ({"Host": HELLO}, "a"),
        ({"Host": "HELLO.default.localhost:8080"}, "a"),
        ({"Host": "blue-hello.default.localhost"}, "b"),
        ({"Host": HELLO, "Knative-Serving-Tag": "blue"}, "b"),
        ({"Host": HELLO, "Knative-Serving-Tag": "green"}, "a"),
    ]
    for headers, want in cases:
        async with session.get(url(proxy, "/x?q=1"), headers=headers) as resp:
            assert resp.status == 200, headers
            info = await resp.json()
            assert info["upstream"] == want, headers
            assert info["path"] == "/x?q=1"
            assert get_header(info, "knative-serving-tag") == []
            assert get_header(info, "host") == [headers["Host"]]


async def test_unknown_host_is_404_naming_the_host(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    async with session.get(url(proxy), headers={"Host": "nope.default.localhost"}) as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "nope.default.localhost" in await resp.text()


async def test_cluster_local_routes_are_unknown_hosts_on_a_public_listener() -> None:
    """The `--listen` sockets' factory (public=True, the same state): a cluster-local route and
    its tags answer exactly as a host nothing routes; the loopback listener serves them."""
    up = await start_upstream("a")
    local = replace(route("internal", [("internal-1", 100)], tags=[("canary", "internal-1")]),
                    cluster_local=True)
    snap = snapshot(1, [local, route("hello", [("hello-1", 100)])],
                    [revision("internal-1", [up.endpoint]), revision("hello-1", [up.endpoint])])
    try:
        async with running_proxy(snap) as loopback:
            public = protocol_factory(loopback.ctx, public=True)
            server = await asyncio.get_running_loop().create_server(public, "127.0.0.1", 0)
            public_port = int(server.sockets[0].getsockname()[1])
            try:
                hidden = [b"internal.default.localhost", b"canary-internal.default.localhost",
                          b"INTERNAL.default.localhost:8080"]
                for port, visible in ((loopback.port, True), (public_port, False)):
                    c = await RawClient.connect(port)
                    for host in hidden:
                        # Twice: the second answer comes from the router's cache.
                        for _ in range(2):
                            await c.send(b"GET /x HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
                            resp = await c.read_response()
                            assert resp.status == (200 if visible else 404), (port, host)
                        # An absolute-form target names the host too.
                        await c.send(b"GET http://%s/x HTTP/1.1\r\nHost: x\r\n\r\n" % host)
                        assert (await c.read_response()).status == (200 if visible else 404)
                    await c.send(b"GET /x HTTP/1.1\r\nHost: internal.default.localhost\r\n"
                                 b"Knative-Serving-Tag: canary\r\n\r\n")
                    assert (await c.read_response()).status == (200 if visible else 404)
                    # The connection stays usable, and an ordinary route is served on both.
                    await c.send(b"GET /y HTTP/1.1\r\nHost: hello.default.localhost\r\n\r\n")
                    assert (await c.read_response()).json()["path"] == "/y"
                    await c.close()
                # Byte for byte the 404 of an unknown host (the body names the host asked for).
                c = await RawClient.connect(public_port)
                answers = []
                for host in (b"internal.default.localhost", b"internax.default.localhost"):
                    await c.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host)
                    answers.append(await c.read_response())
                await c.close()
                hidden_404, unknown_404 = answers
                assert hidden_404.status == unknown_404.status == 404
                assert hidden_404.headers == unknown_404.headers
                assert hidden_404.body == unknown_404.body.replace(b"internax", b"internal")
                await loopback.settled()
            finally:
                server.close()
    finally:
        await stop_upstream(up)


async def test_no_ready_replica_is_503_with_retry_after(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    async with session.get(url(proxy), headers={"Host": "empty.default.localhost"}) as resp:
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert "default/empty-1" in await resp.text()
    async with session.get(url(proxy), headers={"Host": "ghost.default.localhost"}) as resp:
        assert resp.status == 503
        assert "ghost-1" in await resp.text()


async def test_no_free_slot_waits_for_the_slot(upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    snap = snapshot(
        1,
        [route("hello", [("hello-1", 100)])],
        [revision("hello-1", [a.endpoint], container_concurrency=1)],
    )
    async with running_proxy(snap) as p, aiohttp.ClientSession() as s:
        act = p.ctx.activator
        assert act is not None
        slow = asyncio.create_task(s.get(url(p, "/slow?delay=5"), headers={"Host": HELLO}))
        await wait_for(lambda: p.router.inflight("a") == 1, what="the slow request in flight")
        second = asyncio.create_task(s.get(url(p, "/second"), headers={"Host": HELLO}))
        await wait_for(lambda: act.waiting("default/hello-1") == 1, what="the second request queued")
        assert [r["path"] for r in a.requests] == ["/slow?delay=5"]
        a.release.set()
        async with await slow as resp:
            assert resp.status == 200
        async with await second as resp:
            assert resp.status == 200
            assert (await resp.json())["path"] == "/second"
        assert act.waiting("default/hello-1") == 0
        await p.settled()


# --------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------


async def test_forwarded_headers_appended_and_traceparent_kept(proxy: Proxy) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    c = await RawClient.connect(proxy.port)
    await c.send(
        b"GET /f HTTP/1.1\r\nHost: hello.default.localhost:9000\r\n"
        b"Forwarded: for=192.0.2.60;proto=https\r\nX-Forwarded-For: 192.0.2.60\r\n"
        b"X-Forwarded-Proto: https\r\ntraceparent: " + tp.encode() + b"\r\n\r\n"
    )
    resp = await c.read_response()
    await c.close()
    info = resp.json()
    assert get_header(info, "forwarded") == [
        'for=192.0.2.60;proto=https, for=127.0.0.1;proto=http;host="hello.default.localhost:9000"'
    ]
    assert get_header(info, "x-forwarded-for") == ["192.0.2.60, 127.0.0.1"]
    assert get_header(info, "x-forwarded-proto") == ["http"]
    assert get_header(info, "x-forwarded-host") == ["hello.default.localhost:9000"]
    assert get_header(info, "traceparent") == [tp]


async def test_traceparent_generated_when_absent(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    seen = set()
    for _ in range(2):
        async with session.get(url(proxy), headers={"Host": HELLO}) as resp:
            info = await resp.json()
        (tp,) = get_header(info, "traceparent")
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", tp), tp
        assert "0" * 32 not in tp
        seen.add(tp)
        assert get_header(info, "forwarded") == ["for=127.0.0.1;proto=http;host=" + HELLO]
        assert get_header(info, "x-forwarded-for") == ["127.0.0.1"]
    assert len(seen) == 2


async def test_hop_by_hop_stripped_user_headers_untouched(proxy: Proxy) -> None:
    c = await RawClient.connect(proxy.port)
    await c.send(
        b"GET /h HTTP/1.1\r\n"
        b"X-Zeta: 1\r\nHost: hello.default.localhost\r\nConnection: keep-alive, X-Private\r\n"
        b"x-MiXeD-case: Keep Me  as-is\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Proxy-Connection: keep-alive\r\nX-Private: secret\r\nX-Flint-Internal: 1\r\n"
        b"Trailer: X-T\r\nAccept: */*\r\nX-Alpha: 2\r\nX-Alpha: 3\r\n\r\n"
    )
    resp = await c.read_response()
    info = resp.json()
    names = [k for k, _ in header_pairs(info)]
    for gone in ("Connection", "Keep-Alive", "TE", "Proxy-Connection", "X-Private", "Trailer"):
        assert gone not in names, gone
    assert not [n for n in names if n.lower().startswith("x-flint-")]
    user = [
        (k, v) for k, v in header_pairs(info) if k in ("X-Zeta", "Host", "x-MiXeD-case", "Accept", "X-Alpha")
    ]
    assert user == [
        ("X-Zeta", "1"),
        ("Host", "hello.default.localhost"),
        ("x-MiXeD-case", "Keep Me  as-is"),
        ("Accept", "*/*"),
        ("X-Alpha", "2"),
        ("X-Alpha", "3"),
    ]
    # Response side: hop-by-hop from the replica stripped; Server passed through.
    await c.send(b"GET /hop HTTP/1.1\r\nHost: hello.default.localhost\r\n\r\n")
    resp = await c.read_response()
    assert resp.status == 200 and resp.body == b"hop"
    assert resp.header("x-secret") is None
    assert resp.header("keep-alive") is None
    assert resp.header("date") is not None
    await c.close()


# --------------------------------------------------------------------------------------------
# Bodies
# --------------------------------------------------------------------------------------------

FIVE_MB = 5 * 1024 * 1024


async def test_sized_and_chunked_request_bodies(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    payload = bytes(range(256)) * (FIVE_MB // 256)
    async with session.post(url(proxy, "/upload"), data=io.BytesIO(payload), headers={"Host": HELLO}) as r:
        info = await r.json()
        assert info["body_len"] == FIVE_MB and info["chunked"] is False

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(80):
            yield b"z" * 65536

    async with session.post(url(proxy, "/upload"), data=gen(), headers={"Host": HELLO}) as r:
        info = await r.json()
        assert info["body_len"] == 80 * 65536 and info["chunked"] is True


async def test_sized_streamed_head_and_no_body_responses(proxy: Proxy) -> None:
    c = await RawClient.connect(proxy.port)
    await c.send(b"GET /sized?n=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (FIVE_MB, HELLO.encode()))
    resp = await c.read_response()
    assert resp.header("content-length") == str(FIVE_MB) and len(resp.body) == FIVE_MB
    assert resp.body[:256] == bytes(i % 251 for i in range(256))
    await c.send(b"GET /stream?n=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (FIVE_MB + 7, HELLO.encode()))
    resp = await c.read_response()
    assert resp.header("transfer-encoding") == "chunked"
    assert resp.body == b"s" * (FIVE_MB + 7)
    await c.send(b"HEAD /sized?n=1234 HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
    resp = await c.read_response(head_request=True)
    assert resp.status == 200 and resp.header("content-length") == "1234"
    await c.send(b"GET /status/204 HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
    resp = await c.read_response()
    assert resp.status == 204 and resp.body == b""
    await c.send(b"GET /status/304 HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
    resp = await c.read_response()
    assert resp.status == 304
    # Still the same keep-alive connection after all of the above.
    await c.send(b"GET /last HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
    resp = await c.read_response()
    assert resp.json()["path"] == "/last"
    await c.close()


async def test_chunked_upload_with_streamed_echo_via_aiohttp(
    proxy: Proxy, session: aiohttp.ClientSession
) -> None:
    async with session.get(url(proxy, f"/stream?n={FIVE_MB}&chunk=1000"), headers={"Host": HELLO}) as r:
        total = 0
        async for chunk in r.content.iter_any():
            total += len(chunk)
        assert total == FIVE_MB


async def test_expect_100_continue(proxy: Proxy) -> None:
    c = await RawClient.connect(proxy.port)
    await c.send(
        b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n" % HELLO.encode()
    )
    line = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
    assert line.startswith(b"HTTP/1.1 100")
    await c.send(b"hello")
    resp = await c.read_response()
    assert resp.status == 200 and resp.json()["body_len"] == 5
    await c.close()


async def test_pipelined_requests_answered_in_order(proxy: Proxy) -> None:
    c = await RawClient.connect(proxy.port)
    h = HELLO.encode()
    await c.send(
        b"GET /one HTTP/1.1\r\nHost: %s\r\n\r\n"
        b"POST /two HTTP/1.1\r\nHost: %s\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /three HTTP/1.1\r\nHost: nope.localhost\r\n\r\n"
        b"GET /four HTTP/1.1\r\nHost: %s\r\n\r\n" % (h, h, h)
    )
    assert (await c.read_response()).json()["path"] == "/one"
    two = (await c.read_response()).json()
    assert two["path"] == "/two" and two["body_len"] == 3
    assert (await c.read_response()).status == 404
    assert (await c.read_response()).json()["path"] == "/four"
    await c.close()


async def test_close_delimited_response_is_relayed_then_closed() -> None:
    async with raw_upstream("until-close") as up:
        snap = snapshot(1, [route("hello", [("hello-1", 100)])], [revision("hello-1", [up.endpoint])])
        async with running_proxy(snap) as p:
            c = await RawClient.connect(p.port)
            await c.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
            resp = await c.read_response()
            assert resp.body == b"all of it until close"
            assert resp.header("connection") == "close"
            await c.close()
            await p.settled()


# --------------------------------------------------------------------------------------------
# Websocket
# --------------------------------------------------------------------------------------------


async def test_websocket_echo_round_trip(proxy: Proxy, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(url(proxy, "/ws"), headers={"Host": HELLO}) as ws:
        await ws.send_str("ping")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "echo:ping"
        blob = b"\x00\x01" * 100_000
        await ws.send_bytes(blob)
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == blob
        assert proxy.router.inflight("a") == 1
        assert proxy.metrics.active_upgrades == 1
    await proxy.settled()


# --------------------------------------------------------------------------------------------
# Timeouts
# --------------------------------------------------------------------------------------------


async def test_slow_first_byte_is_504(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    async with running_proxy(hello_snapshot(a, b, response_start_timeout_s=0.3)) as p:
        c = await RawClient.connect(p.port)
        await c.send(b"GET /slow?delay=5 HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
        resp = await c.read_response()
        assert resp.status == 504
        assert b"did not start a response within 0.3 s" in resp.body
        # The client connection survives a 504 for a complete request.
        await c.send(b"GET /after HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
        assert (await c.read_response()).json()["path"] == "/after"
        await c.close()
        await p.settled()
        assert p.metrics.upstream_timeouts == 1


async def test_idle_timeout_closes_a_stalled_stream(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    async with running_proxy(hello_snapshot(a, b, idle_timeout_s=0.3)) as p:
        c = await RawClient.connect(p.port)
        await c.send(b"GET /hang-stream HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
        head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        rest = await asyncio.wait_for(c.reader.read(), 5)  # EOF after the idle timeout
        assert b"first" in rest and not rest.endswith(b"0\r\n\r\n")
        await c.close()
        await p.settled()


async def test_slow_header_is_408() -> None:
    settings = GatewaySettings(header_read_timeout_s=0.3)
    async with running_proxy(Snapshot.empty(), settings) as p:
        c = await RawClient.connect(p.port)
        await c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        resp = await c.read_response()
        assert resp.status == 408 and resp.header("connection") == "close"
        assert await c.closed_by_peer()
        await c.close()


async def test_idle_keepalive_connection_is_closed() -> None:
    settings = GatewaySettings(client_keepalive_timeout_s=0.2, header_read_timeout_s=0.2)
    async with running_proxy(Snapshot.empty(), settings) as p:
        c = await RawClient.connect(p.port)
        await c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await c.read_response()).status == 404
        assert await c.closed_by_peer()
        await c.close()


# --------------------------------------------------------------------------------------------
# Limits and smuggling
# --------------------------------------------------------------------------------------------


async def test_body_limits_are_413() -> None:
    settings = GatewaySettings(max_request_body_bytes=1000)
    up = await start_upstream("a")
    try:
        snap = snapshot(1, [route("hello", [("hello-1", 100)])], [revision("hello-1", [up.endpoint])])
        async with running_proxy(snap, settings) as p:
            c = await RawClient.connect(p.port)
            await c.send(
                b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 1001\r\n\r\n" % HELLO.encode()
            )
            resp = await c.read_response()
            assert resp.status == 413 and resp.header("connection") == "close"
            await c.close()
            c = await RawClient.connect(p.port)
            await c.send(
                b"POST /upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3e8\r\n%s\r\n" % (HELLO.encode(), b"y" * 1000)
            )
            await c.send(b"2\r\nyy\r\n")
            resp = await c.read_response()
            assert resp.status == 413
            await c.close()
            # At the limit is fine.
            c = await RawClient.connect(p.port)
            await c.send(
                b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: 1000\r\n\r\n%s"
                % (HELLO.encode(), b"k" * 1000)
            )
            assert (await c.read_response()).json()["body_len"] == 1000
            await c.close()
            await p.settled()
    finally:
        await stop_upstream(up)


async def test_header_block_too_large_is_431() -> None:
    settings = GatewaySettings(max_header_bytes=2048)
    async with running_proxy(Snapshot.empty(), settings) as p:
        c = await RawClient.connect(p.port)
        await c.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 4000 + b"\r\n\r\n")
        resp = await c.read_response()
        assert resp.status == 431
        await c.close()
        c = await RawClient.connect(p.port)
        many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(100))
        await c.send(b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
        assert (await c.read_response()).status == 431
        await c.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["cl-te", "te-cl", "dup-cl", "neg-cl", "two-hosts", "garbage"],
)
async def test_smuggling_and_garbage_are_400(raw: bytes) -> None:
    async with running_proxy(Snapshot.empty()) as p:
        c = await RawClient.connect(p.port)
        await c.send(raw)
        resp = await c.read_response()
        assert resp.status == 400 and resp.header("connection") == "close"
        assert await c.closed_by_peer()
        await c.close()


# --------------------------------------------------------------------------------------------
# Upstream pool, retries and failover
# --------------------------------------------------------------------------------------------


async def test_keepalive_reuses_upstream_connection(
    proxy: Proxy, session: aiohttp.ClientSession, upstreams: tuple[Upstream, Upstream]
) -> None:
    a, _ = upstreams
    for _ in range(5):
        async with session.get(url(proxy), headers={"Host": HELLO}) as resp:
            assert resp.status == 200
    assert len({r["peer_port"] for r in a.requests}) == 1
    assert proxy.ctx.pool.idle_count("a") == 1


async def test_accept_stall_timeout_is_set_until_the_first_response_byte(
    upstreams: tuple[Upstream, Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh upstream socket carries TCP_USER_TIMEOUT (a replica whose accept queue overflowed
    never acknowledges the request); the first response byte clears it, so that a slow upload
    to a busy app is not cut by it later."""
    a, _ = upstreams
    opened: list[UpstreamConn] = []
    real_opened = UpstreamPool.opened

    def record(pool: UpstreamPool, conn: UpstreamConn) -> None:
        opened.append(conn)
        real_opened(pool, conn)

    monkeypatch.setattr(UpstreamPool, "opened", record)

    def user_timeout_ms(conn: UpstreamConn) -> int:
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT))

    snap = snapshot(1, [route("hello", [("hello-1", 100)])], [revision("hello-1", [a.endpoint])])
    settings = GatewaySettings(upstream_user_timeout_s=1.5)
    async with running_proxy(snap, settings) as p, aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(url(p, "/slow?delay=10"), headers={"Host": HELLO}))
        await wait_for(lambda: len(a.requests) == 1, what="the request at the replica")
        (conn,) = opened
        assert conn.fresh and user_timeout_ms(conn) == 1500
        a.release.set()
        async with await slow as resp:
            assert resp.status == 200
        assert not conn.fresh and user_timeout_ms(conn) == 0
        await p.settled()
        assert p.router.learned == {}  # a slow answer is no overload signal


async def test_retry_on_reused_connection_closed_by_the_replica() -> None:
    async with raw_upstream("close-second") as up:
        snap = snapshot(1, [route("hello", [("hello-1", 100)])], [revision("hello-1", [up.endpoint])])
        async with running_proxy(snap) as p:
            c = await RawClient.connect(p.port)
            for _ in range(3):
                await c.send(
                    b"POST /r HTTP/1.1\r\nHost: %s\r\nContent-Length: 4\r\n\r\nbody" % HELLO.encode()
                )
                resp = await c.read_response()
                assert resp.status == 200, resp
                assert resp.body.startswith(b"served 1 on connection")
            assert up.bodies == [b"body"] * 3
            assert p.metrics.upstream_retries == 2
            await c.close()
            await p.settled()


async def test_connect_failure_fails_over_then_502(upstreams: tuple[Upstream, Upstream]) -> None:
    """A refused fresh connection with nothing else in flight on that replica: another replica
    with room at once; with none, the request waits and is sent again a few times (the replica
    may only have been busy), then 502."""
    a, _ = upstreams
    dead1, dead2 = dead_endpoint("dead1"), dead_endpoint("dead2")
    snap = snapshot(
        1,
        [route("hello", [("hello-1", 100)]), route("gone", [("gone-1", 100)])],
        [
            revision("hello-1", [dead1, a.endpoint], container_concurrency=1),
            revision("gone-1", [dead1, dead2]),
        ],
    )
    async with running_proxy(snap) as p, aiohttp.ClientSession() as s:
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert resp.status == 200
            assert (await resp.json())["upstream"] == "a"
        async with s.get(url(p), headers={"Host": "gone.default.localhost"}) as resp:
            assert resp.status == 502
            assert "could not connect" in await resp.text()
        await p.settled()
        # hello: dead1, then a; gone: dead1 or dead2, the other, then ALONE_RETRIES more.
        assert p.metrics.upstream_connect_errors == 1 + 2 + ALONE_RETRIES
        assert p.metrics.upstream_requeues == ALONE_RETRIES
        assert p.router.learned == {"dead1": 1, "dead2": 1}  # refused with nothing in flight


async def test_client_disconnect_releases_slot(proxy: Proxy, upstreams: tuple[Upstream, Upstream]) -> None:
    c = await RawClient.connect(proxy.port)
    await c.send(b"GET /slow?delay=10 HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
    await wait_for(lambda: proxy.router.inflight("a") == 1, what="request in flight")
    await c.close()
    await proxy.settled()


async def test_draining_endpoint_reports_when_done(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    drained: list[int] = []
    async with running_proxy(hello_snapshot(a, b), on_drained=lambda: drained.append(1)) as p, \
            aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(url(p, "/slow?delay=5"), headers={"Host": HELLO}))
        await wait_for(lambda: p.router.inflight("a") == 1, what="request in flight")
        p.router.apply(
            snapshot(
                2,
                [route("hello", [("hello-2", 100)])],
                [revision("hello-2", [b.endpoint])],
            )
        )
        assert p.router.draining() == {"a": 1}
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert (await resp.json())["upstream"] == "b"
        a.release.set()
        async with await slow as resp:
            assert resp.status == 200
        await wait_for(lambda: drained == [1], what="the drained hook")
        assert p.router.draining() == {}
        await p.settled()


# --------------------------------------------------------------------------------------------
# The same scenarios on uvloop (what the worker runs)
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("FLINT_TEST_LOOP") == "uvloop", reason="already on uvloop")
def test_whole_module_under_uvloop() -> None:
    env = dict(os.environ, FLINT_TEST_LOOP="uvloop")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        timeout=110,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout.decode()[-4000:] + proc.stderr.decode()[-2000:]


# --------------------------------------------------------------------------------------------
# Backpressure
# --------------------------------------------------------------------------------------------

BIG = 96 * 1024 * 1024


async def wait_stable(value: Callable[[], int], what: str) -> int:
    """Poll until `value()` stops changing for 30 consecutive polls (a stalled stream)."""
    deadline = time.monotonic() + 20
    last, same = value(), 0
    while same < 30:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never stalled")
        await asyncio.sleep(0.01)
        now = value()
        same = same + 1 if now == last else 0
        last = now
    return last


async def test_slow_client_pauses_the_upstream(proxy: Proxy, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    c = await RawClient.connect(proxy.port, limit=65536)
    await c.send(b"GET /stream?n=%d HTTP/1.1\r\nHost: %s\r\n\r\n" % (BIG, HELLO.encode()))
    await wait_for(lambda: a.progress > 1024 * 1024, what="the response to start streaming")
    stalled_at = await wait_stable(lambda: a.progress, "the upstream writer")
    # Only socket buffers hold the difference: the proxy did not slurp the response.
    assert stalled_at < BIG // 2, stalled_at
    resp = await c.read_response(limit_s=60)
    assert len(resp.body) == BIG
    await c.close()


async def test_slow_upstream_pauses_the_client(proxy: Proxy, upstreams: tuple[Upstream, Upstream]) -> None:
    a, _ = upstreams
    c = await RawClient.connect(proxy.port)
    await c.send(
        b"POST /hold-upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (HELLO.encode(), BIG)
    )
    sent = 0
    block = b"u" * 65536

    async def upload() -> None:
        nonlocal sent
        while sent < BIG:
            c.writer.write(block)
            await c.writer.drain()
            sent += len(block)

    task = asyncio.create_task(upload())
    stalled_at = await wait_stable(lambda: sent, "the client upload")
    assert stalled_at < BIG // 2, stalled_at
    a.release.set()
    await asyncio.wait_for(task, 60)
    resp = await c.read_response(limit_s=60)
    assert resp.json()["body_len"] == BIG
    await c.close()


@pytest.mark.parametrize("mode", ["truncate", "garbage"])
async def test_broken_replica_responses(mode: str) -> None:
    async with raw_upstream(mode) as up:
        snap = snapshot(1, [route("hello", [("hello-1", 100)])], [revision("hello-1", [up.endpoint])])
        async with running_proxy(snap) as p:
            c = await RawClient.connect(p.port)
            await c.send(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HELLO.encode())
            if mode == "garbage":
                resp = await c.read_response()
                assert resp.status == 502
            else:
                head = await asyncio.wait_for(c.reader.readuntil(b"\r\n\r\n"), 5)
                assert b"Content-Length: 100" in head
                # The response started, so the only honest signal left is closing.
                rest = await asyncio.wait_for(c.reader.read(), 5)
                assert rest == b"only ten.."
            await c.close()
            await p.settled()
            assert p.metrics.upstream_errors >= 1


async def test_pool_limits_and_idle_expiry(upstreams: tuple[Upstream, Upstream]) -> None:
    a, b = upstreams
    settings = GatewaySettings(upstream_keepalive_per_endpoint=2, upstream_keepalive_idle_s=0.3)
    async with running_proxy(hello_snapshot(a, b), settings) as p, aiohttp.ClientSession() as s:

        async def one() -> int:
            async with s.get(url(p, "/slow?delay=0.2"), headers={"Host": HELLO}) as resp:
                return resp.status

        assert await asyncio.gather(*(one() for _ in range(5))) == [200] * 5
        assert p.ctx.pool.idle_count("a") == 2
        await wait_for(lambda: p.ctx.pool.idle_count() == 0, what="idle upstreams to expire")
        async with s.get(url(p), headers={"Host": HELLO}) as resp:
            assert resp.status == 200
            assert resp.headers["Server"] == "up/1"
        await p.settled()


async def test_http10_client_and_absolute_form(proxy: Proxy) -> None:
    c = await RawClient.connect(proxy.port)
    await c.send(b"GET /stream?n=3000 HTTP/1.0\r\nHost: %s\r\n\r\n" % HELLO.encode())
    resp = await c.read_response()
    assert resp.header("transfer-encoding") is None  # HTTP/1.0 cannot take chunked
    assert resp.body == b"s" * 3000 and resp.header("connection") == "close"
    await c.close()
    c = await RawClient.connect(proxy.port)
    await c.send(b"GET http://%s/abs?x=1 HTTP/1.1\r\nHost: ignored\r\n\r\n" % HELLO.encode())
    resp = await c.read_response()
    assert resp.json()["path"] == "/abs?x=1"
    await c.close()
