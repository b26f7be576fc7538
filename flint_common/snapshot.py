"""The routing snapshot the controller sends each gateway worker: its types (wire form: `flint_common.wire`).

Both planes use these: the controller builds a snapshot from its resources, the gateway routes by
it. orjson serialises the dataclasses as they are and `wire.decode_snapshot` reads them back (a
field added later needs a default there and here).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One replica of a revision that the gateway may forward to."""

    id: str
    """Stable replica id (unique across revisions)."""
    host: str
    port: int
    starting: bool = False
    """Spawned but not yet known ready: the gateway probes it itself (every few milliseconds)
    and forwards to it from its first successful connect, without waiting for the controller."""
    owner: str = ""
    """The gateway id that alone sends this replica requests (`Snapshot.peers`; subsetting of
    a revision with `container_concurrency` > 0 across gateways, `controller.routing_subsets`);
    "" = every gateway (no peers, an unlimited revision, snapshots written before the field)."""


class _Keyed:
    """Holds `RevisionTarget.key` in a slot outside the dataclass fields, so that the snapshot's
    wire form (orjson writes the fields), equality and `repr` stay as they were."""

    __slots__ = ("key",)
    key: str
    """`namespace/name`, computed once when the target is built (the hot path reads it)."""


@dataclass(frozen=True, slots=True)
class RevisionTarget(_Keyed):
    """What the gateway needs to forward to one revision."""

    namespace: str
    name: str
    service: str
    timeout_s: float
    """`timeoutSeconds`: no response started by then → 504."""
    response_start_timeout_s: float
    """`responseStartTimeoutSeconds` (0 → `timeout_s`): max wait for the first response byte."""
    idle_timeout_s: float
    """`idleTimeoutSeconds` (0 → unlimited): max gap between bytes once a response streams."""
    container_concurrency: int
    """0 = unlimited; otherwise a hard per-replica limit."""
    endpoints: tuple[Endpoint, ...]
    """Ready replicas, and starting ones (`Endpoint.starting`)."""
    failure: str = ""
    """Non-empty when requests must fail fast (503 with this reason) instead of waiting: the
    revision failed, or its replica exited before becoming ready and none is left."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")

    def __reduce__(self) -> tuple[type[RevisionTarget], tuple[Any, ...]]:
        # Copies and pickles rebuild through __init__, so `key` is set again.
        return (type(self), tuple(getattr(self, f.name) for f in fields(self)))


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    revision: str
    """Revision name (same namespace as the route)."""
    percent: int


@dataclass(frozen=True, slots=True)
class TagTarget:
    tag: str
    revision: str
    hosts: tuple[str, ...]
    """Hosts (no port) that address this tag directly, e.g. `blue-hello.default.localhost`."""


@dataclass(frozen=True, slots=True)
class RouteEntry:
    namespace: str
    name: str
    hosts: tuple[str, ...]
    """Hosts (no port) of the route's default traffic, e.g. `hello.default.localhost`."""
    traffic: tuple[TrafficSplit, ...]
    """Weighted targets of the default host; percents sum to 100 (entries with 0 % allowed)."""
    tags: tuple[TagTarget, ...]
    cluster_local: bool = False
    """Knative's `networking.knative.dev/visibility: cluster-local`: the route and its tags are
    served on the gateway's loopback listener (and its workers' internal sockets) only; on a
    `--listen` address their hosts answer 404 as unknown hosts do. Absent in snapshots written
    before the field existed: public."""


@dataclass(frozen=True, slots=True)
class BrokerEntry:
    """A broker whose ingress this gateway serves, and the channel log its events go to."""

    namespace: str
    name: str
    uid: str
    """The broker's uid: a broker deleted and created again under its name gets a new log."""
    log: str
    """The log's database file, relative to the state dir (`eventing/logs/{uid}.db`)."""
    durable: bool = True
    """False for the in-memory channel kind (the same log without fsync)."""
    kind: str = "broker"
    """`broker` (at `broker-ingress.{domain}`) or `channel` (an InMemoryChannel, at
    `channel-ingress.{domain}`)."""
    backend: str = "sqlite"
    """`sqlite` (the file `log`, written by one home worker) or `redis` (the stream `stream`,
    written by any worker of any gateway)."""
    stream: str = ""
    """The Redis stream key (`flint_common.redis_keys.stream_key(uid)`) when `backend` is `redis`."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ident(self) -> str:
        """`kind:namespace/name`: unique across brokers and channels."""
        return f"{self.kind}:{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class Peer:
    """A gateway that takes part in subsetting: where it accepts requests other gateways forward."""

    gateway: str
    """Its gateway id (`Hello.worker` up to the `/`)."""
    host: str
    """Address of its peer listener (`--peer-listen`): a pod IP on Kubernetes. Connections to
    any gateway's peer listener are accepted only from the `host` of a peer in the snapshot."""
    port: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a gateway worker needs to route; versions increase monotonically."""

    version: int
    routes: tuple[RouteEntry, ...]
    revisions: tuple[RevisionTarget, ...]
    brokers: tuple[BrokerEntry, ...] = ()
    peers: tuple[Peer, ...] = ()
    """The gateways that own replicas (`Endpoint.owner`), sorted by id; () without subsetting
    (the embedded engine's single gateway, or no gateway announcing a peer address)."""

    @staticmethod
    def empty() -> Snapshot:
        return Snapshot(version=0, routes=(), revisions=())
