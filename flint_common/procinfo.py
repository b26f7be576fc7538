"""The one reader of the machine's process table (Linux), through psutil.

What the local runtime, the autoscaler, the benchmarks and the tests ask about processes: is one
alive (a zombie is not) and still the process it was (its start time guards against pid reuse),
its process group and the members of a group, which processes carry something in their
environment or command line, their CPU time and their resident memory.

psutil reads /proc for all of it but two things: it has no process group (`os.getpgid` gives
it, per pid of `psutil.pids()`), and no peak resident size (VmHWM), which `memory` reads from
/proc/PID/status: the one /proc file read here by hand.

Every function blocks: it reads /proc, and a scan reads something of every process of the
machine. Callers on an event loop run them in a thread (`await asyncio.to_thread(...)`), never
on the loop. Processes come and go between two reads: one that vanishes, or that we may not read
(another user's, a kernel thread's environment), is skipped: absent from a scan, None, or not
alive.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

import psutil

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied)
"""A process that exited (ZombieProcess is a NoSuchProcess) or that we may not read."""

_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


def _clock_ticks_per_second() -> int:
    try:
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100
    return ticks if ticks > 0 else 100


CLK_TCK = _clock_ticks_per_second()
"""`SC_CLK_TCK`: the kernel's unit of process start and CPU times (100 on Linux)."""


def _process(pid: int) -> psutil.Process | None:
    if pid <= 0:
        return None
    try:
        return psutil.Process(pid)
    except _GONE:
        return None


def _start_ticks(p: psutil.Process) -> int:
    # psutil gives the creation time since the epoch: the boot time plus the start time in clock
    # ticks after boot (field 22 of /proc/PID/stat), which never changes for a process. Taking
    # the boot time away again gives that field back, unaffected by changes of the wall clock
    # (only a clock step in the microseconds between the two reads could shift it).
    return round((p.create_time() - psutil.boot_time()) * CLK_TCK)


# ---------------------------------------------------------------------------- one process


@dataclass(frozen=True, slots=True)
class ProcInfo:
    pid: int
    pgid: int
    start_ticks: int
    """Start time in clock ticks after boot (field 22 of /proc/PID/stat): with the pid, it names
    one process for the life of the machine (a reused pid has a later start time)."""
    zombie: bool
    """Exited (a zombie or dead), not yet reaped: it runs nothing any more."""


def info(pid: int) -> ProcInfo | None:
    """The process's group, start time and zombie state; None if there is no such process."""
    p = _process(pid)
    if p is None:
        return None
    try:
        with p.oneshot():
            zombie = p.status() in _DEAD
            start = _start_ticks(p)
        return ProcInfo(pid, os.getpgid(pid), start, zombie)
    except (*_GONE, ProcessLookupError):
        return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks after boot (see `ProcInfo.start_ticks`)."""
    st = info(pid)
    return None if st is None else st.start_ticks


def alive(pid: int, start: int | None = None) -> bool:
    """The process exists, is not a zombie and (if given) started at `start` clock ticks after
    boot, so it is the same process and not a later one that reuses its pid."""
    p = _process(pid)
    if p is None:
        return False
    try:
        with p.oneshot():
            if p.status() in _DEAD:
                return False
            return start is None or _start_ticks(p) == start
    except _GONE:
        return False


def pgid(pid: int) -> int | None:
    """The process's group; None if there is no such process (a zombie still has its group)."""
    if pid <= 0:
        return None
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def children(pid: int, *, recursive: bool = False) -> list[int]:
    """The children of `pid` (with `recursive`, their children too, and so on), not `pid`."""
    p = _process(pid)
    if p is None:
        return []
    try:
        return [c.pid for c in p.children(recursive=recursive)]
    except _GONE:
        return []


def cmdline(pid: int) -> list[str]:
    """The process's argv; empty if there is no such process (or it is a zombie)."""
    p = _process(pid)
    if p is None:
        return []
    try:
        return p.cmdline()
    except _GONE:
        return []


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float | None:
    """User + system CPU seconds of the process, threads included (a zombie's are its final
    figure); with `reaped_children`, plus those of the children it waited for (cutime and
    cstime). None if there is no such process."""
    p = _process(pid)
    if p is None:
        return None
    try:
        t = p.cpu_times()
    except _GONE:
        return None
    own = t.user + t.system
    return own + t.children_user + t.children_system if reaped_children else own


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of one process (or the sum over several), in KiB."""

    rss_kib: int
    """Resident now (VmRSS)."""
    hwm_kib: int
    """The peak resident size over the process's life (VmHWM)."""


def memory(pid: int) -> Memory | None:
    """Resident memory now and at its peak; None if there is no such process. A zombie or a
    kernel thread has none (zeros)."""
    p = _process(pid)
    if p is None:
        return None
    try:
        rss = p.memory_info().rss // 1024
    except _GONE:
        return None
    return Memory(rss_kib=rss, hwm_kib=max(rss, _peak_rss_kib(pid) or 0))


def _peak_rss_kib(pid: int) -> int | None:
    # psutil has no VmHWM (not in memory_info, nor in memory_full_info): this line of
    # /proc/PID/status is the one thing read by hand. The kernel writes it in kB.
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


# ---------------------------------------------------------------------------- scans


def groups(pgids: Iterable[int], *, zombies: bool = False) -> dict[int, list[int]]:
    """pgid → the pids of its members, for each group of `pgids` that has one, in one pass over
    the process table. Zombies are members only with `zombies`."""
    wanted = {int(g) for g in pgids if int(g) > 0}
    found: dict[int, list[int]] = {}
    if not wanted:
        return found
    for pid in psutil.pids():
        g = pgid(pid)
        if g not in wanted:
            continue
        if not zombies and not alive(pid):
            continue
        found.setdefault(g, []).append(pid)
    return found


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    return groups((pgid,)).get(pgid, [])


@dataclass(frozen=True, slots=True)
class Seen:
    """A live process as a scan saw it."""

    pid: int
    cmdline: tuple[str, ...]
    environ: Mapping[str, str]
    """Empty when we may not read it."""

    def command(self) -> str:
        return " ".join(self.cmdline)

    def in_environ(self, needle: str) -> bool:
        """Whether one of its environment entries (`KEY=VALUE`) contains `needle`."""
        return any(needle in f"{k}={v}" for k, v in self.environ.items())

    def mentions(self, needle: str) -> bool:
        """Whether its command line or one of its environment entries contains `needle`."""
        return needle in self.command() or self.in_environ(needle)


def scan() -> Iterator[Seen]:
    """Every process of the machine but this one whose command line and environment we can read
    (a zombie has neither, so it is never seen), read as it is yielded. A process may exit right
    after it was read: the filters below check the ones they keep with `alive`."""
    me = os.getpid()
    # process_iter keeps its Process objects between calls; what is read here is read afresh.
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        try:
            cmdline = tuple(p.cmdline())
        except _GONE:
            continue
        environ: Mapping[str, str] = {}
        try:
            environ = p.environ()
        except psutil.AccessDenied:
            pass  # another user's: its command line still counts
        except psutil.NoSuchProcess:
            continue
        yield Seen(p.pid, cmdline, environ)


def mentioning(needle: str) -> dict[int, str]:
    """pid → command line of every live process (not this one) whose command line or
    environment contains `needle` (a private state directory finds what one Flint started)."""
    return {s.pid: s.command() for s in scan() if s.mentions(needle) and alive(s.pid)}


def with_env(key: str, values: Collection[str] | None = None) -> dict[int, Seen]:
    """pid → every live process (not this one) whose environment has `key` (set to one of
    `values`, when given)."""
    return {
        s.pid: s
        for s in scan()
        if key in s.environ and (values is None or s.environ[key] in values) and alive(s.pid)
    }


__all__ = [
    "CLK_TCK",
    "Memory",
    "ProcInfo",
    "Seen",
    "alive",
    "children",
    "cmdline",
    "cpu_seconds",
    "group_members",
    "groups",
    "info",
    "memory",
    "mentioning",
    "pgid",
    "scan",
    "start_ticks",
    "with_env",
]
