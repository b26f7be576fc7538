"""The typed schema model of Flint's API types, rendered as OpenAPI v3 or as a CRD's schema.

A `Schema` describes one value: its type, its fields or items, and its documentation. The same
tree is rendered two ways: `openapi` (named schemas become `#/components/schemas/...` references,
what `/openapi/v3` serves and `kubectl explain` reads) and `crd_schema` (everything inlined, the
structural `openAPIV3Schema` a CustomResourceDefinition wants). `controller.api.schema_check`
walks the same tree to find unknown fields and wrong types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

Json = dict[str, Any]


@dataclass(frozen=True, eq=False)
class Schema:
    """One node. `type` is an OpenAPI type, or "" for int-or-string and preserve-unknown nodes.

    `doc` describes the type (a named schema's component), `description` its use as a field.
    """

    type: str = ""
    description: str = ""
    doc: str = ""
    properties: Mapping[str, Schema] = field(default_factory=dict)
    items: Schema | None = None
    values: Schema | None = None
    """additionalProperties: the schema of every value of a map."""
    required: tuple[str, ...] = ()
    enum: tuple[str, ...] = ()
    format: str = ""
    int_or_string: bool = False
    preserve_unknown: bool = False
    """Any value; unknown fields below are kept and never reported."""
    name: str = ""
    """A component name (`dev.knative.serving.v1.RevisionSpec`): referenced, not inlined."""
    gvk: tuple[str, str, str] | None = None
    """(group, version, kind) of a top-level kind: `x-kubernetes-group-version-kind`."""

    def described(self, description: str) -> Schema:
        """This schema used as a field with its own description."""
        return replace(self, description=description) if description else self


# -- builders ----------------------------------------------------------------------------------


def string(description: str = "", *, enum: tuple[str, ...] = (), fmt: str = "") -> Schema:
    return Schema("string", description, enum=enum, format=fmt)


def integer(description: str = "", *, fmt: str = "int64") -> Schema:
    return Schema("integer", description, format=fmt)


def boolean(description: str = "") -> Schema:
    return Schema("boolean", description)


def array(items: Schema, description: str = "") -> Schema:
    return Schema("array", description, items=items)


def string_map(description: str = "") -> Schema:
    return Schema("object", description, values=string())


def map_of(values: Schema, description: str = "") -> Schema:
    return Schema("object", description, values=values)


def int_or_string(description: str = "") -> Schema:
    return Schema("", description, int_or_string=True)


def preserve(description: str = "") -> Schema:
    """An object whose content is not described (kept as sent)."""
    return Schema("object", description, preserve_unknown=True)


def obj(
    description: str,
    properties: Mapping[str, Schema],
    *,
    name: str = "",
    required: tuple[str, ...] = (),
    preserve_unknown: bool = False,
) -> Schema:
    """An object with `properties` (JSON name → schema); `name` makes it a component."""
    return Schema(
        "object",
        doc=description if name else "",
        description="" if name else description,
        properties=dict(properties),
        required=required,
        name=name,
        preserve_unknown=preserve_unknown,
    )


def fields(schema: Schema, names: frozenset[str] | tuple[str, ...]) -> Schema:
    """`schema` with only the named properties, unnamed (a subset is not the original type)."""
    missing = set(names) - set(schema.properties)
    if missing:
        raise KeyError(f"{schema.name or 'schema'} has no field(s) {sorted(missing)}")
    kept = {k: v for k, v in schema.properties.items() if k in names}
    return replace(schema, properties=kept, name="", description=schema.description or schema.doc)


# -- rendering ---------------------------------------------------------------------------------


def _body(s: Schema, render: Any) -> Json:
    out: Json = {}
    if s.type:
        out["type"] = s.type
    if s.format:
        out["format"] = s.format
    if s.enum:
        out["enum"] = list(s.enum)
    if s.properties:
        out["properties"] = {k: render(v) for k, v in s.properties.items()}
    if s.required:
        out["required"] = list(s.required)
    if s.items is not None:
        out["items"] = render(s.items)
    if s.values is not None:
        out["additionalProperties"] = render(s.values)
    if s.int_or_string:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        out["x-kubernetes-int-or-string"] = True
    if s.preserve_unknown:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi(s: Schema, components: dict[str, Json]) -> Json:
    """`s` as an OpenAPI v3 schema; named schemas go into `components` and are referenced the way
    Kubernetes' own documents do (`allOf: [$ref]` when the field has a description)."""
    if not s.name:
        out = _body(s, lambda c: openapi(c, components))
        if s.description or s.doc:
            out = {"description": s.description or s.doc, **out}
        return out
    body = _body(s, lambda c: openapi(c, components))
    if s.doc:
        body = {"description": s.doc, **body}
    if s.gvk:
        group, version, kind = s.gvk
        body["x-kubernetes-group-version-kind"] = [{"group": group, "version": version, "kind": kind}]
    known = components.get(s.name)
    if known is None:
        components[s.name] = body
    elif known != body:
        raise ValueError(f"two different schemas are named {s.name}")
    ref = {"$ref": f"#/components/schemas/{s.name}"}
    return {"description": s.description, "allOf": [ref]} if s.description else ref


def crd_schema(s: Schema) -> Json:
    """`s` (a kind) as a CRD version's `schema.openAPIV3Schema`: inlined, structural, `metadata`
    left to the API server (`type: object`), as Kubernetes requires of a CRD."""

    def inline(c: Schema) -> Json:
        out = _body(c, inline)
        text = c.description or c.doc
        return {"description": text, **out} if text else out

    out = inline(replace(s, name=""))
    if "metadata" in out.get("properties", {}):
        out["properties"]["metadata"] = {"type": "object"}
    return out
