"""Keeps the gateways' snapshot current and stops replicas only once no gateway routes to them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from controller.api.eventing import (
    BACKEND_REDIS,
    ENGINE_EMBEDDED,
    STREAM_ANNOTATION,
    broker_backend,
    status_annotation,
)
from controller.eventing.plan import broker_log_relpath
from controller.gatewayhub import GatewayHub
from controller.informer import Informer
from controller.reconcilers.conditions import get_condition
from controller.reconcilers.context import BROKERS, IN_MEMORY_CHANNELS, REDIS_CHANNELS, REVISIONS, ROUTES
from controller.reconcilers.revision import failed
from controller.routing_subsets import HANDOFF, hold_moves, peer_table
from controller.runtime.base import ReplicaStatus, Runtime
from controller.snapshot_builder import HostPlanner, SnapshotBuilder
from flint_common.redis_keys import stream_key
from flint_common.snapshot import BrokerEntry, Endpoint, Snapshot

log = logging.getLogger("flint.publisher")

Obj = dict[str, Any]

SNAPSHOT_KINDS = (ROUTES, REVISIONS, BROKERS, IN_MEMORY_CHANNELS, REDIS_CHANNELS)
"""The kinds the gateways' snapshot is built from: a change of one asks for a new snapshot."""


def broker_entries(
    brokers: Iterable[Obj], *, engine: str = ENGINE_EMBEDDED, redis: bool = False
) -> list[BrokerEntry]:
    """The gateways' entries of the brokers of Flint's classes on `engine` (pure): a SQLite
    broker's log file (written by its home worker), a Redis broker's stream (any worker appends;
    `log`, which the wire requires, is unused then: it names the SQLite path the broker would have,
    inside the logs folder, never the state dir itself, so code that touches `state_dir / log`
    without looking at `backend` (a retire's file removal) cannot harm anything). Without `redis`
    (no Redis configured) a Redis broker is left out: it is not Ready (`RedisNotConfigured`) and
    its ingress answers 404; so is one whose stream the broker reconciler has not created yet
    (`STREAM_ANNOTATION`): the gateways append with NOMKSTREAM and never create it."""
    out = []
    for b in brokers:
        meta = b["metadata"]
        backend = broker_backend(b, engine)
        if backend is None or not meta.get("uid"):
            continue
        if backend == BACKEND_REDIS and not (redis and _has_stream(b)):
            continue
        ns, name, uid = meta.get("namespace", "default"), meta["name"], meta["uid"]
        if backend == BACKEND_REDIS:
            out.append(BrokerEntry(ns, name, uid, broker_log_relpath(uid), backend=BACKEND_REDIS,
                                   stream=stream_key(uid)))
        else:
            out.append(BrokerEntry(ns, name, uid, broker_log_relpath(uid)))
    return out


def redis_channel_entries(channels: Iterable[Obj], *, redis: bool = False) -> list[BrokerEntry]:
    """The gateways' entries of RedisChannels (pure): served at the channel-ingress address like an
    InMemoryChannel, appended to their stream by any worker (`log` unused, as a Redis broker's).
    Without `redis` none: they are not Ready (`RedisNotConfigured`) and their ingress answers 404;
    nor those whose stream was not created yet (as for a Redis broker)."""
    if not redis:
        return []
    out = []
    for c in channels:
        meta = c["metadata"]
        if not meta.get("uid") or not _has_stream(c):
            continue
        uid = meta["uid"]
        out.append(BrokerEntry(meta.get("namespace", "default"), meta["name"], uid, broker_log_relpath(uid),
                               kind="channel", backend=BACKEND_REDIS, stream=stream_key(uid)))
    return out


def _has_stream(log_owner: Obj) -> bool:
    """The broker's (or RedisChannel's) reconciler created its stream (its status says so), or
    the object comes from a Flint before the marks whose status said its Redis channel was ready
    (its stream made by the gateways then: kept in the snapshot across the upgrade until its
    reconciler, at once, marks it)."""
    uid = log_owner["metadata"]["uid"]
    mark = status_annotation(log_owner, STREAM_ANNOTATION)
    if mark:
        return mark == stream_key(uid)
    status = log_owner.get("status") or {}
    return any(c.get("type") in ("TriggerChannelReady", "ChannelServiceReady")
               and c.get("status") == "True" for c in status.get("conditions") or [])


@dataclass
class _Drain:
    started: float
    version: int | None = None
    """First snapshot version published without the replica."""


class SnapshotPublisher:
    """Builds snapshots from the informers and the runtime; drains replicas before stopping them.

    A replica being drained is left out of every snapshot; it is stopped once every connected
    worker has acked a snapshot without it and reports nothing in flight to it (or after
    `drain_timeout_s`). With gateways that announce a peer listener, each replica of a limited
    revision gets an owner among them (`controller.routing_subsets.owned_target`); a gateway
    joining or leaving republishes."""

    def __init__(
        self,
        hub: GatewayHub,
        runtime: Runtime,
        routes: Informer,
        revisions: Informer,
        domain: str | Callable[[Obj], str],
        *,
        drain_timeout_s: float,
        stop_grace_s: float,
        on_published: Callable[[int], None] | None = None,
        brokers: Informer | None = None,
        channels: Informer | None = None,
        engine: str = ENGINE_EMBEDDED,
        redis: bool = False,
        redis_channels: Informer | None = None,
    ) -> None:
        self._redis_channels = redis_channels
        self._engine = engine
        self._redis = redis
        self._brokers = brokers
        self._channels = channels
        self._hub = hub
        self._runtime = runtime
        self._routes = routes
        self._revisions = revisions
        self._domain = domain
        self._drain_timeout_s = drain_timeout_s
        self._stop_grace_s = stop_grace_s
        self._on_published = on_published
        self._draining: dict[str, _Drain] = {}
        self._planner = HostPlanner()
        self._builder = SnapshotBuilder()
        """Rebuilds only the entries whose inputs changed (10,000 Services: issue 15 §5)."""
        self._scheduled = False
        self._stopping: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._owners: dict[str, str] = {}
        """Replica id → the gateway last published as its owner (a limited revision's)."""
        self._moves: dict[str, _Drain] = {}
        """Replicas being handed from one owner to another (published as nobody's)."""
        self._released: set[str] = set()
        """Replicas the next snapshot gives to their new owner (their old one let go)."""
        self._away: dict[str, float] = {}
        """Gateway id → when (monotonic) an owner was first seen unlinked (`_claims`)."""
        hub.on_peers_changed(self.mark_dirty)  # a gateway joining or leaving moves owners

    # -- snapshots ----------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._publish)

    def endpoints(self, replicas: list[ReplicaStatus] | None = None
                  ) -> dict[tuple[str, str], tuple[Endpoint, ...]]:
        """Each revision's ready or starting replicas that are not draining (`replicas`: the
        runtime's, listed once per build)."""
        out: dict[tuple[str, str], list[Endpoint]] = {}
        for r in self._runtime.replicas() if replicas is None else replicas:
            if r.state not in ("ready", "starting") or r.id in self._draining or r.id in self._stopping:
                continue
            ns, _, name = r.revision_key.partition("/")
            out.setdefault((ns, name), []).append(
                Endpoint(r.id, r.host, r.port, starting=r.state == "starting")
            )
        return {k: tuple(sorted(v, key=lambda e: e.id)) for k, v in out.items()}

    def failures(self, replicas: list[ReplicaStatus] | None = None) -> dict[tuple[str, str], str]:
        """Revisions whose waiting requests should fail fast, with the reason: the revision
        failed, or every replica it has exited before becoming ready."""
        out: dict[tuple[str, str], str] = {}
        by_rev: dict[str, list[ReplicaStatus]] = {}
        for r in self._runtime.replicas() if replicas is None else replicas:
            if r.id not in self._draining and r.id not in self._stopping:
                by_rev.setdefault(r.revision_key, []).append(r)
        for rev in self._revisions:
            key = (rev["metadata"].get("namespace", "default"), rev["metadata"]["name"])
            if failed(rev):
                ready = get_condition(rev.get("status") or {}, "Ready") or {}
                out[key] = f'revision "{key[1]}" failed: {ready.get("message", "")}'.strip()
                continue
            replicas = by_rev.get(f"{key[0]}/{key[1]}", [])
            if replicas and all(r.state in ("crashed", "failed") for r in replicas):
                detail = replicas[0].message.splitlines()[0] if replicas[0].message else "no message"
                out[key] = f'every replica of revision "{key[1]}" exited before becoming ready: {detail}'
        return out

    def build(self) -> Snapshot:
        routes = list(self._routes)
        revisions = {
            (o["metadata"].get("namespace", "default"), o["metadata"]["name"]): o
            for o in self._revisions
        }
        peers = self._hub.peers()
        replicas = self._runtime.replicas()
        # Limited revisions' replicas get an owner among the gateways with a peer listener.
        snapshot = self._builder.build(
            routes, revisions, self.endpoints(replicas), self._planner.plan(routes, self._domain),
            version=0, failures=self.failures(replicas), gateways=sorted(peers),
        )
        snapshot = replace(snapshot, brokers=self.broker_entries(), peers=peer_table(peers))
        return self._hand_over(snapshot) if snapshot.peers or self._owners else snapshot

    def _hand_over(self, snapshot: Snapshot) -> Snapshot:
        """Hold the replicas another gateway may still be sending requests to (`hold_moves`).

        Who may: the owner we last published, while it is linked (until it lets go: released in
        `check_drains`) or *away* — unlinked, since it keeps serving its last snapshot — until it
        rejoins or `drain_timeout_s` passes (the same bound as a drain: a gateway that stays away
        longer, partitioned yet serving, is the one case this cannot cover); and whatever
        gateways reported owning when they linked (`Hello.owned`), which is how a new leader,
        with no memory of the last one's owners, learns them. In the hub's rejoin window a
        replica nobody claims is held too: its owner may be a gateway not back yet."""
        snapshot, held = hold_moves(snapshot, self._claims(), unknown_held=self._hub.rejoining())
        reported = self._hub.reported()
        owners: dict[str, str] = {}
        for rev in snapshot.revisions:
            for ep in rev.endpoints:
                if ep.owner == HANDOFF:
                    old = self._owners.get(ep.id) if ep.id not in self._released else None
                    old = old or next((g for g, rs in sorted(reported.items()) if ep.id in rs), None)
                    if old:
                        owners[ep.id] = old  # still its claim if it goes away before letting go
                elif ep.owner:
                    owners[ep.id] = ep.owner
        self._owners = owners
        self._released.clear()  # given to their new owner now: a later move is held again
        for rid in held:
            self._moves.setdefault(rid, _Drain(started=time.monotonic()))
        for rid in [r for r in self._moves if r not in held]:
            del self._moves[rid]
        return snapshot

    def _claims(self) -> dict[str, set[str]]:
        """Replica id → the gateways that may still send it requests (see `_hand_over`)."""
        linked = set(self._hub.peers())
        now = time.monotonic()
        for g in set(self._owners.values()) - linked:
            self._away.setdefault(g, now)
        for g, since in list(self._away.items()):
            if g in linked:
                del self._away[g]
            elif now - since > self._drain_timeout_s:
                log.warning("gateway %s stayed away past the drain timeout; its replicas go to "
                            "the others", g)
                del self._away[g]
                self._owners = {r: o for r, o in self._owners.items() if o != g}
        claims: dict[str, set[str]] = {}
        for rid, g in self._owners.items():
            if rid not in self._released and (g in linked or g in self._away):
                claims.setdefault(rid, set()).add(g)
        for g, rids in self._hub.reported().items():
            for rid in rids:
                claims.setdefault(rid, set()).add(g)
        return claims

    def new_term(self) -> None:
        """A leader's term starts (`controller.app`'s `_on_lead`): forget the owners, handoffs
        and away gateways of any earlier term (the gateways tell us what they own as they link,
        and the hub's rejoin window holds the rest)."""
        self._owners.clear()
        self._moves.clear()
        self._released.clear()
        self._away.clear()

    def broker_entries(self) -> tuple[BrokerEntry, ...]:
        """Every broker of Flint's classes, every InMemoryChannel and (with Redis) every
        RedisChannel, with its log: the gateways' ingress serves them."""
        out = list(broker_entries(self._brokers or (), engine=self._engine, redis=self._redis))
        out += redis_channel_entries(self._redis_channels or (), redis=self._redis)
        for c in self._channels or ():  # InMemoryChannels: the same log, without fsync
            meta = c["metadata"]
            if meta.get("uid"):
                out.append(
                    BrokerEntry(meta.get("namespace", "default"), meta["name"], meta["uid"],
                                broker_log_relpath(meta["uid"]), durable=False, kind="channel")
                )
        return tuple(sorted(out, key=lambda e: e.ident))

    def _publish(self) -> None:
        self._scheduled = False
        version = self._hub.publish(self.build())
        for d in (*self._draining.values(), *self._moves.values()):
            if d.version is None:
                d.version = version
        if self._on_published is not None:
            self._on_published(version)
        self.check_drains()

    # -- draining -----------------------------------------------------------------------------

    def is_draining(self, replica_id: str) -> bool:
        return replica_id in self._draining or replica_id in self._stopping

    def drain(self, replica_id: str) -> None:
        """Take the replica out of routing; stop it once the gateways let go of it."""
        if replica_id in self._draining or replica_id in self._stopping:
            return
        self._draining[replica_id] = _Drain(started=time.monotonic())
        self.mark_dirty()

    def check_drains(self) -> None:
        """Called on every ack and publish: stop the replicas that no gateway holds any more,
        give the replicas being handed over to their new owner once the old one let go."""
        now = time.monotonic()
        linked = self._hub.peers()
        for rid, d in list(self._moves.items()):
            # Released by acks only when its old owner is linked and acked (an away one cannot;
            # nor can anyone on a standby, with no gateway linked).
            old = self._owners.get(rid)
            if d.version is not None and rid not in self._released and (
                    now - d.started > self._drain_timeout_s or (
                        self._hub.connected() > 0 and (old is None or old in linked)
                        and self._hub.acked_by_all(d.version) and not self._hub.draining(rid))):
                self._released.add(rid)
                self.mark_dirty()
        if any(now - since > self._drain_timeout_s for since in self._away.values()):
            self.mark_dirty()
        for rid, d in list(self._draining.items()):
            # With no gateway connected nobody can ack: a gateway restarting from its persisted
            # snapshot may still route to the replica, so wait (up to the drain timeout).
            released = (
                d.version is not None
                and self._hub.connected() > 0
                and self._hub.acked_by_all(d.version)
                and not self._hub.draining(rid)
            )
            if released or now - d.started > self._drain_timeout_s:
                if not released:
                    log.warning("drain timed out replica=%s; stopping it anyway", rid)
                del self._draining[rid]
                self._stopping.add(rid)
                task = asyncio.get_running_loop().create_task(self._stop(rid))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _stop(self, replica_id: str) -> None:
        try:
            await self._runtime.stop_replica(replica_id, self._stop_grace_s)
        except Exception:
            log.exception("stopping replica failed replica=%s", replica_id)
        finally:
            self._stopping.discard(replica_id)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
