"""The kinds the fake serves (built-in and from CRDs) and the discovery documents listing them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(frozen=True)
class Scale:
    """Where a kind keeps what its scale subresource shows (paths as dotted fields, `.spec.replicas`)."""

    spec_replicas: str = ".spec.replicas"
    status_replicas: str = ".status.replicas"
    label_selector: str | None = None  # a CRD's labelSelectorPath (None: the Scale shows no selector)
    match_labels: bool = False  # the selector is spec.selector.matchLabels (Deployments)


@dataclass(frozen=True)
class Resource:
    """One served group/version/plural and how the fake treats its objects."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    status: bool = False  # has the status subresource
    scale: Scale | None = None
    generation: bool = False  # metadata.generation is kept (bumped by changes outside metadata/status)
    unconditional_update: bool = True  # a PUT without resourceVersion is allowed (not for custom resources)
    custom: bool = False  # served because a CRD defines it
    schema: JSON | None = field(default=None, compare=False, hash=False)  # the CRD's openAPIV3Schema
    returns_deleted: bool = False  # DELETE answers the object (custom resources, pods), else a Status
    verbs: tuple[str, ...] = ()  # what discovery lists (empty: every verb of a stored kind)
    token: bool = False  # has the `token` subresource (ServiceAccounts: TokenRequest)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """How messages name the resource: `configmaps`, `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def kind_qualified(self) -> str:
        """How 422 messages name the kind: `ConfigMap`, `Service.serving.knative.dev`."""
        return f"{self.kind}.{self.group}" if self.group else self.kind


def builtin_resources() -> list[Resource]:
    """The built-in kinds Flint's Kubernetes engine uses, served as generic objects (CRDs: crds.CRDS)."""
    return [
        Resource("", "v1", "Namespace", "namespaces", namespaced=False, short_names=("ns",), status=True),
        Resource("", "v1", "ConfigMap", "configmaps", short_names=("cm",)),
        Resource("", "v1", "Secret", "secrets"),
        Resource("", "v1", "ServiceAccount", "serviceaccounts", short_names=("sa",), token=True),
        Resource("", "v1", "Service", "services", short_names=("svc",), status=True),
        Resource(
            "", "v1", "Pod", "pods", short_names=("po",), status=True, generation=True, returns_deleted=True
        ),
        Resource(
            "apps",
            "v1",
            "Deployment",
            "deployments",
            short_names=("deploy",),
            status=True,
            scale=Scale(match_labels=True),
            generation=True,
        ),
        Resource("coordination.k8s.io", "v1", "Lease", "leases"),
        # what deploy/ installs besides (stored as sent: no authorization, no disruption checks)
        Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
        Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings",
                 namespaced=False),
        Resource("rbac.authorization.k8s.io", "v1", "Role", "roles"),
        Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
        Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short_names=("pdb",),
                 status=True),
        # create only, nothing stored (tokens.py; the server answers it before generic routing)
        Resource("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", namespaced=False,
                 verbs=("create",)),
        Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
        # stored only: the fake calls no webhook
        Resource("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
                 "mutatingwebhookconfigurations", namespaced=False),
        Resource("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
                 "validatingwebhookconfigurations", namespaced=False),
        Resource(
            "autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", short_names=("hpa",),
            status=True,
        ),
        # the admission webhooks the fake calls on writes (admission.py)
        Resource("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
                 "mutatingwebhookconfigurations", namespaced=False, generation=True),
        Resource("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
                 "validatingwebhookconfigurations", namespaced=False, generation=True),
    ]


_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def api_resource_list(group_version: str, resources: list[Resource]) -> JSON:
    """`/api/v1`, `/apis/{group}/{version}`: an APIResourceList with the subresources."""
    items: list[JSON] = []
    for res in resources:
        items.append(
            {
                "name": res.plural,
                "singularName": res.singular,
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": list(res.verbs) or _VERBS,
                **({"shortNames": list(res.short_names)} if res.short_names else {}),
            }
        )
        if res.status:
            items.append(_subresource(res, "status", res.kind, ["get", "patch", "update"]))
        if res.token:
            items.append({**_subresource(res, "token", "TokenRequest", ["create"]),
                          "group": "authentication.k8s.io", "version": "v1"})
        if res.scale is not None:
            items.append(
                {
                    **_subresource(res, "scale", "Scale", ["get", "patch", "update"]),
                    "group": "autoscaling",
                    "version": "v1",
                }
            )
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": items}


def _subresource(res: Resource, sub: str, kind: str, verbs: list[str]) -> JSON:
    return {
        "name": f"{res.plural}/{sub}",
        "singularName": "",
        "namespaced": res.namespaced,
        "kind": kind,
        "verbs": verbs,
    }


def api_versions(address: str) -> JSON:
    """`/api`: the core group's versions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
    }


def api_group(group: str, versions: list[str]) -> JSON:
    """`/apis/{group}` and one entry of `/apis`."""
    gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": gvs,
        "preferredVersion": gvs[0],
    }


def api_group_list(groups: dict[str, list[str]]) -> JSON:
    """`/apis`: every named group (the core group is at `/api`)."""
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {k: v for k, v in api_group(g, vs).items() if k not in ("kind", "apiVersion")}
            for g, vs in groups.items()
        ],
    }
