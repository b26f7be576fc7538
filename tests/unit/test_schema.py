"""The schema model: OpenAPI rendering with components, CRD rendering inlined and structural,
and decoding (unknown fields with their paths, pruning, wrong types)."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api.schema import (
    Schema,
    array,
    boolean,
    crd_schema,
    fields,
    int_or_string,
    integer,
    obj,
    openapi,
    preserve,
    string,
    string_map,
)
from controller.api.schema_check import decode
from controller.api.types import FieldError

PORT = obj("A port.", {"name": string("Its name."), "number": int_or_string("Its number.")}, name="x.Port")
THING = obj(
    "A thing.",
    {
        "metadata": obj("Metadata.", {"name": string()}),
        "spec": obj(
            "The spec.",
            {
                "ports": array(PORT.described("The ports."), "The ports."),
                "count": integer("How many."),
                "on": boolean(),
                "labels": string_map("Labels."),
                "extra": preserve("Anything."),
            },
        ),
        "status": obj("Status.", {"ready": boolean()}, preserve_unknown=True),
    },
    name="x.Thing",
)


def test_named_schemas_are_components_referenced_with_their_field_description() -> None:
    components: dict[str, Any] = {}
    out = openapi(THING, components)
    assert out == {"$ref": "#/components/schemas/x.Thing"}
    assert set(components) == {"x.Thing", "x.Port"}
    ports = components["x.Thing"]["properties"]["spec"]["properties"]["ports"]
    assert ports["items"] == {"description": "The ports.", "allOf": [{"$ref": "#/components/schemas/x.Port"}]}
    assert components["x.Port"]["description"] == "A port."
    number = components["x.Port"]["properties"]["number"]
    assert number["x-kubernetes-int-or-string"] is True and "type" not in number


def test_two_different_schemas_may_not_share_a_name() -> None:
    other = obj("Another port.", {"name": integer()}, name="x.Port")
    with pytest.raises(ValueError, match=r"x\.Port"):
        openapi(obj("Both.", {"a": PORT, "b": other}), {})


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_crd_schema_is_inlined_and_structural() -> None:
    out = crd_schema(THING)
    assert "$ref" not in str(out)
    assert out["properties"]["metadata"] == {"type": "object"}
    port = out["properties"]["spec"]["properties"]["ports"]["items"]
    assert port["description"] == "The ports." and port["properties"]["name"] == {
        "description": "Its name.",
        "type": "string",
    }
    for node in _walk(out["properties"]["spec"]):
        if "properties" in node or "items" in node or "additionalProperties" in node:
            assert node.get("type"), node


def test_fields_keeps_a_subset_and_refuses_unknown_names() -> None:
    sub = fields(PORT, ("name",))
    assert list(sub.properties) == ["name"] and sub.name == ""
    with pytest.raises(KeyError, match="nope"):
        fields(PORT, ("nope",))


def thing(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "t"}, "spec": spec}


def test_unknown_fields_are_found_with_their_paths_and_dropped() -> None:
    got = decode(THING, {**thing(ports=[{"name": "a"}, {"name": "b", "bogus": 1}], typo=2), "top": {}})
    assert got.unknown == ["spec.ports[1].bogus", "spec.typo", "top"]
    assert got.value == thing(ports=[{"name": "a"}, {"name": "b"}])
    assert got.type_errors == []


def test_maps_preserved_objects_and_status_keep_whatever_they_hold() -> None:
    body = {
        **thing(labels={"any": "x"}, extra={"deep": {"er": [1]}}),
        "status": {"ready": True, "conditions": []},
    }
    got = decode(THING, body)
    assert got.unknown == [] and got.type_errors == [] and got.value == body


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"count": "ten"}, FieldError("spec.count", "invalid value: ten; expected an integer")),
        ({"count": True}, FieldError("spec.count", "invalid value: true; expected an integer")),
        ({"on": "yes"}, FieldError("spec.on", "invalid value: yes; expected a boolean")),
        ({"ports": {"name": "a"}}, FieldError("spec.ports", 'invalid value: {"name":"a"}; expected a list')),
        ({"ports": ["a"]}, FieldError("spec.ports[0]", "invalid value: a; expected an object")),
        ({"labels": {"a": 1}}, FieldError("spec.labels.a", "invalid value: 1; expected a string")),
        (
            {"ports": [{"number": 1.5}]},
            FieldError("spec.ports[0].number", "invalid value: 1.5; expected an integer or a string"),
        ),
    ],
)
def test_wrong_types_are_errors_with_the_field_path(spec: dict[str, Any], error: FieldError) -> None:
    assert decode(THING, thing(**spec)).type_errors == [error]


def test_right_types_nulls_and_integral_floats_pass() -> None:
    body = thing(count=3.0, on=False, ports=[{"number": "http"}, {"number": 8080}, None], labels=None)
    got = decode(THING, body)
    assert got.type_errors == [] and got.unknown == []


def test_a_non_object_body_is_a_type_error_at_the_root() -> None:
    assert decode(Schema("object"), [1]).type_errors == [
        FieldError("<root>", "invalid value: [1]; expected an object")
    ]
