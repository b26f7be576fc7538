"""The engine choice (`controller.engine`): what each engine builds, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engine import EngineUnavailable, build, open_store
from controller.reconcilers.context import SERVICES
from controller.runtime.local import LocalRuntime
from controller.settings import ControllerSettings
from controller.store.memory import MemoryStore
from controller.store.sqlite import SqliteStore


async def test_the_embedded_engine_is_sqlite_and_local_processes(tmp_path: Path) -> None:
    settings = ControllerSettings(state_dir=tmp_path)
    parts = await build(settings)
    try:
        assert isinstance(parts.store, SqliteStore) and isinstance(parts.runtime, LocalRuntime)
        assert parts.launcher is parts.runtime and parts.workloads is None
        assert parts.default_backend == "sqlite"
        items, _ = await parts.store.list(SERVICES)
        assert items == [] and settings.store_path.exists()
    finally:
        await parts.store.close()


async def test_a_given_store_and_runtime_are_used(tmp_path: Path) -> None:
    store, local = MemoryStore(), LocalRuntime(tmp_path)
    parts = await build(ControllerSettings(state_dir=tmp_path), store=store, launcher=local)
    assert parts.store is store and parts.runtime is local


async def test_the_kubernetes_engine_needs_the_api_server_s_store(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="KubernetesStore"):
        await build(ControllerSettings(state_dir=tmp_path, engine="kubernetes"), store=MemoryStore())


def test_an_unknown_engine_is_refused_by_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'nomad'"):
        ControllerSettings(state_dir=tmp_path, engine="nomad")


async def test_the_embedded_store_opens_in_the_state_dir(tmp_path: Path) -> None:
    store = await open_store(ControllerSettings(state_dir=tmp_path))
    try:
        assert isinstance(store, SqliteStore)
    finally:
        await store.close()
