"""The contract fake's pure pieces (patches, selectors, CRD schemas), where edge cases are cheaper to pin."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import support.kubeapi as kubeapi
import yaml
from support.kubeapi import patches, schema, selectors
from support.kubeapi.crds import served_kinds as crd_kinds
from support.kubeapi.errors import ApiError


def test_json_patch_operations_apply_in_order_and_refuse_as_a_whole():
    doc = {"a": {"b": 1}, "l": [1, 2]}
    out = patches.json_patch(
        doc,
        [
            {"op": "add", "path": "/l/-", "value": 3},
            {"op": "add", "path": "/l/0", "value": 0},
            {"op": "copy", "from": "/a/b", "path": "/c"},
            {"op": "move", "from": "/a", "path": "/m"},
            {"op": "replace", "path": "/c", "value": "x"},
            {"op": "remove", "path": "/l/1"},
            {"op": "add", "path": "/k~1e~0y", "value": True},
            {"op": "test", "path": "/m", "value": {"b": 1}},
        ],
    )
    assert out == {"l": [0, 2, 3], "c": "x", "m": {"b": 1}, "k/e~y": True}
    assert doc == {"a": {"b": 1}, "l": [1, 2]}  # the input is untouched
    with pytest.raises(ApiError) as info:
        patches.json_patch(doc, [{"op": "remove", "path": "/missing"}])
    assert info.value.code == 422
    with pytest.raises(ApiError) as info:
        patches.json_patch(doc, {"op": "add"})
    assert info.value.code == 400


def test_merge_patch_and_the_simplified_apply():
    assert patches.merge_patch({"a": {"b": 1, "c": 2}, "l": [1]}, {"a": {"b": None}, "l": [2]}) == {
        "a": {"c": 2},
        "l": [2],
    }
    live = {"spec": {"containers": [{"name": "a", "image": "1", "env": []}, {"name": "b"}], "x": 1}}
    applied = {"spec": {"containers": [{"name": "a", "image": "2"}]}}
    assert patches.apply_merge(live, applied) == {
        "spec": {"containers": [{"name": "a", "image": "2", "env": []}, {"name": "b"}], "x": 1}
    }


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", ["a", "b", "c"]),
        ("app=a", ["a"]),
        ("app != a", ["b", "c"]),
        ("app in (a, b)", ["a", "b"]),
        ("app notin (a,b)", ["c"]),
        ("tier", ["a"]),
        ("!tier", ["b", "c"]),
        ("app,tier=web", ["a"]),
    ],
)
def test_label_selectors(selector, expected):
    objects = {"a": {"app": "a", "tier": "web"}, "b": {"app": "b"}, "c": {}}
    match = selectors.label_matcher(selector)
    assert [name for name, labels in objects.items() if match(labels)] == expected


def test_bad_selectors_are_400s():
    for bad in ("app in a", "a=b=c", "!app in (a)"):
        with pytest.raises(ApiError) as info:
            selectors.label_matcher(bad)
        assert info.value.code == 400, bad
    with pytest.raises(ApiError):
        selectors.field_matcher("spec.x=1", "pods")


SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["n"],
            "properties": {
                "n": {"type": "integer"},
                "f": {"type": "number"},
                "s": {"type": "string", "enum": ["a", "b"]},
                "d": {"type": "string", "default": "dflt"},
                "ios": {"x-kubernetes-int-or-string": True},
                "m": {"type": "object", "additionalProperties": {"type": "string"}},
                "z": {"type": "string", "nullable": True},
                "gone": {"type": "string"},
            },
        }
    },
}


def test_schema_prunes_defaults_and_keeps_what_it_knows():
    checked = schema.check(
        SCHEMA,
        {
            "apiVersion": "v",
            "kind": "K",
            "metadata": {"name": "x", "any": 1},
            "spec": {"n": 1, "f": 2, "ios": "50%", "m": {"k": "v"}, "z": None, "gone": None, "u": 1},
            "top": 1,
        },
    )
    assert checked.causes == []
    assert checked.unknown == ["spec.u", "top"]
    assert checked.obj["spec"] == {"n": 1, "f": 2, "ios": "50%", "m": {"k": "v"}, "z": None, "d": "dflt"}
    assert checked.obj["metadata"] == {"name": "x", "any": 1}


def test_schema_errors_name_the_path_and_rule():
    checked = schema.check(SCHEMA, {"spec": {"n": True, "s": "c", "m": {"k": 1}}})
    by_field = {c["field"]: c for c in checked.causes}
    assert by_field["spec.n"]["reason"] == "FieldValueTypeInvalid"
    assert (
        by_field["spec.n"]["message"]
        == 'Invalid value: "boolean": spec.n in body must be of type integer: "boolean"'
    )
    assert by_field["spec.s"]["message"] == 'Unsupported value: "c": supported values: "a", "b"'
    assert by_field["spec.m.k"]["reason"] == "FieldValueTypeInvalid"
    assert schema.check(SCHEMA, {"spec": {}}).causes == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.n"}
    ]


def test_the_fake_shares_no_code_with_flints_api_server_or_stores():
    """It exists to catch where they diverge from Kubernetes: sharing their code would hide that."""
    package = Path(kubeapi.__file__).parent
    for module in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.append(node.module)
            assert not [n for n in names if n == "controller" or n.startswith("controller.")], module.name


FLINT_CRDS = sorted((Path(__file__).parents[2] / "deploy" / "crds").glob("*.yaml"))


@pytest.mark.skipif(not FLINT_CRDS, reason="no deploy/crds/*.yaml in this checkout yet")
@pytest.mark.parametrize("path", FLINT_CRDS, ids=lambda p: p.name)
def test_flints_generated_crds_are_served(path):
    crds = [
        d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "CustomResourceDefinition"
    ]
    for crd in crds:
        served = crd_kinds(crd)
        assert served, f"{path.name}: {crd['metadata']['name']} serves no version"
        for res in served:
            assert res.schema is not None, f"{path.name}: {res.kind} {res.version} has no openAPIV3Schema"
            assert (
                schema.check(
                    res.schema, {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"name": "x"}}
                ).obj["kind"]
                == res.kind
            )
