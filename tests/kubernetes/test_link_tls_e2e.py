"""The gateway link and the dispatch plan over HTTPS on the Kubernetes engine: verified with the
cluster certificates' bundle (`--controller-ca`, the ConfigMap `flint-controller-ca` as a pod
mounts it), never without.

The controller runs in-process with `--engine kubernetes` on the contract fake (its certificate
also names 127.0.0.1, where these processes reach it); real `python -m gateway` and `python -m
controller.eventing` processes link to its HTTPS port. A Knative Service answers through the
gateway; a gateway whose CA file does not hold the controller's CA does not link and says why,
and links once the file holds the bundle (read again at every reconnection); after a CA rotation
(overlaps of a second) a gateway whose file follows the ConfigMap links again with the new CA."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client
from support.kube_engine import (
    DEADLINE_S,
    DispatcherProcess,
    GatewayProcess,
    answer,
    ksvc,
    loopback_cluster_tls,
    running_engine,
)
from support.kubeapi.session import KubeTarget, eventually

from controller.cluster_tls.settings import RotationSettings
from controller.cluster_tls.state import ROTATE_CA
from controller.reconcilers.context import SERVICES
from flint_common.tls import load_bundle, new_authority

pytestmark = pytest.mark.fake_only  # the controller on the fake, in this process


async def published_bundle(kube: KubeTarget, path: Path) -> Path:
    """The leader's ConfigMap `flint-controller-ca` written to `path`, as the kubelet mounts it."""
    core: Any = client.CoreV1Api(kube.api)

    async def read() -> str:
        try:
            cm = await core.read_namespaced_config_map("flint-controller-ca", kube.namespace)
        except client.ApiException as exc:
            if exc.status == 404:
                return ""
            raise
        return str((cm.data or {}).get("ca.crt", ""))

    bundle = await eventually(read, bool, DEADLINE_S, "the leader publishing the CA bundle")
    await asyncio.to_thread(path.write_text, bundle)
    return path


async def log_of(process: GatewayProcess | DispatcherProcess) -> str:
    return await asyncio.to_thread(process.log.read_text)


async def test_a_gateway_and_a_dispatcher_link_over_https(kube: KubeTarget, tmp_path: Path) -> None:
    async with running_engine(kube, tmp_path) as (controller, settings, _kubelet):
        ca = await published_bundle(kube, tmp_path / "controller-ca.crt")
        url = f"https://127.0.0.1:{settings.api_tls_port}"
        token = settings.state_dir / "auth" / "token"
        gateway = GatewayProcess(url, token, tmp_path / "gateway", settings.gateway_port, controller_ca=ca)
        dispatcher = DispatcherProcess([url], token, tmp_path / "dispatcher", settings.gateway_port,
                                       controller_ca=ca)
        try:
            assert controller._store is not None
            await controller._store.create(SERVICES, ksvc(kube.namespace))
            _, body = await eventually(lambda: answer(gateway.port, kube.namespace),
                                       lambda a: a[0] == 200, DEADLINE_S,
                                       "the Service answering through the gateway linked over HTTPS")
            assert body["revision"] == "hello-00001"

            async def polling() -> int:
                return len(controller.dispatch.dispatchers())

            await eventually(polling, lambda n: n > 0, DEADLINE_S,
                             "the dispatcher polling the plan over HTTPS")
            assert f"url={url}" in await log_of(gateway)
        finally:
            await gateway.stop()
            await dispatcher.stop()


async def test_a_gateway_not_trusting_the_controllers_ca_does_not_link(kube: KubeTarget,
                                                                       tmp_path: Path) -> None:
    async with running_engine(kube, tmp_path) as (controller, settings, _kubelet):
        other = new_authority("someone-else", dt.datetime.now(dt.UTC))
        ca = tmp_path / "controller-ca.crt"
        await asyncio.to_thread(ca.write_bytes, other.cert_pem)
        gateway = GatewayProcess(f"https://127.0.0.1:{settings.api_tls_port}",
                                 settings.state_dir / "auth" / "token", tmp_path / "gateway",
                                 settings.gateway_port, controller_ca=ca)
        try:
            text = await eventually(lambda: log_of(gateway), lambda t: "event=link_tls_refused" in t,
                                    DEADLINE_S, "the gateway refusing the controller's certificate")
            assert "certificate verify failed" in text or "unable to get local issuer" in text
            assert f"--controller-ca {ca}" in text
            assert controller.hub.connected() == 0
            # the bundle lands in the file (the kubelet updates a mounted ConfigMap): read again
            await published_bundle(kube, ca)

            async def connected() -> int:
                return controller.hub.connected()

            await eventually(connected, lambda n: n > 0, DEADLINE_S, "the gateway linked with the bundle")
        finally:
            await gateway.stop()


async def test_a_gateway_relinks_after_a_ca_rotation(kube: KubeTarget, tmp_path: Path) -> None:
    fast = replace(loopback_cluster_tls(kube.namespace), rotation=RotationSettings(ca_overlap_s=1.0))
    async with running_engine(kube, tmp_path, cluster_tls=fast) as (controller, settings, _kubelet):
        ca = await published_bundle(kube, tmp_path / "controller-ca.crt")
        original = await asyncio.to_thread(ca.read_bytes)

        async def kubelet_mount() -> None:  # the mounted ConfigMap follows the leader's writes
            while True:
                await published_bundle(kube, ca)
                await asyncio.sleep(0.05)

        mount = asyncio.create_task(kubelet_mount())
        gateway = GatewayProcess(f"https://127.0.0.1:{settings.api_tls_port}",
                                 settings.state_dir / "auth" / "token", tmp_path / "gateway",
                                 settings.gateway_port, controller_ca=ca)
        try:
            async def connected() -> int:
                return controller.hub.connected()

            await eventually(connected, lambda n: n > 0, DEADLINE_S, "the gateway linked")
            core: Any = client.CoreV1Api(kube.api)
            await core.patch_namespaced_secret("flint-controller-certs", kube.namespace,
                                               {"metadata": {"annotations": {ROTATE_CA: "now"}}})

            keeper = controller.cluster_tls
            assert keeper is not None

            async def rotated() -> bool:
                secret = await core.read_namespaced_secret("flint-controller-certs", kube.namespace)
                done = not {"ca-next.crt", "ca-previous.crt"} & set(secret.data or {})
                held = await asyncio.to_thread(ca.read_bytes)
                return (done and held != original and held == keeper.bundle
                        and len(load_bundle(held, "file")) == 1)

            await eventually(rotated, bool, DEADLINE_S, "the rotation done, the file holding the new CA only")
            await controller.hub.refuse_all()  # the link made again: verified by the new CA alone
            await eventually(lambda: log_of(gateway), lambda t: t.count("event=link_up") >= 2,
                             DEADLINE_S, "the gateway linked again after the rotation")
            await eventually(connected, lambda n: n > 0, DEADLINE_S, "the gateway linked again")
            assert "event=link_tls_refused" not in await log_of(gateway)
        finally:
            mount.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mount
            await gateway.stop()
