"""CPU time of a replica's process group, read from /proc, and its utilisation per interval.

A replica of the local runtime runs in its own session, so its process group (pgid = the pid of
the replica's main process) holds its whole process tree, unless a child starts a session of its
own. The HPA class scales on the CPU this tree uses: 100 % is one core.

What is counted, per process of the group (fields of /proc/<pid>/stat, in clock ticks):
utime + stime (its own time) + cutime + cstime (the time of its children that exited and that it
reaped). Counting the reaped children keeps the sum from dropping when a worker process of the
replica exits: its time moves from its own line into its parent's cutime/cstime. Zombies are
counted too (their time stays on their line until they are reaped). A child reaped by a process
outside the group (an orphan reaped by init) takes its time with it: the sum then drops, and
`CpuSampler` treats a drop as a restart of the counter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

_PROC = "/proc"


def clock_ticks_per_second() -> int:
    """`SC_CLK_TCK`: the unit of the CPU times of /proc/<pid>/stat (100 on Linux)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100
    return ticks if ticks > 0 else 100


_TICKS = clock_ticks_per_second()


def _read_stat(pid: str) -> tuple[int, int] | None:
    """(pgid, utime + stime + cutime + cstime in ticks) of /proc/<pid>/stat; None if unreadable."""
    try:
        fd = os.open(f"{_PROC}/{pid}/stat", os.O_RDONLY)
    except OSError:  # gone, or not ours to read
        return None
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # comm (field 2) may hold spaces and parentheses: the fields start after the last ')'.
    end = raw.rfind(b")")
    if end < 0:
        return None
    fields = raw[end + 2 :].split()
    # fields[0] is field 3 (state): field n is fields[n - 3].
    try:
        pgid = int(fields[2])  # field 5
        ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])  # fields 14-17
    except (IndexError, ValueError):
        return None
    return pgid, ticks


def cpu_seconds_by_group(pgids: Iterable[int]) -> dict[int, float]:
    """CPU seconds used so far by each process group of `pgids` (see the module docstring for
    what is counted), in one scan of /proc. A group with no process is absent from the result.

    Blocking (reads one file per process of the machine): run it in a thread
    (`await asyncio.to_thread(cpu_seconds_by_group, pgids)`), never on an event loop."""
    wanted = {int(p) for p in pgids if int(p) > 0}
    ticks: dict[int, int] = {}
    if not wanted:
        return {}
    try:
        names = os.listdir(_PROC)
    except OSError:
        return {}
    for name in names:
        if not name.isdigit():
            continue
        stat = _read_stat(name)
        if stat is not None and stat[0] in wanted:
            ticks[stat[0]] = ticks.get(stat[0], 0) + stat[1]
    return {pgid: t / _TICKS for pgid, t in ticks.items()}


def process_group_cpu_seconds(pgid: int) -> float | None:
    """CPU seconds used so far by the processes of group `pgid`: utime + stime + cutime + cstime
    of every process whose /proc/<pid>/stat names that group (zombies included), divided by
    `SC_CLK_TCK`. None when no process has that group (the replica is gone).

    Blocking (scans /proc): run it in a thread. To sample several replicas, one call of
    `cpu_seconds_by_group` scans /proc once for all of them."""
    return cpu_seconds_by_group((pgid,)).get(pgid)


class CpuSampler:
    """Turns successive CPU-time readings per replica into utilisation, in percent of one core
    over the interval since the previous reading (100 % = one core busy the whole interval;
    a replica using two cores reads 200 %). Pure: readings and times are passed in.

    Call `update` once per tick with a reading for every replica to watch; use a monotonic
    clock for `now`. Keys are the caller's (a replica id; `f"{id}/{pid}"` also notices a
    restarted process). A replica missing from a round, or read as None (its group is gone), is
    forgotten: it has no baseline any more and reads nothing until two rounds have seen it again.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def update(self, now: float, cpu_seconds: Mapping[str, float | None]) -> dict[str, float]:
        """Record one round of readings at `now`; return the utilisation (percent) of each replica
        that has a usable previous reading. No value for a replica on its first reading, when the
        clock did not advance (the old baseline is kept), or when its counter went backwards (a
        restarted process: the new reading becomes the baseline)."""
        out: dict[str, float] = {}
        seen: dict[str, tuple[float, float]] = {}
        for key, cpu in cpu_seconds.items():
            if cpu is None:
                continue
            prev = self._last.get(key)
            if prev is not None and now <= prev[0]:
                seen[key] = prev  # no time has passed: keep the older baseline
                continue
            seen[key] = (now, cpu)
            if prev is None:
                continue
            then, cpu0 = prev
            if cpu < cpu0:
                continue  # the counter went backwards: a new baseline, no value this round
            out[key] = (cpu - cpu0) / (now - then) * 100.0
        self._last = seen
        return out

    def forget(self, key: str) -> None:
        """Drop a replica's baseline (e.g. it was stopped)."""
        self._last.pop(key, None)

    def keys(self) -> list[str]:
        """The replicas with a baseline."""
        return list(self._last)


__all__ = [
    "CpuSampler",
    "clock_ticks_per_second",
    "cpu_seconds_by_group",
    "process_group_cpu_seconds",
]
