"""What every reconciler shares: the store, the informers' caches, the runtime and the gateway hub."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.autoscaling.kpa import Decision
from controller.builds.artifacts import ArtifactStore
from controller.gatewayhub import GatewayHub
from controller.informer import Informer
from controller.runtime.base import Runtime
from controller.settings import ControllerSettings
from controller.store.base import Kind, Store

SERVICES = Kind("serving.knative.dev", "services")
CONFIGURATIONS = Kind("serving.knative.dev", "configurations")
REVISIONS = Kind("serving.knative.dev", "revisions")
ROUTES = Kind("serving.knative.dev", "routes")

Key = tuple[str, str]
"""(namespace, name)."""
Obj = dict[str, Any]

LABEL_SERVICE = "serving.knative.dev/service"
LABEL_CONFIGURATION = "serving.knative.dev/configuration"
LABEL_CONFIGURATION_GENERATION = "serving.knative.dev/configurationGeneration"
LABEL_ROUTE = "serving.knative.dev/route"


@dataclass
class Context:
    store: Store
    settings: ControllerSettings
    services: Informer
    configurations: Informer
    revisions: Informer
    routes: Informer
    runtime: Runtime
    artifacts: ArtifactStore
    hub: GatewayHub
    enqueue: Callable[[Kind, Key], None]
    """Put (namespace, name) of a kind on that kind's work queue."""
    snapshot_dirty: Callable[[], None]
    """Ask for a new gateway snapshot (coalesced)."""
    drain: Callable[[str], None]
    """Take a replica out of routing and stop it once no gateway holds it."""
    publisher_is_draining: Callable[[str], bool]
    desired_scale: Callable[[str], int | None]
    """The autoscaler's desired replicas for a revision key (`ns/name`); None: not decided by
    the KPA (the caller keeps one replica)."""
    scale_decision: Callable[[str], Decision | None] = field(default=lambda _key: None)
    """The autoscaler's last decision for a revision key, if any (for the ScaleClamped condition)."""
    clock: Callable[[], float] = field(default=time.time)
    """Wall-clock seconds; replaced in tests."""


def ns_name(obj: Obj) -> Key:
    meta = obj["metadata"]
    return meta.get("namespace", "default"), meta["name"]


def owned_by(obj: Obj, owner: Obj) -> bool:
    uid = owner["metadata"].get("uid")
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def controller_owner(obj: Obj) -> dict[str, Any] | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None
