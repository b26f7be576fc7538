"""Controller settings: where state lives, how URLs look, and the replica lifecycle's deadlines."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from controller.api.eventing import default_backend
from controller.autoscaling.settings import AutoscalerSettings
from controller.cluster_tls.settings import ClusterTLSSettings
from controller.domains import DomainRule, DomainSettings
from controller.leader import LeaderSettings
from controller.store.kubernetes_config import KubernetesSettings
from controller.tokenreview import LinkAuthSettings
from controller.webhook.settings import WebhookSettings
from flint_common.redis_config import RedisSettings


def default_state_dir() -> Path:
    """A per-user state directory: `$XDG_STATE_HOME/flint` or `~/.local/state/flint`."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "flint"


@dataclass(frozen=True)
class GCSettings:
    """Knative's `config-gc`, with its defaults (applied by `controller.reconcilers.gc`)."""

    retain_since_create_time_s: float = 48 * 3600
    """A revision younger than this is kept (seconds; default 48 h; -1 disables the rule)."""
    retain_since_last_active_time_s: float = 15 * 3600
    """A revision routed more recently than this is kept (seconds; default 15 h; -1 disables)."""
    min_non_active_revisions: int = 20
    """Always keep at least this many non-active revisions per configuration (default 20)."""
    max_non_active_revisions: int = 1000
    """Never keep more than this many non-active revisions (default 1000; -1: no maximum)."""


@dataclass(frozen=True)
class NetworkSettings:
    """What Flint honours of Knative's `config-network` (`flint up --network K=V`)."""

    rollout_duration_s: float = 0.0
    """Seconds over which `latestRevision` traffic moves to a new revision (Knative's
    `rollout-duration`, default 0: at once); a Route's or Service's
    `serving.knative.dev/rollout-duration` annotation overrides it."""


@dataclass(frozen=True)
class ControllerSettings:
    """Settings of the controller (`flint up` passes them as flags; `python -m controller --help`)."""

    state_dir: Path = field(default_factory=default_state_dir)
    """Holds store.db, artifacts/, replicas/, logs/ and the gateway's persisted snapshot."""
    api_host: str = "127.0.0.1"
    """Loopback address of the API: plain HTTP on `api_port`, HTTPS on `api_tls_port`. Must be
    loopback (plain HTTP is never served elsewhere)."""
    api_port: int = 8081
    """Plain-HTTP port of the Kubernetes-style API, the gateway link and the dispatch plan, for
    processes on this machine."""
    api_tls_port: int = 8443
    """HTTPS port of the same API (the kubeconfig's URL: kubectl sends its token only over TLS)."""
    api_listen: tuple[tuple[str, int], ...] = ()
    """More (address, port) pairs served over HTTPS only (`--api-listen ADDR[:PORT]`); each
    address joins the certificate's names."""
    dispatcher_url: str = "http://127.0.0.1:8083"
    """The event dispatcher's admin port, served through the API under `/internal/dispatcher/`."""
    domain: str = "localhost"
    """DNS suffix of route URLs: `http://{route}.{namespace}.{domain}[:port]` (the default
    domain, of every Route no `domain_rules` selects; brokers' and channels' addresses too)."""
    domain_rules: tuple[DomainRule, ...] = ()
    """Knative's `config-domain`: other domains for the Routes whose labels a selector matches
    (`--config`'s `domain:` section; `controller.domains`)."""
    gateway_port: int = 8080
    """The gateway's public port, written into `status.url` when it is not 80."""
    progress_deadline_s: float = 600.0
    """A revision not Ready by then is marked failed and stopped (Knative's default 600 s;
    per revision: annotation `serving.knative.dev/progress-deadline`)."""
    drain_timeout_s: float = 330.0
    """Longest wait for gateways to drain a replica before it is stopped anyway
    (max revision timeout 300 s plus a margin)."""
    stop_grace_s: float = 10.0
    """SIGTERM → SIGKILL grace for a stopped replica (seconds)."""
    reconcile_workers: int = 4
    """Concurrent reconciles per kind."""
    autoscaler: AutoscalerSettings = field(default_factory=AutoscalerSettings)
    """Global autoscaling settings (Knative's `config-autoscaler`); annotations override them."""
    gc: GCSettings = field(default_factory=GCSettings)
    """Revision garbage collection (Knative's `config-gc`)."""
    network: NetworkSettings = field(default_factory=NetworkSettings)
    """Knative's `config-network`: the gradual rollout's duration."""
    redis: RedisSettings | None = None
    """The Redis of the shared eventing backend (`flint up --redis`): the log of every
    `FlintRedis` broker; its durability is checked every `redis_check_every_s` (the brokers'
    `Durable` condition). None: no Redis (a `FlintRedis` broker is not Ready)."""
    redis_check_every_s: float = 30.0
    """Seconds between two checks of the Redis' durability (`INFO persistence`)."""
    redis_sweep_every_s: float = 300.0
    """Seconds between two sweeps of the Redis for what no object in the store owns (consumer
    groups, consumer keys, whole logs: `controller.redis_sweep`); each SCANs the keyspace once."""
    engine: str = "embedded"
    """The engine (`controller.engine`): `embedded` (SQLite store, local processes) or
    `kubernetes` (the cluster's API server; its runtime is issue 14's). A broker of class `Flint`
    gets the engine's default backend (`controller.api.eventing.default_backend`: SQLite on
    the embedded engine, Redis on Kubernetes)."""
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    """How the Kubernetes engine reaches its API server (kubeconfig, context, watch timeouts)."""
    leader_election: bool = True
    """On the Kubernetes engine, whether replicas elect one leader (`controller.leader`): only
    the Lease's holder reconciles, scales, and serves the gateway link and the dispatch plan;
    every replica serves the API and `/healthz`. False: this process leads alone (run one
    replica only). The embedded engine never elects."""
    leader: LeaderSettings = field(default_factory=LeaderSettings)
    """The Lease (name, namespace, durations) of the election."""
    gateway_rejoin_s: float = 10.0
    """After a leader's term starts, how long it waits for the gateways to link before it takes
    their acks as complete (routes Ready, rollouts advancing, old revisions scaled down): a
    gateway serves its last snapshot while it looks for the new leader, and gets back within its
    longest retry pause (5 s) and connect timeout (5 s)."""
    advertise: tuple[str, int] | None = None
    """Where gateways and dispatchers reach this controller's link and plan while it leads,
    written into the EndpointSlice of `flint-controller-leader` (`--advertise ADDR[:PORT]`).
    None: `$POD_IP` (the downward API) or 127.0.0.1, and `api_port`."""
    cluster_tls: ClusterTLSSettings = field(default_factory=ClusterTLSSettings)
    """The Kubernetes engine's certificates (`controller.cluster_tls`): the namespace of their
    Secret and ConfigMap (`--system-namespace`), the names they carry, the rotation's overlap.
    Its serving certificate is the HTTPS API's there (and the webhook's), in place of the state
    dir's, since gateways and the API server verify it by the Services' DNS names."""
    link_auth: LinkAuthSettings = field(default_factory=LinkAuthSettings)
    """The Kubernetes engine's: which service accounts' projected tokens (audience
    `flint-controller`, checked by TokenReview) are accepted on the gateway link and the dispatch
    plan besides the owner's token, and how long verdicts are kept (`controller.tokenreview`)."""
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    """The Kubernetes engine's admission webhook listener (`--webhook-port`, `--webhook-host`;
    port 0, the default: none; `controller.webhook`)."""

    def __post_init__(self) -> None:
        default_backend(self.engine)  # a ValueError naming the known engines
        if self.webhook.port and self.engine != "kubernetes":
            raise ValueError(f"webhook port {self.webhook.port}: the admission webhook is the "
                             f"Kubernetes engine's (--engine kubernetes), not the {self.engine} one's")
        if self.redis_check_every_s <= 0:
            raise ValueError(f"redis_check_every_s must be above 0, not {self.redis_check_every_s}")
        if self.redis_sweep_every_s <= 0:
            raise ValueError(f"redis_sweep_every_s must be above 0, not {self.redis_sweep_every_s}")

    @property
    def domains(self) -> DomainSettings:
        """The route domains: `domain` and `domain_rules`."""
        return DomainSettings(self.domain, self.domain_rules)

    @property
    def advertised(self) -> tuple[str, int]:
        """`advertise`, or its default (`$POD_IP` or 127.0.0.1, and `api_port`)."""
        if self.advertise is not None:
            return self.advertise
        return os.environ.get("POD_IP") or "127.0.0.1", self.api_port

    @property
    def store_path(self) -> Path:
        return self.state_dir / "store.db"

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"
