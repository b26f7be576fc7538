"""`flint get` tables, YAML/JSON, kubectl's ages, `describe` text and the wait verdicts."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from controller.api.ages import age, human_duration
from controller.cli.describe import describe
from controller.cli.output import (
    conditions_summary,
    render,
    render_table,
    revision_traffic,
    table,
)
from controller.cli.wait import assess, progress_messages

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(type_: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": ts(30),
    }


def service(ready: str = "True", gen: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {
            "name": "hello",
            "namespace": "default",
            "generation": gen,
            "creationTimestamp": ts(300),
        },
        "spec": {},
        "status": {
            "observedGeneration": observed,
            "url": "http://hello.default.localhost:8080",
            "latestCreatedRevisionName": "hello-00002",
            "latestReadyRevisionName": "hello-00002",
            "traffic": [
                {"revisionName": "hello-00001", "percent": 20, "tag": "old"},
                {"revisionName": "hello-00002", "percent": 80, "latestRevision": True},
            ],
            "conditions": [
                cond("ConfigurationsReady", "True"),
                cond("Ready", ready, "" if ready == "True" else "RevisionFailed", "boom"),
                cond("RoutesReady", "True"),
            ],
        },
    }


def revision(name: str, gen: int) -> dict[str, Any]:
    return {
        "kind": "Revision",
        "metadata": {
            "name": name,
            "namespace": "default",
            "creationTimestamp": ts(60 * gen),
            "labels": {
                "serving.knative.dev/service": "hello",
                "serving.knative.dev/configurationGeneration": str(gen),
            },
        },
        "spec": {"containers": [{"image": f"/srv/{name}"}], "containerConcurrency": 0},
        "status": {
            "conditions": [cond("Ready", "True")],
            "containerStatuses": [{"imageDigest": "sha256:0123456789abcdef"}],
        },
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 20, "3h20m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (53 * 3600, "2d5h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (742 * 86400, "2y12d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_age_from_timestamps() -> None:
    assert age(ts(90), NOW) == "90s"
    assert age("2024-05-01T11:00:00+00:00", NOW) == "60m"
    assert age(None, NOW) == ""
    assert age("garbage", NOW) == ""


def test_render_table_aligns_without_trailing_spaces() -> None:
    out = render_table(("NAME", "URL"), [["a", "http://x"], ["longer-name", ""]])
    assert out.splitlines() == ["NAME          URL", "a             http://x", "longer-name"]


def test_service_table() -> None:
    out = table("Service", [service()], NOW)
    header, row = out.splitlines()
    assert header.split() == ["NAME", "URL", "LATEST", "AGE", "CONDITIONS", "READY", "REASON"]
    assert row.split() == [
        "hello",
        "http://hello.default.localhost:8080",
        "hello-00002",
        "5m",
        "3",
        "OK",
        "/",
        "3",
        "True",
    ]


def test_failed_service_shows_reason() -> None:
    row = table("Service", [service(ready="False")], NOW).splitlines()[1]
    assert row.split()[-3:] == ["3", "False", "RevisionFailed"]
    assert conditions_summary(service(ready="False")) == "2 OK / 3"


def test_all_namespaces_adds_column() -> None:
    header, row = table("Service", [service()], NOW, all_namespaces=True).splitlines()
    assert header.split()[:2] == ["NAMESPACE", "NAME"]
    assert row.split()[:2] == ["default", "hello"]


def test_revision_table_with_traffic_and_tags_newest_first() -> None:
    out = table(
        "Revision",
        [revision("hello-00001", 1), revision("hello-00002", 2)],
        NOW,
        services=[service()],
    )
    header, first, second = out.splitlines()
    assert header.split() == [
        "NAME",
        "SERVICE",
        "TRAFFIC",
        "TAGS",
        "GENERATION",
        "AGE",
        "CONDITIONS",
        "READY",
        "REASON",
    ]
    assert first.split()[:5] == ["hello-00002", "hello", "80%", "2", "2m"]
    assert second.split()[:5] == ["hello-00001", "hello", "20%", "old", "1"]


def test_revision_traffic_without_service() -> None:
    assert revision_traffic(revision("hello-00001", 1), []) == ("", "")


def test_route_configuration_and_generic_tables() -> None:
    route = {
        "metadata": {"name": "hello"},
        "status": {"url": "http://h", "conditions": [cond("Ready", "Unknown", "Pending")]},
    }
    assert table("Route", [route], NOW).splitlines()[1].split() == ["hello", "http://h", "Unknown"]
    cfg = {
        "metadata": {"name": "hello"},
        "status": {
            "latestCreatedRevisionName": "hello-00002",
            "latestReadyRevisionName": "hello-00001",
            "conditions": [cond("Ready", "Unknown", "RevisionMissing")],
        },
    }
    header, row = table("Configuration", [cfg], NOW).splitlines()
    assert re.split(r"\s{2,}", header) == [
        "NAME",
        "LATEST CREATED",
        "LATEST READY",
        "READY",
        "REASON",
    ]
    assert row.split() == ["hello", "hello-00002", "hello-00001", "Unknown", "RevisionMissing"]
    broker = {"metadata": {"name": "b", "creationTimestamp": ts(10)}}
    header, row = table("Broker", [broker], NOW).splitlines()
    assert header.split() == ["NAME", "AGE", "READY", "REASON"]
    assert row.split() == ["b", "10s"]


def test_json_single_object_is_bare() -> None:
    svc = service()
    assert json.loads(render("json", "Service", [svc], True, NOW)) == svc


def test_json_and_yaml_lists() -> None:
    objs = [service(), service()]
    doc = json.loads(render("json", "Service", objs, False, NOW))
    assert doc["kind"] == "List" and doc["apiVersion"] == "v1" and doc["items"] == objs
    ydoc = yaml.safe_load(render("yaml", "Service", objs, False, NOW))
    assert ydoc["items"] == objs


def test_yaml_single_keeps_key_order() -> None:
    out = render("yaml", "Service", [service()], True, NOW)
    assert out.startswith("apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:")


def test_name_output() -> None:
    out = render("name", "Service", [service()], False, NOW, "service.serving.knative.dev")
    assert out == "service.serving.knative.dev/hello"


def test_describe_service() -> None:
    text = describe(
        "Service",
        service(ready="False"),
        [revision("hello-00001", 1), revision("hello-00002", 2)],
        NOW,
    )
    assert "Name:       hello" in text
    assert "URL:        http://hello.default.localhost:8080" in text
    assert " 20%  hello-00001 #old [1] (60s)" in text
    assert " 80%  @latest (hello-00002) [2] (2m)" in text
    assert "Image:  /srv/hello-00002 (pinned to 0123456789ab)" in text
    assert "!!   Ready" in text
    assert "Ready: boom" in text


def test_describe_revision_and_generic() -> None:
    text = describe("Revision", revision("hello-00001", 1), [], NOW)
    assert "Image:      /srv/hello-00001 (sha256:0123456789abcdef)" in text
    assert "Service:    hello" in text
    broker = {
        "metadata": {
            "name": "b",
            "namespace": "default",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "x": "y"},
        },
        "status": {"address": {"url": "http://broker"}},
    }
    text = describe("Broker", broker, [], NOW)
    assert "last-applied" not in text
    assert "  x=y" in text
    assert "http://broker" in text


# -- wait verdicts -------------------------------------------------------------------------------


def test_ready_only_for_the_written_generation() -> None:
    assert assess(service(), 1).state == "ready"
    # an update: the old generation's Ready must not count
    assert assess(service(gen=2, observed=1), 2).state == "pending"
    assert progress_messages(service(ready="False", gen=2, observed=1), 2) == []


def test_ready_waits_for_latest_created_to_be_ready() -> None:
    svc = service()
    svc["status"]["latestCreatedRevisionName"] = "hello-00003"
    assert assess(svc, 1).state == "pending"


def test_failed_and_unknown() -> None:
    v = assess(service(ready="False"), 1)
    assert (v.state, v.reason, v.message) == ("failed", "RevisionFailed", "boom")
    assert assess(service(ready="Unknown"), 1).state == "pending"
    svc = service()
    svc["status"]["conditions"] = []
    assert assess(svc, 1).state == "pending"


def test_progress_messages_ready_last() -> None:
    svc = service(ready="Unknown")
    svc["status"]["conditions"][0] = cond("ConfigurationsReady", "Unknown", "", "waiting")
    assert progress_messages(svc, 1) == ["waiting", "boom"]
