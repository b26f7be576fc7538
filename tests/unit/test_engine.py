"""The engine choice (`controller.engine`): what each engine builds, and the refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.engine import EngineUnavailable, build, open_store, runtime
from controller.reconcilers.context import SERVICES
from controller.runtime.local import LocalRuntime
from controller.settings import ControllerSettings
from controller.store.kubernetes_config import KubernetesSettings
from controller.store.sqlite import SqliteStore


async def test_the_embedded_engine_is_sqlite_and_local_processes(tmp_path: Path) -> None:
    settings = ControllerSettings(state_dir=tmp_path)
    parts = await build(settings)
    try:
        assert isinstance(parts.store, SqliteStore) and isinstance(parts.runtime, LocalRuntime)
        assert parts.default_backend == "sqlite"
        items, _ = await parts.store.list(SERVICES)
        assert items == [] and settings.store_path.exists()
    finally:
        await parts.store.close()


def test_the_kubernetes_engine_is_refused_until_its_runtime_exists(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="issue 14"):
        runtime(ControllerSettings(state_dir=tmp_path, engine="kubernetes"))


async def test_refused_before_anything_connects(tmp_path: Path) -> None:
    # The kubeconfig does not exist: build fails on the runtime, never reaching it.
    settings = ControllerSettings(state_dir=tmp_path, engine="kubernetes",
                                  kubernetes=KubernetesSettings(kubeconfig=str(tmp_path / "none")))
    with pytest.raises(EngineUnavailable):
        await build(settings)


def test_an_unknown_engine_is_refused_by_the_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'nomad'"):
        ControllerSettings(state_dir=tmp_path, engine="nomad")


async def test_the_embedded_store_opens_in_the_state_dir(tmp_path: Path) -> None:
    store = await open_store(ControllerSettings(state_dir=tmp_path))
    try:
        assert isinstance(store, SqliteStore)
    finally:
        await store.close()
