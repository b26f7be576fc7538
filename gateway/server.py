"""Gateway process wiring: the command line and the main process that supervises N workers
(`gateway/worker.py`) sharing one port, and serves the admin port over their stats.

The main process owns each worker slot's listening sockets (`gateway.slots`) and keeps them
open while the slot's worker is dead, so the kernel queues that slot's connections until the
restart. With more than one worker, a slot whose worker is crash-looping
(`close_slot_after_death`) has its TCP listeners closed instead, so that its share of new
connections goes to the live workers, and reopened on the same ports just before each new
incarnation starts; its forwarding socket stays open."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path

from flint_common import guards, redis_config, redis_conn
from flint_common.addresses import format_hostport, is_loopback, parse_listen
from flint_common.backoff import backoff_delay
from flint_common.private import private_umask
from flint_common.secret import Secret, read_token
from gateway.admin import (
    MAX_UNIX_PATH_BYTES,
    AdminServer,
    worker_socket_path,
)
from gateway.config import GatewaySettings, encode_setting
from gateway.home import proxy_socket_path
from gateway.limits import raise_nofile_limit
from gateway.slots import (
    ListenFailed,
    SlotSockets,
    adopt,
    format_fds,
    open_slots,
    parse_fds,
    reopen_tcp,
)
from gateway.worker import worker_main

log = logging.getLogger("flint.gateway.server")

WORKER_STOP_TIMEOUT_S = 8.0
"""Seconds the main process waits for a worker after SIGTERM before SIGKILL."""
RESTART_BACKOFF_MIN_S = 0.1
RESTART_BACKOFF_MAX_S = 5.0
"""Backoff between restarts of a worker that keeps dying (seconds, doubling, capped)."""
WORKER_STABLE_S = 10.0
"""A worker that ran this long before dying is restarted at the minimum backoff again."""
SLOT_CLOSE_QUICK_DEATHS = 3
"""With more than one worker, the quick deaths in a row (each after running less than
WORKER_STABLE_S) after which a slot's TCP listeners are closed until its next spawn: from the
third, when the restart backoff has reached 0.4 s and keeps doubling to RESTART_BACKOFF_MAX_S,
the slot's connections would wait that long for an incarnation that likely dies too."""
STARTUP_WAIT_S = 30.0
"""Seconds to wait for every worker to answer before announcing anyway."""



# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Flint gateway: ingress, activator and concurrency limiter.",
    )
    p.add_argument("--host", help="loopback address of the proxy (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="proxy port (default 8080; 0 = any free port)")
    p.add_argument("--listen", action="append", default=None, metavar="ADDR[:PORT]",
                   help="another address for the proxy, IPv6 as [::1]:8080 (repeatable; the "
                   "port defaults to --port)")
    p.add_argument("--peer-listen", metavar="ADDR:PORT",
                   help="peer listener for requests other gateways forward (subsetting of "
                   "limited revisions across gateways; default none)")
    p.add_argument("--admin-host", help="admin address (default 127.0.0.1)")
    p.add_argument("--admin-port", type=int, help="admin port (default 8082; 0 = any)")
    p.add_argument("--probe-listen", metavar="ADDR:PORT",
                   help="listener serving only /healthz and /readyz, without a token, for a "
                   "kubelet's probes (Kubernetes: $(POD_IP):8081; default none)")
    p.add_argument("--token-file", type=Path, help="0600 file with the owner's token "
                   "(default <state-dir>/auth/token)")
    p.add_argument("--link-token-file", type=Path, metavar="PATH",
                   help="file with the token sent on the controller link instead of the owner's "
                   "(Kubernetes: the projected service-account token, audience flint-controller); "
                   "read again at every reconnection")
    p.add_argument("--controller-ca", type=Path, metavar="FILE",
                   help="PEM file of the CAs that sign an https:// controller's certificate "
                   "(Kubernetes: the mounted ConfigMap flint-controller-ca); read again at every "
                   "reconnection (default: the system's CAs)")
    p.add_argument("--workers", type=int, help="worker processes (default 1)")
    p.add_argument("--controller", dest="controller_url", action="append", default=None,
                   help="controller base URL (repeatable: tried in turn, e.g. each replica's)")
    p.add_argument("--state-dir", type=Path, help="state directory (default .flint)")
    p.add_argument("--domain", help="route domain suffix (default localhost)")
    p.add_argument("--gateway-id", default=None, help="id reported to the controller "
                   "(default: the host name)")
    p.add_argument("--log-level", default=os.environ.get("FLINT_LOG_LEVEL", "INFO"))
    # internal: run as worker N of the main process --parent-pid, serving the listening sockets
    # it passed as the fds --fds names (`gateway.slots.format_fds`: the loopback listener, each
    # --listen address, then the forwarding unix socket when --workers > 1)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fds", default=None, help=argparse.SUPPRESS)
    return p


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    """`GatewaySettings.from_env()` with the flags given on the command line on top."""
    overrides = {
        f.name: getattr(args, f.name) for f in fields(GatewaySettings) if hasattr(args, f.name)
    }
    if isinstance(overrides.get("controller_url"), list):
        overrides["controller_url"] = ",".join(overrides["controller_url"])
    settings = GatewaySettings.from_env(**{**overrides, "listen": None})
    settings.peer_address  # noqa: B018 - raises ValueError naming the flag when it is not ADDR:PORT
    settings.probe_address  # noqa: B018 - the same for --probe-listen
    if args.listen:
        own = (settings.host, settings.port)
        settings = replace(settings, listen=tuple(dict.fromkeys(
            hp for v in args.listen if (hp := parse_listen(v, settings.port)) != own)))
    return settings


def settings_env(settings: GatewaySettings) -> dict[str, str]:
    """`settings` as the `FLINT_GATEWAY_*` variables `GatewaySettings.from_env` reads."""
    return {
        "FLINT_GATEWAY_" + f.name.upper(): encode_setting(getattr(settings, f.name))
        for f in fields(GatewaySettings)
        if getattr(settings, f.name) is not None
    }


def worker_env(
    environ: Mapping[str, str], settings: GatewaySettings, redis: redis_config.RedisSettings | None
) -> dict[str, str]:
    """A worker's environment: this process's, with `settings` as `FLINT_GATEWAY_*` and the
    Redis settings this process resolved as `FLINT_REDIS_*` (no password: its file's path)."""
    dropped = (redis_config.ENV_URL, redis_config.ENV_PASSWORD_FILE, redis_config.ENV_MIN_REPLICAS)
    env = {k: v for k, v in environ.items() if k not in dropped}
    env.update(settings_env(settings))
    if redis is not None:
        env.update(redis.env())
    return env


def configure_logging(level: str, role: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=level.upper(),
        format=f"%(asctime)s level=%(levelname)s logger=%(name)s role={role} pid=%(process)d "
        "%(message)s",
    )


def main(argv: Sequence[str] | None = None) -> int:
    # FLINT_BLOCKBUSTER=1 (the workers inherit it): blocking calls on the loop are logged and raise.
    guards.enable_from_env()
    private_umask()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    gateway_id = args.gateway_id or socket.gethostname()
    role = "main" if args.worker is None else f"worker-{args.worker}"
    configure_logging(args.log_level, role)
    try:
        token = read_token(settings.credential_path)
    except (OSError, ValueError) as exc:
        log.error("event=no_token path=%s error=%r (the owner's token: flint up writes it; pass "
                  "--token-file)", settings.credential_path, exc)
        return 2
    if args.worker is not None:
        if args.fds is None:
            parser.error("--worker needs --fds (the main process passes its sockets)")
        try:
            sockets = adopt(parse_fds(args.fds), len(settings.tcp_addresses()), settings.workers > 1)
        except ValueError as exc:
            parser.error(str(exc))
        try:
            # The main process hands its Redis settings down (`RedisSettings.env`: the password
            # file's path, never the password); the file is read here, before the loop runs.
            redis = redis_config.from_env(os.environ)
        except redis_config.RedisConfigError as exc:
            log.error("event=bad_redis_settings error=%s", exc)
            return 2
        return worker_main(settings, args.worker, gateway_id, args.parent_pid, token, sockets, redis)
    if settings.workers < 1:
        log.error("event=bad_flag workers=%d", settings.workers)
        return 2
    settings = replace(settings, state_dir=settings.state_dir.resolve())
    if not is_loopback(settings.host):
        log.error("event=bad_flag host=%s reason=the proxy's own listener is loopback; use "
                  "--listen for other addresses", settings.host)
        return 2
    try:
        # flint up passes the resolved Redis settings in the environment (FLINT_REDIS_*).
        redis = redis_config.from_env(os.environ)
    except redis_config.RedisConfigError as exc:
        log.error("event=bad_redis_settings error=%s", exc)
        return 2
    nofile = raise_nofile_limit(settings.nofile_limit)
    log.info("event=nofile_limit soft=%d", nofile)
    return asyncio.run(Supervisor(settings, gateway_id, args.log_level, token, redis).run())


# ---------------------------------------------------------------------------------------------
# Main process: supervise the workers, serve the admin port
# ---------------------------------------------------------------------------------------------


def close_slot_after_death(workers: int, ran_s: float, quick_deaths: int) -> bool:
    """Whether to close a slot's TCP listeners after its worker died having run `ran_s` seconds,
    the `quick_deaths`th death in a row after less than WORKER_STABLE_S (this one included): a
    crash loop, and other workers to take its connections (with one worker, never: queued
    connections at least get the next incarnation's chance)."""
    return workers > 1 and ran_s < WORKER_STABLE_S and quick_deaths >= SLOT_CLOSE_QUICK_DEATHS


class Supervisor:
    """Starts the workers, restarts those that die, stops them all on SIGTERM/SIGINT."""

    def __init__(
        self, settings: GatewaySettings, gateway_id: str, log_level: str, token: Secret,
        redis: redis_config.RedisSettings | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        """The Redis of Redis-backed brokers: checked once at start (`event=redis_connected`),
        handed to every worker in its environment (`RedisSettings.env`)."""
        self.token = token
        self.gateway_id = gateway_id
        self.log_level = log_level
        self.restarts = 0
        self._stop = asyncio.Event()
        self._slots: list[SlotSockets] = []
        """Each worker slot's listening sockets (`gateway.slots`), open from start to stop, but
        for the TCP listeners of a crash-looping worker's slot between its death and its next
        spawn (`close_slot_after_death`): then a new `SlotSockets` replaces the slot's."""

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await asyncio.to_thread(
            (self.settings.state_dir / "gateway").mkdir, parents=True, exist_ok=True
        )
        longest = proxy_socket_path(self.settings.state_dir, self.settings.workers - 1)
        if len(os.fsencode(longest)) > MAX_UNIX_PATH_BYTES:
            log.error("event=state_dir_too_long socket=%s max_bytes=%d",
                      longest, MAX_UNIX_PATH_BYTES)
            return 2
        # Every slot's sockets, opened here once: a port taken by someone else fails here, port 0
        # picks one port for all slots, and a dead worker's connections wait in its slot's queue.
        addresses = self.settings.tcp_addresses()
        paths = None
        if self.settings.workers > 1:
            paths = [proxy_socket_path(self.settings.state_dir, i)
                     for i in range(self.settings.workers)]
        try:
            try:
                self._slots = await asyncio.to_thread(open_slots, addresses, paths)
            except ListenFailed as exc:
                log.error("event=listen_failed address=%s error=%r", exc.address, exc.error)
                return 1
            first = self._slots[0]
            bound = [(h, int(s.getsockname()[1]))
                     for (h, _), s in zip(addresses, (first.loopback, *first.public), strict=True)]
            self.settings = replace(self.settings, port=bound[0][1],
                                    listen=tuple(bound[1:1 + len(self.settings.listen)]))
            admin = AdminServer(
                self.settings.admin_host, self.settings.admin_port, self.settings.state_dir,
                self.settings.workers, restarts=lambda: self.restarts, token=self.token,
                probe=self.settings.probe_address,
            )
            try:
                admin_port = await admin.start()
            except OSError as exc:
                log.error("event=admin_listen_failed port=%d error=%r",
                          self.settings.admin_port, exc)
                return 1
            return await self._serve(admin, admin_port)
        finally:
            self._close_slots()
            await asyncio.to_thread(self._remove_sockets)

    async def _serve(self, admin: AdminServer, admin_port: int) -> int:
        tasks = [
            asyncio.create_task(self._supervise(i), name=f"supervise-worker-{i}")
            for i in range(self.settings.workers)
        ]
        try:
            if self.redis is not None:
                await redis_conn.check_connection(self.redis, "gateway")
            await self._announce(admin, admin_port)
            await self._stop.wait()
            log.info("event=stopping workers=%d", self.settings.workers)
        finally:
            self._stop.set()
            # No worker starts again: new connections are refused once the workers close their
            # copies, rather than queued where no one would accept them.
            self._close_slots()
            await asyncio.gather(*tasks, return_exceptions=True)
            await admin.stop()
        log.info("event=stopped")
        return 0

    async def _announce(self, admin: AdminServer, admin_port: int) -> None:
        """Print the serving line once every worker answers (or after STARTUP_WAIT_S)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STARTUP_WAIT_S
        delay = 0.02
        while not self._stop.is_set() and loop.time() < deadline:
            stats = await admin.fetch_all()
            if all(s is not None for s in stats):
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            delay = min(delay * 2, 0.5)
        if self._stop.is_set():
            return
        if loop.time() >= deadline:
            log.warning("event=workers_not_answering wait_s=%.0f", STARTUP_WAIT_S)
        s = self.settings
        addresses = ", ".join(format_hostport(h, p) for h, p in [(s.host, s.port), *s.listen])
        print(
            f"gateway: serving on {addresses} with {s.workers} workers "
            f"(admin {format_hostport(s.admin_host, admin_port)})",
            flush=True,
        )
        log.info("event=serving addresses=%s admin_port=%d workers=%d controller=%s",
                 addresses, admin_port, s.workers, s.controller_url)

    def _worker_command(self, index: int) -> list[str]:
        return [
            sys.executable, "-m", "gateway",
            "--worker", str(index),
            "--parent-pid", str(os.getpid()),
            "--fds", format_fds(self._slots[index].fds()),
            "--gateway-id", self.gateway_id,
            "--log-level", self.log_level,
        ]

    async def _supervise(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        env = worker_env(os.environ, self.settings, self.redis)
        quick_deaths = 0
        while not self._stop.is_set():
            started = loop.time()
            if await self._slot_ready(index):
                try:
                    # Every incarnation of worker `index` inherits its slot's sockets (only those).
                    proc = await asyncio.create_subprocess_exec(
                        *self._worker_command(index), env=env, stdin=asyncio.subprocess.DEVNULL,
                        pass_fds=self._slots[index].fds(),
                    )
                except OSError as exc:
                    log.error("event=worker_spawn_failed worker=%d error=%r", index, exc)
                else:
                    try:
                        await self._watch(index, proc)
                    finally:
                        if proc.returncode is None:  # cancelled: never leave it behind
                            proc.kill()
                    if self._stop.is_set():
                        return
                    log.warning("event=worker_died worker=%d pid=%d returncode=%s ran_s=%.1f",
                                index, proc.pid, proc.returncode, loop.time() - started)
            ran_s = loop.time() - started
            quick_deaths = 0 if ran_s >= WORKER_STABLE_S else quick_deaths + 1
            if close_slot_after_death(self.settings.workers, ran_s, quick_deaths):
                self._close_slot(index, quick_deaths)
            delay = backoff_delay(RESTART_BACKOFF_MIN_S, RESTART_BACKOFF_MAX_S, quick_deaths - 1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if not self._stop.is_set():
                self.restarts += 1

    def _close_slot(self, index: int, quick_deaths: int) -> None:
        """Close slot `index`'s TCP listeners (if open) while its crash-looping worker is dead."""
        slot = self._slots[index]
        if slot.tcp_open():
            slot.close_tcp()
            log.warning("event=slot_closed worker=%d reason=crash_loop quick_deaths=%d "
                        "(new connections go to the other workers until the next spawn)",
                        index, quick_deaths)

    async def _slot_ready(self, index: int) -> bool:
        """Whether slot `index`'s sockets are open for a spawn, reopening closed TCP listeners
        (False, logged, when that fails: the next attempt tries again)."""
        slot = self._slots[index]
        if slot.tcp_open():
            return True
        s = self.settings
        try:
            reopened = await asyncio.to_thread(reopen_tcp, slot, s.tcp_addresses())
        except OSError as exc:
            log.error("event=slot_reopen_failed worker=%d error=%r", index, exc)
            return False
        if self._stop.is_set():  # stopping: no worker starts again, refuse its connections
            reopened.close_tcp()
            return False
        self._slots[index] = reopened
        log.info("event=slot_reopened worker=%d", index)
        return True

    async def _watch(self, index: int, proc: asyncio.subprocess.Process) -> None:
        """Return when the worker exits, or after stopping it once the supervisor stops."""
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if exited.done():
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), WORKER_STOP_TIMEOUT_S)
        except TimeoutError:
            log.warning("event=worker_kill worker=%d pid=%d", index, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await exited

    def _close_slots(self) -> None:
        """Close this process's copies of the slots' sockets (a worker's stay open in it)."""
        for slot in self._slots:
            slot.close()

    def _remove_sockets(self) -> None:
        for i in range(self.settings.workers):
            with contextlib.suppress(FileNotFoundError):
                worker_socket_path(self.settings.state_dir, i).unlink()
            with contextlib.suppress(FileNotFoundError):
                proxy_socket_path(self.settings.state_dir, i).unlink()


if __name__ == "__main__":
    sys.exit(main())
