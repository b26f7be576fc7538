"""The embedded engine's controller process: store, informers, reconcilers, runtime and gateway hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from aiohttp import web

from controller.api.eventing import BACKEND_REDIS, broker_backend
from controller.apiserver import make_api_app
from controller.autoscaling.scaler import Scaler
from controller.broker_backlog import add_backlog_routes, fetch_dispatcher_backlogs
from controller.builds.artifacts import ArtifactStore
from controller.credentials import Credentials, ensure_credentials
from controller.dispatcher_proxy import DispatcherProxy
from controller.dispatchhub import DispatchHub
from controller.eventing.plan import PLAN_PATH, build_plan, dispatcher_id
from controller.gatewayhub import GatewayHub
from controller.informer import Informer
from controller.listeners import start_sites
from controller.logs_endpoint import add_log_routes
from controller.observability import add_observability_routes
from controller.reconcilers.broker import reconcile_broker
from controller.reconcilers.channels import (
    REDIS_CHANNEL_KIND,
    backing_imc,
    reconcile_channel,
    reconcile_in_memory_channel,
    reconcile_redis_channel,
)
from controller.reconcilers.configuration import reconcile_configuration
from controller.reconcilers.context import (
    BROKERS,
    CHANNELS,
    CONFIGURATIONS,
    IN_MEMORY_CHANNELS,
    LABEL_CONFIGURATION,
    LABEL_SERVICE,
    REDIS_CHANNELS,
    REVISIONS,
    ROUTES,
    SERVICES,
    SUBSCRIPTIONS,
    TRIGGERS,
    Context,
    Key,
    Obj,
    ns_name,
)
from controller.reconcilers.publisher import SnapshotPublisher
from controller.reconcilers.queue import WorkQueue
from controller.reconcilers.revision import reconcile_revision, referenced
from controller.reconcilers.route import reconcile_route
from controller.reconcilers.service import reconcile_service
from controller.reconcilers.subscription import reconcile_subscription
from controller.reconcilers.trigger import reconcile_trigger
from controller.redis_health import RedisHealth, RedisView
from controller.redis_janitor import RedisJanitor
from controller.runtime.base import ReplicaStatus, Runtime
from controller.runtime.local import LocalRuntime
from controller.settings import ControllerSettings
from controller.store.base import Kind, NotFound, Store
from controller.store.sqlite import SqliteStore
from flint_common import redis_conn
from flint_common.httpauth import auth_middleware
from flint_common.private import ensure_private_dir
from flint_common.wire import LINK_PATH, Poke, Stats

log = logging.getLogger("flint.controller")

Reconcile = Callable[[Context, Key], Awaitable[float | None]]


class Controller:
    """Wires the pieces; `start()` serves the API and the gateway link until `stop()`."""

    def __init__(
        self,
        settings: ControllerSettings,
        *,
        store: Store | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._runtime = runtime
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
        self.ctx: Context | None = None
        self.credentials: Credentials | None = None
        self.urls: list[str] = []

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
        if self._store is None:
            sqlite = SqliteStore(s.store_path)
            await sqlite.open()
            self._store = sqlite
        store = self._store
        if self._runtime is None:
            self._runtime = LocalRuntime(s.state_dir)
        runtime = self._runtime
        await runtime.start()
        artifacts = ArtifactStore(s.artifacts_dir, exclude=[s.state_dir])

        informers = {
            k: Informer(store, k)
            for k in (SERVICES, CONFIGURATIONS, REVISIONS, ROUTES, BROKERS, TRIGGERS, CHANNELS,
                      IN_MEMORY_CHANNELS, REDIS_CHANNELS, SUBSCRIPTIONS)
        }
        self._informers = list(informers.values())
        hub = GatewayHub(on_progress=self._on_hub_progress, on_report=self._on_report,
                         on_disconnect=self._on_gateway_worker_gone)
        self.publisher = SnapshotPublisher(
            hub, runtime, informers[ROUTES], informers[REVISIONS], s.domain,
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
            self.redis_janitor = RedisJanitor(
                self.redis, journal=s.state_dir / "eventing" / "redis-deletions.json")
            await self.redis_janitor.start()  # what a previous run could not delete yet
        # The dispatcher of our own state dir (`flint up` starts it) is the embedded one.
        self.dispatch = DispatchHub(
            embedded_id=dispatcher_id(s.state_dir, socket.gethostname()), on_progress=self._requeue_eventing
        )
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
        ctx = Context(
            store=store,
            settings=s,
            services=informers[SERVICES],
            configurations=informers[CONFIGURATIONS],
            revisions=informers[REVISIONS],
            routes=informers[ROUTES],
            runtime=runtime,
            artifacts=artifacts,
            hub=hub,
            enqueue=self.enqueue,
            snapshot_dirty=self.publisher.mark_dirty,
            drain=self.publisher.drain,
            publisher_is_draining=self.publisher.is_draining,
            desired_scale=self.scaler.desired,
            brokers=informers[BROKERS],
            triggers=informers[TRIGGERS],
            dispatch=self.dispatch,
            plan_dirty=self._plan_dirty,
            channels=informers[CHANNELS],
            imcs=informers[IN_MEMORY_CHANNELS],
            subscriptions=informers[SUBSCRIPTIONS],
            scale_decision=self.scaler.decision,
            redis_view=self._redis_view,
            rchans=informers[REDIS_CHANNELS],
        )
        self.ctx = ctx
        reconcilers: dict[Kind, Reconcile] = {
            SERVICES: reconcile_service,
            CONFIGURATIONS: reconcile_configuration,
            REVISIONS: reconcile_revision,
            ROUTES: reconcile_route,
            BROKERS: reconcile_broker,
            TRIGGERS: reconcile_trigger,
            CHANNELS: reconcile_channel,
            IN_MEMORY_CHANNELS: reconcile_in_memory_channel,
            REDIS_CHANNELS: reconcile_redis_channel,
            SUBSCRIPTIONS: reconcile_subscription,
        }
        for kind, fn in reconcilers.items():
            self._queues[kind] = WorkQueue(
                kind.plural, _bind(fn, ctx), workers=s.reconcile_workers
            )
        informers[SERVICES].on_change(self._on_service)
        informers[CONFIGURATIONS].on_change(self._on_configuration)
        informers[REVISIONS].on_change(self._on_revision)
        informers[ROUTES].on_change(self._on_route)
        informers[BROKERS].on_change(self._on_broker)
        informers[TRIGGERS].on_change(self._on_trigger)
        informers[CHANNELS].on_change(self._on_channel)
        informers[IN_MEMORY_CHANNELS].on_change(self._on_imc)
        informers[REDIS_CHANNELS].on_change(self._on_redis_channel)
        informers[SUBSCRIPTIONS].on_change(self._on_subscription)
        runtime.subscribe(self._on_replica)
        for inf in informers.values():
            await inf.start()
        for q in self._queues.values():
            q.start()
        # Orphaned replicas (their revision is gone) are reconciled too.
        for r in runtime.replicas():
            ns, _, name = r.revision_key.partition("/")
            self.enqueue(REVISIONS, (ns, name))
        self.publisher.mark_dirty()
        self._ticker = asyncio.create_task(self._tick())
        self.scaler.start()
        if self.redis_health is not None:
            self.redis_health.start()  # logs event=redis_connected (or redis_unreachable)

        app = make_api_app(store, guard=auth_middleware(creds.token))
        app.router.add_get(LINK_PATH, hub.handle)
        app.router.add_get(PLAN_PATH, self.dispatch.handle)
        add_log_routes(app, runtime, informers[REVISIONS])
        add_observability_routes(app, self.scaler, runtime)
        add_backlog_routes(
            app, informers[BROKERS], informers[TRIGGERS], engine=s.engine, redis=lambda: self.redis,
            sqlite=lambda: fetch_dispatcher_backlogs(s.dispatcher_url, creds.token.reveal()))
        self._dispatcher_proxy = DispatcherProxy(s.dispatcher_url, creds.token)
        self._dispatcher_proxy.add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        self.urls = await start_sites(self._runner, s, creds)
        log.info("controller: API and gateway link on %s", ", ".join(self.urls))

    async def stop(self, *, stop_replicas: bool) -> None:
        if self.ctx is not None:
            await self.scaler.stop()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
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
        if self.ctx is not None:
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

    # -- event plumbing -------------------------------------------------------------------------

    def enqueue(self, kind: Kind, key: Key) -> None:
        q = self._queues.get(kind)
        if q is not None:
            q.add(key)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(1.0)
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
        assert self.ctx is not None
        ns, name = _split(key)
        rev = self.ctx.revisions.get(ns, name)
        if rev is None:
            return False
        cfg = (rev["metadata"].get("labels") or {}).get(LABEL_CONFIGURATION, "")
        return referenced(list(self.ctx.routes), self.ctx.configurations.get(ns, cfg), ns, name)

    def _on_hub_progress(self) -> None:
        self.publisher.check_drains()
        self._requeue_unready_routes()
        self._requeue_eventing()

    # -- eventing -------------------------------------------------------------------------------

    def _plan_dirty(self) -> None:
        if not self._plan_scheduled:
            self._plan_scheduled = True
            asyncio.get_running_loop().call_soon(self._publish_plan)

    def _publish_plan(self) -> None:
        self._plan_scheduled = False
        assert self.ctx is not None
        c = self.ctx
        self.dispatch.publish(build_plan(
            c.brokers, c.triggers, imcs=c.imcs, channels=c.channels, subscriptions=c.subscriptions,
            rchans=c.rchans or (),
            engine=self.settings.engine, redis=self.settings.redis is not None,
        ))

    def _redis_view(self) -> RedisView:
        return self.redis_health.view if self.redis_health is not None else RedisView()

    def _requeue_redis_brokers(self) -> None:
        """What we know of Redis changed: the Redis brokers' `Durable` condition follows."""
        if self.ctx is None:
            return
        for b in self.ctx.brokers:
            if broker_backend(b, self.settings.engine) == BACKEND_REDIS:
                self.enqueue(BROKERS, ns_name(b))
        for ch in self.ctx.rchans or ():  # their `Durable` condition likewise
            self.enqueue(REDIS_CHANNELS, ns_name(ch))

    def _requeue_eventing(self) -> None:
        """The dispatcher or the gateways made progress: brokers and triggers not yet Ready
        may be now."""
        if self.ctx is None:
            return
        c = self.ctx
        for kind, informer in ((BROKERS, c.brokers), (TRIGGERS, c.triggers), (CHANNELS, c.channels),
                               (IN_MEMORY_CHANNELS, c.imcs), (REDIS_CHANNELS, c.rchans or ()),
                               (SUBSCRIPTIONS, c.subscriptions)):
            # A Ready trigger or subscription too: its status says how many dispatchers run it,
            # which changes when one joins or leaves (an unchanged status is not written again).
            consumer = kind in (TRIGGERS, SUBSCRIPTIONS)
            for obj in informer:
                conds = (obj.get("status") or {}).get("conditions") or []
                ready = next((c for c in conds if c.get("type") == "Ready"), None)
                if consumer or ready is None or ready.get("status") != "True":
                    self.enqueue(kind, ns_name(obj))

    def _on_broker(self, type_: str, obj: Obj, old: Obj | None) -> None:
        ns, name = ns_name(obj)
        if type_ != "DELETED":
            self.enqueue(BROKERS, (ns, name))
        elif (self.redis_janitor is not None and obj["metadata"].get("uid")
              and broker_backend(obj, self.settings.engine) == BACKEND_REDIS):
            self.redis_janitor.delete_log(obj["metadata"]["uid"])  # its stream, groups, state
        assert self.ctx is not None
        for t in self.ctx.triggers.list(ns):
            if (t.get("spec") or {}).get("broker") == name:
                self.enqueue(TRIGGERS, ns_name(t))
        self.publisher.mark_dirty()
        self._plan_dirty()

    def _on_trigger(self, type_: str, obj: Obj, old: Obj | None) -> None:
        if type_ != "DELETED":
            self.enqueue(TRIGGERS, ns_name(obj))
        else:
            self._forget_redis_consumer(obj)
        self._plan_dirty()

    def _forget_redis_consumer(self, trigger: Obj) -> None:
        """A deleted trigger of a Redis broker: its consumer group and keys go (a deleted
        broker's go with its log)."""
        assert self.ctx is not None
        ns, _ = ns_name(trigger)
        broker = self.ctx.brokers.get(ns, str((trigger.get("spec") or {}).get("broker") or ""))
        uid = trigger["metadata"].get("uid")
        if (self.redis_janitor is None or broker is None or not uid
                or broker_backend(broker, self.settings.engine) != BACKEND_REDIS):
            return
        self.redis_janitor.delete_consumer(broker["metadata"]["uid"], uid)

    def _forget_redis_subscription(self, sub: Obj) -> None:
        """A deleted subscription of a RedisChannel (named, or behind its Channel): its consumer
        group and keys go (a deleted channel's go with its log)."""
        assert self.ctx is not None
        uid = sub["metadata"].get("uid")
        if self.redis_janitor is None or not uid:
            return
        rch, _, _ = backing_imc(self.ctx, ns_name(sub)[0], (sub.get("spec") or {}).get("channel") or {})
        if rch is not None and rch.get("kind") == REDIS_CHANNEL_KIND and rch["metadata"].get("uid"):
            self.redis_janitor.delete_consumer(rch["metadata"]["uid"], uid)

    def _on_channel(self, type_: str, obj: Obj, old: Obj | None) -> None:
        if type_ == "DELETED":
            self._collect(obj)
        else:
            self.enqueue(CHANNELS, ns_name(obj))
        self._requeue_referrers(ns_name(obj)[0])

    def _on_imc(self, type_: str, obj: Obj, old: Obj | None, kind: Kind = IN_MEMORY_CHANNELS) -> None:
        ns, name = ns_name(obj)
        if type_ != "DELETED":
            self.enqueue(kind, (ns, name))
        for ref in obj["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Channel":
                self.enqueue(CHANNELS, (ns, ref.get("name", "")))
        self._requeue_referrers(ns)
        self.publisher.mark_dirty()
        self._plan_dirty()

    def _on_redis_channel(self, type_: str, obj: Obj, old: Obj | None) -> None:
        if type_ == "DELETED" and self.redis_janitor is not None and obj["metadata"].get("uid"):
            self.redis_janitor.delete_log(obj["metadata"]["uid"])  # its stream, groups, state
        self._on_imc(type_, obj, old, kind=REDIS_CHANNELS)

    def _on_subscription(self, type_: str, obj: Obj, old: Obj | None) -> None:
        ns = ns_name(obj)[0]
        if type_ != "DELETED":
            self.enqueue(SUBSCRIPTIONS, ns_name(obj))
        else:
            self._forget_redis_subscription(obj)
        assert self.ctx is not None
        for imc in self.ctx.imcs.list(ns):  # their spec.subscribers and status.subscribers
            self.enqueue(IN_MEMORY_CHANNELS, ns_name(imc))
        for rch in self.ctx.rchans.list(ns) if self.ctx.rchans is not None else ():  # likewise
            self.enqueue(REDIS_CHANNELS, ns_name(rch))
        for ch in self.ctx.channels.list(ns):  # likewise
            self.enqueue(CHANNELS, ns_name(ch))
        self._plan_dirty()

    def _requeue_referrers(self, namespace: str) -> None:
        """An addressable changed: triggers, subscriptions and brokers in its namespace may
        resolve now."""
        assert self.ctx is not None
        for t in self.ctx.triggers.list(namespace):
            self.enqueue(TRIGGERS, ns_name(t))
        for sub in self.ctx.subscriptions.list(namespace):
            self.enqueue(SUBSCRIPTIONS, ns_name(sub))
        for b in self.ctx.brokers.list(namespace):
            if ((b.get("spec") or {}).get("delivery") or {}).get("deadLetterSink"):
                self.enqueue(BROKERS, ns_name(b))

    def _requeue_unready_routes(self) -> None:
        if self.ctx is None:
            return
        for r in self.ctx.routes:
            conds = (r.get("status") or {}).get("conditions") or []
            ingress = next((c for c in conds if c.get("type") == "IngressReady"), None)
            if ingress is None or ingress.get("status") != "True":
                self.enqueue(ROUTES, ns_name(r))

    def _on_replica(self, replica: ReplicaStatus) -> None:
        ns, _, name = replica.revision_key.partition("/")
        self.enqueue(REVISIONS, (ns, name))
        self.publisher.mark_dirty()

    def _owner_key(self, obj: Obj, label: str) -> Key | None:
        value = (obj["metadata"].get("labels") or {}).get(label)
        if value:
            return obj["metadata"].get("namespace", "default"), value
        return None

    def _on_service(self, type_: str, obj: Obj, old: Obj | None) -> None:
        self._requeue_referrers(ns_name(obj)[0])
        if type_ == "DELETED":
            self._collect(obj)
            return
        self.enqueue(SERVICES, ns_name(obj))

    def _on_configuration(self, type_: str, obj: Obj, old: Obj | None) -> None:
        ns, name = ns_name(obj)
        if type_ == "DELETED":
            self._collect(obj)
        else:
            self.enqueue(CONFIGURATIONS, (ns, name))
        owner = self._owner_key(obj, LABEL_SERVICE)
        if owner:
            self.enqueue(SERVICES, owner)
        assert self.ctx is not None
        for rev in self.ctx.revisions.list(ns):
            if (rev["metadata"].get("labels") or {}).get(LABEL_CONFIGURATION) == name:
                self.enqueue(REVISIONS, ns_name(rev))
        for r in self.ctx.routes.list(ns):
            if any(
                t.get("configurationName") == name
                for t in (r.get("spec") or {}).get("traffic") or []
            ):
                self.enqueue(ROUTES, ns_name(r))

    def _on_revision(self, type_: str, obj: Obj, old: Obj | None) -> None:
        ns, name = ns_name(obj)
        self.enqueue(REVISIONS, (ns, name))
        owner = self._owner_key(obj, LABEL_CONFIGURATION)
        if owner:
            self.enqueue(CONFIGURATIONS, owner)
        assert self.ctx is not None
        for r in self.ctx.routes.list(ns):
            self.enqueue(ROUTES, ns_name(r))
        self.publisher.mark_dirty()

    def _on_route(self, type_: str, obj: Obj, old: Obj | None) -> None:
        ns, name = ns_name(obj)
        assert self.ctx is not None
        if type_ in ("ADDED", "DELETED"):
            for r in self.ctx.routes:  # host conflicts may appear or clear
                self.enqueue(ROUTES, ns_name(r))
        if type_ != "DELETED":
            self.enqueue(ROUTES, (ns, name))
        owner = self._owner_key(obj, LABEL_SERVICE)
        if owner:
            self.enqueue(SERVICES, owner)
        for o in (obj, old):
            for section in ("spec", "status"):
                for t in ((o or {}).get(section) or {}).get("traffic") or []:
                    if t.get("revisionName"):
                        self.enqueue(REVISIONS, (ns, t["revisionName"]))
        # Revisions that only the latest-ready rule points at follow their configuration.
        for rev in self.ctx.revisions.list(ns):
            self.enqueue(REVISIONS, ns_name(rev))
        self.publisher.mark_dirty()

    def _collect(self, owner: Obj) -> None:
        """Delete what `owner` owned (Kubernetes' garbage collector, foreground-free)."""
        assert self.ctx is not None
        uid = owner["metadata"].get("uid")
        ns = owner["metadata"].get("namespace", "default")
        kinds: list[tuple[Kind, Informer]] = [
            (CONFIGURATIONS, self.ctx.configurations), (ROUTES, self.ctx.routes),
            (REVISIONS, self.ctx.revisions), (IN_MEMORY_CHANNELS, self.ctx.imcs)]
        if self.ctx.rchans is not None:
            kinds.append((REDIS_CHANNELS, self.ctx.rchans))
        for kind, informer in kinds:
            for child in informer.list(ns):
                refs = child["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
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


def _bind(fn: Reconcile, ctx: Context) -> Callable[[Key], Awaitable[float | None]]:
    async def handler(key: Key) -> float | None:
        return await fn(ctx, key)

    return handler


async def serve(settings: ControllerSettings, stop_replicas_on_exit: bool) -> None:
    """Run until SIGTERM/SIGINT."""
    import signal

    controller = Controller(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await controller.start()
    pid_file = settings.state_dir / "controller.pid"
    await asyncio.to_thread(pid_file.write_text, f"{os.getpid()}\n")
    print(f"controller: ready on {', '.join(controller.urls)}", flush=True)
    try:
        await stop.wait()
    finally:
        await controller.stop(stop_replicas=stop_replicas_on_exit)


