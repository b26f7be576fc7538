"""The guard in front of the API and the admin ports: which paths are open, 401/403/415, and that
a refusal reveals nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from unittest import mock

import orjson
import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer, make_mocked_request

from controller.apiserver import make_api_app
from controller.store.memory import MemoryStore
from flint_common.httpauth import auth_middleware, bearer_token, describe_error, is_loopback_address
from flint_common.secret import Secret

TOKEN = Secret("the-owners-token-0123456789")
GOOD = {"Authorization": f"Bearer {TOKEN.reveal()}"}
SERVICES = "/apis/serving.knative.dev/v1/namespaces/default/services"
SVC = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "secret-name"},
    "spec": {"template": {"spec": {"containers": [{"image": "/srv/app"}]}}},
}


@pytest.fixture
async def api() -> AsyncIterator[str]:
    store = MemoryStore()
    app = make_api_app(store, guard=auth_middleware(TOKEN))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text="flint_metric 1\n")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/readyz", healthz)
    app.router.add_get("/internal/logs/{ns}/{name}", healthz)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def _call(method: str, url: str, **kw: object) -> tuple[int, dict[str, str], bytes]:
    async with ClientSession() as s, s.request(method, url, **kw) as r:  # type: ignore[arg-type]
        return r.status, dict(r.headers), await r.read()


async def test_probes_are_open_and_metrics_open_on_loopback(api: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, _ = await _call("GET", api + path)
        assert status == 200, path


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Bearer {TOKEN.reveal()}x"},
    {"Authorization": f"Basic {TOKEN.reveal()}"},
    {"Authorization": TOKEN.reveal()},
    {"Cookie": f"token={TOKEN.reveal()}"},
])
@pytest.mark.parametrize("path", ["/apis", SERVICES, SERVICES + "/secret-name", "/internal/logs/default/x",
                                  "/internal/gateway/link", "/nothing-here"])
async def test_everything_else_needs_the_token(api: str, path: str, headers: dict[str, str]) -> None:
    status, got, body = await _call("GET", api + path, headers=headers)
    assert status == 401
    assert got["WWW-Authenticate"].startswith("Bearer")
    assert orjson.loads(body) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
    }


async def test_the_token_in_the_query_string_is_not_a_credential(api: str) -> None:
    status, _, _ = await _call("GET", f"{api}/apis?token={TOKEN.reveal()}")
    assert status == 401


async def test_the_right_token_works_and_a_refusal_names_nothing(api: str) -> None:
    status, _, _ = await _call("POST", api + SERVICES, data=orjson.dumps(SVC),
                               headers={**GOOD, "Content-Type": "application/json"})
    assert status == 201
    status, _, body = await _call("GET", api + SERVICES, headers=GOOD)
    assert status == 200 and b"secret-name" in body
    status, _, body = await _call("GET", api + SERVICES)
    assert status == 401 and b"secret-name" not in body and b"serving" not in body


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain",
                                          "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_body_must_say_it_is_json_or_yaml(api: str, content_type: str | None) -> None:
    headers = dict(GOOD)
    if content_type is not None:
        headers["Content-Type"] = content_type
    status, _, body = await _call("POST", api + SERVICES, data=orjson.dumps(SVC), headers=headers,
                                  skip_auto_headers=["Content-Type"])
    assert status == 415
    doc = orjson.loads(body)
    assert doc["reason"] == "UnsupportedMediaType" and "application/json" in doc["message"]
    status, _, _ = await _call("GET", api + SERVICES + "/secret-name", headers=GOOD)
    assert status == 404  # nothing was created


async def test_yaml_and_merge_patch_bodies_are_accepted(api: str) -> None:
    import yaml

    status, _, _ = await _call("POST", api + SERVICES, data=yaml.safe_dump(SVC),
                               headers={**GOOD, "Content-Type": "application/yaml"})
    assert status == 201
    status, _, body = await _call(
        "PATCH", api + SERVICES + "/secret-name", data=b'{"metadata":{"labels":{"a":"b"}}}',
        headers={**GOOD, "Content-Type": "application/merge-patch+json"})
    assert status == 200 and orjson.loads(body)["metadata"]["labels"] == {"a": "b"}


async def test_a_foreign_origin_is_refused_even_with_the_token(api: str) -> None:
    for origin in ("http://evil.example", "http://localhost:1", "null"):
        status, _, body = await _call("GET", api + "/apis", headers={**GOOD, "Origin": origin})
        assert status == 403, origin
        assert orjson.loads(body)["reason"] == "Forbidden"
    status, _, _ = await _call("GET", api + "/apis", headers={**GOOD, "Origin": api})
    assert status == 200


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Bearer ") is None
    assert bearer_token("Basic abc") is None
    assert bearer_token(None) is None


@pytest.mark.parametrize(("sockname", "loopback"), [
    (("127.0.0.1", 8081), True),
    (("127.3.4.5", 8081), True),
    (("::1", 8081, 0, 0), True),
    (("::ffff:127.0.0.1", 8081, 0, 0), True),
    ("/run/flint/admin.sock", True),
    (("10.0.0.1", 8081), False),
    (("0.0.0.0", 8081), False),
    (("fe80::1%eth0", 8081, 0, 2), False),
    (None, False),
])
def test_loopback_addresses(sockname: object, loopback: bool) -> None:
    assert is_loopback_address(sockname) is loopback


async def test_metrics_need_the_token_on_other_addresses() -> None:
    guard = auth_middleware(TOKEN)

    async def handler(_: web.Request) -> web.Response:
        return web.Response(text="metrics")

    transport = mock.Mock()
    transport.get_extra_info.return_value = ("10.0.0.1", 8082)
    request = make_mocked_request("GET", "/metrics", transport=transport)
    assert (await guard(request, handler)).status == 401
    request = make_mocked_request("GET", "/metrics", headers=GOOD, transport=transport)
    assert (await guard(request, handler)).status == 200
    request = make_mocked_request("GET", "/healthz", transport=transport)
    assert (await guard(request, handler)).status == 200


async def _raw(api: str, head: bytes) -> int:
    """The status of a request sent as raw bytes (headers no client library would send)."""
    import asyncio

    host, port = api.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(head)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return int(line.split()[1])


async def test_bytes_that_are_not_utf_8_are_refused_not_a_crash(api: str) -> None:
    token = TOKEN.reveal().encode()
    assert await _raw(api, b"GET /apis HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
                      b"Connection: close\r\n\r\n") == 401
    assert await _raw(api, b"GET /apis HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token +
                      b"\r\nOrigin: http://\xff.example\r\nConnection: close\r\n\r\n") == 403
    assert await _raw(api, b"POST " + SERVICES.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                      b"Authorization: Bearer " + token + b"\r\nContent-Type: text/\xff\r\n"
                      b"Content-Length: 2\r\nConnection: close\r\n\r\n{}") == 415


async def test_metrics_on_loopback_need_a_loopback_host(api: str) -> None:
    """A page whose name was rebound to 127.0.0.1 sends its own name as Host: no metrics for it."""
    for host in ("evil.example", "evil.example:8081", "10.0.0.1"):
        status, _, _ = await _call("GET", api + "/metrics", headers={"Host": host})
        assert status == 401, host
    for host in ("127.0.0.1", "localhost:8081", "[::1]:8081", "127.0.0.2"):
        status, _, _ = await _call("GET", api + "/metrics", headers={"Host": host})
        assert status == 200, host


def test_an_http_error_is_described_without_its_request() -> None:
    from aiohttp import ClientResponseError, RequestInfo
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    info = RequestInfo(URL("http://127.0.0.1:8081/x"), "GET",
                       CIMultiDictProxy(CIMultiDict(GOOD)), URL("http://127.0.0.1:8081/x"))
    exc = ClientResponseError(info, (), status=500, message="boom")
    assert TOKEN.reveal() in repr(exc)  # why describe_error exists
    assert describe_error(exc) == "ClientResponseError status=500"
    assert describe_error(TimeoutError()) == "TimeoutError"


async def test_alternate_paths_hand_other_tokens_to_the_alternate_and_only_those() -> None:
    seen: list[str] = []

    async def alternate(token: str, request: web.Request) -> web.StreamResponse | None:
        seen.append(token)
        return None if token == "sa-ok" else web.Response(status=503, headers={"Retry-After": "5"})

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[auth_middleware(TOKEN, alternate=alternate,
                                                       alternate_paths=("/link",))])
    app.router.add_get("/link", ok)
    app.router.add_get("/api", ok)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    try:
        def bearer(t: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {t}"}
        assert (await _call("GET", base + "/link", headers=bearer("sa-ok")))[0] == 200
        status, headers, _ = await _call("GET", base + "/link", headers=bearer("sa-down"))
        assert status == 503 and headers["Retry-After"] == "5"
        assert (await _call("GET", base + "/link", headers=GOOD))[0] == 200  # the owner's: not asked
        assert (await _call("GET", base + "/link"))[0] == 401  # no bearer: not asked
        status, _, body = await _call("GET", base + "/api", headers=bearer("sa-ok"))
        assert status == 401 and b"sa-ok" not in body  # another path: the owner's token only
        assert seen == ["sa-ok", "sa-down"]
    finally:
        await server.close()
