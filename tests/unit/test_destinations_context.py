"""The reconcilers' `ctx.resolve` hands the engine to the pure resolver: a core Service ref
resolves from the core Services' cache on Kubernetes and is refused on the embedded engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from support.caches import ObjectCache

from controller.informer import Informer
from controller.reconcilers.context import (
    CORE_SERVICES,
    REFERABLE_KINDS,
    TRIGGERS,
    EventingContext,
    Informers,
)
from controller.reconcilers.trigger import WATCHES as TRIGGER_WATCHES
from controller.reconcilers.watches import MODIFIED, Change
from controller.settings import ControllerSettings
from controller.store.base import Kind

CORE_REF = {"ref": {"apiVersion": "v1", "kind": "Service", "name": "legacy"}, "uri": "/in"}


def context(engine: str, tmp_path: Path, core: list[dict[str, Any]] | None) -> EventingContext:
    by_kind = {} if core is None else {CORE_SERVICES: ObjectCache(core)}
    settings = ControllerSettings(state_dir=tmp_path, engine=engine)
    return EventingContext(store=cast(Any, None), settings=settings,
                           informers=Informers(cast(dict[Kind, Informer], by_kind)), hub=cast(Any, None),
                           snapshot_dirty=lambda: None, dispatch=cast(Any, None), plan_dirty=lambda: None)


def test_on_kubernetes_a_cached_core_service_resolves(tmp_path: Path) -> None:
    ctx = context("kubernetes", tmp_path, [{"metadata": {"name": "legacy", "namespace": "ns"}}])
    assert ctx.resolve(CORE_REF, "ns") == ("http://legacy.ns.svc.cluster.local/in", "")
    url, why = ctx.resolve(CORE_REF, "other")
    assert url is None and 'services "legacy" not found' in why


@pytest.mark.parametrize("core", [None, [{"metadata": {"name": "legacy", "namespace": "ns"}}]])
def test_on_the_embedded_engine_a_core_service_is_refused(tmp_path: Path, core: Any) -> None:
    url, why = context("embedded", tmp_path, core).resolve(CORE_REF, "ns")
    assert url is None and "only the Kubernetes engine" in why


def test_a_core_service_change_wakes_the_triggers_of_its_namespace(tmp_path: Path) -> None:
    assert CORE_SERVICES in REFERABLE_KINDS
    triggers = ObjectCache([{"metadata": {"name": "t", "namespace": "ns"}},
                            {"metadata": {"name": "u", "namespace": "elsewhere"}}])
    caches = Informers(cast(dict[Kind, Informer], {TRIGGERS: triggers}))
    change = Change(MODIFIED, {"metadata": {"name": "legacy", "namespace": "ns"}})
    woken = {k for w in TRIGGER_WATCHES if w.kind == CORE_SERVICES for k in w.keys(change, caches)}
    assert woken == {("ns", "t")}
