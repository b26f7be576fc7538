"""A peer gateway that does not admit this one yet (its snapshot is older): the request it refused
(a 503 `x-flint-peer-refused`, unread) is sent again, never passed on to the client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

from aiohttp import ClientSession, ClientTimeout, web
from integration.test_gateway_process import HOST, limited_snapshot
from support.harness import serving

from flint_common.snapshot import Peer, Snapshot
from gateway.config import GatewaySettings
from gateway.router import Router
from gateway.worker import build_context, protocol_factory


@contextlib.asynccontextmanager
async def behind_peer(refusals: int) -> AsyncIterator[tuple[int, list[str]]]:
    """A peer listener that refuses the first `refusals` connections as a gateway whose snapshot
    does not list the sender yet, then answers."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("x-flint-revision", ""))
        if len(seen) <= refusals:
            return web.Response(status=503, text="not a peer", headers={
                "x-flint-peer-refused": "1", "Retry-After": "1", "Connection": "close"})
        return web.Response(text="served by the owner")

    async with serving(handle) as port:
        yield port, seen


def owned_by_b(peer_port: int) -> Snapshot:
    base = limited_snapshot(1, 9, cc=1)
    rev = base.revisions[0]
    rev = replace(rev, endpoints=tuple(replace(e, owner="gw-b") for e in rev.endpoints))
    return replace(base, revisions=(rev,), peers=(
        Peer("gw-a", "127.0.0.1", 1), Peer("gw-b", "127.0.0.1", peer_port)))


async def test_a_refusal_by_a_peer_that_is_behind_is_retried_not_relayed() -> None:
    loop = asyncio.get_running_loop()
    async with behind_peer(refusals=1) as (peer_port, seen):
        ctx = build_context(GatewaySettings(peer_listen="127.0.0.1:0"), loop,
                            snapshot=owned_by_b(peer_port), gateway_id="gw-a")
        server = await loop.create_server(protocol_factory(ctx), "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        try:
            async with ClientSession() as http, http.post(
                    f"http://127.0.0.1:{port}/", data=b"once", headers={"Host": HOST},
                    timeout=ClientTimeout(total=10)) as resp:
                assert (resp.status, await resp.text()) == (200, "served by the owner")
            assert len(seen) == 2 and all(seen)
        finally:
            server.close()
            ctx.close()


def test_the_previous_snapshots_peers_are_admitted_a_stranger_is_not() -> None:
    router = Router(gateway_id="gw-a")
    first = owned_by_b(8090)
    router.apply(first)
    assert router.peer_hosts == {"127.0.0.1"}
    moved = replace(first, version=2, peers=(Peer("gw-a", "10.0.0.1", 8090),))
    router.apply(moved)
    assert router.peer_hosts == {"10.0.0.1", "127.0.0.1"}  # gw-b may still be on version 1
    router.apply(replace(moved, version=3))
    assert router.peer_hosts == {"10.0.0.1"}
    assert "127.0.0.9" not in router.peer_hosts
