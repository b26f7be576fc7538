"""The leading controller killed under a prober: two `python -m controller --engine kubernetes`
processes on the contract fake elect one leader; a gateway process linked to both serves a
Knative Service from the kubelet stand-in's pods; the leader is SIGKILLed (no release, as a node
failure would) and no request fails — the gateway serves its last snapshot while there is no
leader — and the standby takes the Lease once it runs out, names itself in
`flint-controller-leader`, and reconciles: a new revision rolls out through the same gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from kubernetes_asyncio import client
from support.flint_crds import StoreMaker
from support.kube_engine import FAST_KUBELET, GatewayProcess, Process, answer, ksvc, update_env
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually
from support.kubelet import Kubelet

from controller.leader_endpoint import LEADER_SERVICE
from controller.reconcilers.context import SERVICES
from flint_common.secret import load_or_create_token
from loadtests.flint_process import free_ports

pytestmark = pytest.mark.fake_only  # controllers, gateway and pods of one machine on the fake

LEASE_S = 6
DEADLINE_S = 40.0


class ControllerProcess(Process):
    """One controller replica, advertising its plain API port (where its link is)."""

    def __init__(self, name: str, kube: KubeTarget, tmp: Path, token: Path, gateway_port: int) -> None:
        assert kube.fake is not None
        self.api_port, tls_port = free_ports(2)
        self.state_dir = tmp / name
        self.url = f"http://127.0.0.1:{self.api_port}"
        super().__init__([
            "-m", "controller", "--engine", "kubernetes",
            "--kubeconfig", str(write_kubeconfig(tmp / f"{name}.kubeconfig", kube.fake.url)),
            "--kube-namespace", kube.namespace, "--leader-namespace", kube.namespace,
            "--system-namespace", kube.namespace,
            "--leader-lease-duration", str(LEASE_S), "--leader-renew-deadline", "3",
            "--leader-retry-period", "1", "--advertise", f"127.0.0.1:{self.api_port}",
            "--gateway-rejoin", "3",  # the gateway knows both: it finds the leader within a second
            "--state-dir", str(self.state_dir), "--api-port", str(self.api_port),
            "--api-tls-port", str(tls_port), "--gateway-port", str(gateway_port),
        ], tmp / f"{name}.log")


def share_token(token: Path, *state_dirs: Path) -> None:
    """The same owner's token in every replica's state dir (in a cluster: one Secret)."""
    for d in state_dirs:
        d.mkdir(mode=0o700)
        (d / "auth").mkdir(mode=0o700)
        (d / "auth" / "token").write_bytes(token.read_bytes())
        (d / "auth" / "token").chmod(0o600)


async def leader_port(kube: KubeTarget) -> int | None:
    """The port `flint-controller-leader`'s slice names (None: no leader endpoint)."""
    discovery: Any = client.DiscoveryV1Api(kube.api)
    try:
        s = await discovery.read_namespaced_endpoint_slice(LEADER_SERVICE, kube.namespace)
    except client.ApiException:
        return None
    return s.ports[0].port if s.endpoints else None


async def healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


@pytest.fixture
async def cluster(kube: KubeTarget, make_kstore: StoreMaker, tmp_path: Path
                  ) -> AsyncIterator[tuple[list[ControllerProcess], GatewayProcess, Any]]:
    store = await make_kstore()  # Flint's CRDs registered; where the test writes its Service
    kubelet = Kubelet(kube.api, namespace=kube.namespace, settings=FAST_KUBELET)
    await kubelet.start()
    token = tmp_path / "token"
    await asyncio.to_thread(load_or_create_token, token)
    await asyncio.to_thread(share_token, token, tmp_path / "a", tmp_path / "b")
    (gateway_port,) = free_ports(1)
    started: list[Process] = []
    try:
        first = ControllerProcess("a", kube, tmp_path, token, gateway_port)
        started.append(first)
        await eventually(lambda: leader_port(kube), lambda p: p == first.api_port, DEADLINE_S,
                         "the first controller leading")
        second = ControllerProcess("b", kube, tmp_path, token, gateway_port)
        started.append(second)
        await eventually(lambda: healthy(second.url), bool, DEADLINE_S, "the standby serving /healthz")
        gateway = GatewayProcess([first.url, second.url], token, tmp_path / "gateway", gateway_port)
        started.append(gateway)
        yield [first, second], gateway, store
    finally:
        for p in reversed(started):
            await p.stop()
        pids = kubelet.pids()
        await kubelet.stop()
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


async def test_the_leader_killed_under_a_prober_costs_no_request_and_the_standby_takes_over(
        kube: KubeTarget, cluster: tuple[list[ControllerProcess], GatewayProcess, Any]) -> None:
    (first, second), gateway, store = cluster
    await store.create(SERVICES, ksvc(kube.namespace))
    await eventually(lambda: answer(gateway.port, kube.namespace), lambda a: a[0] == 200, DEADLINE_S,
                     "the Service answering through the gateway")
    outcomes: list[tuple[Any, str | None]] = []
    stop = asyncio.Event()

    async def probe() -> None:  # one request after another until the test has seen enough
        while not stop.is_set():
            status, body = await answer(gateway.port, kube.namespace, timeout_s=DEADLINE_S)
            outcomes.append((status, body["revision"] if body else None))

    prober = asyncio.create_task(probe())
    try:
        await first.kill()  # no release: the Lease runs out
        await eventually(lambda: leader_port(kube), lambda p: p == second.api_port,
                         LEASE_S + DEADLINE_S, "the standby leading")
        # It reconciles, and the gateway follows it: a new revision answers through the gateway.
        await update_env(store, kube.namespace, {"TARGET": "after-failover"})

        async def latest_answering() -> int:
            return sum(1 for _, rev in outcomes[-5:] if rev == "hello-00002")

        await eventually(latest_answering, lambda n: n == 5, DEADLINE_S, "the new revision serving")
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await prober
    failed = [o for o in outcomes if o[0] != 200]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed: {failed[:5]}"
    assert {rev for _, rev in outcomes} == {"hello-00001", "hello-00002"}
