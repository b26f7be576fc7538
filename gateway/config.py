"""Gateway settings: how one gateway listens, forwards, protects itself and finds the controller."""

from __future__ import annotations

import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flint_common.addresses import format_listen, parse_listen, parse_listen_list
from flint_common.wire import LINK_PATH

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewaySettings:
    """How one gateway (all of its workers) listens, forwards and protects itself."""

    host: str = "127.0.0.1"
    """Loopback address of the proxy: the listener the dispatcher's deliveries and replies and
    `flint event send` use. Always served, whatever `listen` adds."""
    port: int = 8080
    """Port of the proxy on `host` (all workers share it with SO_REUSEPORT)."""
    listen: tuple[tuple[str, int], ...] = ()
    """More (address, port) pairs the proxy serves (`--listen ADDR[:PORT]`, IPv6 too): where
    users reach their routes and the broker ingress on a real interface. Plain HTTP: put a TLS
    terminator in front for public traffic."""
    peer_listen: str = ""
    """`ADDR:PORT` of the peer listener (`--peer-listen`), "" for none. With it, this gateway takes
    part in subsetting (several gateways, one owner per replica of a revision with
    `containerConcurrency`: `gateway.subsets`): it announces the address to the controller, sends
    a limited revision's requests only to the replicas it owns, forwards them to an owner gateway's
    peer listener when it owns none, and accepts on its own peer listener the requests the other
    gateways forward, from their addresses only (the snapshot's peers). On Kubernetes: the pod
    IP and an internal port (`$(POD_IP):8090`). The embedded engine's gateway has none."""
    admin_host: str = "127.0.0.1"
    """Address of the admin server. Its `/metrics` needs the owner's token unless this is a
    loopback address."""
    admin_port: int = 8082
    """Port of the admin server: /healthz, /readyz, /metrics (aggregated over the workers)."""
    probe_listen: str = ""
    """`ADDR:PORT` of a listener serving only /healthz and /readyz, without a token
    (`--probe-listen`), "" for none: on Kubernetes the kubelet probes the pod IP
    (`$(POD_IP):8081`), while the admin port stays on loopback with its /metrics."""
    token_file: Path | None = None
    """0600 file holding the owner's token, sent on the controller link and checked on the admin
    port. Default: `<state_dir>/auth/token`. The token itself is never a setting, a flag or an
    environment variable."""
    link_token_file: Path | None = None
    """A file holding the credential sent on the controller link instead of the owner's token: on
    the Kubernetes engine the pod's projected service-account token (audience `flint-controller`,
    e.g. `/var/run/secrets/flint/token`), which the controller checks by TokenReview. Read again
    at every (re)connection, since the kubelet rotates it. None: the owner's token (`token_file`),
    which guards the admin port either way."""
    controller_ca: Path | None = None
    """A PEM file of the CAs that may sign an `https://` controller's certificate (on Kubernetes
    the mounted ConfigMap `flint-controller-ca`, `/etc/flint/controller-ca/ca.crt`). Read again at
    every (re)connection, so the bundle a CA rotation rewrites is picked up. None: the system's
    CAs. The certificate and its name are always verified."""
    workers: int = 1
    """Worker processes sharing `port`. Each has its own event loop and controller link."""
    domain: str = "localhost"
    """DNS suffix of route hosts: `{route}.{namespace}.{domain}`."""
    controller_url: str = "http://127.0.0.1:8081"
    """Base URL of the controller; the link is the websocket at `/internal/gateway/link`.
    Several, comma-separated (`--controller` repeated), are tried in turn: the link moves on when
    one is unreachable or closes it as a standby (`NOT_LEADER`). In a cluster, one URL: the
    `flint-controller-leader` Service, whose only endpoint is the leader."""
    state_dir: Path = field(default_factory=lambda: Path(".flint"))
    """Where the last routing snapshot is persisted (`gateway/snapshot.json`) and worker sockets live."""
    max_request_body_bytes: int = 100 * 1024 * 1024
    """Largest request body accepted (sized or chunked); more → 413. nginx: 1 MiB; we are an API
    gateway for uploads too, so 100 MiB like many ingress defaults."""
    max_header_bytes: int = 32 * 1024
    """Largest request line plus header block; more → 431 (nginx's large_client_header_buffers 4×8k)."""
    header_read_timeout_s: float = 30.0
    """Seconds a client may take to send a complete header block (slowloris guard) → 408."""
    client_keepalive_timeout_s: float = 75.0
    """Seconds an idle client keep-alive connection is kept open (nginx: 75 s)."""
    upstream_connect_timeout_s: float = 0.1
    """Seconds to connect to a replica on loopback; longer means its SYN was dropped (the
    replica's accept queue is full: the kernel would send it again only after 1 s), an overload
    signal: the request waits for room on a replica (`learned_limit_growth`)."""
    upstream_keepalive_per_endpoint: int = 64
    """Idle pooled connections kept per replica."""
    upstream_keepalive_idle_s: float = 30.0
    """Seconds an idle pooled upstream connection lives (below the apps' typical 60 s)."""
    replay_buffer_bytes: int = 64 * 1024
    """Request bodies up to this size are kept so that a request can be sent again: over a fresh
    connection when a reused one fails, or to a replica with room when a fresh one fails before
    any response byte (the replica was overloaded)."""
    upstream_connecting_per_replica: int = 8
    """Connections being opened at once to one replica (per worker); more requests wait for one
    of those (or for a pooled connection) instead of connecting. A burst of 1,000 to an app with
    a listen backlog of 5 is otherwise 1,000 simultaneous connects, most of them dropped."""
    upstream_user_timeout_s: float = 2.0
    """`TCP_USER_TIMEOUT` of a fresh upstream connection until its first response: a replica
    whose accept queue overflowed never acknowledges the request, and this catches it (Linux
    would retransmit for minutes). 0 leaves the kernel's default."""
    learned_limit_growth: int = 16
    """Successes after which a replica's learned in-flight limit (`containerConcurrency: 0`:
    learned from refused, reset, stalled or dropped fresh connections) grows by one."""
    nofile_limit: int = 65536
    """Open-file soft limit requested at start (clamped to the hard limit)."""
    queue_limit_per_revision: int = 10_000
    """Requests that may wait for capacity in one revision's queue (scale from zero, every
    replica at its `container_concurrency`); one more → 503 with `Retry-After`. Counted per
    worker; a limited revision (`container_concurrency` > 0) queues only at its home worker,
    so for those it is exact. Knative's activator queue default is 10,000 as well."""
    queue_memory_budget_bytes: int = 512 * 1024 * 1024
    """Memory the wait queues of the whole gateway may hold, split evenly over the workers. A
    queued request counts `queue_request_cost_bytes` plus the body bytes it may buffer
    (`queue_body_buffer_bytes` at most); over budget → 503 with `Retry-After`. 512 MiB is
    about 30,000 queued requests with small bodies."""
    queue_request_cost_bytes: int = 16 * 1024
    """Estimated memory of one queued request (bytes): its parsed head, protocol and transport
    objects and socket buffers. Used only for `queue_memory_budget_bytes`."""
    queue_body_buffer_bytes: int = 16 * 1024
    """A queued request whose body (Content-Length) is at most this many bytes is read and
    buffered while it waits; larger and chunked bodies stay unread in the socket (the client
    transport is paused) until the request is forwarded."""
    probe_interval_s: float = 0.005
    """Seconds between the gateway's own TCP-connect probes of a `starting` endpoint."""
    max_event_bytes: int = 4 * 1024 * 1024
    """Largest CloudEvent the broker ingress accepts (its encoded size); more → 413."""
    max_ingress_body_bytes: int = 16 * 1024 * 1024
    """Largest request body the broker ingress reads (a batch of events); more → 413."""
    log_compact_interval_s: float = 30.0
    """Seconds between two retention passes over the logs a worker writes (deleting what every
    trigger has handled, then applying the caps below)."""
    log_max_age_s: float = 7 * 24 * 3600.0
    """Retention cap of a broker's or channel's log: records older than this are deleted even if
    a trigger has not handled them yet (each such record is counted and logged as dropped, reason
    `retention`). Records every trigger has handled go at once, whatever their age. 7 days, the
    Kafka broker's default retention."""
    log_max_records: int = 10_000_000
    """Retention cap in records (the newest are kept); beyond it, as for `log_max_age_s`. About
    10 GiB of 1 KiB events."""

    @property
    def credential_path(self) -> Path:
        return self.token_file or self.state_dir / "auth" / "token"

    @property
    def snapshot_path(self) -> Path:
        return self.state_dir / "gateway" / "snapshot.json"

    @property
    def controller_urls(self) -> tuple[str, ...]:
        """`controller_url`'s URLs, in order."""
        return tuple(u.strip().rstrip("/") for u in self.controller_url.split(",") if u.strip())

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """`peer_listen` as (host, port), or None; ValueError when it is not `ADDR:PORT`."""
        if not self.peer_listen:
            return None
        host, port = parse_listen(self.peer_listen, 0)
        if not port:
            raise ValueError(f"--peer-listen {self.peer_listen!r}: want ADDR:PORT (a port is needed)")
        return host, port

    @property
    def probe_address(self) -> tuple[str, int] | None:
        """`probe_listen` as (host, port), or None; ValueError when it is not `ADDR:PORT`."""
        if not self.probe_listen:
            return None
        host, port = parse_listen(self.probe_listen, 0)
        if not port:
            raise ValueError(f"--probe-listen {self.probe_listen!r}: want ADDR:PORT (a port is needed)")
        return host, port

    def tcp_addresses(self) -> list[tuple[str, int]]:
        """Every TCP listener of a worker slot, in `gateway.slots` order: the loopback one, each
        `listen` address, then the peer listener."""
        peer = self.peer_address
        return [(self.host, self.port), *self.listen, *(() if peer is None else (peer,))]

    @property
    def link_url(self) -> str:
        """The first controller's link."""
        return self.link_urls[0]

    @property
    def link_urls(self) -> tuple[str, ...]:
        """Every controller's link, in the order they are tried."""
        return tuple(u + LINK_PATH for u in self.controller_urls) or (LINK_PATH,)

    @staticmethod
    def from_env(**overrides: Any) -> GatewaySettings:
        """Settings from `FLINT_GATEWAY_*` environment variables, then explicit overrides."""
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(GatewaySettings)
        for f in GatewaySettings.__dataclass_fields__.values():
            raw = os.environ.get("FLINT_GATEWAY_" + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _coerce(hints[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return GatewaySettings(**values)


def _coerce(kind: Any, raw: str) -> Any:
    """`raw` as a value of the field type `kind` (an Optional is its inner type)."""
    inner = [t for t in typing.get_args(kind) if t is not type(None)]
    if isinstance(kind, types.UnionType) and len(inner) == 1:
        kind = inner[0]
    if kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind in (int, float, Path):
        return kind(raw)
    if typing.get_origin(kind) is tuple:  # the listen addresses
        return parse_listen_list(raw, default_port=0)
    return raw


def encode_setting(value: Any) -> str:
    """A settings value as the text `_coerce` reads back (`FLINT_GATEWAY_*` variables)."""
    if isinstance(value, tuple):
        return format_listen(value)
    return str(value)
