"""Schema pieces every Knative kind shares: ObjectMeta, conditions, status, the kind's shell."""

from __future__ import annotations

from dataclasses import replace

from controller.api.schema import Schema, array, integer, obj, string, string_map
from controller.api.schema_k8s import k8s


def object_meta() -> Schema:
    return k8s("V1ObjectMeta").described(
        "Standard object's metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
    )


def conditions() -> Schema:
    condition = obj(
        "A condition of the resource's state (Knative's apis.Condition).",
        {
            "type": string("Type of condition: Ready and the conditions it depends on."),
            "status": string("Status of the condition: True, False or Unknown."),
            "severity": string("How to treat a False condition: empty (an error), Warning or Info."),
            "reason": string("One-word CamelCase reason for the condition's last transition."),
            "message": string("A human-readable message about the last transition."),
            "lastTransitionTime": string("When the condition last changed.", fmt="date-time"),
        },
        name="dev.knative.pkg.apis.Condition",
        required=("type", "status"),
    )
    return array(condition, "The latest available observations of the resource's state.")


def status(description: str, properties: dict[str, Schema]) -> Schema:
    """A status: the controller's to write (user writes ignore it), so unknown fields pass."""
    common = {
        "observedGeneration": integer("The generation last processed by the controller."),
        "conditions": conditions(),
        "annotations": string_map("Additional information about the resource's state."),
    }
    return obj(description, common | properties, preserve_unknown=True)


def addressable(description: str) -> Schema:
    """Knative's duck Addressable: where a resource is reached."""
    address = obj(
        "Where a resource is reached (Knative's duck Addressable).",
        {
            "url": string("The address's URL."),
            "name": string("The address's name."),
            "CACerts": string("The CA certificates of the address, PEM."),
            "audience": string("The OIDC audience of the address."),
        },
        name="dev.knative.pkg.apis.duck.v1.Addressable",
    )
    return address.described(description)


def reversed_group(group: str) -> str:
    """`serving.knative.dev` → `dev.knative.serving`, how Kubernetes names a CRD's schemas."""
    return ".".join(reversed(group.split(".")))


def kind(group: str, version: str, name: str, description: str, spec: Schema, st: Schema) -> Schema:
    """A top-level kind: apiVersion, kind, metadata, spec, status, tagged with its GVK."""
    shell = obj(
        description,
        {
            "apiVersion": string(
                "APIVersion defines the versioned schema of this representation of an object: "
                f"{group}/{version}."
            ),
            "kind": string(
                f"Kind is a string value representing the REST resource this object represents: {name}."
            ),
            "metadata": object_meta(),
            "spec": spec,
            "status": st,
        },
        name=f"{reversed_group(group)}.{version}.{name}",
    )
    return replace(shell, gvk=(group, version, name))
