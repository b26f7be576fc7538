"""Settings of the local process runtime (its own module: `local` and `local_replica` both read them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LocalRuntimeSettings:
    """Settings of the local process runtime."""

    port_min: int = 20000
    """Lowest port given to replicas (inclusive). Below Linux's ephemeral range (32768+)."""
    port_max: int = 29999
    """Highest port given to replicas (inclusive)."""
    backoff_initial_s: float = 1.0
    """Seconds before the first restart of a crashed replica; doubles on each further crash
    (Kubernetes' CrashLoopBackOff starts at 10 s; we start lower for local development)."""
    backoff_max_s: float = 300.0
    """Cap of the restart backoff, seconds (Kubernetes: 5 min)."""
    backoff_reset_s: float = 600.0
    """A replica that stayed up this many seconds after becoming ready restarts without
    backoff again (Kubernetes: 10 min)."""
    starting_probe_period_s: float = 0.01
    """Readiness probe period while a replica starts, seconds (Knative probes aggressively)."""
    ready_probe_period_s: float = 1.0
    """Probe period once ready, seconds: the floor under a probe's own `period_s`
    (Kubernetes' periodSeconds cannot go below 1 s either)."""
    listen_timeout_s: float = 10.0
    """Seconds after which a starting replica's status says it does not listen on $PORT
    (probing continues, ten times less often)."""
    stop_grace_s: float = 10.0
    """SIGTERM-to-SIGKILL grace in seconds for `close()` and for `stop_replica` without one
    (reconcilers pass the revision's `timeoutSeconds`, Knative's terminationGracePeriod)."""
    log_tail_lines: int = 20
    """Log lines quoted in a crashed replica's message."""
