"""The engine choice, in one place: from `ControllerSettings.engine` (`python -m controller
--engine embedded|kubernetes`) come the store, the runtime, the revisions' reconciler and the
default backend of the brokers' logs; nothing else in the controller asks which engine it is on.

| engine | store | runtime | a revision runs as | a `Flint` broker's log |
| --- | --- | --- | --- | --- |
| `embedded` | SQLite (`<state dir>/store.db`) | `LocalRuntime` | local processes | SQLite |
| `kubernetes` | the API server (Flint's CRDs) | `KubernetesRuntime` | a Deployment | Redis |

On Kubernetes the gateway link and the dispatch plan also accept the gateways' and dispatchers'
projected service-account tokens, checked by TokenReview (`EngineParts.link_auth`).
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.admin_secret import admin_token
from controller.api.eventing import ENGINE_EMBEDDED, ENGINE_KUBERNETES, default_backend
from controller.api.registry import registry_for, served_kinds
from controller.eventing.plan import PLAN_PATH
from controller.link_auth import TokenReviewer, api_review, link_authenticator
from controller.runtime.base import ProcessRuntime, Runtime
from controller.runtime.kubernetes import KubernetesRuntime, KubernetesWorkloads
from controller.runtime.local import LocalRuntime
from controller.settings import ControllerSettings
from controller.store.base import Store
from controller.store.kubernetes import KubernetesStore
from controller.store.sqlite import SqliteStore
from flint_common.httpauth import AlternateAuth
from flint_common.secret import Secret
from flint_common.wire import LINK_PATH

__all__ = ["ENGINES", "EngineParts", "EngineUnavailable", "build", "open_store"]

ENGINES = (ENGINE_EMBEDDED, ENGINE_KUBERNETES)


class EngineUnavailable(RuntimeError):
    """The chosen engine cannot run here: the message says what is missing."""


@dataclass(frozen=True)
class EngineParts:
    """What the engine decides."""

    store: Store
    runtime: Runtime
    """What the snapshot publisher, the scaler and the endpoints read replicas from."""
    launcher: ProcessRuntime | None
    """The embedded engine's: replicas started one by one (the same object as `runtime`)."""
    workloads: KubernetesWorkloads | None
    """The Kubernetes engine's: revisions' Deployments, Services, HPAs, and Routes' Services."""
    default_backend: str
    """The log backend of a broker of class `Flint` (`controller.api.eventing.default_backend`)."""
    link_auth: AlternateAuth | None = None
    """The Kubernetes engine's: the other credential of the gateway link and the dispatch plan
    (a service-account token, by TokenReview: `controller.link_auth`); None: the owner's only."""
    dispatcher_token: Secret | None = None
    """The Kubernetes engine's: the dispatcher's admin token (Secret `flint-dispatcher-admin`,
    `controller.admin_secret`), which the dead-letter proxy sends; None: the owner's token."""


async def open_store(settings: ControllerSettings) -> Store:
    """The store of `settings.engine`, opened."""
    store: SqliteStore | KubernetesStore
    if settings.engine == ENGINE_EMBEDDED:
        store = SqliteStore(settings.store_path)
    elif settings.engine == ENGINE_KUBERNETES:
        store = await KubernetesStore.connect(served_kinds(registry_for("kubernetes")), settings.kubernetes)
    else:
        raise EngineUnavailable(f"unknown engine {settings.engine!r} (known: {', '.join(ENGINES)})")
    await store.open()
    return store


async def build(settings: ControllerSettings, *, store: Store | None = None,
                launcher: ProcessRuntime | None = None) -> EngineParts:
    """The parts of `settings.engine`: its store opened (unless given), its runtime not started
    (the embedded one unless given)."""
    backend = default_backend(settings.engine)
    if settings.engine == ENGINE_EMBEDDED:
        local = launcher or LocalRuntime(settings.state_dir)
        return EngineParts(store or await open_store(settings), local, local, None, backend)
    opened = store or await open_store(settings)
    if not isinstance(opened, KubernetesStore):
        raise EngineUnavailable("the Kubernetes engine keeps its objects in the API server: "
                                "its store must be a KubernetesStore")
    dispatcher_token = await admin_token(opened.api_client, settings.leader.namespace)
    workloads = KubernetesWorkloads(opened.api_client, settings.kubernetes)
    reviewer = TokenReviewer(api_review(opened.api_client, settings.link_auth), settings.link_auth)
    auth = settings.link_auth
    return EngineParts(opened, KubernetesRuntime(workloads), None, workloads, backend,
                       link_auth=link_authenticator(reviewer, {LINK_PATH: auth.gateway_accounts,
                                                               PLAN_PATH: auth.dispatcher_accounts}),
                       dispatcher_token=dispatcher_token)
