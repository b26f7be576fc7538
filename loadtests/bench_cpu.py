"""CPU accounting for the benchmark: utime + stime of process trees, in clock ticks.

The steadiest figure on a shared machine is the CPU time a process spends per request: read the
clock ticks of a process tree (the gateway's main process and workers, nginx's master and
workers) before and after the measured interval and divide the difference by the requests served.
The readings come from `flint_common.procinfo` (psutil); `tree_ticks` tolerates processes
vanishing. The arithmetic on readings is pure (unit-tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flint_common import procinfo

CLK_TCK = procinfo.CLK_TCK


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


# --- reading the process table -----------------------------------------------------------------


def process_ticks(pid: int) -> int | None:
    """utime + stime of `pid` in clock ticks (also of a zombie not yet reaped: its final figure),
    None if gone."""
    seconds = procinfo.cpu_seconds(pid)
    # psutil divides the kernel's ticks by CLK_TCK: rounding gives them back exactly.
    return None if seconds is None else round(seconds * CLK_TCK)


def tree_ticks(roots: Iterable[int]) -> dict[int, int]:
    """pid → utime + stime of every process in the trees under `roots` (roots included)."""
    out: dict[int, int] = {}
    for root in roots:
        for p in [root, *procinfo.children(root, recursive=True)]:
            if p in out:
                continue
            t = process_ticks(p)
            if t is not None:
                out[p] = t
    return out
