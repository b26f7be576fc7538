"""An ApiClient for a test: on a fresh fake, or (FLINT_KUBECONFIG set) on a real cluster; a namespace each."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes_asyncio import client, config

from .server import KubeApiFake

KUBECONFIG_ENV = "FLINT_KUBECONFIG"
T = TypeVar("T")


@dataclass
class KubeTarget:
    """What a test talks to: the client, its own namespace and the fake (None on a real cluster)."""

    api: client.ApiClient
    namespace: str
    fake: KubeApiFake | None


def real_cluster() -> bool:
    return bool(os.environ.get(KUBECONFIG_ENV))


@contextlib.asynccontextmanager
async def kube_target(prefix: str = "flint-kt") -> AsyncIterator[KubeTarget]:
    """Start the fake (or load FLINT_KUBECONFIG) and create a namespace; delete it, stop all at the end."""
    fake: KubeApiFake | None = None
    configuration = client.Configuration()
    if real_cluster():
        await config.load_kube_config(
            config_file=os.environ[KUBECONFIG_ENV], client_configuration=configuration
        )
    else:
        fake = KubeApiFake()
        configuration.host = await fake.start()
    api = client.ApiClient(configuration)
    namespace = f"{prefix}-{secrets.token_hex(4)}"
    core: Any = client.CoreV1Api(api)  # the stubs want a V1Namespace; a dict is what goes on the wire
    try:
        await core.create_namespace({"metadata": {"name": namespace}})
        yield KubeTarget(api, namespace, fake)
    finally:
        try:
            if fake is None:  # a cluster keeps what a test leaves; the fake is discarded whole
                with contextlib.suppress(client.ApiException):
                    await core.delete_namespace(namespace, propagation_policy="Background")
        finally:
            await api.close()
            if fake is not None:
                await fake.stop()


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], deadline_s: float = 10.0, what: str = ""
) -> T:
    """Poll `probe` until `done(result)`, at most `deadline_s` seconds (a short pause between tries)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    while True:
        result = await probe()
        if done(result):
            return result
        if loop.time() > deadline:
            raise AssertionError(
                f"timed out after {deadline_s} s waiting for {what or probe}: last {result!r}"
            )
        await asyncio.sleep(0.02)


async def gone(probe: Callable[[], Awaitable[Any]], deadline_s: float = 10.0, what: str = "") -> None:
    """Poll until `probe` raises a 404."""

    async def status() -> int:
        try:
            await probe()
        except client.ApiException as e:
            return int(e.status)
        return 200

    await eventually(status, lambda s: s == 404, deadline_s, what)
