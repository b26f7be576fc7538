"""The dispatcher process: runs the controller's dispatch plan, one `ConsumerRunner` per consumer.

Its own process and event loop (a burst of events never delays the gateway or the controller),
its own database (`eventing/dispatcher.db`: positions, pending retries, dead letters); a runner
per Trigger and per Subscription, on the seams of its log's backend (`ConsumerSource`,
`ConsumerState`: `controller.eventing.sqlite_consumer` for SQLite logs; the Redis side, its
clients and the trimming of its streams, is `controller.eventing.redis_dispatch`). It gets the plan from
the controller by long poll, is woken by the gateway's datagram after each append
(`flint_common.channellog.wake`; SQLite logs), and serves an admin port: `/healthz`, `/metrics`, and
the dead letters of a trigger (`GET /dead-letters/{namespace}/{trigger}`, `POST
/redeliver/{namespace}/{trigger}`; add `?kind=subscription` for a subscription's).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from controller.eventing.dispatcher_admin import admin_app, start_admin
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import (
    PLAN_PATH,
    ConsumerPlan,
    DispatchPlan,
    RedisLog,
    SqliteLog,
    UnknownLogBackend,
    dispatcher_id,
)
from controller.eventing.redis_consumer import RedisConsumerSettings
from controller.eventing.redis_dispatch import TRIM_EVERY_S, RedisDispatch
from controller.eventing.runner import ConsumerRunner
from controller.eventing.sender import Sender
from controller.eventing.sqlite_consumer import SqliteConsumerSource, SqliteConsumerState
from controller.eventing.state import DispatcherState
from flint_common.backoff import backoff_delay
from flint_common.channellog.floor import write_floor
from flint_common.channellog.sqlite_reader import SqliteLogReader
from flint_common.channellog.wake import WakeReceiver
from flint_common.httpauth import describe_error
from flint_common.link_tls import ControllerCAUnusable, LinkTLS, refusal
from flint_common.redis_config import RedisSettings
from flint_common.secret import Secret, read_token

__all__ = ["AlreadyRunning", "Dispatcher", "DispatcherLock", "DispatcherSettings"]

log = logging.getLogger("flint.dispatcher")

FLOOR_EVERY_S = 5.0
"""How often the consumers' floors are written next to the logs (their writer compacts below)."""
RESTART_DELAY_S = 1.0
"""Pause before a runner that failed is started again; doubled after each failure in a row
(a Redis outage fails every Redis runner), up to `RESTART_MAX_DELAY_S`."""
RESTART_MAX_DELAY_S = 30.0
STABLE_RUN_S = 60.0
"""A runner that ran this long before failing starts again after `RESTART_DELAY_S`."""


class AlreadyRunning(RuntimeError):
    """Another dispatcher holds this state dir."""


class DispatcherLock:
    """One dispatcher per state dir: an exclusive lock on `eventing/dispatcher.lock`, held for
    the dispatcher's life (the kernel drops it when the process dies), taken before its database
    and its wake socket are touched. Blocking: file I/O."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "eventing" / "dispatcher.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"another dispatcher runs for this state dir (it holds {self.path})") from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class DispatcherSettings:
    """Where the dispatcher finds everything; `flint up` passes them as flags."""

    state_dir: Path = field(default_factory=lambda: Path(".flint"))
    """The state dir shared with the controller and the gateway (logs, wake socket, own DB)."""
    controller_url: str = "http://127.0.0.1:8081"
    """Base URL of the controller (the plan's long poll). Several, comma-separated
    (`--controller` repeated), are asked in turn: the poll moves on when one is unreachable or
    answers as a standby (503). In a cluster, one: the `flint-controller-leader` Service."""
    gateway_url: str = "http://127.0.0.1:8080"
    """Where requests to hosts of `domain` go (subscribers that are Flint services, brokers)."""
    domain: str = "localhost"
    """The cluster domain: URLs whose host ends with it are sent through the gateway."""
    admin_host: str = "127.0.0.1"
    admin_port: int = 8083
    """`/healthz`, `/metrics`, dead letters."""
    admin_listen: tuple[tuple[str, int], ...] = ()
    """More addresses of the admin port (`--admin-listen`): in a cluster the pod's IP, which the
    API server's service proxy reaches (`flint dead-letters` there). The owner's token is needed
    there as on loopback (`X-Flint-Authorization` through the proxy; `flint_common.httpauth`)."""
    durable: bool = True
    """Commit the dispatcher's database with synchronous=FULL (else NORMAL)."""
    token: Secret | None = None
    """The owner's token (read from `--token-file`, never a flag): sent with the plan's long poll
    and required on the admin port but for `/healthz` (and `/metrics` on loopback). Prints as
    `***`."""
    link_token_file: Path | None = None
    """A file holding the credential of the plan's long poll instead of the owner's token: on the
    Kubernetes engine the pod's projected service-account token (audience `flint-controller`,
    e.g. `/var/run/secrets/flint/token`), checked by the controller with a TokenReview. Read again
    for every poll (the kubelet rotates it). The admin port keeps needing the owner's `token`."""
    controller_ca: Path | None = None
    """A PEM file of the CAs that may sign an `https://` controller's certificate (`--controller-ca`;
    on Kubernetes the mounted ConfigMap `flint-controller-ca`), read again for every poll. None:
    the system's CAs. The certificate and its name are always verified."""
    redis: RedisSettings | None = None
    """The Redis of the shared eventing backend (`flint up` passes it in the environment,
    `FLINT_REDIS_*`); None: this dispatcher refuses the consumers of Redis logs, saying why."""
    redis_consumer: RedisConsumerSettings = field(default_factory=RedisConsumerSettings)
    """How the Redis consumers share their groups: heartbeat, claim-after, block, lease."""
    log_max_age_s: float | None = 7 * 24 * 3600.0
    """Retention of a Redis stream (as the gateway's `log_max_age_s` for SQLite logs): older
    entries are trimmed even when a consumer has not handled them (counted as dropped)."""
    log_max_records: int | None = 10_000_000
    """Retention cap of a Redis stream in entries (the newest are kept), as for `log_max_age_s`."""
    trim_every_s: float = TRIM_EVERY_S
    """How often the Redis streams of the plan are trimmed (seconds): below what every consumer
    handled, and past the caps; each stream by one dispatcher per period (`redis_dispatch`)."""

    @property
    def db_path(self) -> Path:
        return self.state_dir / "eventing" / "dispatcher.db"

    @property
    def id(self) -> str:
        """Sent with each poll of the plan: the controller keys its record of us by it. Also
        the dispatcher's consumer name in the Redis consumer groups (unique per host and state
        dir, stable across restarts)."""
        return dispatcher_id(self.state_dir, socket.gethostname())


def restart_delay(failures: int) -> float:
    """The pause before restarting a runner that failed `failures` times in a row before (pure)."""
    return backoff_delay(RESTART_DELAY_S, RESTART_MAX_DELAY_S, failures)


class Dispatcher:
    def __init__(self, settings: DispatcherSettings) -> None:
        self.settings = settings
        self.metrics = DispatcherMetrics()
        self.version = 0
        self.runners: dict[str, ConsumerRunner] = {}
        self._readers: dict[str, SqliteLogReader] = {}
        self._sources: dict[str, SqliteConsumerSource] = {}
        """Consumer uid → the source of its runner (SQLite: its position makes the floors)."""
        self._state: DispatcherState | None = None
        self._sender = Sender(domain=settings.domain, gateway=settings.gateway_url)
        self._wake = WakeReceiver(settings.state_dir, self._on_wake)
        self._lock = DispatcherLock(settings.state_dir)
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._apply_lock = asyncio.Lock()
        self._restarts: set[asyncio.Task[None]] = set()
        self._seen: dict[str, str] = {}
        """Trigger uid → its log path, for every trigger ever run: one that leaves the plan
        (not Ready for a while) keeps holding its log's floor with its stored position."""
        self._floors: dict[str, int] = {}
        self.id = settings.id
        """This dispatcher's id: its record in the controller's hub, its Redis consumer name."""
        self.redis: RedisDispatch | None = None
        """The Redis side (its clients, its consumers' runners, trimming), made by `start`; None
        without Redis."""
        self._refused: dict[str, str] = {}
        """Consumer uid → why it cannot run here (logged once per reason)."""
        self._plan = DispatchPlan(version=0)
        """The plan applied last (the Redis streams to trim)."""
        self._started: dict[str, float] = {}
        """Consumer uid → when its runner last started (monotonic): a restart's back-off."""
        self._failures: dict[str, int] = {}
        """Consumer uid → the failures in a row of its runner (each within `STABLE_RUN_S`).
        `_seen`, `_refused`, `_started` and `_failures` forget a consumer once it is deleted
        (no longer in the plan's `known`)."""

    @property
    def state(self) -> DispatcherState:
        assert self._state is not None
        return self._state

    async def start(self) -> None:
        s = self.settings
        if s.token is None:  # before anything is opened or bound
            raise ValueError("the dispatcher needs the owner's token (--token-file)")
        # One dispatcher per state dir, before its database or its wake socket is touched.
        await asyncio.to_thread(self._lock.acquire)
        self._state = DispatcherState(s.db_path, durable=s.durable)
        if s.redis is not None:  # connects on first use
            self.redis = RedisDispatch(
                s.redis, owner=self.id, metrics=self.metrics, consumer=s.redis_consumer,
                log_max_age_s=s.log_max_age_s, log_max_records=s.log_max_records,
                trim_every_s=s.trim_every_s)
        await self._wake.start()
        app = admin_app(s.token, lambda: self.runners.values(), self._health, self.metrics.registry)
        self._runner = await start_admin(app, [(s.admin_host, s.admin_port), *s.admin_listen])
        self._tasks = [
            asyncio.create_task(self._poll_plan(), name="plan-poll"),
            asyncio.create_task(self._watch_lag(), name="loop-lag"),
            asyncio.create_task(self._write_floors_forever(), name="floors"),
        ]
        if self.redis is not None:
            self._tasks.append(asyncio.create_task(self.redis.trim_forever(lambda: self._plan),
                                                   name="trim"))
        log.info("event=dispatcher_started admin=http://%s:%d", s.admin_host, s.admin_port)

    async def stop(self) -> None:
        for t in [*self._tasks, *self._restarts]:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for r in list(self.runners.values()):
            await r.stop()
        self.runners.clear()
        for reader in self._readers.values():
            await reader.close()
        self._readers.clear()
        self._wake.close()
        await self._sender.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._state is not None:
            await self._state.close()
        if self.redis is not None:
            await self.redis.close()
            self.redis = None
        self._lock.release()

    # -- the plan ------------------------------------------------------------------------------

    async def _poll_plan(self) -> None:
        urls = [u.strip().rstrip("/") + PLAN_PATH
                for u in self.settings.controller_url.split(",") if u.strip()]
        turn = 0  # which of `urls` is asked next
        dispatcher_id_ = self.settings.id
        failures = 0  # polls in a row that failed
        refused = ("the controller refused the token of --link-token-file (a service-account token "
                   "of an accepted account, audience flint-controller)"
                   if self.settings.link_token_file is not None
                   else "the controller wants the owner's token (see --token-file)")
        link_tls = LinkTLS(self.settings.controller_ca)
        async with aiohttp.ClientSession() as session:
            while True:
                url = urls[turn % len(urls)]
                try:
                    token = await self._plan_credential()
                    tls = await link_tls.for_url(url)  # the CA file read now (a rotated bundle)
                    async with session.get(
                        url,
                        params={"version": str(self.version), "id": dispatcher_id_},
                        headers={"Authorization": f"Bearer {token.reveal()}"} if token else None,
                        timeout=aiohttp.ClientTimeout(total=60), ssl=tls,
                    ) as resp:
                        if resp.status == 401:
                            log.error("event=plan_refused status=401 reason=%s", refused)
                        resp.raise_for_status()
                        plan = DispatchPlan.from_wire(orjson.loads(await resp.read()))
                    failures = 0
                except UnknownLogBackend as exc:  # a newer controller's plan: say so, keep trying
                    log.error("event=plan_refused error=%s", exc)
                    await asyncio.sleep(5.0)
                    continue
                except (ControllerCAUnusable, aiohttp.ClientConnectorCertificateError) as exc:
                    why = str(exc) if isinstance(exc, ControllerCAUnusable) else refusal(
                        exc, self.settings.controller_ca)
                    log.error("event=plan_tls_refused url=%s reason=%r", url, why)
                    turn += 1
                    await asyncio.sleep(backoff_delay(0.2, 5.0, failures))
                    failures += 1
                    continue
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
                    # never %r: an aiohttp response error's repr carries the request's headers
                    log.debug("event=plan_poll_failed url=%s error=%s", url, describe_error(exc))
                    turn += 1  # another controller: this one is away, or a standby (503)
                    # A standby answered: an election is under way, its winner leads within a
                    # retry period or two, so look for it every second, as the gateway's link does.
                    standby = isinstance(exc, aiohttp.ClientResponseError) and exc.status == 503
                    await asyncio.sleep(backoff_delay(0.2, 1.0 if standby else 5.0, failures))
                    failures += 1
                    continue
                if plan.version != self.version:
                    await self.apply(plan)

    async def _plan_credential(self) -> Secret | None:
        """The bearer of one poll of the plan: the link token file, read now, else the owner's."""
        path = self.settings.link_token_file
        if path is None:
            return self.settings.token
        try:
            return await asyncio.to_thread(read_token, path)
        except (OSError, ValueError) as exc:  # an OSError: retried with the others' backoff
            # (neither error names the file's content)
            log.error("event=link_token_unreadable path=%s error=%s", path, type(exc).__name__)
            raise OSError(f"cannot read {path}") from None

    async def apply(self, plan: DispatchPlan) -> None:
        """Run `plan`: start new triggers, restart changed ones (keeping their position), stop
        the ones it no longer has (their position and retries stay in the database)."""
        async with self._apply_lock:
            wanted = {t.uid: t for t in plan.triggers}
            for uid in [u for u, r in self.runners.items() if wanted.get(u) != r.plan]:
                await self.runners.pop(uid).stop()
                self._sources.pop(uid, None)
            positions = await self.state.positions()
            for uid, tp in wanted.items():
                if uid in self.runners:
                    continue
                self._start_runner(tp, positions.get(uid))
            known = set(plan.known)
            for uid in [u for u in self._seen if u not in known]:
                # The trigger was deleted: its position, retries and dead letters go too.
                del self._seen[uid]
                await self.state.forget(uid)
                log.info("event=trigger_forgotten uid=%s", uid)
            for table in (self._refused, self._started, self._failures):  # and what we knew of it
                for uid in [u for u in table if u not in known]:
                    del table[uid]
            used = {str(self.settings.state_dir / t.log.path)
                    for t in plan.triggers if isinstance(t.log, SqliteLog)}
            for path in [p for p in self._readers if p not in used]:
                await self._readers.pop(path).close()
            self.version = plan.version
            self._plan = plan
            log.info("event=plan_applied version=%d triggers=%d", plan.version, len(self.runners))

    def _refuse(self, tp: ConsumerPlan, reason: str) -> None:
        """Leave `tp` unrun, logging why once (each plan would say it again)."""
        if self._refused.get(tp.uid) != reason:
            self._refused[tp.uid] = reason
            log.error("event=trigger_not_runnable trigger=%s backend=%s error=%s", tp.key,
                      tp.log.backend, reason)

    def _start_runner(self, tp: ConsumerPlan, position: int | None) -> None:
        if isinstance(tp.log, RedisLog):
            if self.redis is None:
                self._refuse(tp, "this dispatcher has no Redis configured (flint up --redis URL, "
                                 "or FLINT_REDIS_URL for a dispatcher started alone)")
                return
            # No floors, no datagram wake-ups (`_seen` is for SQLite logs): the source blocks in
            # XREADGROUP, and trimming goes by the groups' positions (`RedisDispatch.trim`).
            self._refused.pop(tp.uid, None)
            try:
                runner = self.redis.runner(tp, self._sender)
            except ValueError as exc:  # a filter or delivery the API let through but we cannot run
                log.error("event=trigger_not_runnable trigger=%s error=%s", tp.key, exc)
                return
            self._launch(runner)
            return
        if not isinstance(tp.log, SqliteLog):
            self._refuse(tp, f"this dispatcher reads no {tp.log.backend} logs")
            return
        self._refused.pop(tp.uid, None)
        source = self._source(tp, position)
        try:
            runner = ConsumerRunner(
                tp, source, SqliteConsumerState(self.state, tp.uid), self._sender, self.metrics
            )
        except ValueError as exc:  # a filter or delivery the API let through but we cannot run
            log.error("event=trigger_not_runnable trigger=%s error=%s", tp.key, exc)
            return
        self._launch(runner)
        self._seen[tp.uid] = str(self.settings.state_dir / tp.log.path)  # tp.log: a SqliteLog
        self._sources[tp.uid] = source

    def _launch(self, runner: ConsumerRunner) -> None:
        runner.on_failure = self._runner_failed
        runner.start()
        self._started[runner.key] = time.monotonic()
        self.runners[runner.key] = runner

    def _runner_failed(self, runner: ConsumerRunner) -> None:
        task = asyncio.create_task(self._restart(runner), name=f"restart:{runner.plan.key}")
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, runner: ConsumerRunner) -> None:
        """Start a failed runner again from its stored position (what it handled is kept),
        backing off while it keeps failing (`restart_delay`)."""
        ran = time.monotonic() - self._started.get(runner.key, 0.0)
        failures = 0 if ran >= STABLE_RUN_S else self._failures.get(runner.key, 0)
        await asyncio.sleep(restart_delay(failures))
        async with self._apply_lock:
            if self.runners.get(runner.key) is not runner:
                return  # stopped by a plan meanwhile (perhaps deleted: nothing to remember)
            self._failures[runner.key] = failures + 1
            await runner.stop()
            positions = await self.state.positions()
            self._start_runner(runner.plan, positions.get(runner.key))
            log.info("event=runner_restarted trigger=%s", runner.plan.key)

    async def trim_streams(self) -> tuple[int, int]:
        """Trim the Redis streams of the plan whose lock this dispatcher takes this period
        (`RedisDispatch.trim`); (handled, dropped) trimmed."""
        if self.redis is None:
            return 0, 0
        return await self.redis.trim(self._plan)

    async def write_floors(self) -> dict[str, int]:
        """Write, for every log, the lowest position of the triggers that read it."""
        stored = await self.state.positions()
        floors: dict[str, int] = {}
        for uid, log_path in self._seen.items():
            source = self._sources.get(uid) if uid in self.runners else None
            pos = source.position if source is not None else stored.get(uid, 0)
            floors[log_path] = min(floors.get(log_path, pos), pos)
        for log_path, floor in floors.items():
            if floor > 0 and self._floors.get(log_path) != floor:
                await asyncio.to_thread(write_floor, Path(log_path), floor)
                self._floors[log_path] = floor
        return floors

    async def _write_floors_forever(self) -> None:
        while True:
            await asyncio.sleep(FLOOR_EVERY_S)
            try:
                await self.write_floors()
            except Exception as exc:  # the next round tries again
                log.warning("event=floor_write_failed error=%r", exc)

    def _source(self, tp: ConsumerPlan, position: int | None) -> SqliteConsumerSource:
        """The consumer's source, on its log's backend (SQLite is the only one so far)."""
        assert isinstance(tp.log, SqliteLog)
        path = str(self.settings.state_dir / tp.log.path)
        reader = self._readers.get(path)
        if reader is None:
            reader = self._readers[path] = SqliteLogReader(Path(path))
        return SqliteConsumerSource(reader, self.state, tp.uid, position, label=tp.key)

    def _on_wake(self, log_id: str) -> None:
        for r in self.runners.values():
            if r.plan.log_uid == log_id:
                r.wake()

    # -- health, metrics, dead letters ---------------------------------------------------------

    async def _watch_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.5)
            self.metrics.loop_lag.set(max(0.0, loop.time() - t0 - 0.5))

    def _health(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "triggers": len(self.runners)}


async def run(settings: DispatcherSettings, stop: asyncio.Event) -> None:
    d = Dispatcher(settings)
    try:
        await d.start()
    except BaseException:
        with contextlib.suppress(Exception):
            await d.stop()  # what it opened before failing (its lock, database, socket)
        raise
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await d.stop()
