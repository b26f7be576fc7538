"""The structural-schema checker: schemas breaking each rule once are refused, naming the path and
the rule; schemas using every allowed pattern pass. And a CRD's own shape (crd_shape.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.api.crd_shape import crd_errors
from controller.api.crd_structural import structural_errors

ROOT = "openAPIV3Schema"


def root(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


GOOD = root(
    apiVersion={"type": "string"},
    kind={"type": "string"},
    metadata={"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}},
    spec={
        "type": "object",
        "description": "fine outside a junctor",
        "properties": {
            "port": {
                "description": "int or string",
                "x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}],
            },
            "wrapped": {
                "x-kubernetes-int-or-string": True,
                "allOf": [{"anyOf": [{"type": "integer"}, {"type": "string"}]}, {"pattern": "^[0-9a-z]+$"}],
            },
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "open": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": True},
            "anything": {"x-kubernetes-preserve-unknown-fields": True},
            "partly": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"known": {"type": "string"}},
            },
            "either": {
                "type": "object",
                "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                "oneOf": [{"required": ["a"]}, {"required": ["b"]}, {"properties": {"a": {"minLength": 1}}}],
                "not": {"required": ["a", "b"]},
            },
            "list": {"type": "array", "items": {"type": "string"}, "anyOf": [{"items": {"maxLength": 3}}]},
            "embedded": {
                "type": "object",
                "x-kubernetes-embedded-resource": True,
                "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}},
            },
        },
    },
    status={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
)


def test_a_schema_using_every_allowed_pattern_is_structural() -> None:
    assert structural_errors(GOOD) == []


def broken(change: Any) -> dict[str, Any]:
    schema = copy.deepcopy(GOOD)
    change(schema["properties"]["spec"]["properties"])
    return schema


SPEC = f"{ROOT}.properties[spec].properties"


@pytest.mark.parametrize(
    ("schema", "path", "rule"),
    [
        pytest.param(
            broken(lambda p: p.update(count={"minimum": 1})),
            f"{SPEC}[count].type",
            "type-required",
            id="no-type",
        ),
        pytest.param(
            broken(lambda p: p["labels"]["additionalProperties"].pop("type")),
            f"{SPEC}[labels].additionalProperties.type",
            "type-required",
            id="map-values-without-type",
        ),
        pytest.param(
            broken(lambda p: p["list"]["items"].pop("type")),
            f"{SPEC}[list].items.type",
            "type-required",
            id="items-without-type",
        ),
        pytest.param(
            broken(lambda p: p.update(x={"type": "thing"})), f"{SPEC}[x].type", "type", id="unknown-type"
        ),
        pytest.param(
            broken(lambda p: p.update(ref={"type": "object", "$ref": "#/definitions/Thing"})),
            f"{SPEC}[ref].$ref",
            "unsupported",
            id="ref",
        ),
        pytest.param(
            broken(lambda p: p.update(x={"type": "object", "patternProperties": {"^a": {"type": "string"}}})),
            f"{SPEC}[x].patternProperties",
            "unsupported",
            id="patternProperties",
        ),
        pytest.param(
            broken(lambda p: p["list"].update(items=[{"type": "string"}])),
            f"{SPEC}[list].items",
            "items-single-schema",
            id="items-list",
        ),
        pytest.param(
            broken(lambda p: p["labels"].update(properties={"a": {"type": "string"}})),
            f"{SPEC}[labels]",
            "properties-xor-additionalProperties",
            id="properties-and-additionalProperties",
        ),
        pytest.param(
            broken(lambda p: p.update(closed={"type": "object", "additionalProperties": False})),
            f"{SPEC}[closed].additionalProperties",
            "additionalProperties",
            id="additionalProperties-false",
        ),
        pytest.param(
            broken(lambda p: p["list"].update(uniqueItems=True)),
            f"{SPEC}[list].uniqueItems",
            "uniqueItems",
            id="uniqueItems",
        ),
        pytest.param(
            broken(
                lambda p: p["anything"].update(
                    {"type": "object", "x-kubernetes-preserve-unknown-fields": False}
                )
            ),
            f"{SPEC}[anything].x-kubernetes-preserve-unknown-fields",
            "preserve-unknown-fields",
            id="preserve-false",
        ),
        pytest.param(
            broken(lambda p: p["port"].update(type="string")),
            f"{SPEC}[port].type",
            "int-or-string",
            id="int-or-string-with-type",
        ),
        pytest.param(
            broken(lambda p: p["port"].update(anyOf=[{"type": "integer"}, {"maxLength": 3}])),
            f"{SPEC}[port].anyOf[0].type",
            "junctor-forbidden-field",
            id="int-or-string-other-anyOf",
        ),
        pytest.param(
            broken(lambda p: p["wrapped"]["allOf"][0].update(description="no")),
            f"{SPEC}[wrapped].allOf[0].description",
            "junctor-forbidden-field",
            id="int-or-string-allOf-still-a-junctor",
        ),
        pytest.param(
            broken(lambda p: p["port"].update({"x-kubernetes-preserve-unknown-fields": True})),
            f"{SPEC}[port].x-kubernetes-preserve-unknown-fields",
            "int-or-string",
            id="int-or-string-and-preserve",
        ),
        pytest.param(
            broken(lambda p: p["list"].pop("items") and p["list"].pop("anyOf")),
            f"{SPEC}[list].items",
            "items-required",
            id="array-without-items",
        ),
        pytest.param(
            broken(lambda p: p["embedded"].update(anyOf=[{"properties": {"metadata": {}}}])),
            f"{SPEC}[embedded].anyOf[0].properties[metadata]",
            "junctor-forbidden-field",
            id="metadata-in-junctor",
        ),
        pytest.param(
            broken(lambda p: p["either"]["oneOf"][0].update(type="object")),
            f"{SPEC}[either].oneOf[0].type",
            "junctor-forbidden-field",
            id="type-in-oneOf",
        ),
        pytest.param(
            broken(lambda p: p["either"]["not"].update(description="no")),
            f"{SPEC}[either].not.description",
            "junctor-forbidden-field",
            id="description-in-not",
        ),
        pytest.param(
            broken(lambda p: p["either"]["oneOf"][2]["properties"]["a"].update(default="x")),
            f"{SPEC}[either].oneOf[2].properties[a].default",
            "junctor-forbidden-field",
            id="default-below-oneOf",
        ),
        pytest.param(
            broken(lambda p: p["list"]["anyOf"][0].update(nullable=True)),
            f"{SPEC}[list].anyOf[0].nullable",
            "junctor-forbidden-field",
            id="nullable-in-anyOf",
        ),
        pytest.param(
            broken(lambda p: p["list"]["anyOf"][0].update(additionalProperties={})),
            f"{SPEC}[list].anyOf[0].additionalProperties",
            "junctor-forbidden-field",
            id="additionalProperties-in-anyOf",
        ),
        pytest.param(
            broken(lambda p: p["either"]["oneOf"][1].update({"x-kubernetes-preserve-unknown-fields": True})),
            f"{SPEC}[either].oneOf[1].x-kubernetes-preserve-unknown-fields",
            "junctor-forbidden-field",
            id="extension-in-oneOf",
        ),
        pytest.param(
            broken(lambda p: p["either"]["oneOf"].append({"properties": {"c": {"minLength": 1}}})),
            f"{SPEC}[either].oneOf[3].properties[c]",
            "junctor-field-specified-outside",
            id="field-only-in-junctor",
        ),
        pytest.param(
            broken(lambda p: p["either"].update(allOf=[{"items": {"maxLength": 1}}])),
            f"{SPEC}[either].allOf[0].items",
            "junctor-field-specified-outside",
            id="items-only-in-junctor",
        ),
        pytest.param(
            broken(lambda p: p["embedded"].update(type="array", items={"type": "string"})),
            f"{SPEC}[embedded].type",
            "embedded-resource",
            id="embedded-resource-not-object",
        ),
        pytest.param(
            broken(lambda p: p["embedded"].update(additionalProperties=True)),
            f"{SPEC}[embedded].additionalProperties",
            "embedded-resource",
            id="embedded-resource-with-additionalProperties",
        ),
        pytest.param(
            broken(lambda p: p["embedded"]["properties"].update(kind={"type": "integer"})),
            f"{SPEC}[embedded].properties[kind].type",
            "type-meta",
            id="embedded-resource-kind-not-string",
        ),
    ],
)
def test_each_broken_rule_names_its_path_and_rule(schema: dict[str, Any], path: str, rule: str) -> None:
    errors = structural_errors(schema)
    assert [(e.path, e.rule) for e in errors] == [(path, rule)], [str(e) for e in errors]
    assert path in str(errors[0]) and rule in str(errors[0])


def test_the_root_must_be_an_object_with_string_type_meta_and_no_additional_properties() -> None:
    bad = copy.deepcopy(GOOD)
    bad["type"] = "array"
    bad["items"] = {"type": "string"}
    bad["properties"]["kind"] = {"type": "integer"}
    found = {(e.path, e.rule) for e in structural_errors(bad)}
    assert found == {(f"{ROOT}.type", "root-object"), (f"{ROOT}.properties[kind].type", "type-meta")}
    bad = copy.deepcopy(GOOD)
    bad["additionalProperties"] = True
    assert [(e.path, e.rule) for e in structural_errors(bad)] == [
        (f"{ROOT}.additionalProperties", "root-object")
    ]


META = f"{ROOT}.properties[metadata]"


@pytest.mark.parametrize(
    ("metadata", "path", "rule"),
    [
        ({"type": "object", "properties": {"labels": {"type": "object"}}}, META, "metadata"),
        ({"type": "object", "required": ["name"]}, META, "metadata"),
        ({"type": "object", "description": "even a description"}, META, "metadata"),
        ({"type": "string"}, f"{META}.type", "type-meta"),
    ],
)
def test_metadata_restricts_only_name_and_generate_name(
    metadata: dict[str, Any], path: str, rule: str
) -> None:
    bad = copy.deepcopy(GOOD)
    bad["properties"]["metadata"] = metadata
    errors = structural_errors(bad)
    assert [(e.path, e.rule) for e in errors] == [(path, rule)], [str(e) for e in errors]


def test_metadata_may_restrict_name_and_generate_name() -> None:
    ok = copy.deepcopy(GOOD)
    ok["properties"]["metadata"]["properties"]["generateName"] = {"type": "string", "maxLength": 10}
    assert structural_errors(ok) == []


def crd(**spec: Any) -> dict[str, Any]:
    version = {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": GOOD}}
    body = {
        "group": "things.example.dev",
        "names": {"kind": "Thing", "listKind": "ThingList", "plural": "things", "singular": "thing"},
        "scope": "Namespaced",
        "versions": [version],
    }
    body.update(spec)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.things.example.dev"},
        "spec": body,
    }


def test_a_well_formed_crd_passes() -> None:
    assert crd_errors(crd()) == []


def version(**change: Any) -> dict[str, Any]:
    return {"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": GOOD}, **change}


@pytest.mark.parametrize(
    ("change", "path", "rule"),
    [
        ({"group": "other.example.dev"}, "metadata.name", "crd-name"),
        ({"scope": "Cluster"}, "spec.scope", "crd-scope"),
        ({"versions": [version(), version(name="v2")]}, "spec.versions", "crd-storage"),
        ({"versions": [version(storage=False)]}, "spec.versions", "crd-storage"),
        ({"versions": [version(served=False)]}, "spec.versions[0].served", "crd-served"),
        ({"versions": []}, "spec.versions", "crd-versions"),
        (
            {"names": {"kind": "Thing", "listKind": "Things", "plural": "things", "singular": "thing"}},
            "spec.names.listKind",
            "crd-names",
        ),
        (
            {
                "names": {
                    "kind": "Thing",
                    "listKind": "ThingList",
                    "plural": "things",
                    "singular": "thing",
                    "shortNames": ["th", "Th"],
                }
            },
            "spec.names.shortNames[1]",
            "crd-names",
        ),
        (
            {
                "versions": [
                    version(additionalPrinterColumns=[{"name": "Age", "type": "time", "jsonPath": ".a"}])
                ]
            },
            "spec.versions[0].additionalPrinterColumns[0].type",
            "crd-printer-column",
        ),
        (
            {
                "versions": [
                    version(additionalPrinterColumns=[{"name": "Age", "type": "date", "jsonPath": "a"}])
                ]
            },
            "spec.versions[0].additionalPrinterColumns[0]",
            "crd-printer-column",
        ),
        (
            {"versions": [version(schema={"openAPIV3Schema": {"type": "object", "properties": {"a": {}}}})]},
            "spec.versions[0].schema.openAPIV3Schema.properties[a].type",
            "type-required",
        ),
    ],
)
def test_a_crd_of_the_wrong_shape_is_refused(change: dict[str, Any], path: str, rule: str) -> None:
    errors = crd_errors(crd(**change))
    assert [(e.path, e.rule) for e in errors] == [(path, rule)], [str(e) for e in errors]
