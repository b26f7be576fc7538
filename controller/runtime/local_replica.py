"""The supervisor of one local replica: spawn, probe, restart with backoff, stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from controller.runtime import process, records
from controller.runtime.base import Probe, ReplicaSpec, ReplicaState, ReplicaStatus
from controller.runtime.local_settings import LocalRuntimeSettings
from controller.runtime.probes import run_probe

log = logging.getLogger(__name__)


class Owner(Protocol):
    """What a replica needs from its runtime."""

    settings: LocalRuntimeSettings
    records_dir: Path

    def notify(self, status: ReplicaStatus) -> None: ...

    async def aallocate_port(self, preferred: int | None, replica_id: str) -> int: ...


class SpawnError(Exception):
    """The replica cannot be started at all (state `failed`)."""


class LocalReplica:
    """State and supervisor task of one replica."""

    def __init__(
        self, owner: Owner, record: records.ReplicaRecord, sandbox: Path, adopted: bool = False
    ) -> None:
        self.owner = owner
        self.record = record
        self.sandbox = sandbox
        self.spec: ReplicaSpec = record.spec
        self.status = ReplicaStatus(
            id=record.id,
            revision_key=record.spec.revision_key,
            host=record.host,
            port=record.port,
            pid=record.pid,
            state="starting",
            restarts=record.restarts,
            started_at=record.started_at,
        )
        self.handle: process.ProcessHandle | None = None
        self.task: asyncio.Task[None] | None = None
        self.first_spawn = asyncio.Event()
        self.stopping = False
        self._has_run = adopted
        """A spawn is a restart (counted) unless it is the replica's very first."""
        self._kill_reason = ""
        self._ready_since: float | None = None
        self._crash_streak = 0
        self._persist_lock = asyncio.Lock()
        self._writing: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ state

    def _set(self, state: ReplicaState | None = None, message: str | None = None) -> None:
        changed = False
        if state is not None and state != self.status.state:
            self.status.state = state
            changed = True
        if message is not None and message != self.status.message:
            self.status.message = message
            changed = True
        if changed:
            self.owner.notify(replace(self.status))

    async def persist(self, state: records.RecordState | None = None) -> None:
        """Write the record: `running` with the pid of a live process, else `down`, or
        `state` (`spawning`: written before a spawn, so a process never exists unrecorded)."""
        r = self.record
        h = self.handle
        r.port = self.status.port
        r.restarts = self.status.restarts
        r.started_at = self.status.started_at
        live = h is not None and not h.done
        r.pid = h.pid if h is not None and live else None
        r.pgid = h.pgid if h is not None and live else None
        r.start_time = h.start_time if h is not None and live else None
        r.state = state or ("running" if live else "down")
        if self.stopping:
            return
        async with self._persist_lock:
            # Shielded: a cancelled supervisor must not leave a write in flight that could land
            # after `stop_replica` deleted the record (a ghost replica for the next runtime).
            self._writing = asyncio.ensure_future(
                asyncio.to_thread(records.write, self.owner.records_dir, r)
            )
            await asyncio.shield(self._writing)

    async def flushed(self) -> None:
        """Wait for a record write still in flight."""
        if self._writing is not None:
            with contextlib.suppress(Exception):
                await self._writing

    # ------------------------------------------------------------------ supervision

    def launch(
        self,
        adopted: process.ProcessHandle | None,
        exited_while_down: bool,
        down_reason: str = "the process exited while the runtime was not running",
    ) -> None:
        """Supervise `adopted`, or spawn a process; `exited_while_down` → first go through the
        crash path (backoff, `crashed` state with `down_reason`)."""
        self.task = asyncio.get_running_loop().create_task(
            self._run(adopted, exited_while_down, down_reason), name=f"replica {self.record.id}"
        )

    async def _run(
        self, handle: process.ProcessHandle | None, exited_while_down: bool, down_reason: str
    ) -> None:
        try:
            if handle is not None:
                self.handle = handle
                handle.watch()
                self.first_spawn.set()
                if self.record.state != "running":
                    await self.persist()  # found by FLINT_REPLICA_ID: record its pid now
            elif exited_while_down:
                self.first_spawn.set()
                await self._crashed(None, down_reason)
            while True:
                if handle is None:
                    handle = await self._spawn()
                    self.first_spawn.set()
                    if handle is None:
                        return
                rc = await self._supervise(handle)
                await self._crashed(rc, self._kill_reason)
                handle = None
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("supervisor of replica %s failed", self.record.id)
            self.status.pid = None
            self._set("failed", f"internal error supervising the replica: {e!r}")
        finally:
            self.first_spawn.set()

    async def _spawn(self) -> process.ProcessHandle | None:
        """Start a process; None (state `failed`) if the image cannot run at all."""
        s = self.spec
        home, tmp = self.sandbox / "home", self.sandbox / "tmp"
        port = await self.owner.aallocate_port(self.status.port or None, self.record.id)

        def prepare_and_spawn() -> process.ProcessHandle:
            env = process.build_env(  # its PATH resolves symlinks: file-system work, in this thread
                home=home,
                tmpdir=tmp,
                user_env=s.env,
                runtime_env={
                    "PORT": str(port),
                    "K_SERVICE": s.service,
                    "K_CONFIGURATION": s.configuration,
                    "K_REVISION": s.revision,
                    process.REPLICA_ID_ENV: self.record.id,
                },
            )
            cwd = self.record.cwd
            if not cwd.is_dir():
                raise SpawnError(f"workingDir {cwd} does not exist in the image")
            if not s.command:
                raise SpawnError("no command to run")
            program = process.resolve_program(s.command[0], cwd, env["PATH"])
            if program is None:
                raise SpawnError(
                    f"executable {s.command[0]!r} not found in the working directory {cwd} "
                    f"or on PATH, or not executable"
                )
            home.mkdir(parents=True, exist_ok=True)
            tmp.mkdir(parents=True, exist_ok=True)
            executable, argv = process.launch(program, s.command, s.memory_limit_bytes)
            return process.spawn(argv, cwd, env, self.record.log_path, executable)

        if self._has_run:
            self.status.restarts += 1
        self._has_run = True
        self.status.port = port
        # Record first, spawn second: a runtime killed in between leaves a `spawning` record
        # (no pid) whose process the next runtime finds by FLINT_REPLICA_ID, never an
        # unrecorded process. Cancelled here, nothing was spawned.
        await self.persist("spawning")
        spawning = asyncio.ensure_future(asyncio.to_thread(prepare_and_spawn))
        try:
            handle = await asyncio.shield(spawning)
        except asyncio.CancelledError:
            # Never lose a process we started: let `stop` find and kill it.
            with contextlib.suppress(Exception):
                self.handle = await spawning
                self.handle.watch()
            raise
        except (SpawnError, OSError) as e:
            msg = str(e) if isinstance(e, SpawnError) else f"cannot start {s.command!r}: {e}"
            self.handle = None
            self.status.pid = None
            self._set("failed", msg)
            await self.persist()
            return None
        self.handle = handle
        handle.watch()
        self.status.pid = handle.pid
        self.status.started_at = time.time()
        self._kill_reason = ""
        if self.status.state == "starting":
            self.owner.notify(replace(self.status))  # the pid and port changed
        self._set("starting")
        await self.persist()
        return handle

    async def _supervise(self, handle: process.ProcessHandle) -> int | None:
        """Probe until the process exits; return its return code."""
        loop = asyncio.get_running_loop()
        self._ready_since = None
        probing = loop.create_task(self._probe_loop(handle))
        try:
            assert handle.exited is not None
            return await asyncio.shield(handle.exited)
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing

    async def _crashed(self, rc: int | None, reason: str) -> None:
        """Record the exit, clean up the group's leftovers, then wait out the backoff."""
        st = self.owner.settings
        handle = self.handle
        leftovers = (
            [] if handle is None else await asyncio.to_thread(process.group_members, handle.pgid)
        )
        if handle is not None and leftovers:
            handle.signal_group(signal.SIGKILL)  # orphans would keep the port or the memory
            await process.wait_group_gone(handle.pgid, 5.0)
        self.handle = None
        code, text = process.describe_exit(rc)
        loop = asyncio.get_running_loop()
        if self._ready_since is not None and loop.time() - self._ready_since >= st.backoff_reset_s:
            self._crash_streak = 0
        delay = min(st.backoff_initial_s * (2**self._crash_streak), st.backoff_max_s)
        self._crash_streak += 1
        tail = await asyncio.to_thread(process.tail_lines, self.record.log_path, st.log_tail_lines)
        head = f"{reason}; {text}" if reason else text
        msg = f"{head}; restarting in {delay:g}s"
        if self.spec.memory_limit_bytes is not None and any(
            "MemoryError" in ln or "Cannot allocate memory" in ln or "out of memory" in ln.lower()
            for ln in tail
        ):
            msg += f" (memory limit: {self.spec.memory_limit_bytes} bytes)"
        if tail:
            msg += "\nlast log lines:\n" + "\n".join(tail)
        self.status.pid = None
        self.status.last_exit_code = code
        self._set("crashed", msg)
        await self.persist()
        await asyncio.sleep(delay)

    # ------------------------------------------------------------------ probes

    async def _probe_loop(self, handle: process.ProcessHandle) -> None:
        st = self.owner.settings
        spec = self.spec
        loop = asyncio.get_running_loop()
        probe = spec.readiness
        began = loop.time()
        if probe.initial_delay_s > 0:
            await asyncio.sleep(probe.initial_delay_s)
        failures = 0
        liveness: asyncio.Task[None] | None = None
        try:
            while True:
                r = await run_probe(probe, self.status.host, self.status.port)
                waited = loop.time() - began
                if r.ok:
                    failures = 0
                    if self.status.state in ("starting", "unhealthy"):
                        self._ready_since = self._ready_since or loop.time()
                        self._set("ready", "")
                        if liveness is None and spec.liveness is not None:
                            liveness = loop.create_task(self._liveness_loop(handle, spec.liveness))
                elif self.status.state == "starting":
                    if waited >= st.listen_timeout_s:
                        self._set(message=self._not_ready_message(r.listening, r.detail))
                elif self.status.state == "ready":
                    failures += 1
                    if failures >= probe.failure_threshold:
                        self._set("unhealthy", f"readiness probe failed: {r.detail}")
                period = self._period(probe)
                if self.status.state == "starting" and waited >= st.listen_timeout_s:
                    period *= 10  # keep probing, less eagerly
                await asyncio.sleep(period)
        finally:
            if liveness is not None:
                liveness.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await liveness

    def _not_ready_message(self, listening: bool, detail: str) -> str:
        after = f"{self.owner.settings.listen_timeout_s:g}s"
        if not listening:
            return (
                f"the app has not listened on $PORT ({self.status.port}) after {after}; "
                "it must listen on the port in the PORT environment variable"
            )
        return f"the readiness probe has not passed after {after}: {detail}"

    def _period(self, probe: Probe) -> float:
        st = self.owner.settings
        if self.status.state == "starting":
            return st.starting_probe_period_s
        return max(probe.period_s, st.ready_probe_period_s)

    async def _liveness_loop(self, handle: process.ProcessHandle, probe: Probe) -> None:
        failures = 0
        while not handle.done:
            await asyncio.sleep(max(probe.period_s, self.owner.settings.ready_probe_period_s))
            r = await run_probe(probe, self.status.host, self.status.port)
            if r.ok:
                failures = 0
                continue
            failures += 1
            if failures >= probe.failure_threshold:
                self._kill_reason = f"liveness probe failed {failures} times ({r.detail}), killed"
                handle.signal_group(signal.SIGKILL)
                return

    # ------------------------------------------------------------------ stopping

    async def stop(self, grace_s: float) -> None:
        """Stop supervising, SIGTERM the group, SIGKILL it after `grace_s`."""
        self.stopping = True
        self._set("stopping")
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        handle = self.handle
        if handle is not None:
            rc = await process.terminate(handle, grace_s)
            self.status.last_exit_code = process.describe_exit(rc)[0]
            handle.detach()
        self.handle = None
        self.status.pid = None
        self._set("stopped")

    async def abandon(self) -> None:
        """Stop supervising and leave the process running (its record stays)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        if self.handle is not None:
            self.handle.detach()
