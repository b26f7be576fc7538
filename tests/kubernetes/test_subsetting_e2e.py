"""Subsetting end to end (issue 14): two gateway processes linked to one controller on the
Kubernetes engine (the contract fake, the kubelet stand-in's pods), each with its own peer
listener; a Service with `containerConcurrency: 1` under concurrent load through both gateways
never has two requests at once in one pod (the `exclusive` app answers 500 when it does). With
one pod, the gateway that does not own it forwards to the one that does. The peer listener
refuses anyone but the snapshot's peers, and the public port ignores `x-flint-revision`."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from support.kube_engine import DEADLINE_S, GatewayProcess, running_engine
from support.kubeapi.session import KubeTarget, eventually

from controller.api.registry import admit, registry_for
from controller.app import Controller
from controller.reconcilers.context import SERVICES
from flint_common.snapshot import RevisionTarget
from loadtests.flint_process import free_ports

pytestmark = pytest.mark.fake_only  # a cluster of one machine: the fake and the stand-in

REQUESTS = 200
CLIENTS = 8
REVISION = "excl-00001"


class Cluster:
    """The controller and two gateways: `gw-a` with two workers (a forwarded request may reach
    its peer listener at a worker that is not the revision's home), `gw-b` with one."""

    def __init__(self, controller: Controller, kube: KubeTarget, gateways: list[GatewayProcess]) -> None:
        self.controller = controller
        self.kube = kube
        self.gateways = gateways
        self.host = f"excl.{kube.namespace}.localhost"

    def revision(self) -> RevisionTarget | None:
        snap = self.controller.hub.snapshot
        return next((r for r in snap.revisions if r.name == REVISION), None)

    async def settled(self, pods: int) -> dict[str, str]:
        """Wait until both gateways are peers, the revision has `pods` ready endpoints, each with
        an owner, and every gateway worker serves that snapshot; endpoint id → owner."""
        hub = self.controller.hub

        async def state() -> dict[str, str] | None:
            rev = self.revision()
            if (rev is None or len(hub.snapshot.peers) != 2 or hub.connected() != 3
                    or not hub.acked_by_all(hub.version)):
                return None
            if len(rev.endpoints) != pods or any(e.starting or not e.owner for e in rev.endpoints):
                return None
            return {e.id: e.owner for e in rev.endpoints}

        owners = await eventually(state, lambda s: s is not None, DEADLINE_S,
                                  f"{pods} owned endpoints served by every gateway worker")
        assert owners is not None
        return owners

    async def load(self) -> list[tuple[int, str]]:
        """`REQUESTS` GETs by `CLIENTS` concurrent clients, alternating between the gateways:
        (status, body) of each."""
        results: list[tuple[int, str]] = []
        counter = iter(range(REQUESTS))
        timeout = aiohttp.ClientTimeout(total=DEADLINE_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def client() -> None:
                for i in counter:
                    gateway = self.gateways[i % 2]
                    async with http.get(f"http://127.0.0.1:{gateway.port}/",
                                        headers={"Host": self.host}) as r:
                        results.append((r.status, (await r.text()).strip()))

            await asyncio.gather(*(client() for _ in range(CLIENTS)))
        return results


@contextlib.asynccontextmanager
async def cluster(kube: KubeTarget, tmp_path: Path, pods: int) -> AsyncIterator[Cluster]:
    async with running_engine(kube, tmp_path) as (controller, settings, _):
        api = f"http://127.0.0.1:{settings.api_port}"
        token = settings.state_dir / "auth" / "token"
        ports, peer_ports = free_ports(2), free_ports(2)
        gateways: list[GatewayProcess] = []
        try:
            for i, (name, workers) in enumerate((("gw-a", 2), ("gw-b", 1))):
                gateways.append(GatewayProcess(api, token, tmp_path / name, ports[i], gateway_id=name,
                                        workers=workers, peer_port=peer_ports[i]))
            await create_service(controller, kube, pods)
            yield Cluster(controller, kube, gateways)
        finally:
            for gateway in gateways:
                await gateway.stop()


async def create_service(controller: Controller, kube: KubeTarget, pods: int) -> None:
    service, _ = admit(registry_for("kubernetes").lookup("ksvc"), {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": "excl", "namespace": kube.namespace},
        "spec": {"template": {
            "metadata": {"annotations": {"autoscaling.knative.dev/min-scale": str(pods),
                                         "autoscaling.knative.dev/max-scale": str(pods)}},
            "spec": {"containerConcurrency": 1,
                     "containers": [{"image": "flint.test/apps/exclusive"}]}}}})
    assert controller._store is not None
    await controller._store.create(SERVICES, service)


async def metric(gateway: GatewayProcess, name: str) -> float:
    """A counter summed over the gateway's workers, from its admin `/metrics`."""
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{gateway.admin}/metrics") as r:
        text = await r.text()
    m = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def overlaps(results: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [r for r in results if r != (200, f"ok {REVISION}")]


async def test_two_pods_under_load_through_two_gateways_never_overlap(
        kube: KubeTarget, tmp_path: Path) -> None:
    async with cluster(kube, tmp_path, pods=2) as c:
        owners = await c.settled(pods=2)
        assert sorted(owners.values()) == ["gw-a", "gw-b"]  # one pod each
        results = await c.load()
        assert len(results) == REQUESTS
        bad = overlaps(results)
        assert not bad, f"{len(bad)} of {REQUESTS} requests overlapped or failed: {bad[:5]}"
        for gateway in c.gateways:  # each owns a pod: nothing had to be forwarded
            assert await metric(gateway, "flint_gateway_peer_forwards_total") == 0


async def test_with_one_pod_the_other_gateway_forwards_to_its_owner(
        kube: KubeTarget, tmp_path: Path) -> None:
    async with cluster(kube, tmp_path, pods=1) as c:
        owners = await c.settled(pods=1)
        (owner,) = owners.values()
        results = await c.load()
        bad = overlaps(results)
        assert not bad, f"{len(bad)} of {REQUESTS} requests overlapped or failed: {bad[:5]}"
        by_id = {g.gateway_id: g for g in c.gateways}
        forwarder = by_id["gw-b" if owner == "gw-a" else "gw-a"]
        assert await metric(forwarder, "flint_gateway_peer_forwards_total") >= REQUESTS // 2
        assert await metric(by_id[owner], "flint_gateway_peer_forwards_total") == 0


async def test_the_peer_listener_serves_only_peers_and_the_public_port_ignores_the_header(
        kube: KubeTarget, tmp_path: Path) -> None:
    async with cluster(kube, tmp_path, pods=1) as c:
        (owner,) = (await c.settled(pods=1)).values()
        gateway = next(g for g in c.gateways if g.gateway_id == owner)
        assert gateway.peer_port is not None
        key = f"{kube.namespace}/{REVISION}"
        named = f"GET / HTTP/1.1\r\nHost: nowhere.example\r\nx-flint-revision: {key}\r\n\r\n"
        # From a peer's address (127.0.0.1): straight to the named revision, whatever the Host.
        assert (await raw(gateway.peer_port, named, "127.0.0.1")).startswith("HTTP/1.1 200")
        # From anyone else in the cluster (here 127.0.0.9): refused, unread (a 503 a forwarding
        # gateway sends again: a real peer not in our snapshot yet looks the same).
        refused = await raw(gateway.peer_port, named, "127.0.0.9")
        assert refused == "" or (refused.startswith("HTTP/1.1 503")
                                 and "x-flint-peer-refused: 1" in refused.lower()), refused
        # The public port drops the header: the unknown Host is a 404, not the revision.
        assert (await raw(gateway.port, named, "127.0.0.1")).startswith("HTTP/1.1 404")


async def raw(port: int, request: str, source: str) -> str:
    """The response head to one request sent from `source` to 127.0.0.1:`port` ("" when the
    connection is closed without one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(request.encode())
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
            return head.decode("latin-1")
        return ""
    except asyncio.IncompleteReadError as exc:
        return exc.partial.decode("latin-1")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
