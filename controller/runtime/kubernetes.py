"""A revision's workload on the Kubernetes engine, through the API server: its Deployment, its
`<revision>-private` Service and (HPA class) its HorizontalPodAutoscaler made and kept as
`kubernetes_manifests` describes them, its scale set through the Deployment's scale subresource,
and what the cluster says back — the endpoints of its private Service's EndpointSlices and the
`ResourcesAvailable`/`ContainerHealthy` conditions (`kubernetes_status`) — from watched caches.

Deployments, EndpointSlices and HorizontalPodAutoscalers (all three also cached by watches) go
through a `KubernetesStore` of those
kinds (their groups are served like custom resources: one list+watch machinery, bookmarks and
resume included); Services and Pods, in the core group, through `CoreV1Api`.

A Deployment is updated only when what Flint would write changed: the hash of the desired
manifest (replicas aside) is kept in its `flint.dev/manifest-hash` annotation, since the API
server fills in defaults that a field-by-field comparison would take for drift (Knative hashes
the same way, `UpdateDeploymentHashLabel`). An object of the revision's name that the revision
does not control is never touched: `NotOwned` (Knative's `ResourceNotOwned`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
from kubernetes_asyncio import client

from controller.autoscaling.annotations import RevisionScaling
from controller.informer import Informer
from controller.runtime.base import ChangeCallback, ReplicaState, ReplicaStatus
from controller.runtime.kubernetes_manifests import (
    ManifestSettings,
    deployment,
    deployment_name,
    hpa,
    private_service,
    private_service_name,
    selector,
)
from controller.runtime.kubernetes_routes import ROUTE_LABEL, RouteServiceSettings, route_services
from controller.runtime.kubernetes_status import Condition, PodEndpoint, endpoints, revision_conditions
from controller.store.base import Kind, NotFound, Obj
from controller.store.kubernetes import KubernetesStore
from controller.store.kubernetes_api import unreachable
from controller.store.kubernetes_config import KubernetesSettings
from controller.store.kubernetes_errors import store_error

__all__ = ["DEPLOYMENTS", "ENDPOINT_SLICES", "HPAS", "WORKLOAD_KINDS", "KubernetesWorkloads", "NotOwned"]

DEPLOYMENTS = Kind("apps", "deployments")
ENDPOINT_SLICES = Kind("discovery.k8s.io", "endpointslices")
HPAS = Kind("autoscaling", "horizontalpodautoscalers")
PODS = Kind("", "pods")
SERVICES = Kind("", "services")
WORKLOAD_KINDS = {DEPLOYMENTS: ("v1", "Deployment"), ENDPOINT_SLICES: ("v1", "EndpointSlice"),
                  HPAS: ("v2", "HorizontalPodAutoscaler"), SERVICES: ("v1", "Service")}
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HASH_ANNOTATION = "flint.dev/manifest-hash"


class NotOwned(Exception):
    """An object of the name a revision's workload needs exists, and the revision does not
    control it (Knative: `NotOwned`, "There is an existing Deployment … that we do not own")."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"There is an existing {kind} {name!r} that we do not own.")
        self.kind, self.name = kind, name


def manifest_hash(manifest: Obj) -> str:
    """What Flint would write, replicas aside: equal hashes, nothing to update."""
    spec = dict(manifest.get("spec") or {})
    spec.pop("replicas", None)
    meta = manifest["metadata"]
    blob = orjson.dumps({"spec": spec, "labels": meta.get("labels"),
                         "annotations": meta.get("annotations")}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def _controlled_by(obj: Obj, rev: Obj) -> bool:
    uid = rev["metadata"].get("uid")
    return any(r.get("controller") and r.get("uid") == uid
               for r in obj["metadata"].get("ownerReferences") or [])


class KubernetesWorkloads:
    """The revisions' workloads in one cluster (every namespace, or `namespace`)."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: KubernetesSettings | None = None,
        manifests: ManifestSettings | None = None,
        *,
        route_settings: RouteServiceSettings | None = None,
        namespace: str | None = None,
    ) -> None:
        self.settings = settings or KubernetesSettings()
        self.manifests = manifests or ManifestSettings()
        self.route_settings = route_settings or RouteServiceSettings()
        self.api = api
        self._store = KubernetesStore(api, WORKLOAD_KINDS, self.settings)
        self._core: Any = client.CoreV1Api(api)  # dict bodies; the stubs want models
        self._namespace = namespace
        self.deployments = Informer(self._store, DEPLOYMENTS)
        self.slices = Informer(self._store, ENDPOINT_SLICES)
        self.hpas = Informer(self._store, HPAS)
        self.services = Informer(self._store, SERVICES)
        """Core Services (read only: the store reads the core group): the Destinations that
        name one (`ref: {apiVersion: v1, kind: Service}`) resolve from it and wake on it."""
        self._listeners: list[Callable[[str], None]] = []
        self._started = False

    async def start(self) -> None:
        """Fill the caches (list, then watch) before answering from them; once."""
        if self._started:
            return
        self._started = True
        for informer in (self.deployments, self.slices):
            informer.on_change(self._changed)
            await informer.start()
        await self.hpas.start()
        await self.services.start()

    async def close(self) -> None:
        """Stop watching; the cluster keeps running every workload."""
        for informer in (self.services, self.hpas, self.slices, self.deployments):
            await informer.stop()
        await self._store.close()

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """`listener(revision_key)` after a change of a revision's Deployment or endpoints."""
        self._listeners.append(listener)

    def _changed(self, type_: str, obj: Obj, old: Obj | None) -> None:
        meta = obj["metadata"]
        labels = meta.get("labels") or {}
        revision = labels.get("serving.knative.dev/revision")
        if revision is None and (svc := labels.get(SERVICE_NAME_LABEL, "")).endswith("-private"):
            revision = svc.removesuffix("-private")
        if revision:
            key = f"{meta.get('namespace', 'default')}/{revision}"
            for listener in self._listeners:
                listener(key)

    # -- what the cluster says ------------------------------------------------------------------

    def endpoints(self, namespace: str, revision: str) -> list[PodEndpoint]:
        """The revision's pod endpoints (ready, starting, draining) from the EndpointSlices."""
        service = private_service_name(revision)
        return endpoints(s for s in self.slices.list(namespace)
                         if (s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) == service)

    async def conditions(self, rev: Obj, dep: Obj | None) -> dict[str, Condition]:
        """ResourcesAvailable and ContainerHealthy from the Deployment and, when replicas are
        wanted and none is available, its first pod."""
        pods: list[Obj] = []
        spec, status = (dep or {}).get("spec") or {}, (dep or {}).get("status") or {}
        if dep is not None and int(spec.get("replicas") or 0) > 0 and not status.get("availableReplicas"):
            label = ",".join(f"{k}={v}" for k, v in selector(rev).items())
            listed = await self.core_call(PODS, "", "list_namespaced_pod", self._ns(rev),
                                           label_selector=label, limit=1)
            pods = list(listed.get("items") or [])
        containers = [str(c.get("name")) for c in (rev.get("spec") or {}).get("containers") or []
                      if c.get("name")]
        return revision_conditions(dep, pods, containers)

    # -- what Flint makes -----------------------------------------------------------------------

    async def ensure(self, rev: Obj, replicas: int | None) -> Obj:
        """The revision's Deployment and private Service exist as Flint would make them, the
        Deployment at `replicas` (None: as it is, an HPA scales it; one when it is made); the
        Deployment as the API server has it."""
        await self._ensure_service(rev)
        ns, name = self._ns(rev), deployment_name(rev["metadata"]["name"])
        current = self.deployments.get(ns, name)
        if replicas is None:
            replicas = int(((current or {}).get("spec") or {}).get("replicas") or 1)
        want = deployment(rev, replicas, self.manifests)
        digest = manifest_hash(want)
        want["metadata"].setdefault("annotations", {})[HASH_ANNOTATION] = digest
        have = current
        if have is None:
            try:
                have = await self._store.get(DEPLOYMENTS, ns, name)
            except NotFound:
                return await self._store.create(DEPLOYMENTS, want)
        if not _controlled_by(have, rev):
            raise NotOwned("Deployment", name)
        if (have["metadata"].get("annotations") or {}).get(HASH_ANNOTATION) != digest:
            have_spec = have.get("spec") or {}
            spec = dict(want["spec"], replicas=have_spec.get("replicas", replicas))
            if "selector" in have_spec:  # immutable in apps/v1: changing it would be refused
                spec["selector"] = have_spec["selector"]
            annotations = {**(have["metadata"].get("annotations") or {}),  # others' kept
                           **want["metadata"]["annotations"]}  # (deployment.kubernetes.io/revision)
            meta = dict(have["metadata"], labels=want["metadata"]["labels"], annotations=annotations)
            have = await self._store.update(DEPLOYMENTS, dict(have, metadata=meta, spec=spec))
        if int((have.get("spec") or {}).get("replicas") or 0) != replicas:
            await self._store.scale(DEPLOYMENTS, ns, name, replicas)
            have = dict(have, spec=dict(have["spec"], replicas=replicas))
        return have

    async def _ensure_service(self, rev: Obj) -> None:
        want = private_service(rev)
        ns, name = self._ns(rev), want["metadata"]["name"]
        try:
            have = await self.core_call(SERVICES, name, "read_namespaced_service", name, ns)
        except NotFound:
            await self.core_call(SERVICES, name, "create_namespaced_service", ns, want)
            return
        if not _controlled_by(have, rev):
            raise NotOwned("Service", name)
        spec = have.get("spec") or {}
        if spec.get("selector") != want["spec"]["selector"] or [
                (p.get("name"), p.get("port"), p.get("targetPort")) for p in spec.get("ports") or []] != [
                (p["name"], p["port"], p["targetPort"]) for p in want["spec"]["ports"]]:
            body = dict(have, spec=dict(spec, selector=want["spec"]["selector"], ports=want["spec"]["ports"]))
            await self.core_call(SERVICES, name, "replace_namespaced_service", name, ns, body)

    async def ensure_route_services(self, route: Obj) -> None:
        """The Route's in-cluster Services (`kubernetes_routes.route_services`): made, or put
        back as Flint makes them; one of their names that the Route does not control is left
        alone (`NotOwned`), and tag Services no longer in the Route go."""
        ns = self._ns(route)
        wanted = route_services(route, self.route_settings)
        names = {str(w["metadata"]["name"]) for w in wanted}
        for want in wanted:
            name = str(want["metadata"]["name"])
            try:
                have = await self.core_call(SERVICES, name, "read_namespaced_service", name, ns)
            except NotFound:
                await self.core_call(SERVICES, name, "create_namespaced_service", ns, want)
                continue
            if not _controlled_by(have, route):
                raise NotOwned("Service", name)
            spec = have.get("spec") or {}
            wanted_spec = want["spec"]
            if (spec.get("type"), spec.get("externalName")) != (wanted_spec["type"],
                                                                wanted_spec["externalName"]):
                body = dict(have, spec=dict(spec, **want["spec"]))
                await self.core_call(SERVICES, name, "replace_namespaced_service", name, ns, body)
        listed = await self.core_call(SERVICES, "", "list_namespaced_service", ns,
                                      label_selector=f"{ROUTE_LABEL}={route['metadata']['name']}")
        for svc in listed.get("items") or []:
            name = str(svc["metadata"]["name"])
            if name not in names and _controlled_by(svc, route):
                with contextlib.suppress(NotFound):
                    await self.core_call(SERVICES, name, "delete_namespaced_service", name, ns)

    async def ensure_hpa(self, rev: Obj, scaling: RevisionScaling) -> Obj:
        """The HPA-class revision's HorizontalPodAutoscaler, as `kubernetes_manifests.hpa` makes it."""
        want = hpa(rev, scaling)
        ns, name = self._ns(rev), str(want["metadata"]["name"])
        have = self.hpas.get(ns, name)
        if have is None:
            try:
                have = await self._store.get(HPAS, ns, name)
            except NotFound:
                return await self._store.create(HPAS, want)
        if not _controlled_by(have, rev):
            raise NotOwned("HorizontalPodAutoscaler", name)
        if have.get("spec") != want["spec"]:
            have = await self._store.update(HPAS, dict(have, spec=want["spec"]))
        return have

    async def delete_hpa(self, rev: Obj) -> None:
        """No HPA for the revision (its class is the KPA, or it is not routed): one it controls
        goes."""
        ns, name = self._ns(rev), str(rev["metadata"]["name"])
        have = self.hpas.get(ns, name)  # the cache: no request for the many revisions with none
        if have is not None and _controlled_by(have, rev):
            with contextlib.suppress(NotFound):
                await self._store.delete(HPAS, ns, name)

    def _ns(self, rev: Obj) -> str:
        return str(rev["metadata"].get("namespace") or self._namespace or "default")

    async def core_call(self, kind: Kind, name: str, method: str, *args: Any, **kwargs: Any) -> Obj:
        """A CoreV1Api call about `kind` `name`, its body as JSON; the API server's errors as the
        store's (`NotFound`…), an API server that does not answer as a 503."""
        try:
            response = await getattr(self._core, method)(*args, _preload_content=False, **kwargs)
            try:
                data = await response.read()
            finally:
                response.release()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise unreachable(str(self._core.api_client.configuration.host), kind, name, e) from e
        if not 200 <= response.status < 300:
            raise store_error(response.status, data, kind=kind, name=name)
        body: Obj = orjson.loads(data)
        return body


_STATES: dict[str, ReplicaState] = {"ready": "ready", "starting": "starting", "draining": "stopping"}
"""A pod endpoint's state as a replica's: a draining one is stopping (the publisher routes none)."""


class KubernetesRuntime:
    """The `Runtime` protocol on Kubernetes, for what reads replicas (the snapshot publisher, the
    scaler, the observability endpoint): a revision's replicas are the pods behind its private
    Service's EndpointSlices (`KubernetesWorkloads.endpoints`), each with its pod IP and port;
    the cluster starts them (from the Deployment's scale), this only watches. A replica's id is
    `namespace/pod`; stopping one deletes its pod (the Deployment makes another unless it was
    scaled down). Pod logs are the API server's, not files: `log_paths` is empty."""

    def __init__(self, workloads: KubernetesWorkloads) -> None:
        self.workloads = workloads
        self._subscribers: list[ChangeCallback] = []
        self._known: dict[str, dict[str, ReplicaStatus]] = {}
        """Revision key → its replicas as last told to the subscribers."""

    async def start(self) -> None:
        self.workloads.subscribe(self._changed)
        await self.workloads.start()
        for r in self.replicas():
            self._known.setdefault(r.revision_key, {})[r.id] = r

    async def close(self, stop_replicas: bool) -> None:
        """Stop watching; the pods are the cluster's, `stop_replicas` or not."""
        await self.workloads.close()

    def subscribe(self, callback: ChangeCallback) -> None:
        self._subscribers.append(callback)

    def replicas(self, revision_key: str | None = None) -> list[ReplicaStatus]:
        if revision_key is not None:
            ns, _, name = revision_key.partition("/")
            return self._replicas_of(ns, name)
        out: list[ReplicaStatus] = []
        for ns, name in sorted(self._revisions()):
            out.extend(self._replicas_of(ns, name))
        return out

    def _revisions(self) -> set[tuple[str, str]]:
        found = set()
        for s in self.workloads.slices.list():
            service = str((s["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL) or "")
            if service.endswith("-private"):
                found.add((str(s["metadata"].get("namespace", "default")), service.removesuffix("-private")))
        return found

    def _replicas_of(self, ns: str, revision: str) -> list[ReplicaStatus]:
        return [ReplicaStatus(id=f"{ns}/{e.pod}", revision_key=f"{ns}/{revision}", host=e.ip,
                              port=e.port, pid=None, state=_STATES[e.state])
                for e in self.workloads.endpoints(ns, revision)]

    def _changed(self, revision_key: str) -> None:
        before = self._known.get(revision_key, {})
        now = {r.id: r for r in self.replicas(revision_key)}
        self._known[revision_key] = now
        told = [r for rid, r in now.items() if before.get(rid) != r]
        told += [dataclasses.replace(r, state="stopped") for rid, r in before.items() if rid not in now]
        for r in told:
            for callback in self._subscribers:
                callback(r)

    async def stop_replica(self, replica_id: str, grace_s: float = 10.0) -> None:
        """Delete the replica's pod, with `grace_s` as its grace period."""
        ns, _, pod = replica_id.partition("/")
        try:
            await self.workloads.core_call(PODS, pod, "delete_namespaced_pod", pod, ns,
                                           grace_period_seconds=int(grace_s))
        except NotFound:
            return  # gone already

    def log_paths(self, revision_key: str) -> list[Path]:
        return []

    async def alog_paths(self, revision_key: str) -> list[Path]:
        return []


if TYPE_CHECKING:
    from controller.runtime.base import Runtime

    def _conforms(runtime: KubernetesRuntime) -> Runtime:
        return runtime
