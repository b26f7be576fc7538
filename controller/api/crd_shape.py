"""A whole CRD checked as a cluster would (names, versions, printer columns, structural schemas)
and as Flint's must all be (Namespaced, one served storage version). Pure: a dict in, errors out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from controller.api.crd_structural import StructuralError, structural_errors

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""DNS-1035: what plural, singular, short names and categories must be."""
COLUMN_TYPES = frozenset({"integer", "number", "string", "boolean", "date"})


def crd_errors(crd: Any) -> list[StructuralError]:
    """Every problem of `crd`: its kind, `metadata.name` = `<plural>.<group>`, its names, the
    Namespaced scope, every version served and exactly one storage version, each version's
    printer columns and structural schema."""
    if not isinstance(crd, Mapping):
        return [StructuralError("", "crd", "must be an object")]
    errs = []
    if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
        errs.append(StructuralError("", "crd", "must be an apiextensions.k8s.io/v1 CustomResourceDefinition"))
    spec = _mapping(crd.get("spec"))
    names = _mapping(spec.get("names"))
    name = _mapping(crd.get("metadata")).get("name")
    want = f"{names.get('plural')}.{spec.get('group')}"
    if name != want:
        errs.append(
            StructuralError("metadata.name", "crd-name", f"must be <plural>.<group> ({want}), not {name}")
        )
    errs += _names(names)
    if spec.get("scope") != "Namespaced":
        errs.append(StructuralError("spec.scope", "crd-scope", "must be Namespaced"))
    versions: list[Any] = spec["versions"] if isinstance(spec.get("versions"), list) else []
    if not versions:
        errs.append(StructuralError("spec.versions", "crd-versions", "must list at least one version"))
    storage = [v for v in versions if isinstance(v, Mapping) and v.get("storage") is True]
    if versions and len(storage) != 1:
        errs.append(
            StructuralError(
                "spec.versions", "crd-storage", f"exactly one version must be storage, found {len(storage)}"
            )
        )
    for i, version in enumerate(versions):
        errs += _version(version, f"spec.versions[{i}]")
    return errs


def _names(names: Mapping[str, Any]) -> list[StructuralError]:
    errs = []
    kind = names.get("kind")
    if not kind or names.get("listKind") != f"{kind}List":
        errs.append(StructuralError("spec.names.listKind", "crd-names", f"must be {kind}List"))
    for field in ("plural", "singular"):
        value = names.get(field)
        if not isinstance(value, str) or not DNS_LABEL.match(value):
            errs.append(
                StructuralError(f"spec.names.{field}", "crd-names", "must be a lower-case DNS-1035 label")
            )
    for field in ("shortNames", "categories"):
        for i, value in enumerate(names.get(field) or []):
            if not isinstance(value, str) or not DNS_LABEL.match(value):
                errs.append(
                    StructuralError(
                        f"spec.names.{field}[{i}]", "crd-names", "must be a lower-case DNS-1035 label"
                    )
                )
    return errs


def _version(version: Any, at: str) -> list[StructuralError]:
    if not isinstance(version, Mapping):
        return [StructuralError(at, "crd", "must be an object")]
    errs = []
    if version.get("served") is not True:
        errs.append(StructuralError(f"{at}.served", "crd-served", "must be true"))
    for i, column in enumerate(version.get("additionalPrinterColumns") or []):
        where = f"{at}.additionalPrinterColumns[{i}]"
        column = _mapping(column)
        if not column.get("name") or not str(column.get("jsonPath", "")).startswith("."):
            errs.append(
                StructuralError(where, "crd-printer-column", "needs a name and a jsonPath starting with .")
            )
        if column.get("type") not in COLUMN_TYPES:
            errs.append(
                StructuralError(
                    f"{where}.type", "crd-printer-column", f"must be one of {', '.join(sorted(COLUMN_TYPES))}"
                )
            )
    schema = _mapping(version.get("schema")).get("openAPIV3Schema")
    errs += structural_errors(schema, f"{at}.schema.openAPIV3Schema")
    return errs


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
