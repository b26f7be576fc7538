"""Kubernetes' structural-schema rules for a CRD's `openAPIV3Schema`, checked before a cluster
refuses the CRD (or silently disables pruning and defaulting). Pure: a schema in, errors out.

The rules are those of "Specifying a structural schema" (Kubernetes' CRD documentation) and the
apiextensions-apiserver's v1 validation:

1. every node has a non-empty `type`, except under `x-kubernetes-int-or-string: true` or
   `x-kubernetes-preserve-unknown-fields: true`;
2. a field or item named inside `allOf`/`anyOf`/`oneOf`/`not` is named outside them too;
3. inside those junctors: no `type`, `default`, `additionalProperties`, `nullable`,
   `description`, `title` or `x-kubernetes-*` extension (bar the int-or-string pattern);
4. `metadata` (at the root, or of an embedded resource) restricts only `name` and
   `generateName`;
and further: no `$ref` (or other unsupported keywords), `items` is one schema, `properties` and
`additionalProperties` exclude each other, `additionalProperties` is never false, the root is an
object, `x-kubernetes-int-or-string` has no type and only its `anyOf`/`allOf` pattern,
`x-kubernetes-preserve-unknown-fields` is never false, `uniqueItems` is never true.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean"})
UNSUPPORTED = ("$ref", "definitions", "id", "$schema", "patternProperties", "dependencies", "additionalItems")
"""Keywords a v1 CRD schema may not use at all."""
FORBIDDEN_IN_JUNCTORS = ("type", "default", "additionalProperties", "nullable", "description", "title")
INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]
METADATA_FIELDS = frozenset({"name", "generateName"})


@dataclass(frozen=True)
class StructuralError:
    """One broken rule: where (`openAPIV3Schema.properties[spec].type`), which rule, and why."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} ({self.rule})"


def structural_errors(schema: Any, path: str = "openAPIV3Schema") -> list[StructuralError]:
    """Every structural-schema rule `schema` (a CRD version's `openAPIV3Schema`) breaks."""
    if not isinstance(schema, Mapping):
        return [StructuralError(path, "schema", "must be an object")]
    errs = list(_node(schema, path, in_junctor=False))
    if schema.get("type") != "object":
        errs.append(StructuralError(f"{path}.type", "root-object", 'must be "object" at the root'))
    props = schema.get("properties")
    if isinstance(props, Mapping):
        errs += _root_fields(props, path)
    return errs


def _root_fields(props: Mapping[str, Any], path: str) -> list[StructuralError]:
    errs = []
    for name in ("apiVersion", "kind"):
        field = props.get(name)
        if isinstance(field, Mapping) and field.get("type") != "string":
            errs.append(
                StructuralError(f"{path}.properties[{name}].type", "root-type-meta", 'must be "string"')
            )
    meta = props.get("metadata")
    if isinstance(meta, Mapping):
        errs += _metadata(meta, f"{path}.properties[metadata]")
    return errs


def _metadata(meta: Mapping[str, Any], path: str) -> list[StructuralError]:
    """Rule 4: only `name` and `generateName` may be restricted, and only as strings."""
    errs = []
    if meta.get("type") != "object":
        errs.append(StructuralError(f"{path}.type", "metadata", 'must be "object"'))
    extra = sorted(set(meta) - {"type", "properties", "description"})
    if extra:
        errs.append(
            StructuralError(
                path,
                "metadata",
                f"must not specify anything other than name and generateName, found {', '.join(extra)}",
            )
        )
    props = meta.get("properties")
    if isinstance(props, Mapping):
        for name, field in sorted(props.items()):
            at = f"{path}.properties[{name}]"
            if name not in METADATA_FIELDS:
                errs.append(StructuralError(at, "metadata", "only name and generateName may be specified"))
            elif not isinstance(field, Mapping) or field.get("type") != "string":
                errs.append(StructuralError(f"{at}.type", "metadata", 'must be "string"'))
    return errs


def _node(s: Mapping[str, Any], path: str, *, in_junctor: bool) -> Iterator[StructuralError]:
    yield from _keywords(s, path)
    if in_junctor:
        yield from _forbidden_in_junctor(s, path)
    int_or_string = s.get("x-kubernetes-int-or-string") is True
    preserve = s.get("x-kubernetes-preserve-unknown-fields")
    if preserve is not None and preserve is not True:
        yield StructuralError(
            f"{path}.x-kubernetes-preserve-unknown-fields",
            "preserve-unknown-fields",
            "must be true or undefined",
        )
    kind = s.get("type")
    if kind is not None and kind not in TYPES:
        yield StructuralError(f"{path}.type", "type", f"must be one of {', '.join(sorted(TYPES))}")
    if not in_junctor and not kind and not int_or_string and preserve is not True:
        yield StructuralError(f"{path}.type", "type-required", "must not be empty for specified fields")
    if int_or_string:
        yield from _int_or_string(s, path)
    if s.get("x-kubernetes-embedded-resource") is True:
        yield from _embedded_resource(s, path)
    if "properties" in s and "additionalProperties" in s:
        yield StructuralError(
            path,
            "properties-xor-additionalProperties",
            "additionalProperties and properties are mutually exclusive",
        )
    if s.get("additionalProperties") is False:
        yield StructuralError(f"{path}.additionalProperties", "additionalProperties", "must not be false")
    if s.get("uniqueItems") is True:
        yield StructuralError(f"{path}.uniqueItems", "uniqueItems", "must not be true")
    yield from _children(s, path, in_junctor=in_junctor)
    yield from _junctors(s, path, in_junctor=in_junctor, int_or_string=int_or_string)


def _keywords(s: Mapping[str, Any], path: str) -> Iterator[StructuralError]:
    for key in UNSUPPORTED:
        if key in s:
            yield StructuralError(f"{path}.{key}", "unsupported", f"{key} is not supported in a CRD schema")
    items = s.get("items")
    if items is not None and not isinstance(items, Mapping):
        yield StructuralError(
            f"{path}.items", "items-single-schema", "must be a schema, not a list of schemas"
        )


def _forbidden_in_junctor(s: Mapping[str, Any], path: str) -> Iterator[StructuralError]:
    """Rule 3: what a schema inside `allOf`/`anyOf`/`oneOf`/`not` (at any depth) may not set."""
    forbidden = [k for k in FORBIDDEN_IN_JUNCTORS if k in s]
    forbidden += sorted(k for k in s if k.startswith("x-kubernetes-"))
    for key in forbidden:
        yield StructuralError(
            f"{path}.{key}",
            "junctor-forbidden-field",
            f"{key} must be empty inside allOf, anyOf, oneOf or not",
        )


def _embedded_resource(s: Mapping[str, Any], path: str) -> Iterator[StructuralError]:
    if s.get("type") != "object":
        yield StructuralError(
            f"{path}.type", "embedded-resource", 'must be "object" for an embedded resource'
        )
    if "properties" not in s and s.get("x-kubernetes-preserve-unknown-fields") is not True:
        yield StructuralError(
            path, "embedded-resource", "needs properties or x-kubernetes-preserve-unknown-fields: true"
        )
    props = s.get("properties")
    if isinstance(props, Mapping) and isinstance(props.get("metadata"), Mapping):
        yield from _metadata(props["metadata"], f"{path}.properties[metadata]")


def _children(s: Mapping[str, Any], path: str, *, in_junctor: bool) -> Iterator[StructuralError]:
    props = s.get("properties")
    if isinstance(props, Mapping):
        for name, child in sorted(props.items()):
            yield from _child(child, f"{path}.properties[{name}]", in_junctor)
    extra = s.get("additionalProperties")
    if isinstance(extra, Mapping):
        yield from _child(extra, f"{path}.additionalProperties", in_junctor)
    items = s.get("items")
    if isinstance(items, Mapping):
        yield from _child(items, f"{path}.items", in_junctor)


def _child(child: Any, path: str, in_junctor: bool) -> Iterator[StructuralError]:
    if isinstance(child, Mapping):
        yield from _node(child, path, in_junctor=in_junctor)
    else:
        yield StructuralError(path, "schema", "must be a schema object")


def _int_or_string(s: Mapping[str, Any], path: str) -> Iterator[StructuralError]:
    """`x-kubernetes-int-or-string: true`: no type, and as junctors only `anyOf: [integer,
    string]`, perhaps inside an `allOf`."""
    if "type" in s:
        yield StructuralError(
            f"{path}.type", "int-or-string", "must be empty with x-kubernetes-int-or-string"
        )
    any_of = s.get("anyOf")
    if any_of is not None and any_of != INT_OR_STRING_ANY_OF:
        yield StructuralError(
            f"{path}.anyOf",
            "int-or-string",
            "must be [{type: integer}, {type: string}] with x-kubernetes-int-or-string",
        )


def _branches(s: Mapping[str, Any], path: str) -> Iterator[tuple[str, str, Any]]:
    for key in JUNCTORS:
        if key not in s:
            continue
        value = s[key]
        if key == "not":
            yield key, f"{path}.not", value
        elif isinstance(value, list):
            for i, branch in enumerate(value):
                yield key, f"{path}.{key}[{i}]", branch
        else:
            yield key, f"{path}.{key}", value


def _junctors(
    s: Mapping[str, Any], path: str, *, in_junctor: bool, int_or_string: bool
) -> Iterator[StructuralError]:
    """Rules 2 and 3 for the junctors of `s`."""
    for key, at, branch in _branches(s, path):
        if not isinstance(branch, Mapping):
            yield StructuralError(at, "schema", "must be a schema object")
            continue
        if int_or_string and (
            key == "anyOf" or (key == "allOf" and branch == {"anyOf": INT_OR_STRING_ANY_OF})
        ):
            continue  # the int-or-string pattern (`_int_or_string` checks it): its types are the point
        if not in_junctor:
            yield from _specified_outside(branch, s, at)
        yield from _node(branch, at, in_junctor=True)


def _specified_outside(
    branch: Mapping[str, Any], outside: Mapping[str, Any], path: str
) -> Iterator[StructuralError]:
    """Rule 2: each field and item a junctor's branch names is named outside the junctors too."""
    named = outside.get("properties")
    named = named if isinstance(named, Mapping) else {}
    props = branch.get("properties")
    if isinstance(props, Mapping):
        for name, child in sorted(props.items()):
            at = f"{path}.properties[{name}]"
            if name not in named:
                yield StructuralError(
                    at, "junctor-field-specified-outside", "must be specified outside the junctor too"
                )
            elif isinstance(child, Mapping) and isinstance(named[name], Mapping):
                yield from _specified_outside(child, named[name], at)
    items = branch.get("items")
    if items is not None:
        if "items" not in outside:
            yield StructuralError(
                f"{path}.items",
                "junctor-field-specified-outside",
                "must be specified outside the junctor too",
            )
        elif isinstance(items, Mapping) and isinstance(outside["items"], Mapping):
            yield from _specified_outside(items, outside["items"], f"{path}.items")
    for _key, at, nested in _branches(branch, path):
        if isinstance(nested, Mapping):
            yield from _specified_outside(nested, outside, at)


def crd_errors(crd: Any) -> list[StructuralError]:
    """What a cluster would refuse in a whole CRD, or what Flint's CRDs must all be: named
    `<plural>.<group>`, Namespaced, every version served, exactly one storage version, and each
    version's schema structural."""
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
    kind = names.get("kind")
    if not kind or names.get("listKind") != f"{kind}List":
        errs.append(StructuralError("spec.names.listKind", "crd-names", f"must be {kind}List"))
    if spec.get("scope") != "Namespaced":
        errs.append(StructuralError("spec.scope", "crd-scope", "must be Namespaced"))
    versions: list[Any] = spec["versions"] if isinstance(spec.get("versions"), list) else []
    storage = [v for v in versions if isinstance(v, Mapping) and v.get("storage") is True]
    if versions and len(storage) != 1:
        errs.append(
            StructuralError(
                "spec.versions", "crd-storage", f"exactly one version must be storage, found {len(storage)}"
            )
        )
    for i, version in enumerate(versions):
        at = f"spec.versions[{i}]"
        if not isinstance(version, Mapping):
            errs.append(StructuralError(at, "crd", "must be an object"))
            continue
        if version.get("served") is not True:
            errs.append(StructuralError(f"{at}.served", "crd-served", "must be true"))
        schema = _mapping(version.get("schema")).get("openAPIV3Schema")
        errs += structural_errors(schema, f"{at}.schema.openAPIV3Schema")
    if not versions:
        errs.append(StructuralError("spec.versions", "crd-versions", "must list at least one version"))
    return errs


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
