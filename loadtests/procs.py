"""Process helpers for the benchmarks: process trees, their memory, and reaping.

Linux only. The process table is read through `flint_common.procinfo` (psutil), which tolerates
processes vanishing between two reads. Everything here blocks (it reads /proc, a scan something
of every process): the benchmarks call it from plain threads, never from an event loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable

from flint_common import procinfo
from flint_common.procinfo import Memory, mentioning

__all__ = [
    "Memory",
    "alive",
    "children",
    "descendants",
    "find_child",
    "memory",
    "mentioning",
    "process_groups_with_env",
    "reap_mentioning",
    "stop",
    "tree_memory",
]


def alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    return procinfo.alive(pid)


def children(pid: int) -> list[int]:
    """Direct children of `pid`."""
    return procinfo.children(pid)


def descendants(pid: int) -> list[int]:
    """`pid`'s children, their children, and so on (not `pid` itself)."""
    return procinfo.children(pid, recursive=True)


def memory(pid: int) -> Memory | None:
    """RSS and peak RSS (VmHWM) of `pid`; None if it is gone."""
    return procinfo.memory(pid)


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
        if needle in " ".join(procinfo.cmdline(c)):
            return c
    return None


def process_groups_with_env(key: str, value: str, also: str | None = None) -> set[int]:
    """Process groups of the live processes whose environment has `key=value` (and mentions
    `also`, e.g. a state directory, so another Flint's revision of the same name never counts).
    A replica runs in its own process group, so this counts replicas, wrappers and all."""
    groups: set[int] = set()
    for pid, s in procinfo.with_env(key, (value,)).items():
        if also is not None and not s.in_environ(also):
            continue
        g = procinfo.pgid(pid)
        if g is not None:
            groups.add(g)
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
