"""`controller.link_auth` over real HTTP: TokenReviews on the contract fake (or a cluster), and a
503 with `Retry-After` when the API server cannot review (closed port, 5xx)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes_asyncio import client
from support.kubeapi.session import KubeTarget

from controller.link_auth import TokenReviewer, api_review, link_authenticator
from controller.tokenreview import LinkAuthSettings, Outcome
from flint_common.httpauth import auth_middleware
from flint_common.secret import Secret
from loadtests.flint_process import free_ports

OWNER = Secret("the-owners-token-0123456789")
AUDIENCE = "flint-controller"


def reviewer_on(api: client.ApiClient, **settings: Any) -> TokenReviewer:
    s = LinkAuthSettings(**settings)
    return TokenReviewer(api_review(api, s), s)


async def issue(kube: KubeTarget, account: str, audiences: list[str]) -> str:
    core: Any = client.CoreV1Api(kube.api)
    await core.create_namespaced_service_account(kube.namespace, {"metadata": {"name": account}})
    issued = await core.create_namespaced_service_account_token(
        account, kube.namespace, {"spec": {"audiences": audiences}})
    return str(issued.status.token)


async def test_the_api_servers_review_allows_an_accepted_account_once_per_ttl(kube: KubeTarget) -> None:
    account = f"system:serviceaccount:{kube.namespace}:flint-gateway"
    reviewer = reviewer_on(kube.api, gateway_accounts=(account,))
    token = await issue(kube, "flint-gateway", [AUDIENCE])
    for _ in range(3):
        verdict = await reviewer.verdict(token)
        assert verdict.allowed and verdict.user == account
    assert reviewer.reviews == 1
    other = await issue(kube, "other", [AUDIENCE])
    refused = await reviewer.verdict(other)
    assert refused.outcome is Outcome.REFUSED and "not one of the accepted" in refused.why
    assert other not in refused.why


Serve = Callable[[TokenReviewer], Awaitable[str]]


@pytest.fixture
async def guarded() -> AsyncIterator[Serve]:
    """Serves `/link` (SA tokens accepted) and `/api` (the owner's only) with a given reviewer."""
    servers: list[TestServer] = []

    async def serve(reviewer: TokenReviewer) -> str:
        async def ok(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application(middlewares=[auth_middleware(
            OWNER, alternate=link_authenticator(reviewer), alternate_paths=("/link",))])
        app.router.add_get("/link", ok)
        app.router.add_get("/api", ok)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    yield serve
    for server in servers:
        await server.close()


async def get(url: str, token: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(
            url, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, dict(r.headers), await r.read()


@pytest.fixture
async def closed_port_api() -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
    api = client.ApiClient(configuration)
    yield api
    await api.close()


SA_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOlsiZmxpbnQtY29udHJvbGxlciJdfQ.c2ln"
"""JWT-shaped, for the audience `flint-controller` (so it is reviewed, not refused unread)."""


async def test_an_unreachable_api_server_is_a_503_with_retry_after(
        guarded: Serve, closed_port_api: client.ApiClient) -> None:
    reviewer = reviewer_on(closed_port_api, retry_after_s=7)
    base = await guarded(reviewer)
    for _ in range(2):  # not cached: each request asks again
        status, headers, body = await get(base + "/link", SA_TOKEN)
        assert status == 503 and headers["Retry-After"] == "7"
        doc = orjson.loads(body)
        assert doc["kind"] == "Status" and doc["reason"] == "ServiceUnavailable"
        assert SA_TOKEN.encode() not in body
    assert reviewer.reviews == 2
    assert (await get(base + "/link", OWNER.reveal()))[0] == 200  # the owner's needs no review
    assert (await get(base + "/api", SA_TOKEN))[0] == 401  # nor is one asked here
    assert reviewer.reviews == 2


async def test_an_api_server_answering_5xx_is_a_503(guarded: Serve) -> None:
    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="etcdserver: request timed out")

    apiserver = web.Application()
    apiserver.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", broken)
    fake = TestServer(apiserver, host="127.0.0.1")
    await fake.start_server()
    configuration = client.Configuration()
    configuration.host = str(fake.make_url("")).rstrip("/")
    api = client.ApiClient(configuration)
    try:
        base = await guarded(reviewer_on(api))
        status, headers, body = await get(base + "/link", SA_TOKEN)
        assert status == 503 and headers["Retry-After"] == "5" and b"answered 500" in body
    finally:
        await api.close()
        await fake.close()


async def test_a_refused_token_is_a_401_on_the_link(guarded: Serve, kube: KubeTarget) -> None:
    token = await issue(kube, "flint-gateway", ["https://kubernetes.default.svc.cluster.local"])
    base = await guarded(reviewer_on(kube.api))
    status, headers, body = await get(base + "/link", token)
    assert status == 401 and "WWW-Authenticate" in headers and token.encode() not in body
