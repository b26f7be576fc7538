"""What a Revision becomes on the Kubernetes engine, as Knative builds it
(`pkg/reconciler/revision/resources`): a Deployment `<revision>-deployment` running the revision's
PodSpec as given, and a Service `<revision>-private` selecting its pods, whose EndpointSlices the
gateways route to. Pure: the Revision (and settings) in, manifests out.

Knative's, kept: the labels (the revision's own, but `serving.knative.dev/route` and
`…/routingState`, plus `serving.knative.dev/revision`, `…/revisionUID`, and `app` when the user set
none), the selector on `revisionUID`, the annotations without Knative's bookkeeping and
`autoscaling.knative.dev/*`, the owner reference to the Revision, `progressDeadlineSeconds` (the
`serving.knative.dev/progress-deadline` annotation, else the setting), `revisionHistoryLimit: 0`,
a rolling update with `maxUnavailable: 0`, `terminationGracePeriodSeconds` = `timeoutSeconds` (at
least the preStop sleep + 1 s),
the serving container's one port named `user-port` (the first `containerPort`, else 8080) with
`PORT` and `K_REVISION`, `K_CONFIGURATION`, `K_SERVICE` in its environment, and the liveness
probe's port rewritten to the user port.

Flint's, since it has no queue-proxy (the gateway forwards to the pod itself): a serving container
without a readiness probe gets a `tcpSocket` one on its port (Knative's queue-proxy probes TCP by
default), and every container a `preStop` `sleep` of `prestop_s` (default 5 s, longer than a
snapshot takes to reach every gateway), so a pod leaving its EndpointSlice (`terminating: true`)
keeps serving the requests still routed to it. The `sleep` action needs no shell in the image
(Kubernetes 1.30+, on by default since). The Knative-only fields (`containerConcurrency`,
`timeoutSeconds`, `responseStartTimeoutSeconds`, `idleTimeoutSeconds`) leave the PodSpec; every other
field — registry images, volumes, secrets, probes, resources, service accounts — is honoured as
written (the embedded engine's refusal table does not apply: the cluster runs them).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

from controller.api import autoscaling as ak
from controller.api.autoscaling import parse_duration
from controller.api.meta import controller_ref
from controller.autoscaling.annotations import RevisionScaling

__all__ = [
    "DEFAULT_USER_PORT",
    "ManifestSettings",
    "deployment",
    "deployment_name",
    "hpa",
    "labels",
    "pod_spec",
    "private_service",
    "private_service_name",
    "selector",
    "user_port",
]

Obj = dict[str, Any]

DEFAULT_USER_PORT = 8080
USER_PORT_NAME = "user-port"
REVISION_LABEL = "serving.knative.dev/revision"
REVISION_UID_LABEL = "serving.knative.dev/revisionUID"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
SERVICE_LABEL = "serving.knative.dev/service"
APP_LABEL = "app"
SERVICE_TYPE_LABEL = "networking.internal.knative.dev/serviceType"
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
PROGRESS_DEADLINE_ANNOTATION = "serving.knative.dev/progress-deadline"

_EXCLUDED_LABELS = frozenset({"serving.knative.dev/route", "serving.knative.dev/routingState"})
_EXCLUDED_ANNOTATIONS = frozenset({
    "serving.knative.dev/lastPinned", "serving.knative.dev/no-gc",
    "serving.knative.dev/routingStateModified", "serving.knative.dev/routes",
})
_KNATIVE_SPEC_FIELDS = ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
                        "idleTimeoutSeconds")
DEFAULT_TIMEOUT_S = 300


@dataclass(frozen=True)
class ManifestSettings:
    """The engine's settings that shape a revision's workload (Knative's `config-deployment`)."""

    progress_deadline_s: int = 600
    """`progressDeadlineSeconds` of a revision that has no `serving.knative.dev/progress-deadline`."""
    prestop_s: int = 5
    """The `preStop` sleep of every container: longer than a routing snapshot takes to reach the
    gateways, so a terminating pod still answers what was routed to it meanwhile."""

    def __post_init__(self) -> None:
        if self.progress_deadline_s < 1:
            raise ValueError(f"progress_deadline_s must be at least 1, not {self.progress_deadline_s}")
        if self.prestop_s < 0:
            raise ValueError(f"prestop_s must be 0 or more, not {self.prestop_s}")


def deployment_name(revision: str) -> str:
    return f"{revision}-deployment"


def private_service_name(revision: str) -> str:
    return f"{revision}-private"


def _meta(rev: Obj) -> Obj:
    meta: Obj = rev["metadata"]
    return meta


def labels(rev: Obj) -> dict[str, str]:
    """The labels of everything made for the revision (Knative's `makeLabels`)."""
    md = _meta(rev)
    out = {k: str(v) for k, v in (md.get("labels") or {}).items() if k not in _EXCLUDED_LABELS}
    out[REVISION_LABEL] = str(md["name"])
    out[REVISION_UID_LABEL] = str(md.get("uid") or "")
    out.setdefault(APP_LABEL, str(md["name"]))
    return out


def selector(rev: Obj) -> dict[str, str]:
    """The pods of this revision, whatever else their labels say."""
    return {REVISION_UID_LABEL: str(_meta(rev).get("uid") or "")}


def _annotations(rev: Obj) -> dict[str, str]:
    return {k: str(v) for k, v in (_meta(rev).get("annotations") or {}).items()
            if k not in _EXCLUDED_ANNOTATIONS and not k.startswith("autoscaling.knative.dev/")}


def user_port(rev: Obj) -> int:
    """The port the serving container listens on: its first `containerPort`, else 8080."""
    container = _serving_container(rev)
    ports = container.get("ports") or []
    if ports and int(ports[0].get("containerPort") or 0):
        return int(ports[0]["containerPort"])
    return DEFAULT_USER_PORT


def _containers(rev: Obj) -> list[Obj]:
    return list((rev.get("spec") or {}).get("containers") or [])


def _serving_index(rev: Obj) -> int:
    """The serving container: the one with ports, or the only one (Knative's rule)."""
    containers = _containers(rev)
    for i, c in enumerate(containers):
        if c.get("ports"):
            return i
    return 0


def _serving_container(rev: Obj) -> Obj:
    containers = _containers(rev)
    return containers[_serving_index(rev)] if containers else {}


def _knative_env(rev: Obj) -> list[Obj]:
    md_labels = _meta(rev).get("labels") or {}
    return [{"name": "K_REVISION", "value": str(_meta(rev)["name"])},
            {"name": "K_CONFIGURATION", "value": str(md_labels.get(CONFIGURATION_LABEL, ""))},
            {"name": "K_SERVICE", "value": str(md_labels.get(SERVICE_LABEL, ""))}]


def _rewrite_probe_port(probe: Obj | None, port: int) -> None:
    """A probe without a port of its own (or the serving container's) probes the user port."""
    if not probe:
        return
    for action in ("httpGet", "tcpSocket"):
        if isinstance(probe.get(action), dict) and not probe[action].get("port"):
            probe[action]["port"] = port


def _container(c: Obj, rev: Obj, *, serving: bool, port: int, prestop_s: int) -> Obj:
    out = copy.deepcopy(c)
    env = list(out.get("env") or [])
    if serving:
        out["ports"] = [{"name": USER_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
        env.append({"name": "PORT", "value": str(port)})
        if not out.get("readinessProbe"):
            out["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1,
                                     "successThreshold": 1, "failureThreshold": 3}
        _rewrite_probe_port(out.get("readinessProbe"), port)
        _rewrite_probe_port(out.get("livenessProbe"), port)
    out["env"] = env + _knative_env(rev)
    out.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    out.pop("stdin", None)
    out.pop("tty", None)
    if prestop_s > 0:
        lifecycle = dict(out.get("lifecycle") or {})
        lifecycle.setdefault("preStop", {"sleep": {"seconds": prestop_s}})
        out["lifecycle"] = lifecycle
    return out


def pod_spec(rev: Obj, settings: ManifestSettings = ManifestSettings()) -> Obj:
    """The revision's PodSpec as the cluster runs it (Knative's `makePodSpec`, without the
    queue-proxy): Knative's own fields out, the containers completed as the module docstring says."""
    spec = copy.deepcopy(rev.get("spec") or {})
    timeout = int(spec.get("timeoutSeconds") or DEFAULT_TIMEOUT_S)
    for key in _KNATIVE_SPEC_FIELDS:
        spec.pop(key, None)
    port = user_port(rev)
    serving = _serving_index(rev)
    spec["containers"] = [
        _container(c, rev, serving=i == serving, port=port, prestop_s=settings.prestop_s)
        for i, c in enumerate(_containers(rev))]
    spec["terminationGracePeriodSeconds"] = max(timeout, settings.prestop_s + 1)
    return spec


def progress_deadline_s(rev: Obj, settings: ManifestSettings) -> int:
    raw = (_meta(rev).get("annotations") or {}).get(PROGRESS_DEADLINE_ANNOTATION)
    parsed = parse_duration(str(raw).strip()) if raw else None
    return int(parsed) if parsed else settings.progress_deadline_s


def deployment(rev: Obj, replicas: int, settings: ManifestSettings = ManifestSettings()) -> Obj:
    """The revision's Deployment (Knative's `MakeDeployment`), running `replicas` pods."""
    md = _meta(rev)
    name = str(md["name"])
    template_annotations = _annotations(rev)
    serving = _serving_container(rev)
    if serving.get("name"):
        template_annotations[DEFAULT_CONTAINER_ANNOTATION] = str(serving["name"])
    meta: Obj = {"name": deployment_name(name), "namespace": md.get("namespace", "default"),
                 "labels": labels(rev), "ownerReferences": [controller_ref(rev)]}
    if ann := _annotations(rev):
        meta["annotations"] = ann
    template_meta: Obj = {"labels": labels(rev)}
    if template_annotations:
        template_meta["annotations"] = template_annotations
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector(rev)},
            "progressDeadlineSeconds": progress_deadline_s(rev, settings),
            "revisionHistoryLimit": 0,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {"metadata": template_meta, "spec": pod_spec(rev, settings)},
        },
    }


def private_service(rev: Obj) -> Obj:
    """`<revision>-private`: selects the revision's pods, so their EndpointSlices exist (the
    gateways route to the pod IPs in them, never through the Service's cluster IP)."""
    md = _meta(rev)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": private_service_name(str(md["name"])),
            "namespace": md.get("namespace", "default"),
            "labels": {**labels(rev), SERVICE_TYPE_LABEL: "Private"},
            "ownerReferences": [controller_ref(rev)],
        },
        "spec": {
            "selector": selector(rev),
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": user_port(rev)}],
        },
    }


INT32_MAX = 2**31 - 1


def hpa(rev: Obj, scaling: RevisionScaling) -> Obj:
    """The `autoscaling/v2` HorizontalPodAutoscaler of an HPA-class revision (Knative's `MakeHPA`,
    owned by the Revision since Flint has no PodAutoscaler object): on its Deployment, between
    min-scale (unset when 0: the HPA's own floor of one) and max-scale or the global
    max-scale-limit (none: 2³¹−1), CPU as
    average utilisation in percent, memory as an average value in MiB, the `window` annotation as
    both stabilisation windows."""
    md = _meta(rev)
    name = str(md["name"])
    caps = [c for c in (scaling.max_scale, scaling.max_scale_limit) if c > 0]  # the cluster's own
    spec: Obj = {  # budget, not the embedded engine's per-machine one
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_name(name)},
        "maxReplicas": min(caps) if caps else INT32_MAX,
    }
    if scaling.min_scale > 0:
        spec["minReplicas"] = scaling.min_scale
    if scaling.metric == ak.MEMORY:
        target: Obj = {"type": "AverageValue", "averageValue": f"{int(scaling.target)}Mi"}
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "memory", "target": target}}]
    else:
        target = {"type": "Utilization", "averageUtilization": math.ceil(scaling.target)}
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "target": target}}]
    window = ak.get({k: str(v) for k, v in (md.get("annotations") or {}).items()}, ak.WINDOW)
    if window is not None and (seconds := parse_duration(window[1])) is not None:
        rule = {"stabilizationWindowSeconds": int(seconds)}
        spec["behavior"] = {"scaleDown": dict(rule), "scaleUp": dict(rule)}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": md.get("namespace", "default"), "labels": labels(rev),
                     "ownerReferences": [controller_ref(rev)]},
        "spec": spec,
    }
