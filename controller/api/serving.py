"""Knative serving.knative.dev/v1 Service, Configuration, Revision, Route: defaults, validation."""

from __future__ import annotations

import copy
from typing import Any

from controller.api import autoscaling
from controller.api import serving_annotations as ann
from controller.api import serving_embedded as emb
from controller.api.meta import (
    as_dict,
    err_disallowed,
    err_invalid_key_name,
    err_invalid_value,
    err_missing_field,
    join,
    metadata,
    name_errors,
    owner_references,
    set_default_namespace,
    validate_object_metadata,
)
from controller.api.naming import (
    CONFIGURATION_GENERATION_LABEL,
    CONFIGURATION_LABEL,
    CONFIGURATION_UID_LABEL,
    CREATOR_ANNOTATION,
    GROUP_PREFIX,
    ROUTE_LABEL,
    ROUTING_STATE_LABEL,
    SERVICE_LABEL,
    SERVICE_UID_LABEL,
    VISIBILITY_CLUSTER_LOCAL,
    VISIBILITY_LABEL,
)
from controller.api.serving_children import (
    child_annotations,
    child_labels,
    configuration_from_service,
    revision_from_configuration,
    route_from_service,
    routing_annotations,
)
from controller.api.serving_podspec import (
    revision_spec_errors,
    revision_spec_warnings,
    set_revision_spec_defaults,
)
from controller.api.serving_traffic import set_traffic_defaults, traffic_errors
from controller.api.types import FieldError, Obj

TEMPLATE_METADATA_FIELDS = frozenset(
    {"name", "generateName", "labels", "annotations", "creationTimestamp"}
)

# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------


def _dict_field(obj: dict[str, Any], key: str) -> dict[str, Any] | None:
    """obj[key], created empty when absent; None when it holds something that is not an object."""
    value = obj.get(key)
    if value is None:
        value = obj[key] = {}
    return value if isinstance(value, dict) else None


def _template_defaults(spec: dict[str, Any]) -> None:
    template = _dict_field(spec, "template")
    if template is not None and (rspec := _dict_field(template, "spec")) is not None:
        set_revision_spec_defaults(rspec)


def default_service(obj: Obj) -> None:
    """Service.SetDefaults: namespace, the template's revision spec, traffic to the latest."""
    set_default_namespace(obj)
    if (spec := _dict_field(obj, "spec")) is not None:
        _template_defaults(spec)
        set_traffic_defaults(spec, default_configuration=True)


def default_configuration(obj: Obj) -> None:
    set_default_namespace(obj)
    if (spec := _dict_field(obj, "spec")) is not None:
        _template_defaults(spec)


def default_revision(obj: Obj) -> None:
    set_default_namespace(obj)
    if (spec := _dict_field(obj, "spec")) is not None:
        set_revision_spec_defaults(spec)


def default_route(obj: Obj) -> None:
    """Route.SetDefaults: no default traffic for a standalone Route; targets get latestRevision."""
    set_default_namespace(obj)
    if (spec := _dict_field(obj, "spec")) is not None:
        set_traffic_defaults(spec, default_configuration=False)


# ---------------------------------------------------------------------------------------------
# Labels the controller owns
# ---------------------------------------------------------------------------------------------


def _owned_by(obj: Obj, kind: str, name: str) -> bool:
    return any(r.get("kind") == kind and r.get("name") == name for r in owner_references(obj))


def _label_errors(
    obj: Obj, known: frozenset[str], owner_checked: dict[str, str]
) -> list[FieldError]:
    """serving.knative.dev/* labels: `known` ones pass, `owner_checked` ones (label → owner kind)
    need a matching ownerReference, any other is refused; the visibility label is cluster-local."""
    path = "metadata.labels"
    errs: list[FieldError] = []
    for key, value in sorted(as_dict(metadata(obj).get("labels")).items()):
        if key == VISIBILITY_LABEL:
            if value != VISIBILITY_CLUSTER_LOCAL:
                errs.append(err_invalid_value(value, join(path, key)))
        elif key in owner_checked:
            if not _owned_by(obj, owner_checked[key], str(value)):
                errs.append(err_missing_field(join(path, key)))
        elif key in known:
            continue
        elif key.startswith(GROUP_PREFIX):
            errs.append(err_invalid_key_name(key, path))
    return errs


_SERVICE_LABELS: frozenset[str] = frozenset()
_CONFIGURATION_LABELS = frozenset({ROUTE_LABEL, CONFIGURATION_UID_LABEL, SERVICE_UID_LABEL})
_ROUTE_LABELS = frozenset({SERVICE_UID_LABEL})
_REVISION_LABELS = frozenset(
    {
        ROUTING_STATE_LABEL,
        ROUTE_LABEL,
        SERVICE_LABEL,
        CONFIGURATION_UID_LABEL,
        SERVICE_UID_LABEL,
        CONFIGURATION_GENERATION_LABEL,
    }
)


# ---------------------------------------------------------------------------------------------
# The revision template (spec.template of a Service or Configuration)
# ---------------------------------------------------------------------------------------------


def template_errors(
    template: Any, path: str, parent: Obj, *, embedded: bool = True
) -> list[FieldError]:
    """RevisionTemplateSpec.Validate: its spec, autoscaling annotations, and a chosen name."""
    if template is None:
        return [err_missing_field(path)]
    if not isinstance(template, dict):
        return [err_invalid_value(template, path, "expected an object")]
    errs = [
        err_disallowed(join(path, k)) for k in sorted(template) if k not in ("metadata", "spec")
    ]
    raw_meta = template.get("metadata")
    meta = as_dict(raw_meta)
    mpath = join(path, "metadata")
    if raw_meta is not None and not isinstance(raw_meta, dict):
        errs.append(err_invalid_value(raw_meta, mpath, "expected an object"))
    errs += [
        err_disallowed(join(mpath, k)) for k in sorted(meta) if k not in TEMPLATE_METADATA_FIELDS
    ]
    errs += revision_spec_errors(template.get("spec"), join(path, "spec"), embedded=embedded)
    # Labels and annotations syntax, via the shared checker on a stand-in object.
    stand_in = {
        "metadata": {
            "name": "x",
            "labels": meta.get("labels"),
            "annotations": meta.get("annotations"),
        }
    }
    errs += validate_object_metadata(stand_in, path=mpath)
    errs += autoscaling.validate_annotations(meta.get("annotations"), join(mpath, "annotations"))
    errs += _revision_name_errors(meta, mpath, metadata(parent))
    return errs


def _revision_name_errors(
    meta: dict[str, Any], path: str, parent: dict[str, Any]
) -> list[FieldError]:
    """validateRevisionName: a chosen revision name is a DNS-1035 label prefixed `<parent>-`."""
    generate_name = meta.get("generateName")
    if generate_name and (found := name_errors(generate_name, "", prefix=True)):
        return [err_invalid_value(found[0].message, join(path, "generateName"))]
    name = meta.get("name")
    if not name:
        return []
    if found := name_errors(name, ""):
        return [err_invalid_value(found[0].message, join(path, "name"))]
    parent_name = parent.get("name") or ""
    if not parent_name and parent.get("generateName"):
        return [err_disallowed(join(path, "name"))]
    prefix = parent_name + "-"
    if not str(name).startswith(prefix):
        return [err_invalid_value(f'"{name}" must have prefix "{prefix}"', join(path, "name"))]
    return []


def _comparable_template(template: Any) -> Any:
    t = copy.deepcopy(template)
    if isinstance(t, dict) and isinstance(t.get("spec"), dict):
        set_revision_spec_defaults(t["spec"])
    return t


def verify_name_change(new: Any, old: Any, path: str) -> list[FieldError]:
    """A template that keeps its chosen name may not change (the named revision already exists)."""
    name = as_dict(as_dict(new).get("metadata")).get("name")
    if not name or name != as_dict(as_dict(old).get("metadata")).get("name"):
        return []
    if _comparable_template(new) != _comparable_template(old):
        return [
            FieldError(
                join(path, "metadata.name"),
                "Saw the following changes without a name change (-old +new)",
            )
        ]
    return []


def _creator_errors(new: Obj, old: Obj | None) -> list[FieldError]:
    if old is None:
        return []
    before = as_dict(metadata(old).get("annotations")).get(CREATOR_ANNOTATION)
    after = as_dict(metadata(new).get("annotations")).get(CREATOR_ANNOTATION)
    if before != after:
        return [
            FieldError(
                join("metadata.annotations", CREATOR_ANNOTATION), "annotation value is immutable"
            )
        ]
    return []


def _spec(obj: Obj, allowed: tuple[str, ...]) -> tuple[dict[str, Any], list[FieldError]]:
    raw = obj.get("spec")
    if raw is None:
        return {}, [err_missing_field("spec")]
    if not isinstance(raw, dict):
        return {}, [err_invalid_value(raw, "spec", "expected an object")]
    return raw, [err_disallowed(join("spec", k)) for k in sorted(raw) if k not in allowed]


# ---------------------------------------------------------------------------------------------
# Validation per kind: (new, old | None) → errors
# ---------------------------------------------------------------------------------------------


def validate_service(new: Obj, old: Obj | None, *, embedded: bool = True) -> list[FieldError]:
    errs = validate_object_metadata(new)
    errs += _label_errors(new, _SERVICE_LABELS, {})
    errs += autoscaling.has_no_autoscaling_annotations(metadata(new).get("annotations"))
    errs += ann.rollout_duration_errors(metadata(new).get("annotations"))
    spec, spec_errs = _spec(new, ("template", "traffic"))
    errs += spec_errs
    if spec or not spec_errs:
        errs += template_errors(spec.get("template"), "spec.template", new, embedded=embedded)
        errs += traffic_errors(spec.get("traffic"), "spec.traffic", default_configuration=True)
    if old is not None:
        errs += _creator_errors(new, old)
        errs += verify_name_change(
            spec.get("template"), as_dict(old.get("spec")).get("template"), "spec.template"
        )
    return errs


def validate_configuration(new: Obj, old: Obj | None, *, embedded: bool = True) -> list[FieldError]:
    errs = validate_object_metadata(new)
    errs += _label_errors(new, _CONFIGURATION_LABELS, {SERVICE_LABEL: "Service"})
    errs += autoscaling.has_no_autoscaling_annotations(metadata(new).get("annotations"))
    spec, spec_errs = _spec(new, ("template",))
    errs += spec_errs
    if spec or not spec_errs:
        errs += template_errors(spec.get("template"), "spec.template", new, embedded=embedded)
    if old is not None:
        if not owner_references(new):
            errs += _creator_errors(new, old)
        errs += verify_name_change(
            spec.get("template"), as_dict(old.get("spec")).get("template"), "spec.template"
        )
    return errs


def validate_revision(new: Obj, old: Obj | None, *, embedded: bool = True) -> list[FieldError]:
    errs = validate_object_metadata(new)
    errs += _label_errors(new, _REVISION_LABELS, {CONFIGURATION_LABEL: "Configuration"})
    errs += autoscaling.validate_annotations(metadata(new).get("annotations"))
    if old is not None:
        if new.get("spec") != old.get("spec"):
            errs.append(FieldError("spec", "Immutable fields changed (-old +new)"))
        return errs
    return errs + revision_spec_errors(new.get("spec"), "spec", embedded=embedded)


def validate_route(new: Obj, old: Obj | None) -> list[FieldError]:
    errs = validate_object_metadata(new)
    errs += _label_errors(new, _ROUTE_LABELS, {SERVICE_LABEL: "Service"})
    errs += ann.rollout_duration_errors(metadata(new).get("annotations"))
    spec, spec_errs = _spec(new, ("traffic",))
    errs += spec_errs
    if spec or not spec_errs:
        errs += traffic_errors(spec.get("traffic"), "spec.traffic", default_configuration=False)
    if old is not None and not owner_references(new):
        errs += _creator_errors(new, old)
    return errs


# ---------------------------------------------------------------------------------------------
# Warnings: accepted fields the embedded engine does not honour
# ---------------------------------------------------------------------------------------------

_TBC = "metadata.annotations." + autoscaling.TARGET_BURST_CAPACITY[0]


def _template_warnings(meta: Any, spec: Any, path: str) -> list[str]:
    out: list[str] = []
    notes = as_dict(as_dict(meta).get("annotations"))
    if autoscaling.get(notes, autoscaling.TARGET_BURST_CAPACITY) is not None:
        out.append(emb.warned(_TBC, join(path, _TBC)))
    out += ann.template_annotation_warnings(notes, join(path, "metadata.annotations"))
    return out + revision_spec_warnings(spec, join(path, "spec"))


def configuration_warnings(obj: Obj) -> list[str]:
    template = as_dict(as_dict(obj.get("spec")).get("template"))
    return _template_warnings(template.get("metadata"), template.get("spec"), "spec.template")


def service_warnings(obj: Obj) -> list[str]:
    return route_warnings(obj) + configuration_warnings(obj)


def route_warnings(obj: Obj) -> list[str]:
    return ann.object_annotation_warnings(metadata(obj).get("annotations"))


def revision_warnings(obj: Obj) -> list[str]:
    return _template_warnings(obj.get("metadata"), obj.get("spec"), "")


__all__ = [
    "child_annotations",
    "child_labels",
    "configuration_from_service",
    "configuration_warnings",
    "default_configuration",
    "default_revision",
    "default_route",
    "default_service",
    "revision_from_configuration",
    "revision_warnings",
    "route_from_service",
    "route_warnings",
    "routing_annotations",
    "service_warnings",
    "template_errors",
    "validate_configuration",
    "validate_revision",
    "validate_route",
    "validate_service",
    "verify_name_change",
]
