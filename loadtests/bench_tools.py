"""The load generators: wrk (closed loop, throughput) and hey (fixed rate, latency).

Both run as child processes with a hard wall-clock bound. Their CPU time is read (through
`flint_common.procinfo`) from the exited-but-not-yet-reaped process (`waitid(WNOWAIT)`), so it is
the whole run's figure. Parsing their text output is pure (unit-tested on captured outputs).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from loadtests import bench_cpu

WRK = "wrk"
HEY = "hey"

_UNITS_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ToolError(Exception):
    """A load generator could not run or printed something we cannot read."""


# --- wrk -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    """Responses counted by wrk over the run (any status)."""
    duration_s: float
    rps: float
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    """connect, read, write, timeout (absent: none)."""
    latency_s: dict[str, float] = field(default_factory=dict)
    """p50/p75/p90/p99 when run with `--latency` (closed loop: a load figure, not a latency one)."""

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def _duration_s(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS_S[m.group(2)]


def parse_wrk(text: str) -> WrkResult:
    """Read wrk's summary: `N requests in Xs`, `Requests/sec`, `Non-2xx or 3xx responses`,
    `Socket errors: connect a, read b, write c, timeout d` and the `--latency` distribution."""
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", text, re.M)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.M)
    if not m or not rps:
        raise ToolError(f"cannot read wrk's output:\n{text[-1000:]}")
    non2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s*(\d+)", text, re.M)
    sock = re.search(r"^\s*Socket errors:\s*(.*)$", text, re.M)
    socket_errors: dict[str, int] = {}
    if sock:
        for name, n in re.findall(r"(\w+) (\d+)", sock.group(1)):
            if int(n):
                socket_errors[name] = int(n)
    latency: dict[str, float] = {}
    dist = re.search(r"Latency Distribution\n((?:\s+\d+%\s+\S+\n?)+)", text)
    if dist:
        for pct, value in re.findall(r"(\d+)%\s+(\S+)", dist.group(1)):
            latency[f"p{pct}"] = _duration_s(value)
    return WrkResult(requests=int(m.group(1)), duration_s=_duration_s(m.group(2)), rps=float(rps.group(1)),
                     non_2xx=int(non2xx.group(1)) if non2xx else 0, socket_errors=socket_errors,
                     latency_s=latency)


def wrk_argv(url: str, *, connections: int, duration_s: float, host: str | None = None,
             threads: int = 1, timeout_s: float = 2.0) -> list[str]:
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s",
            "--timeout", f"{max(1, round(timeout_s))}s", "--latency"]
    if host:
        argv += ["-H", f"Host: {host}"]
    return [*argv, url]


# --- hey -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeyResult:
    requests: int
    """Responses with a status (all codes)."""
    rps: float
    total_s: float
    latency_s: dict[str, float | None]
    """p10 … p99 from hey's distribution, `max` (Slowest), `avg`."""
    status: dict[int, int]
    errors: dict[str, int]
    """Error distribution (socket errors, timeouts): message → count."""

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.status.items() if not 200 <= code < 300)

    @property
    def error_count(self) -> int:
        return self.non_2xx + sum(self.errors.values())


def _float(text: str) -> float | None:
    v = float(text)
    return None if math.isnan(v) else v


def parse_hey(text: str) -> HeyResult:
    """Read hey's default summary (times in seconds with 4 decimals: 0.1 ms resolution)."""
    total = re.search(r"^\s*Total:\s*([\d.]+) secs", text, re.M)
    rps = re.search(r"^\s*Requests/sec:\s*([\d.NaInf]+)", text, re.M)
    if not total or not rps:
        raise ToolError(f"cannot read hey's output:\n{text[-1000:]}")
    latency: dict[str, float | None] = {}
    for pct, value in re.findall(r"^\s*(\d+)% in ([\d.]+) secs", text, re.M):
        latency[f"p{pct}"] = float(value)
    slowest = re.search(r"^\s*Slowest:\s*([\d.NaN]+) secs", text, re.M)
    average = re.search(r"^\s*Average:\s*([\d.NaN ]+) secs", text, re.M)
    latency["max"] = _float(slowest.group(1)) if slowest else None
    latency["avg"] = _float(average.group(1).strip()) if average else None
    status: dict[int, int] = {}
    errors: dict[str, int] = {}
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Status code distribution:"):
            section = "status"
            continue
        if s.startswith("Error distribution:"):
            section = "errors"
            continue
        if not s:
            continue
        if section == "status":
            m = re.match(r"\[(\d+)\]\s+(\d+) responses", s)
            if m:
                status[int(m.group(1))] = int(m.group(2))
            else:
                section = ""
        elif section == "errors":
            m = re.match(r"\[(\d+)\]\s+(.*)", s)
            if m:
                errors[m.group(2)] = errors.get(m.group(2), 0) + int(m.group(1))
            else:
                section = ""
    rate = _float(rps.group(1))
    return HeyResult(requests=sum(status.values()), rps=rate if rate is not None else 0.0,
                     total_s=float(total.group(1)), latency_s=latency, status=status, errors=errors)


def hey_argv(url: str, *, rate: float, duration_s: float, workers: int = 8, host: str | None = None,
             timeout_s: float = 5.0) -> list[str]:
    """A fixed total rate of `rate` requests/s spread over `workers` (hey's `-q` is per worker)."""
    per_worker = max(rate / workers, 0.01)
    argv = [HEY, "-c", str(workers), "-q", f"{per_worker:.2f}", "-z", f"{duration_s:g}s",
            "-t", f"{timeout_s:g}", "-cpus", "1"]
    if host:
        argv += ["-host", host]
    return [*argv, url]


# --- running -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """A finished load-generator process: its output, wall time and CPU (from /proc)."""

    argv: list[str]
    stdout: str
    stderr: str
    returncode: int
    wall_s: float
    cpu_ticks: int

    @property
    def cpu_fraction(self) -> float:
        return bench_cpu.cpu_fraction(self.cpu_ticks, self.wall_s)


def available(tool: str) -> bool:
    return shutil.which(tool) is not None


def run(argv: list[str], *, timeout_s: float, cwd: str | None = None) -> Run:
    """Run `argv` to completion (killed after `timeout_s`); its CPU is read from the exited
    process's /proc entry before it is reaped."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=out_w, stderr=err_w, stdin=subprocess.DEVNULL, cwd=cwd,
                            start_new_session=True)
    os.close(out_w)
    os.close(err_w)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    try:
        _drain_until_exit(proc, chunks, t0 + timeout_s)
        wall = time.monotonic() - t0
        ticks = bench_cpu.process_ticks(proc.pid) or 0  # a zombie keeps its final utime/stime
        proc.wait()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(out_r)
        os.close(err_r)
    return Run(argv, b"".join(chunks.get(out_r, [])).decode(errors="replace"),
               b"".join(chunks.get(err_r, [])).decode(errors="replace"), proc.returncode, wall, ticks)


def _drain_until_exit(proc: subprocess.Popen[bytes], chunks: dict[int, list[bytes]], deadline: float) -> None:
    """Read both pipes until EOF, then wait for the exit without reaping (WNOWAIT)."""
    sel = selectors.DefaultSelector()
    for fd in chunks:
        sel.register(fd, selectors.EVENT_READ)
    open_fds = set(chunks)
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            os.killpg(proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            left = 5
        for key, _ in sel.select(min(left, 0.5)):
            fd = key.fd
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                sel.unregister(fd)
                open_fds.discard(fd)
    sel.close()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
