"""Schemas of serving.knative.dev/v1 Service, Configuration, Revision and Route, with the PodSpec
subset a revision accepts (the validators' own field sets, so the two cannot drift)."""

from __future__ import annotations

from controller.api.naming import GROUP, VERSION
from controller.api.schema import Schema, array, boolean, fields, integer, obj, string
from controller.api.schema_common import addressable, kind, status
from controller.api.schema_k8s import k8s
from controller.api.serving import TEMPLATE_METADATA_FIELDS
from controller.api.serving_container import CONTAINER_FIELDS
from controller.api.serving_podspec import REVISION_SPEC_FIELDS

PREFIX = "dev.knative.serving.v1"
PORT_FIELDS = ("name", "containerPort", "protocol")
RESOURCE_FIELDS = ("limits", "requests")
KNATIVE_REVISION_FIELDS = {
    "containerConcurrency": integer(
        "The most requests one replica serves at once; 0 (the default) means no limit."
    ),
    "timeoutSeconds": integer("The longest a request may take, in seconds (default 300, at most 600)."),
    "responseStartTimeoutSeconds": integer("The longest to wait for a response's first byte, in seconds."),
    "idleTimeoutSeconds": integer("The longest a response may be idle between two bytes, in seconds."),
}


def container() -> Schema:
    """The subset of a Kubernetes Container a revision accepts."""
    props = dict(fields(k8s("V1Container"), CONTAINER_FIELDS).properties)
    props["ports"] = array(
        fields(k8s("V1ContainerPort"), PORT_FIELDS),
        "The port the container listens on: at most one, named h2c, http1 or not at all.",
    )
    props["resources"] = fields(k8s("V1ResourceRequirements"), RESOURCE_FIELDS).described(
        props["resources"].description
    )
    return obj(
        "A container of a revision: the subset of a Kubernetes Container that Knative accepts.",
        props,
        name=f"{PREFIX}.Container",
    )


def revision_spec() -> Schema:
    pod = fields(k8s("V1PodSpec"), REVISION_SPEC_FIELDS - KNATIVE_REVISION_FIELDS.keys())
    props = dict(pod.properties)
    props["containers"] = array(container(), "The revision's containers; exactly one serves traffic.")
    props["initContainers"] = array(container(), "Containers run to completion before the others start.")
    props.update(KNATIVE_REVISION_FIELDS)
    return obj(
        "What a revision runs: a PodSpec subset plus Knative's concurrency and timeouts.",
        props,
        name=f"{PREFIX}.RevisionSpec",
    )


def revision_template() -> Schema:
    meta = fields(k8s("V1ObjectMeta"), TEMPLATE_METADATA_FIELDS).described(
        "Labels and annotations of the revisions; `name` chooses the next revision's name."
    )
    return obj(
        "The template of the revisions a Configuration stamps out.",
        {"metadata": meta, "spec": revision_spec().described("The revision's specification.")},
        name=f"{PREFIX}.RevisionTemplateSpec",
    )


def traffic(description: str) -> Schema:
    target = obj(
        "A share of a route's traffic and the revision or configuration it goes to.",
        {
            "tag": string("A name for the target's own URL (`{tag}-{route}.{namespace}.{domain}`)."),
            "revisionName": string("The revision to send the traffic to (pins it)."),
            "configurationName": string("The configuration whose latest ready revision gets the traffic."),
            "latestRevision": boolean(
                "Follow the latest ready revision (defaults to true when revisionName is not set)."
            ),
            "percent": integer("The share of the traffic, 0 to 100; the targets sum to 100."),
            "url": string("The tag's URL (in status only)."),
        },
        name=f"{PREFIX}.TrafficTarget",
    )
    return array(target, description)


_LATEST = {
    "latestReadyRevisionName": string("The latest revision created from the template that became ready."),
    "latestCreatedRevisionName": string("The latest revision created from the template."),
}
_ROUTED = {
    "url": string("The URL the resource is reached at."),
    "address": addressable("Where the resource is reached inside the platform."),
    "traffic": traffic("The traffic as routed, with revision names resolved."),
}


def _kind(name: str, description: str, spec: Schema, st: Schema) -> Schema:
    return kind(GROUP, VERSION, name, description, spec, st)


def service() -> Schema:
    spec = obj(
        "A Configuration's template and a Route's traffic in one object.",
        {
            "template": revision_template().described("The template of the service's revisions."),
            "traffic": traffic("How traffic is split between revisions (default: all to the latest ready)."),
        },
    )
    st = status("The service's state, written by the controller.", _ROUTED | _LATEST)
    return _kind("Service", "A Knative Service: a revision template and how traffic reaches it.", spec, st)


def configuration() -> Schema:
    spec = obj(
        "The template each change of which stamps out a new revision.",
        {"template": revision_template().described("The template of the configuration's revisions.")},
    )
    st = status("The configuration's state, written by the controller.", _LATEST)
    return _kind("Configuration", "A Knative Configuration: the desired state of revisions.", spec, st)


def revision() -> Schema:
    digests = obj(
        "A container's resolved image.",
        {
            "name": string("The container's name."),
            "imageDigest": string("The digest the image resolved to (sha256:…)."),
        },
    )
    st = status(
        "The revision's state, written by the controller.",
        {
            "logUrl": string("Where the revision's logs are."),
            "containerStatuses": array(digests, "Each container's image digest."),
            "actualReplicas": integer("Replicas running.", fmt="int32"),
            "desiredReplicas": integer("Replicas wanted.", fmt="int32"),
        },
    )
    spec = revision_spec().described("What the revision runs (immutable).")
    return _kind("Revision", "A Knative Revision: an immutable snapshot of code and configuration.", spec, st)


def route() -> Schema:
    spec = obj(
        "Where the route's traffic goes.",
        {"traffic": traffic("The targets and their shares of the traffic (summing to 100).")},
    )
    st = status("The route's state, written by the controller.", _ROUTED)
    return _kind("Route", "A Knative Route: named URLs and a traffic split between revisions.", spec, st)


def schemas() -> tuple[Schema, ...]:
    return (service(), configuration(), revision(), route())
