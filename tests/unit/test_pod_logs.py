"""`flint logs` on a cluster: which Pods' containers are read, the `pods/log` query, the merge of
several streams; and how the CLI tells a cluster from Flint's own API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from controller.cli.client import is_cluster_answer
from controller.cli.errors import CliError
from controller.cli.logs import since_seconds
from controller.cli.pod_logs import log_params, merged, pod_logs, pod_selector


def pod(name: str, phase: str = "Running", containers: tuple[str, ...] = ("user-container",),
        revision: str = "hello-00001") -> dict[str, Any]:
    labels = {"serving.knative.dev/revision": revision}
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels},
            "spec": {"containers": [{"name": c} for c in containers]}, "status": {"phase": phase}}


def test_the_app_containers_of_started_pods_in_name_order() -> None:
    logs = pod_logs([pod("b"), pod("a"), pod("pending", phase="Pending"),
                     pod("two", containers=("user-container-0", "user-container-1", "istio-proxy"))])
    assert [(lg.path, lg.container, lg.prefix) for lg in logs] == [
        ("/api/v1/namespaces/ns/pods/a/log", "user-container", "[hello-00001/a] "),
        ("/api/v1/namespaces/ns/pods/b/log", "user-container", "[hello-00001/b] "),
        ("/api/v1/namespaces/ns/pods/two/log", "user-container-0", "[hello-00001/two/user-container-0] "),
        ("/api/v1/namespaces/ns/pods/two/log", "user-container-1", "[hello-00001/two/user-container-1] "),
    ]
    assert pod_selector("hello") == "serving.knative.dev/service=hello"


def test_the_log_query() -> None:
    assert log_params("user-container", 10, None, False) == {"container": "user-container", "tailLines": "10"}
    assert log_params("c", -1, 0.2, True) == {"container": "c", "sinceSeconds": "1", "follow": "true"}
    assert log_params("c", 0, 90.5, False)["sinceSeconds"] == "91"


def test_since_is_a_positive_duration() -> None:
    assert since_seconds(None) is None
    assert since_seconds("1m30s") == 90.0
    for bad in ("soon", "0s", "-5m"):
        with pytest.raises(CliError) as e:
            since_seconds(bad)
        assert e.value.code == 2


async def test_streams_are_merged_as_lines_come_and_an_error_ends_them() -> None:
    async def lines(*items: str, fail: bool = False) -> AsyncIterator[str]:
        for item in items:
            await asyncio.sleep(0)
            yield item
        if fail:
            raise ConnectionError("cut")

    got = [line async for line in merged([lines("a1", "a2"), lines("b1")])]
    assert sorted(got) == ["a1", "a2", "b1"] and got.index("a1") < got.index("a2")
    with pytest.raises(ConnectionError):
        _ = [line async for line in merged([lines("x", fail=True), lines("y")])]


def test_a_cluster_answers_api_with_the_core_group() -> None:
    assert is_cluster_answer({"kind": "APIVersions", "versions": ["v1"]})
    assert not is_cluster_answer({})
    assert not is_cluster_answer({"kind": "Status", "code": 404})
