"""One delivery attempt: where it goes (`Sender.target`), what an answer means (`_outcome`) and
a real round trip against an aiohttp test server on loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict

from controller.eventing.sender import Outcome, Sender, _outcome
from flint_common.cloudevents.codec import CONTENT_TYPE_STRUCTURED, Event, decode_http

GATEWAY = "http://127.0.0.1:8080"


def event(**extra: object) -> Event:
    attrs = {"specversion": "1.0", "id": "e1", "source": "/src", "type": "com.example.t", **extra}
    return Event(attrs, b'{"n":1}', True)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# target
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "target", "host"),
    [
        ("http://hello.default.localhost", "http://127.0.0.1:8080/", "hello.default.localhost"),
        ("http://hello.default.localhost/", "http://127.0.0.1:8080/", "hello.default.localhost"),
        (
            "http://hello.default.localhost:8080/a/b?x=1&y=2",
            "http://127.0.0.1:8080/a/b?x=1&y=2",
            "hello.default.localhost:8080",
        ),
        ("http://broker-ingress.localhost/ns/b", "http://127.0.0.1:8080/ns/b", "broker-ingress.localhost"),
        ("http://localhost/x", "http://127.0.0.1:8080/x", "localhost"),
        ("http://localhost:9000", "http://127.0.0.1:8080/", "localhost:9000"),
        ("http://Hello.Default.LOCALHOST/x", "http://127.0.0.1:8080/x", "Hello.Default.LOCALHOST"),
        ("http://user:pw@hello.default.localhost/x", "http://127.0.0.1:8080/x", "hello.default.localhost"),
        ("https://hello.default.localhost/x", "http://127.0.0.1:8080/x", "hello.default.localhost"),
        ("http://hello.default.localhost/x#frag", "http://127.0.0.1:8080/x", "hello.default.localhost"),
    ],
)
def test_target_rewrites_cluster_domain_urls_to_the_gateway(url: str, target: str, host: str) -> None:
    assert Sender(domain="localhost", gateway=GATEWAY).target(url) == (target, host)


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "http://127.0.0.1:9999/x?y=1",
        "http://notlocalhost/x",
        "http://localhost.example.com/x",
        "http://hello.localhostx/x",
    ],
)
def test_target_leaves_other_urls_alone(url: str) -> None:
    assert Sender(domain="localhost", gateway=GATEWAY).target(url) == (url, None)


def test_target_uses_the_configured_domain() -> None:
    sender = Sender(domain="Example.COM", gateway="http://10.0.0.1:80")
    assert sender.target("http://a.ns.example.com/p") == ("http://10.0.0.1:80/p", "a.ns.example.com")
    assert sender.target("http://a.ns.localhost/p") == ("http://a.ns.localhost/p", None)


# ------------------------------------------------------------------------------------------
# _outcome
# ------------------------------------------------------------------------------------------


def test_202_is_delivered_whatever_the_body() -> None:
    out = _outcome(202, [(b"ce-specversion", b"1.0")], b"ignored", None)
    assert out.ok
    assert out.status == 202
    assert out.reply is None


@pytest.mark.parametrize("status", [200, 201, 204])
def test_2xx_empty_is_delivered(status: int) -> None:
    out = _outcome(status, [(b"Content-Type", b"text/plain")], b"", None)
    assert out == Outcome(True, status)


def test_200_with_a_binary_event_is_a_reply() -> None:
    headers = [
        (b"Ce-Specversion", b"1.0"),
        (b"Ce-Id", b"r1"),
        (b"Ce-Source", b"/reply"),
        (b"Ce-Type", b"com.example.reply"),
        (b"Content-Type", b"application/json"),
    ]
    out = _outcome(200, headers, b'{"ok":true}', None)
    assert out.ok
    assert out.status == 200
    assert out.reply is not None
    assert (out.reply.id, out.reply.source, out.reply.type) == ("r1", "/reply", "com.example.reply")
    assert out.reply.json() == {"ok": True}


def test_200_with_a_binary_reply_whose_json_typed_data_is_not_json_is_a_reply() -> None:
    """The binary-mode rule holds for replies too: the body is opaque data, kept as it came,
    and survives the structured form the reply takes to the broker."""
    headers = [
        (b"ce-specversion", b"1.0"),
        (b"ce-id", b"r1"),
        (b"ce-source", b"/reply"),
        (b"ce-type", b"t"),
        (b"Content-Type", b"application/json"),
    ]
    out = _outcome(200, headers, b"{oops: not json", None)
    assert out.ok and out.status == 200
    assert out.reply is not None and out.reply.data == b"{oops: not json"
    assert not out.reply.data_is_json
    structured = [(b"content-type", CONTENT_TYPE_STRUCTURED.encode())]
    [at_broker] = decode_http(structured, out.reply.to_structured(), max_event_bytes=1 << 20)
    assert at_broker == out.reply and at_broker.to_binary()[1] == b"{oops: not json"


def test_200_with_binary_headers_and_no_body_is_a_reply() -> None:
    headers = [(b"ce-specversion", b"1.0"), (b"ce-id", b"r1"), (b"ce-source", b"/r"), (b"ce-type", b"t")]
    out = _outcome(200, headers, b"", None)
    assert out.ok
    assert out.reply is not None
    assert out.reply.data is None


def test_200_with_a_structured_event_is_a_reply() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "r2", "source": "/reply", "type": "t", "data": [1, 2]})
    out = _outcome(200, [(b"Content-Type", b"application/cloudevents+json")], body, None)
    assert out.ok
    assert out.reply is not None
    assert out.reply.id == "r2"
    assert out.reply.json() == [1, 2]


def test_200_with_a_non_event_body_is_a_502_failure() -> None:
    out = _outcome(200, [(b"Content-Type", b"text/plain")], b"thanks!", None)
    assert not out.ok
    assert out.status == 502
    assert out.reply is None
    assert out.body == b"thanks!"
    assert "not a CloudEvent" in out.detail


def test_200_with_an_invalid_event_is_a_502_failure() -> None:
    body = orjson.dumps({"specversion": "1.0", "id": "r2", "type": "t"})  # no source
    out = _outcome(200, [(b"Content-Type", b"application/cloudevents+json")], body, None)
    assert not out.ok
    assert out.status == 502
    assert "source" in out.detail


def test_200_with_a_batch_of_two_is_a_failure() -> None:
    one = {"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}
    body = orjson.dumps([one, {**one, "id": "b"}])
    out = _outcome(200, [(b"Content-Type", b"application/cloudevents-batch+json")], body, None)
    assert not out.ok
    assert out.status == 502
    assert out.reply is None
    assert "batch of 2" in out.detail


def test_200_with_a_batch_of_one_is_a_reply() -> None:
    body = orjson.dumps([{"specversion": "1.0", "id": "a", "source": "/s", "type": "t"}])
    out = _outcome(200, [(b"Content-Type", b"application/cloudevents-batch+json")], body, None)
    assert out.ok
    assert out.reply is not None
    assert out.reply.id == "a"


@pytest.mark.parametrize("status", [500, 503, 429, 404, 400, 302])
def test_non_2xx_is_a_failure_with_its_status(status: int) -> None:
    out = _outcome(status, [], b"oops", "7")
    assert not out.ok
    assert out.status == status
    assert out.retry_after == "7"
    assert out.body == b"oops"
    assert out.reply is None
    assert str(status) in out.detail


def test_500_without_retry_after() -> None:
    out = _outcome(500, [], b"", None)
    assert (out.ok, out.status, out.retry_after) == (False, 500, None)


# ------------------------------------------------------------------------------------------
# round trips (loopback)
# ------------------------------------------------------------------------------------------


@dataclass
class Subscriber:
    """Records requests; answers with `status`, `headers` and `body`."""

    status: int = 202
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    seen: list[tuple[str, str, CIMultiDict[str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.method, request.path_qs, request.headers.copy(), await request.read()))
        return web.Response(status=self.status, headers=self.headers, body=self.body)


@pytest.fixture
async def subscriber() -> AsyncIterator[tuple[Subscriber, TestServer]]:
    sub = Subscriber()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", sub.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield sub, server
    finally:
        await server.close()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    s = Sender(domain="localhost", gateway=GATEWAY)
    try:
        yield s
    finally:
        await s.close()


async def test_binary_round_trip(subscriber: tuple[Subscriber, TestServer], sender: Sender) -> None:
    sub, server = subscriber
    url = str(server.make_url("/hook?x=1"))
    out = await sender.send(url, event(knativebrokerttl=255), structured=False, timeout_s=5.0)
    assert out == Outcome(True, 202)
    [(method, path, headers, body)] = sub.seen
    assert (method, path) == ("POST", "/hook?x=1")
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-id"] == "e1"
    assert headers["ce-source"] == "/src"
    assert headers["ce-type"] == "com.example.t"
    assert headers["ce-knativebrokerttl"] == "255"
    assert headers["Content-Type"] == "application/json"
    assert headers["Prefer"] == "reply"
    assert body == b'{"n":1}'


async def test_structured_round_trip_without_prefer(
    subscriber: tuple[Subscriber, TestServer], sender: Sender
) -> None:
    sub, server = subscriber
    out = await sender.send(
        str(server.make_url("/")), event(), structured=True, timeout_s=5.0, prefer_reply=False
    )
    assert out.ok
    [(_, _, headers, body)] = sub.seen
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert "Prefer" not in headers
    assert not any(k.lower().startswith("ce-") for k in headers)
    assert orjson.loads(body) == {
        "specversion": "1.0",
        "id": "e1",
        "source": "/src",
        "type": "com.example.t",
        "data": {"n": 1},
    }


async def test_cluster_domain_goes_to_the_gateway_with_the_host(
    subscriber: tuple[Subscriber, TestServer],
) -> None:
    sub, server = subscriber
    sender = Sender(domain="localhost", gateway=str(server.make_url("")))
    try:
        out = await sender.send(
            "http://hello.default.localhost/p?q=2", event(), structured=False, timeout_s=5.0
        )
    finally:
        await sender.close()
    assert out.ok
    [(_, path, headers, _)] = sub.seen
    assert path == "/p?q=2"
    assert headers["Host"] == "hello.default.localhost"


async def test_reply_and_failure_statuses_come_back(
    subscriber: tuple[Subscriber, TestServer], sender: Sender
) -> None:
    sub, server = subscriber
    url = str(server.make_url("/"))
    sub.status, sub.body = 200, b""
    sub.headers = {"ce-specversion": "1.0", "ce-id": "r", "ce-source": "/r", "ce-type": "reply"}
    out = await sender.send(url, event(), structured=False, timeout_s=5.0)
    assert out.ok
    assert out.reply is not None
    assert out.reply.type == "reply"
    sub.status, sub.headers, sub.body = 503, {"Retry-After": "12"}, b"busy"
    out = await sender.send(url, event(), structured=False, timeout_s=5.0)
    assert (out.ok, out.status, out.retry_after, out.body) == (False, 503, "12", b"busy")


async def test_connection_refused_is_a_failure_without_status(sender: Sender) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = await sender.send(f"http://127.0.0.1:{port}/", event(), structured=False, timeout_s=5.0)
    assert out.ok is False
    assert out.status is None
    assert out.reply is None
    assert out.detail
