"""The engine choice, in one place: from `ControllerSettings.engine` (`python -m controller
--engine embedded|kubernetes`) come the store, the runtime and the default backend of the brokers'
logs; nothing else in the controller asks which engine it runs on.

| engine | store | runtime | a `Flint` broker's log |
| --- | --- | --- | --- |
| `embedded` | SQLite in the state dir (`store.db`) | local processes (`LocalRuntime`) | SQLite |
| `kubernetes` | the cluster's API server (`KubernetesStore`, Flint's CRDs) | — (issue 14) | Redis |

The Kubernetes engine's runtime (revisions as Deployments) is issue 14's: until it lands, choosing
that engine is refused with `EngineUnavailable` before anything starts; its store is built here
already (`open_store`), and tested against the contract fake.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.api.eventing import ENGINE_EMBEDDED, ENGINE_KUBERNETES, default_backend
from controller.api.registry import registry_for, served_kinds
from controller.runtime.base import ProcessRuntime
from controller.runtime.local import LocalRuntime
from controller.settings import ControllerSettings
from controller.store.base import Store
from controller.store.kubernetes import KubernetesStore
from controller.store.sqlite import SqliteStore

__all__ = ["ENGINES", "EngineParts", "EngineUnavailable", "build", "open_store", "runtime"]

ENGINES = (ENGINE_EMBEDDED, ENGINE_KUBERNETES)


class EngineUnavailable(RuntimeError):
    """The chosen engine cannot run here (yet): the message says what is missing."""


@dataclass(frozen=True)
class EngineParts:
    """What the engine decides: where objects live, what runs revisions, the brokers' default log."""

    store: Store
    runtime: ProcessRuntime
    default_backend: str
    """The log backend of a broker of class `Flint` (`controller.api.eventing.default_backend`)."""


def runtime(settings: ControllerSettings) -> ProcessRuntime:
    """The runtime of `settings.engine` (not started)."""
    if settings.engine == ENGINE_EMBEDDED:
        return LocalRuntime(settings.state_dir)
    if settings.engine == ENGINE_KUBERNETES:
        raise EngineUnavailable(
            "the Kubernetes engine's runtime (revisions as Deployments) is not built yet (issue 14); "
            "run --engine embedded")
    raise EngineUnavailable(f"unknown engine {settings.engine!r} (known: {', '.join(ENGINES)})")


async def open_store(settings: ControllerSettings) -> Store:
    """The store of `settings.engine`, opened."""
    store: SqliteStore | KubernetesStore
    if settings.engine == ENGINE_EMBEDDED:
        store = SqliteStore(settings.store_path)
    elif settings.engine == ENGINE_KUBERNETES:
        store = await KubernetesStore.connect(
            served_kinds(registry_for("kubernetes")), settings.kubernetes)
    else:
        raise EngineUnavailable(f"unknown engine {settings.engine!r} (known: {', '.join(ENGINES)})")
    await store.open()
    return store


async def build(settings: ControllerSettings) -> EngineParts:
    """The store (opened) and the runtime (not started) of `settings.engine`; the runtime first,
    so an engine that cannot run is refused before anything connects."""
    rt = runtime(settings)
    return EngineParts(await open_store(settings), rt, default_backend(settings.engine))
