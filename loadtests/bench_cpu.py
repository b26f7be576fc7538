"""CPU accounting for the benchmark: utime + stime from `/proc/PID/stat`.

The steadiest figure on a shared machine is the CPU time a process spends per request: read the
clock ticks of a process tree (the gateway's main process and workers, nginx's master and
workers) before and after the measured interval and divide the difference by the requests served.
Parsing is pure (unit-tested); `tree_ticks` reads /proc and tolerates processes vanishing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loadtests import procs

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuTicks:
    """`utime` and `stime` of one process (clock ticks, threads included)."""

    utime: int
    stime: int

    @property
    def total(self) -> int:
        return self.utime + self.stime


def parse_cpu_ticks(text: str) -> CpuTicks:
    """utime (field 14) and stime (field 15) of a `/proc/PID/stat` text. `comm` may hold spaces and
    parentheses, so the fields are counted after the last ')' (where field 3, the state, starts)."""
    _, sep, rest = text.rpartition(")")
    if not sep:
        raise ValueError("not a /proc/PID/stat line")
    fields = rest.split()
    # rest starts at field 3 (state): utime is field 14 → index 11, stime field 15 → index 12.
    return CpuTicks(utime=int(fields[11]), stime=int(fields[12]))


def ticks_to_s(ticks: int, clk_tck: int = CLK_TCK) -> float:
    return ticks / clk_tck


def delta_ticks(before: Mapping[int, int], after: Mapping[int, int]) -> int:
    """Ticks spent between two per-pid readings of a process tree. A process present only in
    `after` (a worker restarted during the run) counts in full; one gone by `after` counts
    nothing for the interval (its last reading is unknown), which undercounts and is rare."""
    total = 0
    for pid, t in after.items():
        total += max(0, t - before.get(pid, 0))
    return total


def us_per_request(ticks: int, requests: int, clk_tck: int = CLK_TCK) -> float | None:
    """CPU microseconds per request; None without requests."""
    if requests <= 0:
        return None
    return ticks / clk_tck * 1e6 / requests


def cpu_fraction(ticks: int, wall_s: float, clk_tck: int = CLK_TCK) -> float:
    """Cores used on average over `wall_s` (1.0 = one core busy all the time)."""
    return ticks / clk_tck / wall_s if wall_s > 0 else 0.0


# --- reading /proc -----------------------------------------------------------------------------


def process_ticks(pid: int) -> int | None:
    """utime + stime of `pid` (also of a zombie not yet reaped: its final figure), None if gone."""
    try:
        return parse_cpu_ticks((procs.PROC / str(pid) / "stat").read_text()).total
    except (OSError, ValueError, IndexError):
        return None


def tree_ticks(roots: Iterable[int]) -> dict[int, int]:
    """pid → utime + stime of every process in the trees under `roots` (roots included)."""
    out: dict[int, int] = {}
    for root in roots:
        for p in [root, *procs.descendants(root)]:
            if p in out:
                continue
            t = process_ticks(p)
            if t is not None:
                out[p] = t
    return out
