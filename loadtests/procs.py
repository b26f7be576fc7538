"""Process helpers for the benchmarks: process trees, their memory from /proc, and reaping.

Linux only. Everything that parses /proc text is a small pure function (unit-tested); the rest
reads /proc and tolerates processes vanishing between two reads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


# --- pure parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """Resident memory of one process, in KiB, from `/proc/PID/status`."""

    rss_kib: int
    """VmRSS: resident now."""
    hwm_kib: int
    """VmHWM: the peak resident size over the process's life."""


def parse_status_memory(text: str) -> Memory | None:
    """VmRSS and VmHWM of a `/proc/PID/status` text; None for a process without memory (a
    kernel thread or a zombie has no Vm* lines)."""
    rss = hwm = None
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, _, rest = line.partition(":")
            fields = rest.split()
            if not fields:
                continue
            value = int(fields[0])
            unit = fields[1].lower() if len(fields) > 1 else "kb"
            kib = value * 1024 if unit == "mb" else value // 1024 if unit == "b" else value
            if key == "VmRSS":
                rss = kib
            else:
                hwm = kib
    if rss is None:
        return None
    return Memory(rss_kib=rss, hwm_kib=hwm if hwm is not None else rss)


@dataclass(frozen=True)
class Stat:
    """The fields of `/proc/PID/stat` we use."""

    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int


def parse_stat(text: str) -> Stat:
    """Parse `/proc/PID/stat`; `comm` may contain spaces and parentheses, so split at the last ')'."""
    head, _, rest = text.rpartition(")")
    pid_s, _, comm = head.partition(" (")
    fields = rest.split()
    return Stat(pid=int(pid_s), comm=comm, state=fields[0], ppid=int(fields[1]), pgid=int(fields[2]))


def parse_environ(raw: bytes) -> dict[str, str]:
    """`/proc/PID/environ` (NUL-separated KEY=VALUE) as a dict; entries without '=' are skipped."""
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


def parse_cmdline(raw: bytes) -> list[str]:
    """`/proc/PID/cmdline` (NUL-separated, NUL-terminated) as argv."""
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] if raw else []


# --- reading /proc -----------------------------------------------------------------------------


def pids() -> list[int]:
    """Every pid in /proc now."""
    return [int(d) for d in os.listdir(PROC) if d.isdigit()]


def stat(pid: int) -> Stat | None:
    try:
        return parse_stat((PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    st = stat(pid)
    return st is not None and st.state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        return parse_cmdline((PROC / str(pid) / "cmdline").read_bytes())
    except OSError:
        return []


def environ_bytes(pid: int) -> bytes:
    try:
        return (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return b""


def children(pid: int) -> list[int]:
    """Direct children of `pid` (from /proc/PID/task/*/children, else by scanning ppids)."""
    task_dir = PROC / str(pid) / "task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return []
    out: list[int] = []
    try:
        for tid in tids:
            with contextlib.suppress(FileNotFoundError):
                out += [int(c) for c in (task_dir / tid / "children").read_text().split()]
        return out
    except OSError:  # kernels without CONFIG_PROC_CHILDREN
        return [p for p in pids() if (st := stat(p)) is not None and st.ppid == pid]


def descendants(pid: int) -> list[int]:
    """`pid`'s children, their children, and so on (not `pid` itself)."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def memory(pid: int) -> Memory | None:
    try:
        return parse_status_memory((PROC / str(pid) / "status").read_text())
    except OSError:
        return None


def tree_memory(roots: Iterable[int]) -> Memory:
    """Summed RSS (and summed per-process peak RSS) of `roots` and all their descendants."""
    rss = hwm = 0
    seen: set[int] = set()
    for root in roots:
        for p in [root, *descendants(root)]:
            if p in seen:
                continue
            seen.add(p)
            m = memory(p)
            if m is not None:
                rss += m.rss_kib
                hwm += m.hwm_kib
    return Memory(rss_kib=rss, hwm_kib=hwm)


def find_child(parent: int, needle: str) -> int | None:
    """The first child of `parent` whose command line contains `needle` (e.g. `-m gateway`)."""
    for c in children(parent):
        if needle in " ".join(cmdline(c)):
            return c
    return None


def mentioning(needle: str) -> dict[int, str]:
    """pid → command line of every live process (not this one) whose command line or environment
    contains `needle`."""
    me = os.getpid()
    enc = needle.encode()
    out: dict[int, str] = {}
    for p in pids():
        if p == me:
            continue
        try:
            cmd = (PROC / str(p) / "cmdline").read_bytes()
            env = (PROC / str(p) / "environ").read_bytes()
        except OSError:
            continue
        if (enc in cmd or enc in env) and alive(p):
            out[p] = cmd.replace(b"\0", b" ").decode(errors="replace").strip()
    return out


def process_groups_with_env(key: str, value: str, also: str | None = None) -> set[int]:
    """Process groups of the live processes whose environment has `key=value` (and mentions
    `also`, e.g. a state directory, so another Flint's revision of the same name never counts).
    A replica runs in its own process group, so this counts replicas, wrappers and all."""
    entry = f"{key}={value}".encode()
    extra = also.encode() if also else None
    groups: set[int] = set()
    for p in pids():
        env = environ_bytes(p)
        if not env or entry not in env:
            continue
        if f"\0{key}={value}\0".encode() not in b"\0" + env + b"\0":
            continue  # only a prefix or a substring of another variable matched
        if extra is not None and extra not in env:
            continue
        st = stat(p)
        if st is not None and st.state not in ("Z", "X"):
            groups.add(st.pgid)
    return groups


# --- stopping ----------------------------------------------------------------------------------


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGINT, timeout_s: float = 30.0) -> bool:
    """Send `sig` to `proc`, wait up to `timeout_s`, then SIGKILL it (and its process group when it
    leads one). True when it stopped on `sig`, False when it had to be killed."""
    if proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout_s)
        return True
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()
    return False


def reap_mentioning(needle: str, *, timeout_s: float = 15.0) -> dict[int, str]:
    """Wait (up to `timeout_s`) for every process mentioning `needle` to exit; SIGKILL those still
    there and return them (pid → command line). Pass something only your processes mention,
    such as a private temporary state directory."""
    end = time.monotonic() + timeout_s
    left = mentioning(needle)
    while left and time.monotonic() < end:
        time.sleep(0.1)
        left = mentioning(needle)
    for p in left:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)
    # SIGKILL is asynchronous: wait (bounded) until the killed ones are really gone.
    end = time.monotonic() + 5.0
    while left and any(alive(p) for p in left) and time.monotonic() < end:
        time.sleep(0.02)
    return left
