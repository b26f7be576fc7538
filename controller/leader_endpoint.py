"""Where gateways and dispatchers find the leading controller: the EndpointSlice of the
selector-less Service `flint-controller-leader`, which the leader writes its own address into.

A selector-less Service has no endpoints but the slices someone writes for it (labelled
`kubernetes.io/service-name`), so `flint-controller-leader.<namespace>.svc` reaches exactly the
pod that holds the Lease: the leader writes its slice when its term starts (`publish`) and, on a
clean shutdown, empties it (`withdraw`) before it releases the Lease, so clients stop connecting to
it at once instead of when its process is gone. A standby never writes it; a new leader overwrites
whatever the last one left (the slice names its writer in `flint.dev/leader-identity`, and only
the writer empties it). Manifests are pure functions; `LeaderEndpoint` does the writes.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from kubernetes_asyncio import client

from controller import kube_calls

__all__ = ["LEADER_SERVICE", "LeaderEndpoint", "leader_service", "leader_slice"]

log = logging.getLogger("flint.leader")

LEADER_SERVICE = "flint-controller-leader"
"""The Service's name, and its one EndpointSlice's."""
MANAGED_BY = "flint.dev/controller"
"""`endpointslice.kubernetes.io/managed-by`: the cluster's EndpointSlice controller leaves it alone."""
IDENTITY_ANNOTATION = "flint.dev/leader-identity"
"""The slice's writer: the Lease holder's identity."""
PORT_NAME = "link"

Obj = dict[str, Any]


def leader_service(namespace: str, port: int) -> Obj:
    """The selector-less Service whose endpoints are the leader's (`leader_slice`)."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": LEADER_SERVICE, "namespace": namespace,
                     "labels": {"app.kubernetes.io/part-of": "flint"}},
        "spec": {"ports": [{"name": PORT_NAME, "port": port, "targetPort": port, "protocol": "TCP"}]},
    }


def leader_slice(namespace: str, host: str, port: int, identity: str, pod: str = "") -> Obj:
    """The EndpointSlice naming the leader at `host:port` (an empty `host`: no endpoint, the
    leader is gone); `pod` (the pod's name) becomes the endpoint's `targetRef`."""
    endpoints: list[Obj] = []
    family = "IPv4"
    if host:
        family = "IPv6" if ipaddress.ip_address(host).version == 6 else "IPv4"
        endpoint: Obj = {"addresses": [host],
                         "conditions": {"ready": True, "serving": True, "terminating": False}}
        if pod:
            endpoint["targetRef"] = {"kind": "Pod", "name": pod, "namespace": namespace}
        endpoints.append(endpoint)
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": LEADER_SERVICE, "namespace": namespace,
            "labels": {"kubernetes.io/service-name": LEADER_SERVICE,
                       "endpointslice.kubernetes.io/managed-by": MANAGED_BY},
            "annotations": {IDENTITY_ANNOTATION: identity},
        },
        "addressType": family,
        "endpoints": endpoints,
        "ports": [{"name": PORT_NAME, "port": port, "protocol": "TCP"}],
    }


class EndpointWriteFailed(RuntimeError):
    """The API server refused or did not answer a write of the leader's Service or slice."""


class LeaderEndpoint:
    """Writes the leader's address into `flint-controller-leader` (each call bounded by
    `timeout_s`)."""

    def __init__(self, api: client.ApiClient, namespace: str, host: str, port: int, identity: str,
                 *, pod: str = "", timeout_s: float = 5.0) -> None:
        ipaddress.ip_address(host)  # a ValueError now rather than a 422 at every term
        self.namespace, self.host, self.port, self.identity, self.pod = namespace, host, port, identity, pod
        self.timeout_s = timeout_s
        self._core: Any = client.CoreV1Api(api)
        self._discovery: Any = client.DiscoveryV1Api(api)

    async def publish(self) -> None:
        """The Service (made once) and the slice naming this leader."""
        status, _ = await self._call(self._core.create_namespaced_service, self.namespace,
                                     leader_service(self.namespace, self.port))
        if status not in (201, 409):
            raise EndpointWriteFailed(f"creating Service {self.namespace}/{LEADER_SERVICE}: {status}")
        await self._write(leader_slice(self.namespace, self.host, self.port, self.identity, self.pod))
        log.info("event=leader_endpoint_published service=%s/%s address=%s:%d", self.namespace,
                 LEADER_SERVICE, self.host, self.port)

    async def withdraw(self) -> bool:
        """Empty the slice if this leader wrote it (a newer leader's is left alone); True when
        emptied."""
        status, current = await self._call(self._discovery.read_namespaced_endpoint_slice,
                                           LEADER_SERVICE, self.namespace)
        if status != 200:
            return False
        writer = ((current.get("metadata") or {}).get("annotations") or {}).get(IDENTITY_ANNOTATION)
        if writer != self.identity:
            return False
        empty = leader_slice(self.namespace, "", self.port, self.identity)
        empty["addressType"] = current.get("addressType") or empty["addressType"]  # immutable
        empty["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        status, _ = await self._call(self._discovery.replace_namespaced_endpoint_slice,
                                     LEADER_SERVICE, self.namespace, empty)
        return status == 200

    async def _write(self, body: Obj) -> None:
        status, current = await self._call(self._discovery.read_namespaced_endpoint_slice,
                                           LEADER_SERVICE, self.namespace)
        if status == 200 and current.get("addressType") != body["addressType"]:
            # The address family is immutable: the slice is made again (once; a failed delete
            # fails this write, and the term's publishing tries again).
            status, _ = await self._call(self._discovery.delete_namespaced_endpoint_slice,
                                         LEADER_SERVICE, self.namespace)
            if status not in (200, 202, 404):
                raise EndpointWriteFailed(
                    f"deleting EndpointSlice {self.namespace}/{LEADER_SERVICE} of another family: {status}")
            status = 404
        if status == 404:
            status, _ = await self._call(self._discovery.create_namespaced_endpoint_slice,
                                         self.namespace, body)
            if status in (201, 409):  # 409: another writer raced us; the next term fixes it
                return
        elif status == 200:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            status, _ = await self._call(self._discovery.replace_namespaced_endpoint_slice,
                                         LEADER_SERVICE, self.namespace, body)
            if status == 200:
                return
        raise EndpointWriteFailed(f"writing EndpointSlice {self.namespace}/{LEADER_SERVICE}: {status}")

    async def _call(self, method: Any, *args: Any) -> tuple[int, Obj]:
        """(HTTP status, JSON body) of one call; 0 when the API server did not answer."""
        return await kube_calls.call(method, *args, timeout_s=self.timeout_s,
                                     event="leader_endpoint_unreachable", log=log)
