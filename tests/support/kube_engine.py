"""The Kubernetes engine on one machine, for its end-to-end tests: the kubelet stand-in's and the
autoscaler's fast settings, a kubeconfig for the contract fake, and gateway processes linked to
the controller as the engine's gateway pods are."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import yaml

from controller.app import Controller
from controller.autoscaling.settings import load_settings
from controller.settings import ControllerSettings
from controller.store.kubernetes_config import KubernetesSettings
from flint_common.lifetime import die_with_parent
from loadtests.flint_process import free_ports
from support.flint_crds import flint_crds, register_crds
from support.kubeapi.session import KubeTarget
from support.kubelet import Kubelet, KubeletSettings

KUBELET = KubeletSettings(probe_period_s=0.05, grace_period_s=3.0, shutdown_grace_s=0.5,
                          crash_backoff_s=0.1, crash_backoff_max_s=0.4, image_backoff_s=0.2,
                          resync_s=0.1)
DEADLINE_S = 40.0
FAST_AUTOSCALER = load_settings({"stable-window": "2s", "scale-to-zero-grace-period": "0s",
                                 "tick-interval": "0.5s"}, allow_below_minimums=True)
"""An idle revision goes to zero within seconds (Knative's minimums are a minute and more)."""


def kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "u"}}]}))
    return path


class Gateway:
    """A `python -m gateway` process linked to the controller (as the Kubernetes engine's
    gateway pods are), reaped at the end."""

    def __init__(self, controller_api: str, token_file: Path, state_dir: Path, port: int, *,
                 gateway_id: str = "gw-kube", workers: int = 1, peer_port: int | None = None) -> None:
        """`peer_port`: with a peer listener on 127.0.0.1 there (subsetting)."""
        self.port, (self.admin,) = port, free_ports(1)
        self.peer_port = peer_port
        self.gateway_id = gateway_id
        self.log = state_dir.with_suffix(".log")
        argv = [sys.executable, "-m", "gateway", "--controller", controller_api, "--domain", "localhost",
                "--token-file", str(token_file), "--state-dir", str(state_dir), "--port", str(self.port),
                "--admin-port", str(self.admin), "--workers", str(workers), "--gateway-id", gateway_id]
        if peer_port is not None:
            argv += ["--peer-listen", f"127.0.0.1:{peer_port}"]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         preexec_fn=die_with_parent, start_new_session=True)

    async def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait)


@contextlib.asynccontextmanager
async def running_engine(
    kube: KubeTarget, tmp_path: Path
) -> AsyncIterator[tuple[Controller, ControllerSettings, Kubelet]]:
    """The controller with `--engine kubernetes` on the contract fake (Flint's CRDs registered)
    and the kubelet stand-in running its pods; at the end both stopped and every pod process
    checked gone."""
    assert kube.fake is not None
    await register_crds(kube.api, flint_crds())
    kubelet = Kubelet(kube.api, namespace=kube.namespace, settings=KUBELET)
    await kubelet.start()
    api_port, tls_port, gateway_port = free_ports(3)
    settings = ControllerSettings(
        state_dir=tmp_path / "controller", api_port=api_port, api_tls_port=tls_port,
        gateway_port=gateway_port, engine="kubernetes", autoscaler=FAST_AUTOSCALER,
        kubernetes=KubernetesSettings(kubeconfig=str(kubeconfig(tmp_path / "kubeconfig", kube.fake.url)),
                                      namespace=kube.namespace))
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
