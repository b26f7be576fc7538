"""CustomResourceDefinitions: the kinds one defines, the checks on it, the status a served one shows."""

from __future__ import annotations

from typing import Any

from . import errors
from .clock import now_rfc3339
from .resources import Resource, Scale

JSON = dict[str, Any]
CRDS = Resource(
    "apiextensions.k8s.io",
    "v1",
    "CustomResourceDefinition",
    "customresourcedefinitions",
    namespaced=False,
    short_names=("crd", "crds"),
    status=True,
    generation=True,
    unconditional_update=False,
    returns_deleted=True,
)


def served_kinds(crd: JSON) -> list[Resource]:
    """The kinds a CustomResourceDefinition defines: one per served version."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        scale_spec = subresources.get("scale")
        scale = None
        if scale_spec is not None:
            scale = Scale(
                spec_replicas=scale_spec.get("specReplicasPath", ".spec.replicas"),
                status_replicas=scale_spec.get("statusReplicasPath", ".status.replicas"),
                label_selector=scale_spec.get("labelSelectorPath"),
            )
        out.append(
            Resource(
                group=spec["group"],
                version=version["name"],
                kind=names["kind"],
                plural=names["plural"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                status="status" in subresources,
                scale=scale,
                generation=True,
                unconditional_update=False,
                custom=True,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                returns_deleted=True,
            )
        )
    return out


def check(crd: JSON) -> None:
    """The fields a CRD cannot go without, and its name: `<plural>.<group>` (422 otherwise)."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    name = crd["metadata"]["name"]
    causes = []
    for required in ("group", "scope"):
        if not spec.get(required):
            causes.append(errors.cause("FieldValueRequired", f"spec.{required}", "Required value"))
    for required in ("plural", "kind"):
        if not names.get(required):
            causes.append(errors.cause("FieldValueRequired", f"spec.names.{required}", "Required value"))
    if not spec.get("versions"):
        causes.append(errors.cause("FieldValueRequired", "spec.versions", "Required value"))
    if names.get("plural") and spec.get("group") and name != f"{names['plural']}.{spec['group']}":
        message = f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group'
        causes.append(errors.cause("FieldValueInvalid", "metadata.name", message))
    if causes:
        raise errors.invalid(CRDS, name, causes)


def initial_status(crd: JSON) -> JSON:
    """Established and NamesAccepted at once (a real server gets there within moments)."""
    conditions = [
        {"type": t, "status": "True", "reason": r, "message": "", "lastTransitionTime": now_rfc3339()}
        for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
    ]
    return {
        "acceptedNames": crd["spec"]["names"],
        "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage", True)],
        "conditions": conditions,
    }
