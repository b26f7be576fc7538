"""The Kubernetes engine on one machine, for its end-to-end tests: the kubelet stand-in's, the
autoscaler's and the election's fast settings, the controller on the contract fake, the gateway
and controller processes (as their pods would run them), and a Knative Service created and asked
through a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from controller.api.registry import admit, registry_for
from controller.app import Controller
from controller.autoscaling.settings import load_settings
from controller.cluster_tls.settings import ClusterTLSSettings
from controller.leader import LeaderSettings
from controller.reconcilers.context import SERVICES
from controller.settings import ControllerSettings
from controller.store.base import Conflict, Store
from controller.store.kubernetes_config import KubernetesSettings
from flint_common.lifetime import die_with_parent
from loadtests.flint_process import free_ports

from .flint_crds import flint_crds, register_crds
from .kubeapi.kubeconfig import write_kubeconfig
from .kubeapi.session import KubeTarget
from .kubelet import Kubelet, KubeletSettings

FAST_KUBELET = KubeletSettings(probe_period_s=0.05, grace_period_s=3.0, shutdown_grace_s=0.5,
                               crash_backoff_s=0.1, crash_backoff_max_s=0.4, image_backoff_s=0.2,
                               resync_s=0.1)
"""The stand-in with periods of tens of milliseconds: pods ready, restarted and gone at once."""
DEADLINE_S = 40.0
FAST_AUTOSCALER = load_settings({"stable-window": "2s", "scale-to-zero-grace-period": "0s",
                                 "tick-interval": "0.5s"}, allow_below_minimums=True)
"""An idle revision goes to zero within seconds (Knative's minimums are a minute and more)."""
FAST_LEADER = LeaderSettings(lease_duration_s=6, renew_deadline_s=3.0, retry_period_s=1.0)
"""An election of seconds (the library's floor is a second per period)."""


def loopback_cluster_tls(namespace: str) -> ClusterTLSSettings:
    """The cluster certificates of a controller in `namespace` on this machine: its serving
    certificate also names 127.0.0.1, where the tests' gateways and dispatchers reach it."""
    return ClusterTLSSettings(namespace=namespace, extra_names=("127.0.0.1",), retry_s=0.5)


class Process:
    """A `python -m …` process in a session of its own (this environment plus `env`), its output
    in `log`; `stop()` ends it (SIGTERM, then SIGKILL of its group) and `kill()` kills it
    outright, as a node failure would."""

    def __init__(self, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen([sys.executable, *argv], stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})},
                                         preexec_fn=die_with_parent, start_new_session=True)

    async def stop(self, grace_s: float = 20.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, grace_s)
            except subprocess.TimeoutExpired:
                await self.kill()
        await asyncio.to_thread(self.proc.wait)

    async def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)


@contextlib.asynccontextmanager
async def reaped() -> AsyncIterator[list[Process]]:
    """A list to put the test's processes in: each is stopped at the end and checked gone."""
    procs: list[Process] = []
    try:
        yield procs
    finally:
        for p in procs:
            await p.stop()
    for p in procs:
        try:
            os.kill(p.proc.pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {p.proc.pid} ({p.log.name}) outlived its test")


class GatewayProcess(Process):
    """A `python -m gateway` linked to `controllers` (tried in turn), as a gateway pod is;
    `peer_port`: with a peer listener on 127.0.0.1 there (subsetting); `link_token_file`: the
    link's bearer from that file (a projected service-account token), the `token_file` then
    guarding only its admin port; `env`: e.g. the Redis of the brokers (`RedisSettings.env()`);
    `controller_ca`: the CA bundle an `https://` controller's certificate is verified with."""

    def __init__(self, controllers: str | Sequence[str], token_file: Path, state_dir: Path, port: int,
                 *, gateway_id: str = "gw-kube", workers: int = 1, peer_port: int | None = None,
                 link_token_file: Path | None = None, env: Mapping[str, str] | None = None,
                 controller_ca: Path | None = None) -> None:
        self.port, (self.admin,) = port, free_ports(1)
        self.peer_port = peer_port
        self.gateway_id = gateway_id
        argv = ["-m", "gateway", "--domain", "localhost", "--token-file", str(token_file),
                "--state-dir", str(state_dir), "--port", str(port), "--admin-port", str(self.admin),
                "--workers", str(workers), "--gateway-id", gateway_id]
        for url in [controllers] if isinstance(controllers, str) else controllers:
            argv += ["--controller", url]
        if peer_port is not None:
            argv += ["--peer-listen", f"127.0.0.1:{peer_port}"]
        if link_token_file is not None:
            argv += ["--link-token-file", str(link_token_file)]
        if controller_ca is not None:
            argv += ["--controller-ca", str(controller_ca)]
        super().__init__(argv, state_dir.with_suffix(".log"), env)


class DispatcherProcess(Process):
    """A `python -m controller.eventing` polling the plan of `controllers` and posting through the
    gateway on `gateway_port`, as a dispatcher pod does; `redis_args`: its lease and claim flags,
    `env`: its Redis (`RedisSettings.env()`), `controller_ca`: as the gateway's. Its admin port
    (`/metrics`) is `admin`."""

    def __init__(self, controllers: Sequence[str], token_file: Path, state_dir: Path, gateway_port: int,
                 redis_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                 controller_ca: Path | None = None) -> None:
        self.state_dir, (self.admin,) = state_dir, free_ports(1)
        argv = ["-m", "controller.eventing", "--state-dir", str(state_dir), "--token-file", str(token_file),
                "--gateway", f"http://127.0.0.1:{gateway_port}", "--domain", "localhost",
                "--admin-port", str(self.admin), *redis_args]
        for url in controllers:
            argv += ["--controller", url]
        if controller_ca is not None:
            argv += ["--controller-ca", str(controller_ca)]
        super().__init__(argv, state_dir.with_suffix(".log"), env)


@contextlib.asynccontextmanager
async def running_engine(
    kube: KubeTarget, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[Controller, ControllerSettings, Kubelet]]:
    """The controller with `--engine kubernetes` on the contract fake (Flint's CRDs registered;
    it leads at once, and waits for gateways to rejoin 2 s; `overrides`: other settings, e.g.
    `redis`) and the kubelet stand-in running its pods; at the end both stopped and every pod
    process checked gone."""
    assert kube.fake is not None
    await register_crds(kube.api, flint_crds())
    kubelet = Kubelet(kube.api, namespace=kube.namespace, settings=FAST_KUBELET)
    await kubelet.start()
    kube.fake.kubelet_logs = kubelet.log_dir  # pods/log reads the stand-in's container logs
    api_port, tls_port, gateway_port = free_ports(3)
    settings = ControllerSettings(
        state_dir=tmp_path / "controller", api_port=api_port, api_tls_port=tls_port,
        gateway_port=gateway_port, engine="kubernetes", autoscaler=FAST_AUTOSCALER,
        kubernetes=KubernetesSettings(
            kubeconfig=str(write_kubeconfig(tmp_path / "kubeconfig", kube.fake.url)),
            namespace=kube.namespace),
        leader=LeaderSettings(namespace=kube.namespace, lease_duration_s=FAST_LEADER.lease_duration_s,
                              renew_deadline_s=FAST_LEADER.renew_deadline_s,
                              retry_period_s=FAST_LEADER.retry_period_s),
        gateway_rejoin_s=2.0, cluster_tls=loopback_cluster_tls(kube.namespace))
    settings = replace(settings, **overrides)
    controller = Controller(settings)
    try:
        await controller.start()
        yield controller, settings, kubelet
    finally:
        await controller.stop(stop_replicas=True)
        pids = kubelet.pids()
        await kubelet.stop()
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            raise AssertionError(f"pod process {pid} outlived the kubelet stand-in")


def ksvc(namespace: str, name: str = "hello", env: dict[str, str] | None = None) -> dict[str, Any]:
    """A Knative Service of the echo app, admitted as the API would."""
    container: dict[str, Any] = {"image": "flint.test/apps/echo"}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    service, _ = admit(registry_for("kubernetes").lookup("ksvc"), {
        "apiVersion": "serving.knative.dev/v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"template": {"spec": {"containers": [container]}}}})
    return service


async def update_env(store: Store, namespace: str, env: dict[str, str], name: str = "hello") -> None:
    """A new template (so a new revision) for the Service: its container's `env` (read again
    and retried when the controller wrote its status in between: 409)."""
    for _ in range(10):
        current = await store.get(SERVICES, namespace, name)
        current["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": k, "value": v} for k, v in env.items()]
        updated, _ = admit(registry_for("kubernetes").lookup("ksvc"), current, current)
        try:
            await store.update(SERVICES, updated)
            return
        except Conflict:
            continue
    raise AssertionError(f"the Service {namespace}/{name} kept changing under the update")


async def answer(port: int, namespace: str, timeout_s: float = 10.0,
                 host_prefix: str = "hello") -> Any:
    """(200, JSON body) of a GET through the gateway on `port` of the Service (or one of its
    tags: `host_prefix` `blue-hello`); else (what went wrong, None): the status and the
    gateway's words, or the connection's error."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http, \
                http.get(f"http://127.0.0.1:{port}/",
                         headers={"Host": f"{host_prefix}.{namespace}.localhost"}) as r:
            if r.status != 200:  # what the gateway said, for the assertion's message
                return f"{r.status} {r.headers.get('X-Flint-Error', '')}: {(await r.text())[:200]}", None
            return 200, orjson.loads(await r.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        return repr(exc), None
