"""The EndpointSlice controller's stand-in: one discovery.k8s.io/v1 slice per selecting Service,
its endpoints the selected Pods with an IP (ready / serving / terminating)."""

from __future__ import annotations

import logging
from typing import Any

from .client import Informer, Kube, KubeError, collection_path
from .objects import is_ready, is_terminal, selects

JSON = dict[str, Any]
SERVICE_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
log = logging.getLogger("flint.tests.kubelet")


def _target_port(service_port: JSON, pods: list[JSON]) -> int | None:
    """A Service port's targetPort as a number: as given, or a container port's by name."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    for pod in pods:
        for container in (pod.get("spec") or {}).get("containers") or []:
            for port in container.get("ports") or []:
                if port.get("name") == target:
                    return int(port["containerPort"])
    return None


def desired_slice(service: JSON, pods: list[JSON]) -> JSON:
    """The slice a Service with a selector should have (pure; its name is the API server's to pick)."""
    meta, spec = service["metadata"], service.get("spec") or {}
    selector = spec.get("selector") or {}
    chosen = sorted(
        (
            p for p in pods
            if p["metadata"].get("namespace") == meta["namespace"]
            and selects(selector, p["metadata"].get("labels"))
            and (p.get("status") or {}).get("podIP")
            and not is_terminal(p)
        ),
        key=lambda p: str(p["metadata"]["name"]),
    )
    ports = []
    for sp in spec.get("ports") or []:
        number = _target_port(sp, chosen)
        if number is None:
            continue
        port: JSON = {"name": sp.get("name", ""), "port": number, "protocol": sp.get("protocol", "TCP")}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        ports.append(port)
    endpoints = []
    for pod in chosen:
        terminating = bool(pod["metadata"].get("deletionTimestamp"))
        ready = is_ready(pod)
        endpoints.append({
            "addresses": [pod["status"]["podIP"]],
            "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
            "targetRef": {"kind": "Pod", "namespace": meta["namespace"], "name": pod["metadata"]["name"],
                          "uid": pod["metadata"]["uid"]},
            **({"nodeName": pod["spec"]["nodeName"]} if (pod.get("spec") or {}).get("nodeName") else {}),
        })
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": {**(meta.get("labels") or {}), SERVICE_NAME: meta["name"], MANAGED_BY: CONTROLLER},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": meta["name"],
                                 "uid": meta["uid"], "controller": True, "blockOwnerDeletion": True}],
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }


def _same(live: JSON, want: JSON) -> bool:
    return all(live.get(k) == want.get(k) for k in ("addressType", "endpoints", "ports")) and all(
        live["metadata"].get(k) == want["metadata"].get(k) for k in ("labels", "ownerReferences")
    )


class EndpointSliceController:
    """Keeps every selecting Service's slice (one pass over every Service per `sync`)."""

    def __init__(self, kube: Kube, services: Informer, pods: Informer, slices: Informer) -> None:
        self.kube = kube
        self.services = services
        self.pods = pods
        self.slices = slices

    async def sync(self) -> None:
        pods = list(self.pods.items.values())
        services = {(s["metadata"]["namespace"], s["metadata"]["name"]): s
                    for s in self.services.items.values()}
        ours: dict[tuple[str, str], list[JSON]] = {}
        for live in self.slices.items.values():
            labels = live["metadata"].get("labels") or {}
            if labels.get(MANAGED_BY) == CONTROLLER and SERVICE_NAME in labels:
                ours.setdefault((live["metadata"]["namespace"], labels[SERVICE_NAME]), []).append(live)
        for key in set(services) | set(ours):
            service = services.get(key)
            try:
                await self._sync_one(key[0], service, pods, ours.get(key, []))
            except KubeError as e:
                if e.code not in (404, 409):
                    log.warning("endpointslices of service %s/%s: %s", *key, e)

    async def _sync_one(self, ns: str, service: JSON | None, pods: list[JSON], live: list[JSON]) -> None:
        path = collection_path("discovery.k8s.io", "v1", "endpointslices", ns)
        if service is None or not (service.get("spec") or {}).get("selector"):
            if service is not None:  # no selector any more: its slices are someone else's to keep
                for old in live:
                    await self.kube.delete(f"{path}/{old['metadata']['name']}")
                    self.slices.forget(old)
            return  # a Service gone: the garbage collector deletes its slices
        want = desired_slice(service, pods)
        if not live:
            self.slices.observe(await self.kube.create(path, want))
            return
        first, *extra = sorted(live, key=lambda s: str(s["metadata"]["name"]))
        for old in extra:
            await self.kube.delete(f"{path}/{old['metadata']['name']}")
            self.slices.forget(old)
        if not _same(first, want):
            body = {**want, "metadata": {**first["metadata"], "labels": want["metadata"]["labels"],
                                         "ownerReferences": want["metadata"]["ownerReferences"]}}
            self.slices.observe(await self.kube.replace(f"{path}/{first['metadata']['name']}", body))
