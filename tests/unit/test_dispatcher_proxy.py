"""The API's `/internal/dispatcher/…`: forwarded to the dispatcher's admin port with the token."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from controller.dispatcher_proxy import DispatcherProxy
from flint_common.httpauth import auth_middleware
from flint_common.secret import Secret

TOKEN = Secret("owner-token-for-the-proxy-test")


@pytest.fixture
async def dispatcher() -> AsyncIterator[tuple[str, list[web.Request]]]:
    seen: list[web.Request] = []

    async def letters(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response([{"id": 1, "ns": request.match_info["ns"]}])

    async def redeliver(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"requeued": len(request.query.get("ids", "").split(","))})

    async def busy(request: web.Request) -> web.Response:
        seen.append(request)
        return web.json_response({"busy": True}, status=503, headers={"Retry-After": "7"})

    app = web.Application(middlewares=[auth_middleware(TOKEN)])
    app.router.add_get("/dead-letters/{ns}/{name}", letters)
    app.router.add_post("/redeliver/{ns}/{name}", redeliver)
    app.router.add_get("/busy", busy)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), seen
    finally:
        await server.close()


async def _through(base: str, method: str, path: str) -> tuple[int, bytes]:
    status, body, _ = await _answer(base, method, path)
    return status, body


async def _answer(base: str, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    proxy = DispatcherProxy(base, TOKEN)
    app = web.Application()
    proxy.add_routes(app)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = URL(str(server.make_url("")).rstrip("/") + path, encoded=True)
        async with aiohttp.ClientSession() as s, s.request(method, url) as r:
            return r.status, await r.read(), dict(r.headers)
    finally:
        await server.close()
        await proxy.close()


async def test_requests_are_forwarded_with_the_token(dispatcher: tuple[str, list[web.Request]]) -> None:
    base, seen = dispatcher
    status, body = await _through(base, "GET", "/internal/dispatcher/dead-letters/team/t1")
    assert status == 200 and orjson.loads(body) == [{"id": 1, "ns": "team"}]
    status, body = await _through(base, "POST", "/internal/dispatcher/redeliver/team/t1?ids=1,2")
    assert status == 200 and orjson.loads(body) == {"requeued": 2}
    assert len(seen) == 2  # the dispatcher's own guard let both in: the token was passed on


async def test_the_dispatchers_answers_come_back_as_they_were(
    dispatcher: tuple[str, list[web.Request]],
) -> None:
    base, _ = dispatcher
    status, _ = await _through(base, "GET", "/internal/dispatcher/nothing-here")
    assert status == 404


async def test_a_dispatcher_that_is_down_is_a_503_with_retry_after() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    status, body = await _through(f"http://127.0.0.1:{port}", "GET", "/internal/dispatcher/x")
    doc = orjson.loads(body)
    assert status == 503 and doc["reason"] == "ServiceUnavailable"
    assert "did not answer" in doc["message"]


async def test_the_clients_encoding_and_the_dispatchers_retry_after_are_kept(
    dispatcher: tuple[str, list[web.Request]],
) -> None:
    base, seen = dispatcher
    status, body = await _through(base, "GET", "/internal/dispatcher/dead-letters/team/a%3Fb")
    assert status == 200 and orjson.loads(body) == [{"id": 1, "ns": "team"}]
    assert seen[-1].match_info["name"] == "a?b" and not seen[-1].query  # not a query string
    status, _, headers = await _answer(base, "GET", "/internal/dispatcher/busy")
    assert status == 503 and headers["Retry-After"] == "7"
