"""The Runtime protocol: what the reconcilers need to run a revision's replicas, on any engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

ReplicaState = Literal["starting", "ready", "unhealthy", "crashed", "failed", "stopping", "stopped"]
"""starting: spawned, readiness not yet passed; ready: serving; unhealthy: readiness failing
after ready; crashed: exited, a restart is scheduled with backoff; failed: gave up (the image
cannot run at all); stopping/stopped: asked to stop."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A Kubernetes probe reduced to what the local runtime runs."""

    kind: Literal["tcp", "http"] = "tcp"
    path: str = "/"
    port: int | None = None
    """None → the replica's PORT."""
    period_s: float = 0.01
    """While starting we probe every few milliseconds; `period_s` applies once ready."""
    timeout_s: float = 1.0
    failure_threshold: int = 3
    initial_delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """Everything needed to start one replica of a revision."""

    namespace: str
    revision: str
    service: str
    configuration: str
    image_dir: Path
    """The revision's materialised, read-only snapshot of its `image` directory."""
    command: tuple[str, ...]
    """argv; relative program paths resolve against the working directory, then PATH."""
    env: dict[str, str] = field(default_factory=dict)
    """User env (PORT, K_SERVICE, K_CONFIGURATION, K_REVISION are added by the runtime)."""
    working_dir: str | None = None
    """`workingDir`; relative → inside the image dir; None → the image dir."""
    readiness: Probe = field(default_factory=Probe)
    liveness: Probe | None = None
    memory_limit_bytes: int | None = None
    """`resources.limits.memory`, enforced as RLIMIT_AS."""

    @property
    def revision_key(self) -> str:
        return f"{self.namespace}/{self.revision}"


@dataclass(slots=True)
class ReplicaStatus:
    id: str
    revision_key: str
    host: str
    port: int
    pid: int | None
    state: ReplicaState
    restarts: int = 0
    last_exit_code: int | None = None
    message: str = ""
    """Why the replica is not ready (e.g. exit code and last log lines, or 'not listening on
    $PORT')."""
    started_at: float = 0.0
    """Wall-clock time the current process started."""


ChangeCallback = Callable[[ReplicaStatus], None]


class Runtime(Protocol):
    """What runs a revision's replicas, as the snapshot publisher, the scaler and the log and
    observability endpoints see it, on any engine: `local.LocalRuntime` (processes),
    `kubernetes.KubernetesRuntime` (the pods behind a revision's EndpointSlices)."""

    async def start(self) -> None:
        """Re-adopt replicas recorded by an earlier run (never start duplicates)."""
        ...

    async def close(self, stop_replicas: bool) -> None:
        """Stop supervising; with `stop_replicas`, stop every replica (used by `flint up` exit)."""
        ...

    def subscribe(self, callback: ChangeCallback) -> None:
        """`callback` is called (on the loop) whenever a replica's state changes."""
        ...

    async def stop_replica(self, replica_id: str, grace_s: float = 10.0) -> None:
        """SIGTERM the replica's process group, SIGKILL after `grace_s`; forget it."""
        ...

    def replicas(self, revision_key: str | None = None) -> list[ReplicaStatus]: ...

    def log_paths(self, revision_key: str) -> list[Path]: ...

    async def alog_paths(self, revision_key: str) -> list[Path]:
        """`log_paths` without blocking the event loop."""
        ...


class ProcessRuntime(Runtime, Protocol):
    """A runtime the controller starts replicas on one by one (the embedded engine's: a replica
    is a process). On Kubernetes the cluster starts them, from a Deployment's scale."""

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaStatus:
        """Spawn a replica and return at once (state `starting`); readiness is reported later."""
        ...
