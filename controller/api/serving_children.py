"""Pure builders of the children a Service or Configuration wants, and label propagation to them."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from controller.api.meta import (
    DEFAULT_NAMESPACE,
    LAST_APPLIED_ANNOTATION,
    as_dict,
    controller_ref,
    metadata,
)
from controller.api.naming import (
    API_VERSION,
    CONFIGURATION_GENERATION_LABEL,
    CONFIGURATION_LABEL,
    CONFIGURATION_UID_LABEL,
    CREATOR_ANNOTATION,
    ROUTES_ANNOTATION,
    ROUTING_STATE_ACTIVE,
    ROUTING_STATE_LABEL,
    ROUTING_STATE_MODIFIED_ANNOTATION,
    ROUTING_STATE_PENDING,
    SERVICE_LABEL,
    SERVICE_UID_LABEL,
    UPDATER_ANNOTATION,
    revision_name,
)
from controller.api.serving_traffic import default_traffic
from controller.api.types import Obj


def _strings(m: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in as_dict(m).items()}


def _template_meta(configuration: Obj) -> dict[str, Any]:
    return as_dict(as_dict(as_dict(configuration.get("spec")).get("template")).get("metadata"))


def child_labels(parent_kind: str, parent: Obj) -> dict[str, str]:
    """The labels a parent gives its children.

    - `Service` → its Configuration and Route: the Service's labels plus
      `serving.knative.dev/service` and `.../serviceUID`;
    - `Configuration` → its Revisions: the template's labels plus `.../configuration`,
      `.../configurationGeneration`, `.../configurationUID`, and `.../service`, `.../serviceUID`
      when the Configuration belongs to a Service;
    - `Route` → the Revisions it routes to: `.../routingState: active`.
    """
    meta = metadata(parent)
    if parent_kind == "Service":
        labels = _strings(meta.get("labels"))
        labels[SERVICE_LABEL] = str(meta.get("name", ""))
        if meta.get("uid"):
            labels[SERVICE_UID_LABEL] = str(meta["uid"])
        return labels
    if parent_kind == "Configuration":
        labels = _strings(_template_meta(parent).get("labels"))
        own = _strings(meta.get("labels"))
        labels[CONFIGURATION_LABEL] = str(meta.get("name", ""))
        labels[CONFIGURATION_GENERATION_LABEL] = str(meta.get("generation") or 1)
        if meta.get("uid"):
            labels[CONFIGURATION_UID_LABEL] = str(meta["uid"])
        for key in (SERVICE_LABEL, SERVICE_UID_LABEL):
            if own.get(key):
                labels[key] = own[key]
        return labels
    if parent_kind == "Route":
        return {ROUTING_STATE_LABEL: ROUTING_STATE_ACTIVE}
    raise ValueError(f"no label propagation from a {parent_kind}")


def child_annotations(parent_kind: str, parent: Obj) -> dict[str, str]:
    """The annotations a parent gives its children.

    - `Service` → Configuration and Route: the Service's, minus kubectl's last-applied copy;
    - `Configuration` → Revisions: the template's, plus `serving.knative.dev/creator` set to the
      Configuration's last modifier and `.../routes` copied, as Knative does.
    """
    meta = metadata(parent)
    if parent_kind == "Service":
        return {
            k: v
            for k, v in _strings(meta.get("annotations")).items()
            if k != LAST_APPLIED_ANNOTATION
        }
    if parent_kind == "Configuration":
        annotations = _strings(_template_meta(parent).get("annotations"))
        own = _strings(meta.get("annotations"))
        if UPDATER_ANNOTATION in own:
            annotations[CREATOR_ANNOTATION] = own[UPDATER_ANNOTATION]
        if ROUTES_ANNOTATION in own:
            annotations[ROUTES_ANNOTATION] = own[ROUTES_ANNOTATION]
        return annotations
    raise ValueError(f"no annotation propagation from a {parent_kind}")


def _child_meta(parent: Obj, kind: str) -> dict[str, Any]:
    meta = metadata(parent)
    return {
        "name": meta.get("name", ""),
        "namespace": meta.get("namespace") or DEFAULT_NAMESPACE,
        "labels": child_labels(kind, parent),
        "annotations": child_annotations(kind, parent),
        "ownerReferences": [controller_ref(parent)],
    }


def configuration_from_service(service: Obj) -> Obj:
    """The Configuration a Service wants: its name, the Service's `spec.template` unchanged.

    Only `spec.template` reaches the Configuration's spec, so changing a Service's own labels or
    annotations changes the Configuration's metadata, never its generation (no new Revision).
    """
    spec = as_dict(service.get("spec"))
    return {
        "apiVersion": API_VERSION,
        "kind": "Configuration",
        "metadata": _child_meta(service, "Service"),
        "spec": {"template": copy.deepcopy(spec.get("template") or {})},
    }


def route_from_service(service: Obj) -> Obj:
    """The Route a Service wants: its traffic, with floating targets bound to its Configuration."""
    meta = metadata(service)
    traffic = copy.deepcopy(as_dict(service.get("spec")).get("traffic") or default_traffic())
    for tt in traffic:
        if isinstance(tt, dict) and not tt.get("revisionName"):
            tt["configurationName"] = meta.get("name", "")
    return {
        "apiVersion": API_VERSION,
        "kind": "Route",
        "metadata": _child_meta(service, "Service"),
        "spec": {"traffic": traffic},
    }


def revision_from_configuration(configuration: Obj, now: str | None = None) -> Obj:
    """The Revision of a Configuration's current generation.

    Named by the template (`metadata.name`, or `generateName` for the store to complete) or
    `<configuration>-<generation:05d>`; labelled `routingState: pending` until a Route picks it
    up (`now`, an RFC 3339 time, stamps `routingStateModified` when given).
    """
    meta = metadata(configuration)
    template_meta = _template_meta(configuration)
    template_spec = as_dict(as_dict(configuration.get("spec")).get("template")).get("spec")
    labels = child_labels("Configuration", configuration)
    labels[ROUTING_STATE_LABEL] = ROUTING_STATE_PENDING
    annotations = child_annotations("Configuration", configuration)
    if now is not None:
        annotations[ROUTING_STATE_MODIFIED_ANNOTATION] = now
    rev_meta: dict[str, Any] = {
        "namespace": meta.get("namespace") or DEFAULT_NAMESPACE,
        "labels": labels,
        "annotations": annotations,
        "ownerReferences": [controller_ref(configuration)],
    }
    if template_meta.get("name"):
        rev_meta["name"] = template_meta["name"]
    elif template_meta.get("generateName"):
        rev_meta["generateName"] = template_meta["generateName"]
    else:
        rev_meta["name"] = revision_name(
            str(meta.get("name", "")), int(meta.get("generation") or 1)
        )
    return {
        "apiVersion": API_VERSION,
        "kind": "Revision",
        "metadata": rev_meta,
        "spec": copy.deepcopy(template_spec) if isinstance(template_spec, dict) else {},
    }


def routing_annotations(routes: Iterable[str], modified: str) -> dict[str, str]:
    """Annotations a Route reconciler sets on a Revision it routes to: `serving.knative.dev/routes`
    (sorted, comma-separated) and `routingStateModified` (`modified`, RFC 3339)."""
    names = sorted(set(routes))
    out = {ROUTING_STATE_MODIFIED_ANNOTATION: modified}
    if names:
        out[ROUTES_ANNOTATION] = ",".join(names)
    return out
