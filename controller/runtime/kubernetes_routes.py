"""What makes a Route reachable inside the cluster on the Kubernetes engine, as Knative does
(`pkg/reconciler/route/resources/service.go`, `MakeK8sPlaceholderService`): a Service of the
Route's name, and one `{tag}-{route}` per traffic tag, of type ExternalName pointing at the
gateways' Service, so `http://{route}.{namespace}.svc.cluster.local` (and the tag's) reach the
gateway, which routes by the Host. Pure.

Their labels are the Route's `networking.knative.dev/visibility` (when set) and
`serving.knative.dev/route`; their annotations the Route's; each is owned by the Route
(`controller: true`), so deleting the Route deletes them. The port is Knative's: 80, named
`http2` with `appProtocol: kubernetes.io/h2c` (the gateway speaks HTTP/1.1 and h2c alike on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from controller.api.meta import controller_ref

__all__ = ["GATEWAY_SERVICE", "RouteServiceSettings", "route_services", "tag_service_name"]

Obj = dict[str, Any]

GATEWAY_SERVICE = "flint-gateway.flint-system.svc.cluster.local"
ROUTE_LABEL = "serving.knative.dev/route"
VISIBILITY_LABEL = "networking.knative.dev/visibility"


@dataclass(frozen=True)
class RouteServiceSettings:
    """Where the in-cluster names of Routes point."""

    gateway_service: str = GATEWAY_SERVICE
    """The DNS name of the gateways' Service (deploy/ installs it in `flint-system`)."""


def tag_service_name(route: str, tag: str) -> str:
    """Knative's default tag template `{{.Tag}}-{{.Name}}`."""
    return f"{tag}-{route}"


def _tags(route: Obj) -> list[str]:
    seen: list[str] = []
    for section in ("spec", "status"):
        for t in ((route.get(section) or {}).get("traffic") or []):
            tag = t.get("tag")
            if tag and str(tag) not in seen:
                seen.append(str(tag))
    return sorted(seen)


def _service(route: Obj, name: str, settings: RouteServiceSettings) -> Obj:
    md = route["metadata"]
    labels = {k: str(v) for k, v in (md.get("labels") or {}).items() if k == VISIBILITY_LABEL}
    labels[ROUTE_LABEL] = str(md["name"])
    meta: Obj = {"name": name, "namespace": md.get("namespace", "default"), "labels": labels,
                 "ownerReferences": [controller_ref(route)]}
    if md.get("annotations"):
        meta["annotations"] = {k: str(v) for k, v in md["annotations"].items()}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "type": "ExternalName",
            "externalName": settings.gateway_service,
            "sessionAffinity": "None",
            "ports": [{"name": "http2", "appProtocol": "kubernetes.io/h2c", "port": 80,
                       "targetPort": 80}],
        },
    }


def route_services(route: Obj, settings: RouteServiceSettings = RouteServiceSettings()) -> list[Obj]:
    """The Route's Service, then one per tag (in spec or status: a tag being removed keeps its
    name until the Route's status lets it go), sorted by tag."""
    name = str(route["metadata"]["name"])
    return [_service(route, name, settings)] + [
        _service(route, tag_service_name(name, tag), settings) for tag in _tags(route)]
