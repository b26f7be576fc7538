"""The controller process: store, informers, reconcilers, runtime, gateway hub and dispatch plan
(on the Kubernetes engine, the leader's work only while it leads: `controller.leadership`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import redis.asyncio as aioredis
from aiohttp import web
from kubernetes_asyncio import client as kube_client

from controller import engine
from controller.api.eventing import ENGINE_EMBEDDED, ENGINE_KUBERNETES
from controller.api.registry import registry_for
from controller.apiserver import make_api_app
from controller.autoscaling.scaler import Scaler
from controller.broker_backlog import add_backlog_routes, fetch_dispatcher_backlogs
from controller.builds.artifacts import ArtifactStore
from controller.cluster_tls.keeper import CertKeeper
from controller.credentials import Credentials, ensure_credentials
from controller.dispatcher_proxy import DispatcherProxy
from controller.dispatchhub import DispatchHub
from controller.eventing.plan import PLAN_PATH, build_plan, dispatcher_id
from controller.gatewayhub import GatewayHub
from controller.informer import Informer
from controller.leadership import Leadership
from controller.listeners import start_sites
from controller.logs_endpoint import add_log_routes
from controller.observability import add_observability_routes
from controller.reconcilers.context import (
    BROKERS,
    CHANNELS,
    CONFIGURATIONS,
    CORE_SERVICES,
    IN_MEMORY_CHANNELS,
    LABEL_CONFIGURATION,
    REDIS_CHANNELS,
    REVISIONS,
    ROUTES,
    SERVICES,
    SUBSCRIPTIONS,
    TRIGGERS,
    EventingContext,
    Informers,
    Key,
    Obj,
    ServingContext,
    ns_name,
)
from controller.reconcilers.publisher import SNAPSHOT_KINDS, SnapshotPublisher
from controller.reconcilers.queue import WorkQueue
from controller.reconcilers.redis_leftovers import leftovers
from controller.reconcilers.revision import referenced
from controller.reconcilers.revision_kubernetes import KubeServingContext
from controller.reconcilers.sets import EVENTING, KUBERNETES_SERVING, PLAN_KINDS, SERVING
from controller.reconcilers.watches import Change, Mapper, Reconciler
from controller.redis_health import RedisHealth, RedisView
from controller.redis_janitor import RedisJanitor
from controller.redis_logs import RedisLogs
from controller.redis_sweep import store_owners
from controller.requeues import owned, redis_dependents, unready_eventing, unready_routes
from controller.runtime.base import ProcessRuntime, ReplicaStatus, Runtime
from controller.settings import ControllerSettings
from controller.store.base import Kind, NotFound, Store
from controller.store.kubernetes import KubernetesStore
from controller.webhook.server import WebhookServer
from flint_common import redis_conn
from flint_common.httpauth import auth_middleware
from flint_common.private import ensure_private_dir
from flint_common.wire import LINK_PATH, Poke, Stats

log = logging.getLogger("flint.controller")

C = TypeVar("C")



class Controller:
    """Wires the pieces; `start()` serves the API and the gateway link until `stop()`."""

    def __init__(
        self,
        settings: ControllerSettings,
        *,
        store: Store | None = None,
        runtime: ProcessRuntime | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._launcher = runtime
        """The embedded engine's runtime when given (tests); else the engine builds one."""
        self._runtime: Runtime | None = None
        self._runner: web.AppRunner | None = None
        self._queues: dict[Kind, WorkQueue[Key]] = {}
        self._informers: list[Informer] = []
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._dispatcher_proxy: DispatcherProxy | None = None
        self.redis: aioredis.Redis | None = None
        """The client of the settings' Redis (None without one): durability checks, deletions."""
        self.redis_health: RedisHealth | None = None
        self.redis_janitor: RedisJanitor | None = None
        self.redis_logs: RedisLogs | None = None
        """Creates the streams and groups of Redis-backed logs (the reconcilers', on `redis`)."""
        self.informers: Informers | None = None
        """The caches of every kind the reconcilers read (None until `start`)."""
        self.eventing: EventingContext | None = None
        self.credentials: Credentials | None = None
        self.urls: list[str] = []
        self.leadership: Leadership | None = None
        """The Kubernetes engine's election (None: this process leads alone)."""
        self._election_api: kube_client.ApiClient | None = None
        self.cluster_tls: CertKeeper | None = None
        """The Kubernetes engine's certificates (`controller.cluster_tls`): the HTTPS API's (and
        the webhook's) `context`; rotated by the leader."""
        self.webhook: WebhookServer | None = None
        """The Kubernetes engine's admission webhook (`settings.webhook.port`; None: not served)."""

    async def start(self) -> None:
        s = self.settings
        tightened = await asyncio.to_thread(ensure_private_dir, s.state_dir)
        if tightened:
            log.warning("state dir %s was readable by others: tightened %d paths to owner-only",
                        s.state_dir, tightened)
        creds, reason = await asyncio.to_thread(
            ensure_credentials, s.state_dir, [h for h, _ in s.api_listen]
        )
        if reason is not None:
            log.info("issued the API's TLS certificate (%s)", reason)
        self.credentials = creds
        parts = await engine.build(s, store=self._store, launcher=self._launcher)
        self._store, self._runtime = parts.store, parts.runtime
        store, runtime = parts.store, parts.runtime
        await runtime.start()
        if isinstance(store, KubernetesStore):  # the cluster certificate: read or made, at once
            self.cluster_tls = CertKeeper(store.api_client, s.cluster_tls, s.kubernetes)
            await self.cluster_tls.start()
        artifacts = ArtifactStore(s.artifacts_dir, exclude=[s.state_dir])

        informers = {
            k: Informer(store, k)
            for k in (SERVICES, CONFIGURATIONS, REVISIONS, ROUTES, BROKERS, TRIGGERS, CHANNELS,
                      IN_MEMORY_CHANNELS, REDIS_CHANNELS, SUBSCRIPTIONS)
        }
        self._informers = list(informers.values())
        hub = GatewayHub(on_progress=self._on_hub_progress, on_report=self._on_report,
                         on_disconnect=self._on_gateway_worker_gone, accepting=lambda: self.leading)
        self.publisher = SnapshotPublisher(
            hub, runtime, informers[ROUTES], informers[REVISIONS], s.domains.of_route,
            drain_timeout_s=s.drain_timeout_s, stop_grace_s=s.stop_grace_s,
            on_published=lambda _v: self._requeue_unready_routes(),
            brokers=informers[BROKERS],
            channels=informers[IN_MEMORY_CHANNELS],
            engine=s.engine,
            redis=s.redis is not None,
            redis_channels=informers[REDIS_CHANNELS],
        )
        if s.redis is not None:
            self.redis = redis_conn.client(s.redis)
            self.redis_health = RedisHealth(self.redis, s.redis.url, on_change=self._requeue_redis_brokers,
                                            every_s=s.redis_check_every_s)
            self.redis_logs = RedisLogs(self.redis)
            self.redis_janitor = RedisJanitor(
                self.redis, journal=s.state_dir / "eventing" / "redis-deletions.json",
                live=lambda: store_owners(store), sweep_every_s=s.redis_sweep_every_s,
                active=lambda: self.leading)
            await self.redis_janitor.start()  # what a previous run could not delete yet
        # The dispatcher of our own state dir (`flint up` starts it) is the embedded one.
        self.dispatch = DispatchHub(
            embedded_id=dispatcher_id(s.state_dir, socket.gethostname()), on_progress=self._requeue_eventing,
            accepting=lambda: self.leading)
        self._plan_scheduled = False
        self.hub = hub
        self.scaler = Scaler(
            s.autoscaler,
            revision=lambda key: informers[REVISIONS].get(*_split(key)),
            ready_replicas=self._ready_replicas,
            replica_pids=self._replica_pids,
            routed=self._routed,
            on_change=lambda key: self.enqueue(REVISIONS, _split(key)),
            reporting=lambda: hub.connected() > 0,
        )
        # On Kubernetes the core Services a Destination may name: the workloads' informer.
        core = {CORE_SERVICES: parts.workloads.services} if parts.workloads is not None else {}
        caches = Informers({**informers, **core})
        self.informers = caches
        if parts.launcher is not None:  # the embedded engine: processes, image snapshots
            serving: ServingContext | KubeServingContext = ServingContext(
                store=store, settings=s, informers=caches, hub=hub,
                snapshot_dirty=self.publisher.mark_dirty, runtime=parts.launcher, artifacts=artifacts,
                drain=self.publisher.drain, publisher_is_draining=self.publisher.is_draining,
                desired_scale=self.scaler.desired, scale_decision=self.scaler.decision)
        else:  # Kubernetes: Deployments, and Routes reachable in the cluster
            assert parts.workloads is not None
            serving = KubeServingContext(
                store=store, settings=s, informers=caches, hub=hub,
                snapshot_dirty=self.publisher.mark_dirty, workloads=parts.workloads,
                route_services=parts.workloads.ensure_route_services,
                desired_scale=self.scaler.desired, scale_decision=self.scaler.decision)
        eventing = EventingContext(
            store=store, settings=s, informers=caches, hub=hub,
            snapshot_dirty=self.publisher.mark_dirty, dispatch=self.dispatch,
            plan_dirty=self._plan_dirty, redis_view=self._redis_view, redis_logs=self.redis_logs,
            enqueue=self.enqueue)
        self.eventing = eventing
        if isinstance(serving, ServingContext):
            for sr in SERVING:
                self._run(sr, serving)
        else:
            for kr in KUBERNETES_SERVING:
                self._run(kr, serving)
        for er in EVENTING:
            self._run(er, eventing)
        for kind, informer in informers.items():
            informer.on_change(self._effects(kind))
        runtime.subscribe(self._on_replica)
        for inf in informers.values():
            await inf.start()
        if s.engine == ENGINE_KUBERNETES and s.leader_election:
            assert isinstance(store, KubernetesStore)  # the engine's (`engine.build`)
            # Connections of its own: Lease renewals never wait behind watches or TokenReviews.
            self._election_api = kube_client.ApiClient(store.api_client.configuration)
            self.leadership = Leadership(self._election_api, s.leader, s.advertised,
                                         on_lead=self._on_lead, on_standby=self._on_standby)
        else:  # this process leads alone; on Kubernetes the terms start and stop these
            if self.cluster_tls is not None:
                self.cluster_tls.lead()
            self.scaler.start()
            for q in self._queues.values():
                q.start()
        # Orphaned replicas (their revision is gone) are reconciled too.
        for r in runtime.replicas():
            ns, _, name = r.revision_key.partition("/")
            self.enqueue(REVISIONS, (ns, name))
        self.publisher.mark_dirty()
        self._ticker = asyncio.create_task(self._tick())
        if self.redis_health is not None:
            self.redis_health.start()  # logs event=redis_connected (or redis_unreachable)

        dispatcher_token = parts.dispatcher_token or creds.token  # what the dispatcher's admin port wants
        app = make_api_app(store, guard=auth_middleware(  # on Kubernetes, SA tokens on these two
            creds.token, alternate=parts.link_auth, alternate_paths=(LINK_PATH, PLAN_PATH)))
        app.router.add_get(LINK_PATH, hub.handle)
        app.router.add_get(PLAN_PATH, self.dispatch.handle)
        add_log_routes(app, runtime, informers[REVISIONS])
        add_observability_routes(app, self.scaler, runtime)
        add_backlog_routes(
            app, informers[BROKERS], informers[TRIGGERS], engine=s.engine, redis=lambda: self.redis,
            sqlite=lambda: fetch_dispatcher_backlogs(s.dispatcher_url, dispatcher_token.reveal()))
        self._dispatcher_proxy = DispatcherProxy(s.dispatcher_url, dispatcher_token)
        self._dispatcher_proxy.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self.urls = await start_sites(
            self._runner, s, creds, self.cluster_tls.context if self.cluster_tls is not None else None)
        log.info("controller: API and gateway link on %s", ", ".join(self.urls))
        if s.webhook.port:  # every replica, leading or not (`controller.webhook`)
            assert self.cluster_tls is not None  # the flag is the Kubernetes engine's
            self.webhook = WebhookServer(registry_for("kubernetes"), s.webhook, self.cluster_tls.context)
            await self.webhook.start()
        if self.leadership is not None:  # serving /healthz (and the API) meanwhile
            self.leadership.start()

    async def stop(self, *, stop_replicas: bool) -> None:
        if self.leadership is not None:  # first: a standby takes over while we stop
            await self.leadership.close()
        if self._election_api is not None:
            await self._election_api.close()
        if self.cluster_tls is not None:
            await self.cluster_tls.close()
        if self.informers is not None:
            await self.scaler.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        if self.webhook is not None:
            await self.webhook.stop()
        if self._runner is not None:
            self.dispatch.close()  # its long polls would hold the cleanup up
            await self.hub.close()
            await self._runner.cleanup()
        if self._dispatcher_proxy is not None:
            await self._dispatcher_proxy.close()
        for q in self._queues.values():
            await q.stop()
        for inf in self._informers:
            await inf.stop()
        if self.informers is not None:
            await self.publisher.close()
        if self.redis_health is not None:
            await self.redis_health.close()
        if self.redis_janitor is not None:
            await self.redis_janitor.close()
        if self.redis is not None:
            await self.redis.aclose()
        if self._runtime is not None:
            await self._runtime.close(stop_replicas=stop_replicas)
        if self._store is not None:
            await self._store.close()

    # -- leadership -----------------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this process does the leader's work (always, without an election)."""
        return self.leadership is None or self.leadership.leading

    def _on_lead(self) -> None:
        """A term starts: the gateways given time to find us, a fresh autoscaler, and every
        object reconciled from the warm caches."""
        self.hub.rejoin(self.settings.gateway_rejoin_s)
        if self.cluster_tls is not None:
            self.cluster_tls.lead()
        self.publisher.new_term()
        self.scaler.reset()
        self.scaler.start()
        for q in self._queues.values():
            q.start()
        assert self.informers is not None and self._runtime is not None
        for kind in self._queues:
            for obj in self.informers.list(kind):
                self.enqueue(kind, ns_name(obj))
        for r in self._runtime.replicas():
            ns, _, name = r.revision_key.partition("/")
            self.enqueue(REVISIONS, (ns, name))
        self.publisher.mark_dirty()
        self._plan_dirty()

    async def _on_standby(self) -> None:
        """A term ends: the reconciles under way cancelled and no more started (a standby writes
        nothing), no more decisions, and the gateways and dispatchers sent to the leader."""
        for q in self._queues.values():
            await q.stop()
        await self.scaler.stop()
        if self.cluster_tls is not None:
            await self.cluster_tls.stand_by()
        self.dispatch.refuse_all()
        await self.hub.refuse_all()

    # -- event plumbing -------------------------------------------------------------------------

    def enqueue(self, kind: Kind, key: Key) -> None:
        q = self._queues.get(kind)
        if q is not None:
            q.add(key)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self.leading:
                self.publisher.check_drains()

    def _on_report(self, worker: str, message: Stats | Poke) -> None:
        if isinstance(message, Poke):
            self.scaler.record_poke(worker, message)
        else:
            self.scaler.record_stats(worker, message)

    def _on_gateway_worker_gone(self, worker: str) -> None:
        self.scaler.forget_worker(worker)  # its learned limits would go stale in describe

    def _ready_replicas(self, key: str) -> int:
        assert self._runtime is not None
        return sum(
            1 for r in self._runtime.replicas(key)
            if r.state == "ready" and not self.publisher.is_draining(r.id)
        )

    def _replica_pids(self, key: str) -> dict[str, int]:
        """Ready replicas' process groups (a local replica leads its own group)."""
        assert self._runtime is not None
        return {
            r.id: r.pid for r in self._runtime.replicas(key)
            if r.state == "ready" and r.pid and not self.publisher.is_draining(r.id)
        }

    def _routed(self, key: str) -> bool:
        assert self.informers is not None
        c = self.informers
        ns, name = _split(key)
        rev = c[REVISIONS].get(ns, name)
        if rev is None:
            return False
        cfg = (rev["metadata"].get("labels") or {}).get(LABEL_CONFIGURATION, "")
        return referenced(c.list(ROUTES), c[CONFIGURATIONS].get(ns, cfg), ns, name)

    def _on_hub_progress(self) -> None:
        if not self.leading:
            return
        self.publisher.check_drains()
        self._requeue_unready_routes()
        self._requeue_eventing()

    # -- watches --------------------------------------------------------------------------------

    def _run(self, r: Reconciler[C], ctx: C) -> None:
        """Give `r` its queue, and put on it the keys its watches map each change to."""
        self._queues[r.kind] = WorkQueue(r.kind.plural, _bind(r.reconcile, ctx, lambda: self.leading),
                                         workers=self.settings.reconcile_workers)
        assert self.informers is not None
        for w in r.watches:  # a kind this engine does not cache has no watch (core Services)
            if (informer := self.informers.by_kind.get(w.kind)) is not None:
                informer.on_change(self._enqueuer(r.kind, w.keys))

    def _enqueuer(self, kind: Kind, keys: Mapper) -> Callable[[str, Obj, Obj | None], None]:
        def handle(type_: str, obj: Obj, old: Obj | None) -> None:
            assert self.informers is not None
            for key in keys(Change(type_, obj, old), self.informers):
                self.enqueue(kind, key)

        return handle

    def _effects(self, kind: Kind) -> Callable[[str, Obj, Obj | None], None]:
        """What a change of `kind` sets off besides reconciles: a new gateway snapshot or
        dispatch plan when they are built from it; on a deletion, the embedded engine's garbage
        collection of what the object owned, and the janitor's of what it left on Redis."""
        snapshot, plan = kind in SNAPSHOT_KINDS, kind in PLAN_KINDS
        embedded = self.settings.engine == ENGINE_EMBEDDED

        def handle(type_: str, obj: Obj, old: Obj | None) -> None:
            if type_ == "DELETED":
                if embedded:  # on Kubernetes the cluster's garbage collector does it, honouring
                    self._collect(obj)  # `--cascade=orphan`, which a deletion here could not see
                self._forget_on_redis(kind, obj)
            if snapshot:
                self.publisher.mark_dirty()
            if plan:
                self._plan_dirty()

        return handle

    # -- eventing -------------------------------------------------------------------------------

    def _plan_dirty(self) -> None:
        if not self._plan_scheduled:
            self._plan_scheduled = True
            asyncio.get_running_loop().call_soon(self._publish_plan)

    def _publish_plan(self) -> None:
        self._plan_scheduled = False
        assert self.informers is not None
        c = self.informers
        self.dispatch.publish(build_plan(
            c.list(BROKERS), c.list(TRIGGERS), imcs=c.list(IN_MEMORY_CHANNELS),
            channels=c.list(CHANNELS), subscriptions=c.list(SUBSCRIPTIONS),
            rchans=c.list(REDIS_CHANNELS),
            engine=self.settings.engine, redis=self.settings.redis is not None,
        ))

    def _redis_view(self) -> RedisView:
        return self.redis_health.view if self.redis_health is not None else RedisView()

    def _requeue_redis_brokers(self) -> None:
        if self.informers is not None:
            for kind, key in redis_dependents(self.informers, self.settings.engine):
                self.enqueue(kind, key)

    def _requeue_eventing(self) -> None:
        if self.informers is not None:
            for kind, key in unready_eventing(self.informers):
                self.enqueue(kind, key)

    def _forget_on_redis(self, kind: Kind, obj: Obj) -> None:
        """A deleted object's log, or consumer group and state, go from Redis (the leader's)."""
        if self.redis_janitor is None or self.eventing is None or not self.leading:
            return
        left = leftovers(self.eventing, kind, obj)
        for log_uid in left.logs:
            self.redis_janitor.delete_log(log_uid)
        for log_uid, consumer_uid in left.consumers:
            self.redis_janitor.delete_consumer(log_uid, consumer_uid)

    def _requeue_unready_routes(self) -> None:
        if self.informers is not None:
            for kind, key in unready_routes(self.informers):
                self.enqueue(kind, key)

    def _on_replica(self, replica: ReplicaStatus) -> None:
        ns, _, name = replica.revision_key.partition("/")
        self.enqueue(REVISIONS, (ns, name))
        self.publisher.mark_dirty()

    def _collect(self, owner: Obj) -> None:
        """Delete what `owner` owned (Kubernetes' garbage collector, foreground-free): the
        embedded engine's, for every kind."""
        assert self.informers is not None
        for kind, child in owned(self.informers, owner):
            task = asyncio.get_running_loop().create_task(self._delete(kind, child))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _delete(self, kind: Kind, obj: Obj) -> None:
        assert self._store is not None
        ns, name = ns_name(obj)
        with contextlib.suppress(NotFound):
            await self._store.delete(kind, ns, name)


def _split(key: str) -> Key:
    ns, _, name = key.partition("/")
    return ns, name


def _bind(fn: Callable[[C, Key], Awaitable[float | None]], ctx: C, leading: Callable[[], bool]
          ) -> Callable[[Key], Awaitable[float | None]]:
    """The queue's handler: `fn` with `ctx`, while this process leads (a standby drops the key:
    a new term reconciles every object anyway)."""
    async def handler(key: Key) -> float | None:
        if not leading():
            return None
        return await fn(ctx, key)

    return handler
