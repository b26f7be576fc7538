"""This gateway's share of a subsetted snapshot: the replicas it owns, where it forwards the rest (pure).

With several gateways (the Kubernetes engine's gateway pods), the controller gives each replica
of a revision with `containerConcurrency` > 0 one owner gateway (`Endpoint.owner`, chosen by
`controller.routing_subsets`) and lists the gateways' peer listeners (`Snapshot.peers`). A
gateway with a peer listener of its own (`GatewaySettings.peer_listen`) routes by `local_view`:

- a limited revision keeps only the endpoints this gateway owns, so its home worker queues,
  enforces the limit and counts stats for those alone, exactly as without subsetting;
- a limited revision of which it owns none is *forwarded*: its requests go to an owner gateway's
  peer listener (`PeerChoice`: round-robin weighted by the replicas each owner has), naming the
  revision in `x-flint-revision`, as a worker forwards to its home worker (one unlimited upstream,
  no stats: the owner reports them);
- connections to its peer listener are accepted only from `peer_hosts`, the addresses of the
  snapshot's peers.

A gateway without a peer listener ignores owners (`local_view(snapshot, None)`: the snapshot as
it is): the embedded engine's single gateway routes exactly as before.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from flint_common.snapshot import Endpoint, Peer, RevisionTarget, Snapshot

__all__ = ["PEER_ENDPOINT_PREFIX", "LocalView", "PeerChoice", "local_revision", "local_view", "normal_ip",
           "peer_endpoint"]


PEER_ENDPOINT_PREFIX = "@gateway-peer-"


def peer_endpoint(peer: Peer) -> Endpoint:
    """The upstream of a peer gateway's listener (its id is never a replica's)."""
    return Endpoint(f"{PEER_ENDPOINT_PREFIX}{peer.gateway}", peer.host, peer.port)


def normal_ip(host: str) -> str:
    """An IP address in one spelling (an IPv4-mapped IPv6 address as IPv4); other text as is."""
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return str(addr)


class PeerChoice:
    """The owner gateways of one forwarded revision, each as often as it owns replicas of it:
    `next()` goes round them (weighted round-robin)."""

    __slots__ = ("_i", "endpoints")

    def __init__(self, endpoints: tuple[Endpoint, ...]) -> None:
        self.endpoints = endpoints
        self._i = 0

    def next(self) -> Endpoint:
        eps = self.endpoints
        ep = eps[self._i % len(eps)]
        self._i += 1
        return ep


@dataclass(frozen=True, slots=True)
class LocalView:
    """What one gateway routes by."""

    snapshot: Snapshot
    """The snapshot with each limited revision's endpoints cut to the ones this gateway owns."""
    forwards: dict[str, PeerChoice]
    """Revision key → its owners' peer listeners, for limited revisions this gateway owns no
    replica of (but another gateway does)."""
    peer_hosts: frozenset[str]
    """The peers' addresses (`normal_ip`): who may connect to this gateway's peer listener."""


def local_view(snapshot: Snapshot, gateway_id: str | None) -> LocalView:
    """`snapshot` as gateway `gateway_id` routes it (None: a gateway without a peer listener,
    which ignores owners). A gateway not (yet) among the peers owns nothing: it forwards."""
    hosts = frozenset(normal_ip(p.host) for p in snapshot.peers)
    if gateway_id is None or not snapshot.peers:
        return LocalView(snapshot, {}, hosts)
    peers = {p.gateway: p for p in snapshot.peers}
    forwards: dict[str, PeerChoice] = {}
    revisions: list[RevisionTarget] = []
    changed = False
    for rev in snapshot.revisions:
        local, choice = local_revision(rev, gateway_id, peers)
        if choice is not None:
            forwards[rev.key] = choice
        changed |= local is not rev
        revisions.append(local)
    if changed:
        snapshot = replace(snapshot, revisions=tuple(revisions))
    return LocalView(snapshot, forwards, hosts)


def local_revision(
    rev: RevisionTarget, gateway_id: str, peers: dict[str, Peer]
) -> tuple[RevisionTarget, PeerChoice | None]:
    """One revision as gateway `gateway_id` routes it (`local_view`'s, for a delta's revisions):
    a limited revision with only the endpoints it owns (the same object when that is all of
    them), and its owners' peer listeners when it owns none (else None)."""
    if rev.container_concurrency <= 0 or not any(ep.owner for ep in rev.endpoints):
        return rev, None
    owned = tuple(ep for ep in rev.endpoints if ep.owner in ("", gateway_id))
    choice = None if owned else _owners(rev.endpoints, peers)
    if len(owned) != len(rev.endpoints):
        rev = replace(rev, endpoints=owned)
    return rev, choice


def _owners(endpoints: tuple[Endpoint, ...], peers: dict[str, Peer]) -> PeerChoice | None:
    """The owners of `endpoints`, weighted, or None (none among the peers)."""
    counts: dict[str, int] = {}
    for ep in endpoints:
        if ep.owner in peers:
            counts[ep.owner] = counts.get(ep.owner, 0) + 1
    if not counts:
        return None
    # Interleaved (A, B, A, B, A) rather than in runs, so a burst spreads at once.
    lists = {g: [peer_endpoint(peers[g])] * n for g, n in sorted(counts.items())}
    order: list[Endpoint] = []
    while any(lists.values()):
        for eps in lists.values():
            if eps:
                order.append(eps.pop())
    return PeerChoice(tuple(order))
