"""The route reconciler makes a Route reachable in the cluster through its engine's hook
(`ServingBase.route_services`: the Kubernetes engine's ExternalName Services), and a failing hook
only delays it."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

from support.caches import ObjectCache

from controller.reconcilers.route import reconcile_route
from controller.settings import ControllerSettings
from controller.snapshot_builder import HostPlanner

Obj = dict[str, Any]


class _Store:
    def __init__(self) -> None:
        self.written: list[Obj] = []

    async def update_status(self, kind: object, obj: Obj) -> Obj:
        self.written.append(obj)
        return obj


ROUTE: Obj = {"apiVersion": "serving.knative.dev/v1", "kind": "Route",
              "metadata": {"name": "hello", "namespace": "ns", "uid": "r-uid", "generation": 1},
              "spec": {"traffic": [{"revisionName": "hello-00001", "percent": 100, "tag": "blue"}]}}
REV: Obj = {"metadata": {"name": "hello-00001", "namespace": "ns"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def ctx(tmp_path: Path, hook: Any) -> Any:
    hub = types.SimpleNamespace(snapshot=types.SimpleNamespace(routes=[]), acked_by_all=lambda _v: False,
                                version=1, connected=lambda: 1)
    return types.SimpleNamespace(
        routes=ObjectCache([ROUTE]), revisions=ObjectCache([REV]), configurations=ObjectCache([]),
        settings=ControllerSettings(state_dir=tmp_path, engine="kubernetes"), clock=lambda: 0.0,
        hub=hub, snapshot_dirty=lambda: None, store=_Store(), route_services=hook, hosts=HostPlanner())


async def test_the_hook_gets_the_route_with_its_status(tmp_path: Path) -> None:
    seen: list[Obj] = []

    async def hook(route: Obj) -> None:
        seen.append(route)

    c = ctx(tmp_path, hook)
    await reconcile_route(c, ("ns", "hello"))
    (route,) = seen
    assert route["metadata"]["name"] == "hello"
    assert [t.get("tag") for t in route["status"]["traffic"]] == ["blue"]  # the tags it serves


async def test_a_failing_hook_requeues_and_the_status_is_written(tmp_path: Path) -> None:
    async def hook(route: Obj) -> None:
        raise OSError("the API server is away")

    c = ctx(tmp_path, hook)
    assert await reconcile_route(c, ("ns", "hello")) == 5.0
    assert c.store.written and c.store.written[-1]["status"]["url"].startswith("http://hello.ns.")
