"""Kubernetes' structural-schema rules for a CRD's `openAPIV3Schema`, checked here so that no
cluster refuses Flint's CRDs (or drops pruning for them). Pure: a schema in, errors out.

The rules are those of "Specifying a structural schema" (Kubernetes' CRD documentation) as the
apiextensions-apiserver applies them (`pkg/apiserver/schema/validation.go`, and the v1 CRD
validation):

1. every node has a non-empty `type`, except under `x-kubernetes-int-or-string: true` or
   `x-kubernetes-preserve-unknown-fields: true`; an array has `items`, one schema;
2. a field or item named inside `allOf`/`anyOf`/`oneOf`/`not` is named outside them too;
3. inside those junctors (at any depth): no `type`, `default`, `additionalProperties`,
   `nullable`, `description`, `title`, `metadata` or structural extension, bar the int-or-string
   patterns (`anyOf: [integer, string]`, or that as an `allOf`'s first);
4. the root's `metadata` restricts only `name` and `generateName`;
and further: the root is an object without `additionalProperties` (its `apiVersion`, `kind` are
strings, `metadata` an object, as in an embedded resource); no `$ref` (or other keyword a CRD
refuses); `properties` with an `additionalProperties` schema (or false) is refused, and so is
`additionalProperties: false`, `uniqueItems: true`, `x-kubernetes-preserve-unknown-fields: false`;
`x-kubernetes-int-or-string` goes with neither a `type`, preserve-unknown-fields nor
embedded-resource; an embedded resource is an object with properties or preserve-unknown-fields,
and no `additionalProperties`.
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
FORBIDDEN_EXTENSIONS_IN_JUNCTORS = (
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
)
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
    if "additionalProperties" in schema:
        errs.append(
            StructuralError(f"{path}.additionalProperties", "root-object", "must not be used at the root")
        )
    errs += _type_meta(schema, path)
    meta = _mapping(schema.get("properties")).get("metadata")
    if isinstance(meta, Mapping):
        errs += _root_metadata(meta, f"{path}.properties[metadata]")
    return errs


def _type_meta(s: Mapping[str, Any], path: str) -> list[StructuralError]:
    """A resource's (the root's, an embedded one's) apiVersion, kind and metadata."""
    errs = []
    props = _mapping(s.get("properties"))
    for name, wanted in (("apiVersion", "string"), ("kind", "string"), ("metadata", "object")):
        field = props.get(name)
        if isinstance(field, Mapping) and field.get("type") != wanted:
            errs.append(
                StructuralError(f"{path}.properties[{name}].type", "type-meta", f'must be "{wanted}"')
            )
    return errs


def _root_metadata(meta: Mapping[str, Any], path: str) -> list[StructuralError]:
    """Rule 4: beyond `type: object`, only restrictions of `name` and `generateName`."""
    extra = sorted(set(meta) - {"type", "properties", "default"})
    names = sorted(_mapping(meta.get("properties")))
    others = [n for n in names if n not in METADATA_FIELDS]
    if not extra and not others:
        return []
    found = ", ".join([*extra, *(f"properties[{n}]" for n in others)])
    return [
        StructuralError(
            path, "metadata", f"must not specify anything other than name and generateName, found {found}"
        )
    ]


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
    if kind == "array" and "items" not in s:
        yield StructuralError(f"{path}.items", "items-required", "must be specified for an array")
    if int_or_string:
        yield from _int_or_string(s, path)
    if s.get("x-kubernetes-embedded-resource") is True:
        yield from _embedded_resource(s, path)
    extra = s.get("additionalProperties")
    if s.get("properties") and (extra is False or isinstance(extra, Mapping)):
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
    yield from _junctors(s, path, in_junctor=in_junctor)


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
    for key in (*FORBIDDEN_IN_JUNCTORS, *FORBIDDEN_EXTENSIONS_IN_JUNCTORS):
        if key in s:
            yield StructuralError(
                f"{path}.{key}",
                "junctor-forbidden-field",
                f"{key} must be empty inside allOf, anyOf, oneOf or not",
            )
    if "metadata" in _mapping(s.get("properties")):
        yield StructuralError(
            f"{path}.properties[metadata]",
            "junctor-forbidden-field",
            "metadata must not be specified in a junctor",
        )


def _embedded_resource(s: Mapping[str, Any], path: str) -> Iterator[StructuralError]:
    if s.get("type") != "object":
        yield StructuralError(
            f"{path}.type", "embedded-resource", 'must be "object" for an embedded resource'
        )
    if not s.get("properties") and s.get("x-kubernetes-preserve-unknown-fields") is not True:
        yield StructuralError(
            f"{path}.properties",
            "embedded-resource",
            "must not be empty for an embedded resource without x-kubernetes-preserve-unknown-fields",
        )
    if "additionalProperties" in s:
        yield StructuralError(
            f"{path}.additionalProperties", "embedded-resource", "must not be used for an embedded resource"
        )
    yield from _type_meta(s, path)


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
    """`x-kubernetes-int-or-string: true`: no type, nor the other two structural extensions."""
    if "type" in s:
        yield StructuralError(
            f"{path}.type", "int-or-string", "must be empty with x-kubernetes-int-or-string"
        )
    for key in ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource"):
        if s.get(key) is True:
            yield StructuralError(
                f"{path}.{key}", "int-or-string", "must be false with x-kubernetes-int-or-string"
            )


def _int_or_string_pattern(s: Mapping[str, Any], key: str, index: int, branch: Mapping[str, Any]) -> bool:
    """Kubernetes' two exceptions to rule 3: `anyOf: [{type: integer}, {type: string}]`, or that
    `anyOf` in the first branch of an `allOf`."""
    if s.get("x-kubernetes-int-or-string") is not True:
        return False
    if key == "anyOf":
        return s.get("anyOf") == INT_OR_STRING_ANY_OF
    return key == "allOf" and index == 0 and branch.get("anyOf") == INT_OR_STRING_ANY_OF


def _branches(s: Mapping[str, Any], path: str) -> Iterator[tuple[str, int, str, Any]]:
    """(junctor, index, path, schema) of each branch of each junctor of `s`."""
    for key in JUNCTORS:
        if key not in s:
            continue
        value = s[key]
        if key == "not" or not isinstance(value, list):
            yield key, 0, f"{path}.{key}", value
        else:
            for i, branch in enumerate(value):
                yield key, i, f"{path}.{key}[{i}]", branch


def _junctors(s: Mapping[str, Any], path: str, *, in_junctor: bool) -> Iterator[StructuralError]:
    """Rules 2 and 3 for the junctors of `s`."""
    for key, index, at, branch in _branches(s, path):
        if not isinstance(branch, Mapping):
            yield StructuralError(at, "schema", "must be a schema object")
            continue
        if _int_or_string_pattern(s, key, index, branch):
            if key == "anyOf":
                continue
            branch = {k: v for k, v in branch.items() if k != "anyOf"}
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
    for _key, _index, at, nested in _branches(branch, path):
        if isinstance(nested, Mapping):
            yield from _specified_outside(nested, outside, at)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
