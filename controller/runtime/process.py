"""Process plumbing for the local runtime: spawning in a clean session, the process table, exit watching."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from flint_common import procinfo

log = logging.getLogger(__name__)

_POLL_S = 0.1
"""Exit polling period (seconds) when pidfds are unavailable."""

REPLICA_ID_ENV = "FLINT_REPLICA_ID"
"""Set in every replica's environment (inherited by its children): finds a replica's processes
when its record has no pid yet (the runtime died between writing the record and the spawn)."""

REPLICA_UMASK = 0o022
"""A replica's umask: a container's usual one. Flint's own processes run with 077 (its state is
private); the apps it runs keep the default their files expect."""

_ABANDONED: list[subprocess.Popen[bytes]] = []
"""Children we stopped supervising but left running (`close(False)`); kept referenced so the
interpreter neither warns about nor reaps them behind a later runtime's back."""


# ---------------------------------------------------------------------------- the process table
# Read through flint_common.procinfo (psutil); every function here blocks: run it in a thread.


def proc_info(pid: int) -> procinfo.ProcInfo | None:
    """The process's group, start time (clock ticks after boot: guards pid reuse) and zombie
    state, or None if there is no such process."""
    return procinfo.info(pid)


def is_alive(pid: int, start_time: int | None = None) -> bool:
    """The process exists, is not a zombie and (if given) started at `start_time`."""
    return procinfo.alive(pid, start_time)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid` (blocking: scans the process table)."""
    return procinfo.group_members(pgid)


def processes_by_replica_id(replica_ids: Collection[str]) -> dict[str, list[int]]:
    """Live processes whose environment carries FLINT_REPLICA_ID=<id>, for each of the ids
    (blocking: one scan of every process's environment; processes we may not read are skipped).
    A replica's children inherit the variable, so an id may map to several processes."""
    wanted = set(replica_ids)
    found: dict[str, list[int]] = {rid: [] for rid in wanted}
    if not wanted:
        return found
    for pid, seen in sorted(procinfo.with_env(REPLICA_ID_ENV, wanted).items()):
        found[seen.environ[REPLICA_ID_ENV]].append(pid)
    return found


def main_process(pids: Sequence[int]) -> int | None:
    """Among a replica's processes, the one the runtime spawned: a process group leader
    (replicas start in their own session), the oldest if several (children may setsid too)."""
    leaders = []
    for pid in pids:
        st = procinfo.info(pid)
        if st is not None and st.pgid == pid and not st.zombie:
            leaders.append((st.start_ticks, pid))
    return min(leaders)[1] if leaders else None


def find_by_replica_id(replica_id: str) -> int | None:
    """The pid of the live main process of replica `replica_id`, found by its
    FLINT_REPLICA_ID environment variable, or None (blocking: scans /proc).

    Use it for a record without a pid: it was written before the spawn (state `spawning`), so
    a process may exist that the record does not name."""
    return main_process(processes_by_replica_id([replica_id])[replica_id])


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to every process of the group; False if the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        log.warning("not allowed to signal process group %d", pgid)
        return False
    return True


def describe_exit(returncode: int | None) -> tuple[int | None, str]:
    """(Kubernetes-style exit code, text): a signal N becomes 128+N, like a container's."""
    if returncode is None:
        return None, "exited (exit status unknown)"
    if returncode < 0:
        sig = -returncode
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return 128 + sig, f"exit code {128 + sig} (killed by {name})"
    return returncode, f"exit code {returncode}"


def tail_lines(path: Path, n: int, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `n` lines of a log file (blocking; reads at most `max_bytes` from the end)."""
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return lines[-n:]


# ---------------------------------------------------------------------------- spawning


def child_path(environ: Mapping[str, str] | None = None) -> str:
    """PATH for replicas: the caller's PATH without the entries of Flint's own virtualenv."""
    environ = os.environ if environ is None else environ
    entries = environ.get("PATH", os.defpath).split(os.pathsep)
    if sys.prefix != sys.base_prefix:  # running in a virtualenv
        venv = os.path.realpath(sys.prefix)
        entries = [
            e for e in entries if e and os.path.commonpath([venv, os.path.realpath(e)]) != venv
        ]
    return os.pathsep.join(e for e in entries if e)


def build_env(
    *,
    home: Path,
    tmpdir: Path,
    user_env: Mapping[str, str],
    runtime_env: Mapping[str, str],
) -> dict[str, str]:
    """A clean environment: base variables, then the user's, then the runtime's (PORT, K_*)."""
    env = {
        "PATH": child_path(),
        "HOME": str(home),
        "TMPDIR": str(tmpdir),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
    }
    env.update(user_env)
    env.update(runtime_env)
    return env


def resolve_program(program: str, cwd: Path, path: str) -> str | None:
    """An absolute path for argv[0]: relative paths against `cwd`, then a `PATH` search."""
    if "/" in program:
        p = Path(program) if os.path.isabs(program) else cwd / program
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    local = cwd / program
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(program, path=path)


_SET_LIMIT = (
    "import os, resource, sys; n = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_AS, (n, n)); os.execv(sys.argv[2], sys.argv[3:])"
)


def launch(program: str, argv: Sequence[str], limit_bytes: int | None) -> tuple[str, list[str]]:
    """(executable, argv) that run `program` with exactly `argv` (argv[0] as the container's
    command gives it, not the resolved path), under RLIMIT_AS = `limit_bytes` (rounded down to
    KiB) when one is set.

    The limit is set by a short-lived Python (isolated, no site) that then execs the program in
    the same process (same pid and start time) with `os.execv`, which keeps argv[0]. This avoids
    `preexec_fn`, which runs Python in the forked child and is documented as unsafe when the
    parent has threads (the controller does: `asyncio.to_thread`, SQLite), and also forbids
    subprocess's fast vfork path; a shell's `exec` would replace argv[0] with the path."""
    if limit_bytes is None:
        return program, list(argv)
    limit = max(1, limit_bytes // 1024) * 1024
    return sys.executable, [sys.executable, "-I", "-S", "-c", _SET_LIMIT, str(limit), program,
                            *argv]


def spawn(argv: Sequence[str], cwd: Path, env: Mapping[str, str], log_path: Path,
          executable: str | None = None) -> ProcessHandle:
    """Start `argv` (running `executable`, else argv[0]) in a new session (its own process
    group), stdin from /dev/null and stdout/stderr appended to `log_path` (blocking: run it in a thread).

    We use `subprocess.Popen` and watch the exit with a pidfd rather than
    `asyncio.create_subprocess_exec`: an asyncio subprocess transport kills its child when it
    is closed or garbage-collected, which would defeat `close(stop_replicas=False)` and
    re-adoption; and adopted processes (not our children) need the pidfd watcher anyway.
    One mechanism then serves children and adopted processes, on asyncio's loop and uvloop."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as out:
        popen = subprocess.Popen(
            list(argv),
            executable=executable,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            close_fds=True,
            umask=REPLICA_UMASK,
        )
    st = procinfo.info(popen.pid)  # a zombie until we reap it, so this cannot miss
    start_time = st.start_ticks if st is not None else 0
    return ProcessHandle(popen.pid, popen.pid, start_time, popen)


# ---------------------------------------------------------------------------- exit watching


class ProcessHandle:
    """One replica process (our child or adopted) and a future for its exit.

    `exited` resolves with the Popen-style return code (negative: killed by that signal) or
    None when it cannot be known (an adopted process that is not our child)."""

    def __init__(
        self,
        pid: int,
        pgid: int,
        start_time: int,
        popen: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.pid = pid
        self.pgid = pgid
        self.start_time = start_time
        self._popen = popen
        self._fd: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._verify_task: asyncio.Task[None] | None = None
        self.exited: asyncio.Future[int | None] | None = None

    @property
    def adopted(self) -> bool:
        return self._popen is None

    @property
    def done(self) -> bool:
        return self.exited is not None and self.exited.done()

    def watch(self) -> asyncio.Future[int | None]:
        """Start watching (on the running loop): a pidfd reader, or polling as a fallback."""
        if self.exited is not None:
            return self.exited
        loop = self._loop = asyncio.get_running_loop()
        self.exited = loop.create_future()
        try:
            self._fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            rc = self._reap(force=True)
            self._finish(None if isinstance(rc, _Running) else rc)
            return self.exited
        except (OSError, AttributeError):
            self._fd = None
        if self._fd is not None:
            loop.add_reader(self._fd, self._on_event)  # readable once the process has exited
            if self._popen is not None:
                self._on_event()  # it may have exited before the pidfd was opened
            else:  # is the pidfd this process, not a reused pid? (/proc: in a thread)
                self._verify_task = loop.create_task(self._verify())
        else:
            self._poll_task = loop.create_task(self._poll())
        return self.exited

    def _on_event(self) -> None:
        # The pidfd is readable: the process has exited (an adopted one needs no /proc check).
        rc = self._reap(force=True)
        if not isinstance(rc, _Running):
            self._finish(rc)

    async def _verify(self) -> None:
        rc = await asyncio.to_thread(self._reap)
        if not isinstance(rc, _Running):
            self._finish(rc)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(_POLL_S)
            # An adopted process's check reads /proc: in a thread.
            rc = self._reap() if self._popen is not None else await asyncio.to_thread(self._reap)
            if not isinstance(rc, _Running):
                self._finish(rc)
                return

    def _reap(self, force: bool = False) -> int | _Running | None:
        """The exit code, `_RUNNING`, or None when unknown (reads /proc for an adopted process
        unless `force`: blocking, then)."""
        if self._popen is not None:
            rc = self._popen.poll()
            return _RUNNING if rc is None else rc
        # Adopted. If it happens to be our child (re-adopted within one process), reap it.
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        else:
            if pid == self.pid:
                rc = os.waitstatus_to_exitcode(status)
                for p in [p for p in _ABANDONED if p.pid == pid]:
                    p.returncode = rc  # we reaped it for that Popen
                    _ABANDONED.remove(p)
                return rc
        if not force and is_alive(self.pid, self.start_time):
            return _RUNNING
        return None

    def _finish(self, rc: int | None) -> None:
        self._unwatch()
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(rc)

    def _unwatch(self) -> None:
        if self._fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        for task in (self._poll_task, self._verify_task):
            if task is not None:
                task.cancel()  # harmless from within: it has nothing left to await
        self._poll_task = self._verify_task = None

    def detach(self) -> None:
        """Stop watching without touching the process (it keeps running)."""
        self._unwatch()
        if self._popen is not None and self._popen.returncode is None:
            _ABANDONED.append(self._popen)
        if self.exited is not None and not self.exited.done():
            self.exited.cancel()

    def signal_group(self, sig: int) -> bool:
        return signal_group(self.pgid, sig)

    async def wait(self, within_s: float | None) -> bool:
        """Wait up to `within_s` seconds for the exit; True if it exited."""
        fut = self.watch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(fut), within_s)
        return fut.done()


class _Running:
    pass


_RUNNING = _Running()


async def wait_group_gone(pgid: int, within_s: float, period: float = 0.02) -> bool:
    """Wait up to `within_s` seconds for process group `pgid` to have no live member."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while await asyncio.to_thread(group_members, pgid):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(period)
    return True


async def terminate(handle: ProcessHandle, grace_s: float) -> int | None:
    """SIGTERM the group, wait up to `grace_s` for it (leader and descendants) to exit, then
    SIGKILL whatever is left of the group; return the leader's return code."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, grace_s)
    fut = handle.watch()
    if not fut.done():
        handle.signal_group(signal.SIGTERM)
        await handle.wait(max(0.0, deadline - loop.time()))
    gone = await wait_group_gone(handle.pgid, max(0.0, deadline - loop.time()))
    if not (gone and fut.done()):
        handle.signal_group(signal.SIGKILL)
    if not await handle.wait(5.0):
        log.error("process %d survived SIGKILL", handle.pid)
    await wait_group_gone(handle.pgid, 5.0)
    return fut.result() if fut.done() and not fut.cancelled() else None
