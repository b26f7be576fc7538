"""`flint` against a cluster (the contract fake, through a kubeconfig): `flint logs` reads the
revision's Pods through `pods/log` (tail, follow, since), `flint event send` posts to the broker's
`status.address.url`, dead letters and redeliver go through the API server's service proxy to the
dispatcher with its admin token from the Secret the controller made, and `flint up` with a
kubeconfig is refused with a hint.

The controller (`engine="kubernetes"`) runs in this process with the kubelet stand-in; a real
gateway and a real dispatcher run as processes (the dispatcher's admin port behind a Service and
an EndpointSlice, as its pod's would be); every CLI call is the real `flint` executable."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kubernetes_asyncio import client
from support.harness import BIN
from support.kube_engine import DispatcherProcess, GatewayProcess, ksvc, reaped, running_engine
from support.kubeapi.kubeconfig import write_kubeconfig
from support.kubeapi.session import KubeTarget, eventually
from support.redis_server import start_redis, stop_redis

from controller.admin_secret import ADMIN_SECRET, ADMIN_SECRET_KEY
from controller.api.registry import admit, registry_for
from controller.reconcilers.context import BROKERS, SERVICES, TRIGGERS
from controller.store.base import Kind, NotFound, Store
from flint_common.lifetime import die_with_parent
from flint_common.redis_config import RedisSettings

pytestmark = [pytest.mark.fake_only, pytest.mark.timeout(240)]

DEADLINE_S = 60.0


@dataclass
class Cluster:
    store: Store
    kubeconfig: Path
    gateway_port: int
    dispatcher: DispatcherProcess
    log_dir: Path


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def flint(c: Cluster, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINT_") and k != "KUBECONFIG"}
    return subprocess.run([str(BIN / "flint"), "--kubeconfig", str(c.kubeconfig), *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


async def aflint(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(flint, c, *args)


async def expose_dispatcher(api: client.ApiClient, namespace: str, admin_port: int) -> None:
    """The Service and EndpointSlice a dispatcher pod would have (its admin port named `admin`)."""
    core: Any = client.CoreV1Api(api)
    discovery: Any = client.DiscoveryV1Api(api)
    await core.create_namespaced_service(namespace, {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "flint-dispatcher"},
        "spec": {"selector": {"app": "flint-dispatcher"},
                 "ports": [{"name": "admin", "port": 8083, "targetPort": admin_port}]}})
    await discovery.create_namespaced_endpoint_slice(namespace, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": "flint-dispatcher-x1",
                     "labels": {"kubernetes.io/service-name": "flint-dispatcher"}},
        "ports": [{"name": "admin", "port": admin_port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]})


@pytest.fixture
async def cluster(kube: KubeTarget, tmp_path: Path) -> AsyncIterator[Cluster]:
    redis = await asyncio.to_thread(start_redis, tmp_path / "redis")
    env = RedisSettings(url=redis.url).env()
    try:
        async with running_engine(kube, tmp_path, redis=RedisSettings(url=redis.url)) as (
                controller, settings, kubelet), reaped() as procs:
            assert controller._store is not None and kube.fake is not None
            secret = await client.CoreV1Api(kube.api).read_namespaced_secret(ADMIN_SECRET, kube.namespace)
            admin_token = tmp_path / "admin-token"
            admin_token.write_bytes(base64.b64decode(secret.data[ADMIN_SECRET_KEY]))
            admin_token.chmod(0o600)
            owner = settings.state_dir / "auth" / "token"
            urls = [f"http://127.0.0.1:{settings.api_port}"]
            procs.append(GatewayProcess(urls, owner, tmp_path / "gateway", settings.gateway_port, env=env))
            # as in its pod: the admin port needs the Secret's token, the plan poll its own credential
            dispatcher = DispatcherProcess(urls, admin_token, tmp_path / "dispatcher", settings.gateway_port,
                                           ("--link-token-file", str(owner)), env)
            procs.append(dispatcher)
            await expose_dispatcher(kube.api, kube.namespace, dispatcher.admin)
            yield Cluster(controller._store, write_kubeconfig(tmp_path / "kubeconfig", kube.fake.url),
                          settings.gateway_port, dispatcher, kubelet.log_dir)
    finally:
        await asyncio.to_thread(stop_redis, redis)


async def ready(store: Store, kind: Kind, ns: str, name: str) -> bool:
    try:
        obj = await store.get(kind, ns, name)
    except NotFound:
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


async def test_logs_events_and_dead_letters_through_the_api_server(
        kube: KubeTarget, cluster: Cluster, tmp_path: Path) -> None:
    ns, store = kube.namespace, cluster.store
    service = ksvc(ns)  # one pod stays (the stand-in's autoscaler scales to zero in seconds)
    service["spec"]["template"].setdefault("metadata", {})["annotations"] = {
        "autoscaling.knative.dev/min-scale": "1"}
    await store.create(SERVICES, service)
    await eventually(lambda: ready(store, SERVICES, ns, "hello"), bool, DEADLINE_S, "the Service Ready")

    # logs: each running pod's user-container, prefixed like the embedded engine's replicas
    out = await eventually(lambda: aflint(cluster, "logs", "hello", "-n", ns, "--tail", "5"),
                           lambda r: "echo ready" in r.stdout, DEADLINE_S, "the pod's log")
    line = next(ln for ln in out.stdout.splitlines() if ln.endswith("echo ready"))
    assert line.startswith("[hello-00001/hello-00001-deployment-"), line
    assert (await aflint(cluster, "logs", "hello", "-n", ns, "--tail", "0")).stdout == ""
    assert "echo ready" in (await aflint(cluster, "logs", "hello", "-n", ns, "--since", "10m")).stdout
    bad = await aflint(cluster, "logs", "hello", "-n", ns, "--since", "soon")
    assert bad.returncode == 2 and "--since 'soon'" in bad.stderr
    missing = await aflint(cluster, "logs", "nope", "-n", ns)
    assert missing.returncode == 1 and "service 'nope' has no running pods" in missing.stderr

    follower = await asyncio.create_subprocess_exec(
        str(BIN / "flint"), "--kubeconfig", str(cluster.kubeconfig), "logs", "hello", "-n", ns, "-f",
        "--tail", "0", stdout=asyncio.subprocess.PIPE, preexec_fn=die_with_parent)
    try:
        assert follower.stdout is not None
        pod_log = next(cluster.log_dir.glob(f"{ns}_hello-00001-deployment-*_user-container.log"))
        got = b""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while not got and loop.time() < deadline:
            # the container writes a line; once the follow has begun, it shows
            await asyncio.to_thread(append, pod_log, "a later line\n")
            with contextlib.suppress(TimeoutError):
                got = await asyncio.wait_for(follower.stdout.readline(), 1.0)
        assert got.decode().rstrip("\n").endswith("] a later line"), got
        assert follower.returncode is None  # still following
    finally:
        follower.send_signal(signal.SIGINT)
        await asyncio.wait_for(follower.wait(), 10)

    # a broker, and a trigger whose subscriber refuses every event: its dead letters
    await store.create(BROKERS, admit(registry_for("kubernetes").lookup("broker"), {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": {"name": "default", "namespace": ns}})[0])
    await store.create(TRIGGERS, admit(registry_for("kubernetes").lookup("trigger"), {
        "apiVersion": "eventing.knative.dev/v1", "kind": "Trigger",
        "metadata": {"name": "to-nowhere", "namespace": ns},
        "spec": {"broker": "default", "subscriber": {"uri": "http://127.0.0.1:9/refused"},
                 "delivery": {"retry": 0}}})[0])
    for kind, name in ((BROKERS, "default"), (TRIGGERS, "to-nowhere")):
        await eventually(lambda k=kind, n=name: ready(store, k, ns, n), bool,  # type: ignore[misc]
                         DEADLINE_S, f"{name} Ready")

    gateway = f"http://127.0.0.1:{cluster.gateway_port}"
    sent = await eventually(
        lambda: aflint(cluster, "event", "send", "-n", ns, "--to", "broker:default", "--type", "t.x",
                       "--source", "/cli", "--id", "e-1", "--data", '{"n": 1}', "--gateway", gateway),
        lambda r: r.returncode == 0, DEADLINE_S, "the event accepted by the broker")
    assert sent.stdout.startswith("202"), sent.stdout

    letters = await eventually(
        lambda: aflint(cluster, "trigger", "dead-letters", "to-nowhere", "-n", ns, "-o", "json",
                       "--system-namespace", ns),
        lambda r: r.returncode == 0 and "e-1" in r.stdout, DEADLINE_S, "the dead letter, through the proxy")
    assert [d.get("event_id") or d.get("id") for d in orjson.loads(letters.stdout)], letters.stdout
    requeued = await aflint(cluster, "trigger", "redeliver", "to-nowhere", "-n", ns, "--system-namespace", ns)
    assert requeued.returncode == 0 and "queued for redelivery" in requeued.stdout, requeued.stderr

    # without the Secret's token the dispatcher refuses what the proxy passes on
    no_token = await aflint(cluster, "trigger", "dead-letters", "to-nowhere", "-n", ns,
                            "--system-namespace", "nowhere")
    assert no_token.returncode == 1 and "flint-dispatcher-admin does not exist" in no_token.stderr


def test_flint_up_against_a_cluster_is_refused_with_a_hint(tmp_path: Path) -> None:
    for flags in (["--kubeconfig", str(tmp_path / "kc")], ["--context", "prod"], ["--engine", "kubernetes"]):
        done = subprocess.run([str(BIN / "flint"), "up", "--state-dir", str(tmp_path / "s"), *flags],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "kubectl apply -k deploy/" in done.stderr and "does not run against a cluster" in done.stderr
    assert not (tmp_path / "s").exists()
