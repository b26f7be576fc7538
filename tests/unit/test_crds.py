"""deploy/crds/ is what the command generates, from the registry, the printer columns and the kinds'
schemas; every CRD is structural, well formed, named as Knative names it, and typed or left to
the webhook per kind as README says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api import crds, openapi
from controller.api.crd_shape import crd_errors
from controller.api.printer_columns import columns_for
from controller.api.registry import TYPES
from controller.api.types import ResourceType

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds"
GENERATED = openapi.crd_files(TYPES)
BY_KIND = {c["spec"]["names"]["kind"]: c for c in crds.definitions(TYPES, openapi.crd_openapi_schema)}


def schema_of(kind: str) -> dict[str, Any]:
    schema: dict[str, Any] = BY_KIND[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def type_of(kind: str) -> ResourceType:
    return next(rt for rt in TYPES if rt.kind == kind)


def test_the_committed_crds_are_what_the_command_generates() -> None:
    committed = {p.name: p.read_text() for p in sorted(CRDS.glob("*.yaml"))}
    regenerate = f"deploy/crds/ is stale: regenerate it with `{crds.COMMAND}` and commit the result"
    assert sorted(committed) == sorted(GENERATED), regenerate
    for name, text in GENERATED.items():
        assert committed[name] == text, f"{name} differs. {regenerate}"


def test_every_served_kind_has_one_crd_and_the_kustomization_lists_them() -> None:
    assert {(c["spec"]["group"], k) for k, c in BY_KIND.items()} == {(rt.group, rt.kind) for rt in TYPES}
    assert len(BY_KIND) == len(TYPES) == 10
    kustomization = yaml.safe_load(GENERATED[crds.KUSTOMIZATION])
    assert kustomization["resources"] == sorted(f"{rt.plural}.{rt.group}.yaml" for rt in TYPES)


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_each_crd_is_well_formed_and_its_schema_structural(kind: str) -> None:
    crd = BY_KIND[kind]
    assert crd_errors(crd) == []
    rt = type_of(kind)
    assert crd["metadata"]["name"] == f"{rt.plural}.{rt.group}"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["scope"] == "Namespaced"
    # kubectl's client-side apply keeps the whole object in an annotation of at most 256 KiB
    assert len(GENERATED[f"{crd['metadata']['name']}.yaml"]) < 262144


@pytest.mark.parametrize(
    ("group", "kind", "plural", "short_names", "categories"),
    [
        ("serving.knative.dev", "Service", "services", ["kservice", "ksvc"], ["all", "knative", "serving"]),
        (
            "serving.knative.dev",
            "Configuration",
            "configurations",
            ["config", "cfg"],
            ["all", "knative", "serving"],
        ),
        ("serving.knative.dev", "Revision", "revisions", ["rev"], ["all", "knative", "serving"]),
        ("serving.knative.dev", "Route", "routes", ["rt"], ["all", "knative", "serving"]),
        ("eventing.knative.dev", "Broker", "brokers", None, ["all", "knative", "eventing"]),
        ("eventing.knative.dev", "Trigger", "triggers", None, ["all", "knative", "eventing"]),
        ("messaging.knative.dev", "Channel", "channels", ["ch"], ["all", "knative", "messaging", "channel"]),
        (
            "messaging.knative.dev",
            "InMemoryChannel",
            "inmemorychannels",
            ["imc"],
            ["all", "knative", "messaging", "channel"],
        ),
        (
            "messaging.flint.dev",
            "RedisChannel",
            "redischannels",
            ["rch"],
            ["all", "knative", "messaging", "channel"],
        ),
        ("messaging.knative.dev", "Subscription", "subscriptions", ["sub"], ["all", "knative", "messaging"]),
    ],
)
def test_names_are_knatives(
    group: str, kind: str, plural: str, short_names: list[str] | None, categories: list[str]
) -> None:
    spec = BY_KIND[kind]["spec"]
    assert spec["group"] == group
    names = spec["names"]
    assert names.get("shortNames") == short_names
    assert names["categories"] == categories
    assert (names["kind"], names["listKind"], names["plural"], names["singular"]) == (
        kind,
        f"{kind}List",
        plural,
        kind.lower(),
    )


def test_duck_labels_are_knatives() -> None:
    def duck(kind: str) -> set[str]:
        return {k for k in BY_KIND[kind]["metadata"]["labels"] if "duck" in k or "subscribable" in k}

    assert duck("Service") == {"duck.knative.dev/addressable", "duck.knative.dev/podspecable"}
    assert duck("Configuration") == {"duck.knative.dev/podspecable"}
    assert duck("Revision") == set() and duck("Trigger") == set()
    assert duck("InMemoryChannel") == {"duck.knative.dev/addressable", "messaging.knative.dev/subscribable"}
    assert all(c["metadata"]["labels"]["knative.dev/crd-install"] == "true" for c in BY_KIND.values())


@pytest.mark.parametrize("kind", sorted(BY_KIND))
def test_printer_columns_come_from_printer_columns(kind: str) -> None:
    rt = type_of(kind)
    (version,) = BY_KIND[kind]["spec"]["versions"]
    assert version["additionalPrinterColumns"] == [c.crd() for c in columns_for(rt.group, rt.kind)]


def test_printer_columns_keep_knatives_types_and_priorities() -> None:
    revision = BY_KIND["Revision"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in revision] == [
        "Config Name",
        "Generation",
        "Ready",
        "Reason",
        "Actual Replicas",
        "Desired Replicas",
    ]
    assert revision[-1] == {
        "name": "Desired Replicas",
        "type": "integer",
        "jsonPath": ".status.desiredReplicas",
    }
    broker = BY_KIND["Broker"]["spec"]["versions"][0]["additionalPrinterColumns"]
    assert broker[-1]["name"] == "Class" and broker[-1]["priority"] == 1


CHOICES: dict[str, dict[str, crds.Choice]] = {
    "Service": {"spec": "typed", "spec.template": "preserve", "spec.traffic": "typed", "status": "preserve"},
    "Configuration": {"spec": "typed", "spec.template": "preserve", "status": "preserve"},
    "Revision": {"spec": "preserve", "status": "preserve"},
    "Route": {"spec": "typed", "spec.traffic": "typed", "status": "preserve"},
    "Broker": {"spec": "typed", "spec.delivery": "typed", "status": "preserve"},
    "Trigger": {"spec": "typed", "spec.subscriber": "typed", "status": "preserve"},
    "Channel": {"spec": "typed", "spec.channelTemplate": "typed", "status": "preserve"},
    "InMemoryChannel": {"spec": "typed", "status": "preserve"},
    "RedisChannel": {"spec": "typed", "status": "preserve"},
    "Subscription": {"spec": "typed", "spec.channel": "typed", "status": "preserve"},
}
"""README's decision: typed except the PodSpec-bearing parts, which the webhook validates in
Knative's words; status is the controller's."""


@pytest.mark.parametrize("kind", sorted(CHOICES))
def test_each_kind_is_typed_or_left_to_the_webhook_as_decided(kind: str) -> None:
    schema = schema_of(kind)
    assert {path: crds.choice(schema, path) for path in CHOICES[kind]} == CHOICES[kind]


def test_a_preserved_part_keeps_its_description_and_nothing_else() -> None:
    full = openapi.crd_openapi_schema(type_of("Service"))
    template = schema_of("Service")["properties"]["spec"]["properties"]["template"]
    assert template == {
        "description": full["properties"]["spec"]["properties"]["template"]["description"],
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }


@pytest.mark.parametrize("kind", sorted(CHOICES))
def test_typed_parts_are_the_kinds_own_schema(kind: str) -> None:
    full = openapi.crd_openapi_schema(type_of(kind))
    ours = schema_of(kind)
    preserved = set(crds.extras_for(type_of(kind)).preserved)
    assert {k: v for k, v in ours["properties"].items() if k not in {"spec", "status"}} == {
        k: v for k, v in full["properties"].items() if k not in {"spec", "status"}
    }
    if "spec" not in preserved:
        spec, full_spec = ours["properties"]["spec"], full["properties"]["spec"]
        for name, field in spec["properties"].items():
            if f"spec.{name}" not in preserved:
                assert field == full_spec["properties"][name], name


def test_typed_spec_fields_are_there_to_be_checked() -> None:
    """Typed means the API server sees the field's type: a Route's traffic percent is an integer,
    a Trigger's broker a string."""
    route = schema_of("Route")["properties"]["spec"]["properties"]["traffic"]["items"]["properties"]
    assert route["percent"]["type"] == "integer"
    trigger = schema_of("Trigger")["properties"]["spec"]["properties"]
    assert trigger["broker"]["type"] == "string"


def test_preserving_a_path_the_schema_lacks_is_an_error() -> None:
    with pytest.raises(KeyError, match=r"spec\.nothing"):
        crds.preserved({"type": "object", "properties": {"spec": {"type": "object"}}}, ["spec.nothing"])


def test_a_kind_without_extras_is_named_in_the_error() -> None:
    rt = ResourceType(group="example.dev", version="v1", kind="Thing", plural="things", singular="thing")
    with pytest.raises(KeyError, match=r"Thing \(example.dev/v1\).*crds.EXTRAS"):
        crds.extras_for(rt)


def test_the_command_writes_the_crds_and_removes_only_its_own_stale_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dropped.example.dev.yaml").write_text(crds.HEADER + "kind: Old\n")
    (tmp_path / "mine.yaml").write_text("kind: Someone else's\n")
    assert openapi.main(["--crds", str(tmp_path)]) == 0
    on_disk = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    assert on_disk == {**GENERATED, "mine.yaml": "kind: Someone else's\n"}
    assert str(tmp_path / "services.serving.knative.dev.yaml") in capsys.readouterr().out
    for name, text in GENERATED.items():
        assert text.startswith(crds.HEADER)
        assert yaml.safe_load(text) is not None, name


def test_the_command_wants_somewhere_to_write(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        openapi.main([])
    assert "--crds" in capsys.readouterr().err


def test_generation_is_deterministic() -> None:
    assert openapi.crd_files(reversed(TYPES)) == GENERATED
