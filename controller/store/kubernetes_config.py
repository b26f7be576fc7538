"""How Flint reaches a Kubernetes API server: its settings and the client configuration they load."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from kubernetes_asyncio import client, config

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"
"""Set by the kubelet in every Pod: its presence means the in-cluster service account applies."""


@dataclass(frozen=True)
class KubernetesSettings:
    """Settings of the Kubernetes store (`controller.store.kubernetes.KubernetesStore`)."""

    kubeconfig: str = ""
    """Path of the kubeconfig used outside a Pod ("" : `$KUBECONFIG` or `~/.kube/config`, as
    kubectl). Ignored inside a Pod, where the service account's token and CA are used."""
    context: str = ""
    """The kubeconfig context ("" : its `current-context`)."""
    namespace: str = "default"
    """The namespace of an object that names none (as the Store protocol's `default`)."""
    inactivity_s: float = 70.0
    """Seconds a watch may go without an event or a BOOKMARK before it is presumed hung and is
    reconnected from its last resourceVersion (kopf's 70 s: a watch can hang without an error
    when a proxy or load balancer drops the connection silently). API servers send a BOOKMARK
    about every minute to a watch that asks for them; where one sends none, a quiet but healthy
    watch is reconnected every `inactivity_s`, which costs a request and loses nothing."""
    watch_timeout_s: int = 300
    """`timeoutSeconds` of each watch request (seconds; default 5 min): the server ends the watch
    then and the store resumes from the last resourceVersion. Set on every request so a 410 is an
    ERROR event answered at once (kubernetes-asyncio otherwise silently retries once)."""
    request_timeout_s: float = 30.0
    """Total timeout of a non-watch request (seconds)."""
    retries: int = 5
    """Attempts of a read-modify-write that meets 409 Conflict (`mutate`) before it gives up."""
    reconnect_backoff_s: float = 0.2
    """First pause before a watch reconnects after a connection error (doubling, capped at
    `reconnect_backoff_max_s`); a clean end or an inactivity timeout reconnects at once."""
    reconnect_backoff_max_s: float = 5.0
    """Longest pause between reconnection attempts of a watch (seconds)."""


def in_cluster() -> bool:
    """Inside a Pod (the service account applies), by the kubelet's environment variable."""
    return bool(os.environ.get(IN_CLUSTER_ENV))


async def load_configuration(settings: KubernetesSettings) -> client.Configuration:
    """The client configuration: in-cluster inside a Pod, else from the kubeconfig.

    Both read files (the service account's token and CA; the kubeconfig and the certificates it
    names, written out to temporary files when inline), so they run in a worker thread, the
    kubeconfig's loader (a coroutine: exec and OIDC plugins) on a loop of that thread's own.
    """
    return await asyncio.to_thread(_load, settings)


def _load(settings: KubernetesSettings) -> client.Configuration:
    configuration = client.Configuration()
    if in_cluster():
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        asyncio.run(
            config.load_kube_config(
                config_file=settings.kubeconfig or None,
                context=settings.context or None,
                client_configuration=configuration,
            )
        )
    return configuration
