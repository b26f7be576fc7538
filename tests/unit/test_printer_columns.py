"""Knative's printer columns: the JSONPath subset they use, typed cells, and a row for every kind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from controller.api.jsonpath import JsonPathError, parse
from controller.api.printer_columns import PRINTER_COLUMNS, PrinterColumn, columns_for, typed_cell
from controller.api.registry import TYPES
from controller.apiserver_tables import TableOptions, row

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
CREATED = "2024-05-01T11:55:00Z"  # five minutes before NOW
READY = {"type": "Ready", "status": "True"}
NOT_READY = {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": "boom"}
CONDITIONS = [{"type": "ConfigurationsReady", "status": "True", "reason": "Other"}, NOT_READY]

# -- the JSONPath subset ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "obj", "found"),
    [
        (".status.url", {"status": {"url": "http://x"}}, ["http://x"]),
        (".status.url", {"status": {}}, []),
        (".status.url", {"status": "not an object"}, []),
        ("{.spec.broker}", {"spec": {"broker": "default"}}, ["default"]),
        (".status.conditions[?(@.type=='Ready')].status", {"status": {"conditions": CONDITIONS}},
         ["False"]),
        ('.status.conditions[?(@.type=="Ready")].reason', {"status": {"conditions": CONDITIONS}},
         ["RevisionFailed"]),
        (".status.conditions[?(@.type!='Ready')].reason", {"status": {"conditions": CONDITIONS}},
         ["Other"]),
        (".status.conditions[?(@.type=='Ready')].reason", {"status": {"conditions": [READY]}}, []),
        (".status.conditions[?(@.type=='Ready')].status", {"status": {"conditions": "x"}}, []),
        (".metadata.labels['serving\\.knative\\.dev/configuration']",
         {"metadata": {"labels": {"serving.knative.dev/configuration": "hello"}}}, ["hello"]),
        (".metadata.annotations.eventing\\.knative\\.dev/broker\\.class",
         {"metadata": {"annotations": {"eventing.knative.dev/broker.class": "Flint"}}}, ["Flint"]),
        (".items[1].n", {"items": [{"n": 1}, {"n": 2}]}, [2]),
        (".items[-1].n", {"items": [{"n": 1}, {"n": 2}]}, [2]),
        (".items[5].n", {"items": [{"n": 1}]}, []),
        (".items[*].n", {"items": [{"n": 1}, {}, {"n": 3}]}, [1, 3]),
        (".items[?(@.n==3)].m", {"items": [{"n": 3, "m": "x"}, {"n": "3", "m": "y"}]}, ["x"]),
        (".items[?(@.a.b==true)].m", {"items": [{"a": {"b": True}, "m": 1}, {"m": 2}]}, [1]),
    ],
)
def test_jsonpath_finds(path: str, obj: Any, found: list[Any]) -> None:
    assert parse(path).find(obj) == found


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("status.url", 'must start with "." or "["'),
        (".status..url", "a field name must follow a dot"),
        (".status[", "unclosed ["),
        (".items[1:2]", "is not supported"),
        (".items[?(@.n>3)]", "needs == or !="),
        (".items[?(n==3)]", 'compares "@.field"'),
        (".items[?(@.n==three)]", "is not a quoted string, number or boolean"),
    ],
)
def test_jsonpath_outside_the_subset_is_refused_saying_why(path: str, words: str) -> None:
    with pytest.raises(JsonPathError, match=words.replace("[", "\\[").replace(".", "\\.")):
        parse(path)


# -- cells ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column_type", "value", "cell"),
    [
        ("string", "x", "x"),
        ("string", True, "true"),
        ("string", 3.0, "3"),
        ("string", 2.5, "2.5"),
        ("string", {"b": 1, "a": [2]}, '{"a":[2],"b":1}'),
        ("integer", 3, 3),
        ("integer", 3.0, 3),
        ("integer", "3", None),
        ("integer", True, None),
        ("number", 2, 2.0),
        ("number", "2", None),
        ("boolean", False, False),
        ("boolean", "false", None),
        ("date", CREATED, "5m"),
        ("date", "yesterday", "<invalid>"),
        ("date", 5, "<invalid>"),
    ],
)
def test_typed_cells(column_type: Any, value: Any, cell: Any) -> None:
    assert typed_cell(column_type, value, NOW) == cell


def test_a_missing_or_null_value_is_an_empty_cell() -> None:
    column = PrinterColumn("URL", "string", ".status.url")
    assert column.cell({}, NOW) is None
    assert column.cell({"status": {"url": None}}, NOW) is None


def test_a_bad_path_in_a_column_fails_at_definition() -> None:
    with pytest.raises(JsonPathError):
        PrinterColumn("Broken", "string", "status.url")


def test_columns_are_crd_additional_printer_columns() -> None:
    broker = columns_for("eventing.knative.dev", "Broker")
    assert [c.crd() for c in broker][-1] == {
        "name": "Class",
        "type": "string",
        "jsonPath": ".metadata.annotations.eventing\\.knative\\.dev/broker\\.class",
        "priority": 1,
    }
    assert broker[0].definition() == {
        "name": "URL",
        "type": "string",
        "format": "",
        "description": "Custom resource definition column (in JSONPath format): .status.address.url",
        "priority": 0,
    }


def test_every_served_kind_has_knatives_columns() -> None:
    assert {(rt.group, rt.kind) for rt in TYPES} == set(PRINTER_COLUMNS)
    assert [c.name for c in columns_for("example.dev", "Widget")] == ["Age"]


# -- a row for every kind --------------------------------------------------------------------------

OPTIONS = TableOptions("v1", "None")


def _obj(name: str, status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "creationTimestamp": CREATED, **meta},
            "spec": {"broker": "default"}, "status": status}


ROWS: list[tuple[str, str, dict[str, Any], list[Any]]] = [
    ("serving.knative.dev", "Service",
     _obj("hello", {"url": "http://hello.default.localhost", "latestCreatedRevisionName": "hello-2",
                    "latestReadyRevisionName": "hello-1", "conditions": CONDITIONS}),
     ["hello", "http://hello.default.localhost", "hello-2", "hello-1", "False", "RevisionFailed"]),
    ("serving.knative.dev", "Configuration",
     _obj("hello", {"latestCreatedRevisionName": "hello-1", "latestReadyRevisionName": "hello-1",
                    "conditions": [READY]}),
     ["hello", "hello-1", "hello-1", "True", None]),
    ("serving.knative.dev", "Revision",
     _obj("hello-1", {"actualReplicas": 1, "desiredReplicas": 2, "conditions": [READY]},
          labels={"serving.knative.dev/configuration": "hello",
                  "serving.knative.dev/configurationGeneration": "1"}),
     ["hello-1", "hello", "1", "True", None, 1, 2]),
    ("serving.knative.dev", "Route",
     _obj("hello", {"url": "http://hello.default.localhost", "conditions": [READY]}),
     ["hello", "http://hello.default.localhost", "True", None]),
    ("eventing.knative.dev", "Broker",
     _obj("default", {"address": {"url": "http://broker-ingress.localhost/default/default"},
                      "conditions": [READY]},
          annotations={"eventing.knative.dev/broker.class": "Flint"}),
     ["default", "http://broker-ingress.localhost/default/default", "5m", "True", None, "Flint"]),
    ("eventing.knative.dev", "Trigger",
     _obj("t", {"subscriberUri": "http://s.default.localhost", "conditions": CONDITIONS}),
     ["t", "default", "http://s.default.localhost", "5m", "False", "RevisionFailed"]),
    ("messaging.knative.dev", "Channel",
     _obj("ch", {"address": {"url": "http://ch.localhost"}, "conditions": [READY]}),
     ["ch", "http://ch.localhost", "5m", "True", None]),
    ("messaging.knative.dev", "InMemoryChannel",
     _obj("imc", {"conditions": []}),
     ["imc", None, "5m", None, None]),
    ("messaging.flint.dev", "RedisChannel",
     _obj("rch", {"address": {"url": "http://channel-ingress.localhost/default/rch"}, "conditions": [READY]}),
     ["rch", "http://channel-ingress.localhost/default/rch", "5m", "True", None]),
    ("messaging.knative.dev", "Subscription",
     _obj("sub", {"conditions": [READY]}),
     ["sub", "5m", "True", None]),
]


@pytest.mark.parametrize(("group", "kind", "obj", "cells"), ROWS, ids=[r[1] for r in ROWS])
def test_row_for_every_kind(group: str, kind: str, obj: dict[str, Any], cells: list[Any]) -> None:
    assert row(columns_for(group, kind), obj, OPTIONS, NOW) == {"cells": cells}


def test_rows_cover_every_kind() -> None:
    assert {(g, k) for g, k, _, _ in ROWS} == set(PRINTER_COLUMNS)


def test_column_names_are_knatives() -> None:
    names = {kind: [c.name for c in columns] for (_, kind), columns in PRINTER_COLUMNS.items()}
    assert names["Service"] == ["URL", "LatestCreated", "LatestReady", "Ready", "Reason"]
    assert names["Revision"] == ["Config Name", "Generation", "Ready", "Reason",
                                 "Actual Replicas", "Desired Replicas"]
    assert names["Trigger"] == ["Broker", "Subscriber_URI", "Age", "Ready", "Reason"]
    assert names["Subscription"] == ["Age", "Ready", "Reason"]


def test_a_filter_literal_may_hold_the_other_operator() -> None:
    from controller.api.jsonpath import parse

    path = parse(".items[?(@.a!='x==y')].b")
    assert path.find({"items": [{"a": "x==y", "b": 1}, {"a": "z", "b": 2}]}) == [2]
