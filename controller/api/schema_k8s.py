"""Kubernetes' own types (ObjectMeta, Container, Probe, …) as `Schema`s, read from the generated
models of kubernetes_asyncio: their field names, types and documentation, never copied by hand."""

from __future__ import annotations

import inspect
import re
from dataclasses import replace
from functools import cache

from kubernetes_asyncio.client import models

from controller.api.schema import Schema, array, boolean, int_or_string, integer, map_of, preserve, string

META_MODELS = frozenset(
    {
        "V1ObjectMeta",
        "V1OwnerReference",
        "V1ManagedFieldsEntry",
        "V1LabelSelector",
        "V1LabelSelectorRequirement",
    }
)
"""Models of k8s.io/apimachinery's meta/v1; the others are k8s.io/api's core/v1."""

INT_OR_STRING = frozenset({("V1HTTPGetAction", "port"), ("V1TCPSocketAction", "port")})
"""Fields the generated models type as `object` that are IntOrString in Kubernetes."""
QUANTITY_MAPS = frozenset({("V1ResourceRequirements", "limits"), ("V1ResourceRequirements", "requests")})
"""Maps of resource quantities: `128Mi` or a plain number (the models say `dict(str, str)`)."""

INT_OR_STRING_SCHEMA = replace(
    int_or_string(),
    name="io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    doc="An integer or a string (a port's number or its name).",
)
QUANTITY = replace(
    int_or_string(),
    name="io.k8s.apimachinery.pkg.api.resource.Quantity",
    doc="A fixed-point number with an optional suffix: 128Mi, 1G, 500m, 1e9, or a plain number.",
)

_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")
_DOC_NOISE = re.compile(r"\s*# noqa: E501")


def component_name(model: str) -> str:
    """`V1Container` → `io.k8s.api.core.v1.Container`, the name Kubernetes' documents use."""
    bare = re.sub(r"^(Core)?V1", "", model)
    package = "io.k8s.apimachinery.pkg.apis.meta.v1" if model in META_MODELS else "io.k8s.api.core.v1"
    return f"{package}.{bare}"


def _doc(cls: type, attr: str) -> str:
    """The field's documentation: the middle paragraph of the model property's docstring."""
    raw = inspect.getdoc(getattr(cls, attr, None)) or ""
    paragraphs = [_DOC_NOISE.sub("", p).strip() for p in raw.split("\n\n")]
    middle = [p for p in paragraphs[1:] if p and not p.startswith(":")]
    return " ".join(middle)


def _of(model: str, field: str, kind: str) -> Schema:
    if (model, field) in INT_OR_STRING:
        return INT_OR_STRING_SCHEMA
    if (model, field) in QUANTITY_MAPS:
        return map_of(QUANTITY)
    if m := _LIST.match(kind):
        return array(_of(model, field, m.group(1)))
    if m := _DICT.match(kind):
        return map_of(_of(model, field, m.group(1)))
    scalars = {
        "str": string(),
        "int": integer(),
        "float": Schema("number", format="double"),
        "bool": boolean(),
        "datetime": string(fmt="date-time"),
        "date": string(fmt="date"),
        "object": preserve(),
    }
    if kind in scalars:
        return scalars[kind]
    return k8s(kind)


@cache
def k8s(model: str) -> Schema:
    """The named schema of a kubernetes_asyncio model (`V1Probe`), every field documented."""
    cls = getattr(models, model)
    properties = {
        cls.attribute_map[attr]: _of(model, cls.attribute_map[attr], kind).described(_doc(cls, attr))
        for attr, kind in cls.openapi_types.items()
    }
    return Schema("object", properties=properties, name=component_name(model))
