"""The embedded engine's runtime: replicas as supervised local processes that outlive it."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import random
import secrets
import shutil
import signal
import socket
from dataclasses import replace
from pathlib import Path

from controller.runtime import process, records
from controller.runtime.base import ChangeCallback, ReplicaSpec, ReplicaStatus
from controller.runtime.local_replica import LocalReplica
from controller.runtime.local_settings import LocalRuntimeSettings

log = logging.getLogger(__name__)


class StateDirBusy(RuntimeError):
    """Another live runtime supervises the same state directory."""


class LocalRuntime:
    """Runs replicas as local processes, each in its own session and process group.

    State dir layout: `replicas/<id>.json` (records, re-adopted by `start`),
    `logs/<namespace>/<revision>/<id>.log`, `sandbox/<id>/{home,tmp}` (private HOME and
    TMPDIR) and `runtime.lock` (held while supervising, so two runtimes never share replicas)."""

    def __init__(
        self,
        state_dir: Path,
        host: str = "127.0.0.1",
        settings: LocalRuntimeSettings | None = None,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.settings = settings or LocalRuntimeSettings()
        self.records_dir = self.state_dir / "replicas"
        self.logs_dir = self.state_dir / "logs"
        self.sandbox_dir = self.state_dir / "sandbox"
        self._replicas: dict[str, LocalReplica] = {}
        self._subscribers: list[ChangeCallback] = []
        self._lock_fd: int | None = None
        self._started = False
        self._closing = False
        self._start_lock = asyncio.Lock()
        self._port_lock = asyncio.Lock()
        self._port_claims: dict[str, int] = {}
        """Ports handed out by `aallocate_port`, by replica id, until the replica is stopped
        (only touched on the loop)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Take the state dir and re-adopt recorded replicas: a live process (same pid and
        start time) is watched and probed again; a dead one is restarted like a crash.

        A record without a pid may have been written just before a spawn the previous runtime
        did not live to record: its process is looked up by FLINT_REPLICA_ID in
        /proc/*/environ, and adopted if found (so it is never started twice)."""
        async with self._start_lock:
            if self._started:
                return
            if self._closing:
                raise RuntimeError("the runtime is closed")
            recs = await asyncio.to_thread(self._take_state_dir)
            self._started = True
            pidless = [r.id for r in recs if r.pid is None]
            by_env = (
                await asyncio.to_thread(process.processes_by_replica_id, pidless) if pidless else {}
            )
            for rec in recs:
                await self._adopt(rec, by_env.get(rec.id, []))

    def _take_state_dir(self) -> list[records.ReplicaRecord]:
        for d in (self.records_dir, self.logs_dir, self.sandbox_dir):
            d.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "runtime.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirBusy(f"{self.state_dir} is used by another runtime") from e
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return records.read_all(self.records_dir)

    async def _adopt(self, rec: records.ReplicaRecord, by_env: list[int]) -> None:
        """Supervise a recorded replica again. `by_env`: live processes carrying its
        FLINT_REPLICA_ID (looked up only for records without a pid)."""
        down_reason = "the process exited while the runtime was not running"
        if rec.pid is None and by_env:
            main = await asyncio.to_thread(self._identify, by_env)
            if main is not None:
                rec.pid, rec.pgid, rec.start_time = main
                log.info("found replica %s by FLINT_REPLICA_ID (pid %d)", rec.id, rec.pid)
            else:  # children of a main process that is gone
                for pgid in await asyncio.to_thread(self._groups_of, by_env):
                    process.signal_group(pgid, signal.SIGKILL)
        if rec.pid is None and rec.state == "spawning":
            down_reason = "the runtime stopped while starting the process, which is not running"
        rep = LocalReplica(self, rec, self.sandbox_dir / rec.id, adopted=True)
        self._replicas[rec.id] = rep
        alive = rec.pid is not None and rec.start_time is not None
        alive = alive and await asyncio.to_thread(process.is_alive, rec.pid or 0, rec.start_time)
        if alive:
            assert rec.pid is not None and rec.start_time is not None
            handle = process.ProcessHandle(rec.pid, rec.pgid or rec.pid, rec.start_time)
            log.info("re-adopted replica %s (pid %d, port %d)", rec.id, rec.pid, rec.port)
            rep.status.message = "re-adopted"
            rep.launch(handle, exited_while_down=False)
        else:
            leftovers = (
                [] if rec.pgid is None else await asyncio.to_thread(process.group_members, rec.pgid)
            )
            if rec.pgid is not None and leftovers:
                process.signal_group(rec.pgid, signal.SIGKILL)  # leftovers of the dead replica
            log.info("replica %s died while the runtime was down; restarting it", rec.id)
            rep.status.pid = None
            was_started = rec.pid is not None or rec.state == "spawning"
            rep.launch(None, exited_while_down=was_started, down_reason=down_reason)
        self.notify(replace(rep.status))

    @staticmethod
    def _identify(pids: list[int]) -> tuple[int, int, int] | None:
        """(pid, pgid, start time) of the main process among a replica's processes (blocking)."""
        main = process.main_process(pids)
        st = None if main is None else process.proc_info(main)
        if main is None or st is None:
            return None
        return main, st.pgid, st.start_ticks

    @staticmethod
    def _groups_of(pids: list[int]) -> set[int]:
        """The process groups of `pids`, never our own (blocking)."""
        groups = {st.pgid for st in map(process.proc_info, pids) if st is not None}
        groups.discard(os.getpgrp())
        return {g for g in groups if g > 1}

    async def close(self, stop_replicas: bool = True) -> None:
        """Stop supervising. With `stop_replicas`, stop every replica and delete its record;
        without, leave the processes running and their records for the next runtime."""
        self._closing = True
        reps = list(self._replicas.values())
        if stop_replicas:
            await asyncio.gather(*(self.stop_replica(r.record.id) for r in reps))
        else:
            await asyncio.gather(*(r.abandon() for r in reps))
            self._replicas.clear()
            self._port_claims.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        self._started = False

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, callback: ChangeCallback) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: ChangeCallback) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(callback)

    def notify(self, status: ReplicaStatus) -> None:
        for cb in list(self._subscribers):
            try:
                cb(status)
            except Exception:
                log.exception("replica change callback %r failed", cb)

    # ------------------------------------------------------------------ replicas

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaStatus:
        """Spawn a replica; return once the process exists (state `starting`), or `failed`
        if it cannot start at all. Starts the runtime if `start` was not called."""
        if self._closing:
            raise RuntimeError("the runtime is closed")
        await self.start()
        rid = f"{spec.revision}-{secrets.token_hex(4)}"
        wd = spec.working_dir
        cwd = spec.image_dir if wd is None else (spec.image_dir / wd)
        rec = records.ReplicaRecord(
            id=rid,
            spec=spec,
            host=self.host,
            port=0,
            log_path=self.logs_dir / spec.namespace / spec.revision / f"{rid}.log",
            cwd=cwd,
        )
        rep = LocalReplica(self, rec, self.sandbox_dir / rid)
        self._replicas[rid] = rep
        rep.launch(None, exited_while_down=False)
        await asyncio.shield(rep.first_spawn.wait())
        return replace(rep.status)

    async def stop_replica(self, replica_id: str, grace_s: float | None = None) -> None:
        """SIGTERM the replica's process group, SIGKILL it after `grace_s` (default
        `settings.stop_grace_s`), reap it and forget it (record and sandbox deleted)."""
        rep = self._replicas.get(replica_id)
        if rep is None or rep.stopping:
            return
        grace = self.settings.stop_grace_s if grace_s is None else grace_s
        try:
            await rep.stop(grace)
            await rep.flushed()
        finally:
            self._replicas.pop(replica_id, None)
            self._port_claims.pop(replica_id, None)
            await asyncio.to_thread(self._forget, replica_id)

    def _forget(self, replica_id: str) -> None:
        records.remove(self.records_dir, replica_id)
        sandbox = self.sandbox_dir / replica_id
        if sandbox.exists():
            shutil.rmtree(sandbox, ignore_errors=True)

    def replicas(self, revision_key: str | None = None) -> list[ReplicaStatus]:
        return [
            replace(r.status)
            for r in self._replicas.values()
            if revision_key is None or r.status.revision_key == revision_key
        ]

    def replica(self, replica_id: str) -> ReplicaStatus | None:
        r = self._replicas.get(replica_id)
        return None if r is None else replace(r.status)

    def log_paths(self, revision_key: str) -> list[Path]:
        """Log files of the revision's replicas, past and present, oldest first (blocking:
        on an event loop use `alog_paths`)."""
        namespace, _, revision = revision_key.partition("/")
        d = self.logs_dir / namespace / revision
        if not d.is_dir():
            return []
        dated = []
        for p in d.glob("*.log"):
            try:
                dated.append((p.stat().st_mtime, p.name, p))
            except FileNotFoundError:  # deleted meanwhile
                continue
        return [p for _mtime, _name, p in sorted(dated)]

    async def alog_paths(self, revision_key: str) -> list[Path]:
        """`log_paths` in a worker thread (it globs and stats), for use on an event loop."""
        return await asyncio.to_thread(self.log_paths, revision_key)

    # ------------------------------------------------------------------ ports

    def allocate_port(self, preferred: int | None, replica_id: str) -> int:
        """A port no other replica uses and nothing listens on; `preferred` if possible
        (blocking: it binds test sockets; on the loop use `aallocate_port`)."""
        return self._pick_port(preferred, self._taken_ports(replica_id))

    async def aallocate_port(self, preferred: int | None, replica_id: str) -> int:
        """`allocate_port` with the socket probing in a worker thread. Allocations are
        serialised and the port stays claimed for `replica_id` until the replica is forgotten,
        so two replicas starting at once never get the same port."""
        async with self._port_lock:
            taken = self._taken_ports(replica_id)
            port = await asyncio.to_thread(self._pick_port, preferred, taken)
            self._port_claims[replica_id] = port
            return port

    def _taken_ports(self, replica_id: str) -> set[int]:
        """Ports of the other replicas (read on the loop: `_replicas` changes there)."""
        taken = {r.status.port for rid, r in self._replicas.items() if rid != replica_id}
        taken.update(p for rid, p in self._port_claims.items() if rid != replica_id)
        taken.discard(0)
        return taken

    def _pick_port(self, preferred: int | None, taken: set[int]) -> int:
        st = self.settings
        if preferred and preferred not in taken and self._bindable(preferred):
            return preferred
        span = st.port_max - st.port_min + 1
        offset = random.randrange(span)
        for i in range(span):
            port = st.port_min + (offset + i) % span
            if port not in taken and self._bindable(port):
                return port
        raise RuntimeError(f"no free port in {st.port_min}-{st.port_max}")

    def _bindable(self, port: int) -> bool:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            # Like most servers: TIME_WAIT leftovers do not block the port, listeners do.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((self.host, port))
            except OSError:
                return False
        return True
