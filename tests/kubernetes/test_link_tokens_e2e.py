"""The gateway link and the dispatch plan on the Kubernetes engine, by service-account token.

The controller runs in-process with `--engine kubernetes` on the contract fake (as in
test_kubernetes_engine_e2e.py); tokens are issued by the fake's TokenRequest for service accounts
in `flint-system` and checked by the controller with TokenReviews. A real `python -m gateway`
given its own admin token and only `--link-token-file` links; a token of the wrong audience or of
another account is refused with 401 on the websocket handshake; an accepted token on any other
path is a 401; a rotated token file is read again at the next connection; the dispatcher's plan
poll goes by its own token file.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from kubernetes_asyncio import client
from support.flint_crds import flint_crds, register_crds
from support.kube_engine import GatewayProcess, loopback_cluster_tls
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually

from controller.app import Controller
from controller.eventing.dispatcher import Dispatcher, DispatcherSettings
from controller.eventing.plan import PLAN_PATH
from controller.leader import LeaderSettings
from controller.settings import ControllerSettings
from controller.store.kubernetes_config import KubernetesSettings
from flint_common.secret import Secret
from flint_common.wire import LINK_PATH
from loadtests.flint_process import free_ports

pytestmark = pytest.mark.fake_only  # the controller on the fake, in this process

DEADLINE_S = 30.0
SYSTEM = "flint-system"
AUDIENCE = "flint-controller"
SERVICES = "/apis/serving.knative.dev/v1/namespaces/default/services"


class Linked:
    """The controller, its plain-HTTP URL and a way to issue tokens on the fake."""

    def __init__(self, controller: Controller, url: str, kube: KubeTarget, tmp: Path) -> None:
        self.controller, self.url, self.kube, self.tmp = controller, url, kube, tmp

    async def token(self, account: str, audiences: list[str], namespace: str = SYSTEM) -> str:
        core: Any = client.CoreV1Api(self.kube.api)
        issued = await core.create_namespaced_service_account_token(
            account, namespace, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                 "spec": {"audiences": audiences, "expirationSeconds": 600}})
        return str(issued.status.token)

    async def file(self, name: str, content: str) -> Path:
        path = self.tmp / name

        def write() -> None:
            path.write_text(content + "\n")
            path.chmod(0o600)

        await asyncio.to_thread(write)
        return path

    @property
    def owner(self) -> Secret:
        assert self.controller.credentials is not None
        return self.controller.credentials.token


@pytest.fixture
async def linked(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[Linked]:
    assert kube.fake is not None
    await register_crds(kube.api, flint_crds())
    core: Any = client.CoreV1Api(kube.api)
    await core.create_namespace({"metadata": {"name": SYSTEM}})
    for account in ("flint-gateway", "flint-dispatcher", "default"):
        await core.create_namespaced_service_account(SYSTEM, {"metadata": {"name": account}})
    await core.create_namespaced_service_account(kube.namespace, {"metadata": {"name": "flint-gateway"}})
    api_port, tls_port, gateway_port = free_ports(3)
    settings = ControllerSettings(
        state_dir=tmp_path / "controller", api_port=api_port, api_tls_port=tls_port,
        gateway_port=gateway_port, engine="kubernetes",
        kubernetes=KubernetesSettings(
            kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", kube.fake.url)),
            namespace=kube.namespace),
        leader=LeaderSettings(lease_duration_s=6, renew_deadline_s=3.0, retry_period_s=1.0,
                              namespace=kube.namespace),
        cluster_tls=loopback_cluster_tls(SYSTEM))
    controller = Controller(settings)
    try:
        await controller.start()
        yield Linked(controller, f"http://127.0.0.1:{api_port}", kube, tmp_path)
    finally:
        await controller.stop(stop_replicas=True)


async def handshake(url: str, token: str) -> int:
    """The status of the link's websocket handshake with `token` (101 when it opened)."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url + LINK_PATH, headers={"Authorization": f"Bearer {token}"}):
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


async def get(url: str, token: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(
            url, headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, dict(r.headers), await r.read()


async def test_the_gateways_token_opens_the_link_and_nothing_else(linked: Linked) -> None:
    good = await linked.token("flint-gateway", [AUDIENCE])
    assert await handshake(linked.url, good) == 101
    assert await handshake(linked.url, linked.owner.reveal()) == 101  # the owner's still works
    status, headers, body = await get(linked.url + SERVICES, good)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert good.encode() not in body and orjson.loads(body)["reason"] == "Unauthorized"


async def test_each_account_has_its_own_path_only(linked: Linked) -> None:
    gateway = await linked.token("flint-gateway", [AUDIENCE])
    dispatcher = await linked.token("flint-dispatcher", [AUDIENCE])
    # A dispatcher's token opens no link (it could say it is a gateway, and a peer)...
    assert await handshake(linked.url, dispatcher) == 401
    # ... and a gateway's polls no plan; each on its own path is let through.
    status, _, _ = await get(linked.url + PLAN_PATH + "?version=0&id=x", gateway)
    assert status == 401
    assert await handshake(linked.url, gateway) == 101


@pytest.mark.parametrize(("account", "audiences", "namespace"), [
    ("flint-gateway", ["https://kubernetes.default.svc.cluster.local"], SYSTEM),  # wrong audience
    ("default", [AUDIENCE], SYSTEM),  # another account of flint-system
    ("flint-gateway", [AUDIENCE], None),  # the same name in another namespace
])
async def test_other_tokens_are_refused_with_401(linked: Linked, account: str, audiences: list[str],
                                                 namespace: str | None) -> None:
    token = await linked.token(account, audiences, namespace or linked.kube.namespace)
    assert await handshake(linked.url, token) == 401
    status, _, body = await get(linked.url + PLAN_PATH + "?version=0&id=x", token)
    assert status == 401 and token.encode() not in body
    body_doc = orjson.loads(body)
    assert body_doc["kind"] == "Status" and body_doc["code"] == 401
    assert await handshake(linked.url, "not-a-token-at-all") == 401


async def test_a_gateway_with_only_a_link_token_file_links_and_rereads_it(linked: Linked) -> None:
    hub = linked.controller.hub
    wrong = await linked.token("flint-gateway", ["someone-else"])
    token_file = await linked.file("link-token", wrong)
    admin_token = await linked.file("gateway-admin-token", secrets.token_urlsafe(32))
    gateway = GatewayProcess(linked.url, admin_token, linked.tmp / "gateway",
                             linked.controller.settings.gateway_port, gateway_id="gw-sa",
                             link_token_file=token_file)
    try:
        await eventually(lambda: asyncio.to_thread(gateway.log.read_text),
                         lambda text: "event=link_refused" in text and "status=401" in text,
                         DEADLINE_S, "the gateway's link refused with the wrong audience")
        assert hub.connected() == 0
        # the kubelet rotates the projected token: the next connection reads the new one
        await linked.file("link-token", await linked.token("flint-gateway", [AUDIENCE]))

        async def connected() -> int:
            return hub.connected()

        await eventually(connected, lambda n: n > 0, DEADLINE_S, "the gateway linked by its token")
        assert [w.id for w in hub.workers()] == ["gw-sa/0"]
    finally:
        await gateway.stop()
    assert wrong not in await asyncio.to_thread(gateway.log.read_text)  # never in a log


async def test_the_dispatchers_plan_poll_goes_by_its_token_file(linked: Linked) -> None:
    (admin_port,) = free_ports(1)
    link_token = await linked.token("flint-dispatcher", [AUDIENCE])
    token_file = await linked.file("dispatcher-link-token", link_token)
    settings = DispatcherSettings(
        state_dir=linked.tmp / "dispatcher", controller_url=linked.url, admin_port=admin_port,
        token=Secret(secrets.token_urlsafe(32)), link_token_file=token_file)
    dispatcher = Dispatcher(settings)
    await dispatcher.start()
    try:
        async def ids() -> list[str]:
            return [r.id for r in linked.controller.dispatch.dispatchers()]

        await eventually(ids, lambda seen: dispatcher.id in seen, DEADLINE_S,
                         "the dispatcher polling the plan by its service-account token")
        # its admin port keeps needing its own (owner's) token, not the link's
        status, _, _ = await get(f"http://127.0.0.1:{admin_port}/dead-letters/default/x", link_token)
        assert status == 401
    finally:
        await dispatcher.stop()
