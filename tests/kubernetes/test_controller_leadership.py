"""One active controller (`controller.leadership`): of two controller replicas on the Kubernetes
engine only the Lease holder reconciles and serves the gateway link and the dispatch plan, and
names itself in `flint-controller-leader`'s EndpointSlice; a standby closes links with
`NOT_LEADER` and answers plan polls 503; a stopped leader hands over at once; a controller that
never got the Lease reconciles nothing until it does, then everything. Both controllers run in
this process, on the contract fake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from support.flint_crds import flint_crds, register_crds
from support.kube_engine import ksvc, loopback_cluster_tls
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually

from controller.app import Controller
from controller.eventing.plan import PLAN_PATH
from controller.leader import LeaderSettings
from controller.leader_endpoint import IDENTITY_ANNOTATION, LEADER_SERVICE
from controller.reconcilers.context import CONFIGURATIONS, SERVICES
from controller.settings import ControllerSettings
from controller.store.kubernetes_config import KubernetesSettings
from flint_common.wire import LINK_PATH, NOT_LEADER
from loadtests.flint_process import free_ports

pytestmark = pytest.mark.fake_only  # two controllers of one machine on the fake

DEADLINE_S = 30.0


def settings(kube: KubeTarget, state_dir: Path) -> ControllerSettings:
    assert kube.fake is not None
    api_port, tls_port = free_ports(2)
    return ControllerSettings(
        state_dir=state_dir, api_port=api_port, api_tls_port=tls_port, engine="kubernetes",
        kubernetes=KubernetesSettings(kubeconfig=str(write_kubeconfig(state_dir.with_suffix(".kubeconfig"),
                                                                      kube.fake.url)),
                                      namespace=kube.namespace),
        leader=LeaderSettings(namespace=kube.namespace, lease_duration_s=6,
                              renew_deadline_s=3.0, retry_period_s=1.0),
        advertise=("127.0.0.1", api_port), cluster_tls=loopback_cluster_tls(kube.namespace))


Start = Callable[[str], Awaitable[Controller]]


@pytest.fixture
async def controllers(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[Start]:
    """Starts controller replicas by name (each its own state dir and ports); stops them all."""
    await register_crds(kube.api, flint_crds())
    started: list[Controller] = []

    async def start(name: str) -> Controller:
        c = Controller(settings(kube, tmp_path / name))
        started.append(c)
        await c.start()
        return c

    try:
        yield start
    finally:
        for c in started:
            await c.stop(stop_replicas=True)


async def leader_slice(kube: KubeTarget) -> tuple[list[str], list[int], str] | None:
    discovery: Any = client.DiscoveryV1Api(kube.api)
    try:
        s = await discovery.read_namespaced_endpoint_slice(LEADER_SERVICE, kube.namespace)
    except client.ApiException:
        return None
    addresses = [a for e in (s.endpoints or []) for a in e.addresses]
    writer = (s.metadata.annotations or {}).get(IDENTITY_ANNOTATION, "")
    return addresses, [p.port for p in s.ports or []], writer


def leads(c: Controller) -> Any:
    async def check() -> bool:
        return c.leading
    return check


async def link_close_code(c: Controller) -> int | None:
    """How a link to `c` goes: None when it serves (a snapshot comes after the Hello), else the
    code it was closed with."""
    assert c.credentials is not None
    headers = {"Authorization": f"Bearer {c.credentials.token.reveal()}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(
            f"http://127.0.0.1:{c.settings.api_port}{LINK_PATH}", headers=headers) as ws:
        await ws.send_str('{"type":"hello","worker":"probe/0","version":0}')
        msg = await ws.receive(timeout=DEADLINE_S)
        return None if msg.type == aiohttp.WSMsgType.TEXT else ws.close_code


async def plan_status(c: Controller) -> tuple[int, str | None]:
    assert c.credentials is not None
    headers = {"Authorization": f"Bearer {c.credentials.token.reveal()}"}
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{c.settings.api_port}{PLAN_PATH}",
            params={"version": "0", "id": "probe"}, headers=headers,
            timeout=aiohttp.ClientTimeout(total=2.0)) as r:
        return r.status, r.headers.get("Retry-After")


async def test_one_of_two_leads_names_itself_and_the_standby_refuses_links_and_plans(
        kube: KubeTarget, controllers: Start) -> None:
    a = await controllers("a")
    await eventually(leads(a), bool, DEADLINE_S, "the first controller leading")
    b = await controllers("b")
    slice_ = await eventually(lambda: leader_slice(kube), lambda s: s is not None and bool(s[0]),
                              DEADLINE_S, "the leader's EndpointSlice")
    assert slice_ == (["127.0.0.1"], [a.settings.api_port], a.leadership and a.leadership.identity)
    core: Any = client.CoreV1Api(kube.api)
    service = await core.read_namespaced_service(LEADER_SERVICE, kube.namespace)
    assert service.spec.selector is None  # its endpoints are the slice the leader writes
    assert not b.leading
    assert await link_close_code(b) == NOT_LEADER
    assert await plan_status(b) == (503, "1")
    assert await link_close_code(a) is None  # the leader serves its link
    status, _ = await plan_status(a)
    assert status == 200

    # The leader stops: it empties its slice and releases the Lease; the standby leads at once
    # (well within the lease duration, which a killed leader would cost).
    await a.stop(stop_replicas=True)
    await eventually(leads(b), bool, DEADLINE_S, "the standby leading after a release")
    slice_ = await eventually(lambda: leader_slice(kube),
                              lambda s: s is not None and s[0] == ["127.0.0.1"]
                              and s[1] == [b.settings.api_port], DEADLINE_S, "the slice naming b")
    assert await link_close_code(b) is None


async def test_a_standby_reconciles_nothing_until_it_leads_then_everything(
        kube: KubeTarget, controllers: Start) -> None:
    # The Lease is someone else's, who keeps renewing it for as long as the test wants.
    leases: Any = client.CoordinationV1Api(kube.api)
    now = "2026-01-01T00:00:00.000000Z"
    await leases.create_namespaced_lease(kube.namespace, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "flint-controller"},
        "spec": {"holderIdentity": "someone-else", "leaseDurationSeconds": 3600,
                 "acquireTime": now, "renewTime": now}})
    held = asyncio.Event()
    held.set()

    async def renew() -> None:  # a live holder: the record changes, so no candidate takes it
        beat = 0
        while held.is_set():
            beat += 1
            lease = await leases.read_namespaced_lease("flint-controller", kube.namespace)
            lease.spec.renew_time = f"2026-01-01T00:00:{beat % 60:02d}.{beat:06d}Z"
            with contextlib.suppress(client.ApiException):  # 409: read again
                await leases.replace_namespaced_lease("flint-controller", kube.namespace, lease)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.3):
                    await asyncio.Event().wait()

    renewer = asyncio.create_task(renew())
    try:
        c = await controllers("standby")
        assert c._store is not None
        store = c._store
        await store.create(SERVICES, ksvc(kube.namespace))
        queue = c._queues[SERVICES]

        async def seen_and_held() -> bool:  # the informer has it; its key waits in the queue
            assert c.informers is not None
            return c.informers[SERVICES].get(kube.namespace, "hello") is not None and not queue.idle()

        await eventually(seen_and_held, bool, DEADLINE_S, "the standby's informer seeing the Service")
        assert (await store.list(CONFIGURATIONS, kube.namespace))[0] == []
        assert not c.leading
    finally:
        held.clear()
        await renewer

    # The holder goes away (its Lease released): the standby leads and reconciles what it saw.
    lease = await leases.read_namespaced_lease("flint-controller", kube.namespace)
    lease.spec.holder_identity = None
    lease.spec.lease_duration_seconds = 1
    await leases.replace_namespaced_lease("flint-controller", kube.namespace, lease)
    await eventually(leads(c), bool, DEADLINE_S, "the standby leading")

    async def configurations() -> list[Any]:
        return (await store.list(CONFIGURATIONS, kube.namespace))[0]

    configs = await eventually(configurations, lambda cs: len(cs) == 1, DEADLINE_S,
                               "the Service's Configuration")
    assert configs[0]["metadata"]["name"] == "hello"
