"""CPU time of a replica's process group, read from the process table, and its utilisation.

A replica of the local runtime runs in its own session, so its process group (pgid = the pid of
the replica's main process) holds its whole process tree, unless a child starts a session of its
own. The HPA class scales on the CPU this tree uses: 100 % is one core.

What is counted, per process of the group (psutil's `cpu_times()`, which reads /proc/<pid>/stat):
user + system (its own time: utime + stime) + children_user + children_system (the time of its
children that exited and that it reaped: cutime + cstime). Counting the reaped children keeps
the sum from dropping when a worker process of the replica exits: its time moves from its own
line into its parent's cutime/cstime. Zombies are counted too (their time stays on their line
until they are reaped). A child reaped by a process outside the group (an orphan reaped by init)
takes its time with it: the sum then drops, and `CpuSampler` treats a drop as a restart of the
counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flint_common import procinfo


def clock_ticks_per_second() -> int:
    """`SC_CLK_TCK`: the unit in which the kernel counts CPU time (100 on Linux)."""
    return procinfo.CLK_TCK


def cpu_seconds_by_group(pgids: Iterable[int]) -> dict[int, float]:
    """CPU seconds used so far by each process group of `pgids` (see the module docstring for
    what is counted), in one scan of the process table. A group with no process is absent from
    the result.

    Blocking (reads something of every process of the machine): run it in a thread
    (`await asyncio.to_thread(cpu_seconds_by_group, pgids)`), never on an event loop."""
    out: dict[int, float] = {}
    for pgid, pids in procinfo.groups(pgids, zombies=True).items():
        times = [t for p in pids if (t := procinfo.cpu_seconds(p, reaped_children=True)) is not None]
        if times:  # every member may have vanished since the scan
            out[pgid] = sum(times)
    return out


def process_group_cpu_seconds(pgid: int) -> float | None:
    """CPU seconds used so far by the processes of group `pgid`: user + system + the reaped
    children's user + system time of every process of that group (zombies included). None when
    no process has that group (the replica is gone).

    Blocking (scans the process table): run it in a thread. To sample several replicas, one call
    of `cpu_seconds_by_group` scans once for all of them."""
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
