"""Scale from zero: N concurrent requests at a revision with no replica (issue 3's benchmark).

`python -m loadtests.scale_from_zero [--requests 1000] [--timeout 60] [--workers 1] [--json out.json]`

1. starts its own `flint up` (a temporary state dir, free loopback ports, the test profile
   `stable-window=6s`, `scale-to-zero-grace-period=0s`) and deploys `loadtests/apps/sleepy`
   (answers after 100 ms, `containerConcurrency` 0) with `flint apply -f -` and
   `flint service wait`;
2. waits until the revision is at zero (`status.actualReplicas == 0` and no replica process);
3. fires all the requests at once (aiohttp, one unlimited connector, `Host` header, to
   127.0.0.1), each with a total timeout, and records each one's latency and outcome;
4. meanwhile samples every 50 ms the replica count (process groups whose environment has
   `K_REVISION=<rev>`) and the gateway's resident memory (main process and workers);
5. prints a markdown table (and a short timeline) and writes everything as JSON to `--json`.

Loopback only, bounded in requests and time; everything it starts is stopped (SIGINT, then
SIGKILL) and checked gone, also on Ctrl-C or an error. Exit status: 0 when the benchmark ran
(whatever the numbers; `--check` makes a missed bar exit 3), 1 when it could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from loadtests import procs
from loadtests.flint_process import Flint, FlintError, start_flint, stop_flint, wait_for

APP_DIR = Path(__file__).resolve().parent / "apps" / "sleepy"
BIN = Path(sys.executable).parent
MAX_REQUESTS = 20_000
CPU_LIMIT = 0.9
"""A load generator above this fraction of one core is the bottleneck: the run is invalid."""
BAR_ALL_COMPLETE_S = 5.0
"""Issue 3's bar: every request succeeds and all complete within this many seconds."""
TEST_PROFILE = ("stable-window=6s", "scale-to-zero-grace-period=0s")
PROFILE_ARGS = tuple(arg for kv in TEST_PROFILE for arg in ("--autoscaler", kv))
"""`flint up` arguments of the test profile."""


# --- pure parts --------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank `p`-th percentile (0 < p ≤ 100): the smallest value with at least p % of
    the values at or below it. None for no values."""
    if not values:
        return None
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {p}")
    ordered = sorted(values)
    rank = math.ceil(p / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def cpu_fraction(cpu_s: float, wall_s: float) -> float:
    """CPU seconds per wall second (1.0 = one core busy all the time)."""
    return cpu_s / wall_s if wall_s > 0 else 0.0


def loadgen_invalid(cpu_s: float, wall_s: float, limit: float = CPU_LIMIT) -> bool:
    """Whether the load generator used more than `limit` of a core: then it, not the system under
    test, may have set the pace, and the run is flagged invalid."""
    return cpu_fraction(cpu_s, wall_s) > limit


def error_kind(status: int | None, exc: BaseException | None = None) -> str | None:
    """How a request failed: `status 503`, an exception's class name, or None for a 200."""
    if exc is not None:
        return type(exc).__name__
    if status is None:
        return "no response"
    return None if status == 200 else f"status {status}"


@dataclass(frozen=True)
class Outcome:
    """One request: seconds from the moment all were fired to its start and its end."""

    start_s: float
    end_s: float
    status: int | None
    error: str | None

    @property
    def latency_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Sample:
    t_s: float
    replicas: int
    gateway_rss_kib: int


@dataclass
class Result:
    requests: int
    successes: int
    errors: dict[str, int]
    time_to_first_response_s: float | None
    time_to_all_complete_s: float | None
    latency_s: dict[str, float | None]
    peak_replicas: int
    peak_gateway_rss_mib: float
    gateway_rss_hwm_mib: float
    gateway_idle_rss_mib: float
    loadgen_cpu_s: float
    wall_s: float
    loadgen_cpu_fraction: float
    invalid: bool
    meets_bar: bool
    config: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(
    outcomes: Sequence[Outcome], samples: Sequence[Sample], *, loadgen_cpu_s: float, wall_s: float,
    gateway_idle_rss_kib: int = 0, gateway_hwm_kib: int = 0, bucket_s: float = 0.1,
) -> Result:
    """Everything the report says, from the raw outcomes and samples (pure)."""
    ok = [o for o in outcomes if o.error is None]
    errors = Counter(o.error for o in outcomes if o.error is not None)
    latencies = [o.latency_s for o in outcomes]
    first = min((o.end_s for o in ok), default=None)
    last = max((o.end_s for o in outcomes), default=None)
    peak_rss = max((s.gateway_rss_kib for s in samples), default=0)
    fraction = cpu_fraction(loadgen_cpu_s, wall_s)
    return Result(
        requests=len(outcomes),
        successes=len(ok),
        errors=dict(sorted(errors.items())),
        time_to_first_response_s=first,
        time_to_all_complete_s=last,
        latency_s={f"p{p}": percentile(latencies, p) for p in (50, 90, 99)}
        | {"max": max(latencies, default=None)},
        peak_replicas=max((s.replicas for s in samples), default=0),
        peak_gateway_rss_mib=peak_rss / 1024,
        gateway_rss_hwm_mib=gateway_hwm_kib / 1024,
        gateway_idle_rss_mib=gateway_idle_rss_kib / 1024,
        loadgen_cpu_s=loadgen_cpu_s,
        wall_s=wall_s,
        loadgen_cpu_fraction=fraction,
        invalid=fraction > CPU_LIMIT,
        meets_bar=bool(outcomes) and len(ok) == len(outcomes) and last is not None
        and last <= BAR_ALL_COMPLETE_S,
        timeline=timeline(outcomes, samples, bucket_s),
    )


def timeline(
    outcomes: Sequence[Outcome], samples: Sequence[Sample], bucket_s: float
) -> list[dict[str, float]]:
    """Per `bucket_s` from the fire: requests completed in the bucket (and in total by its end),
    the most replicas and gateway RSS sampled in it."""
    if bucket_s <= 0:
        raise ValueError("bucket_s must be positive")
    end = max([o.end_s for o in outcomes] + [s.t_s for s in samples], default=0.0)
    n = int(end // bucket_s) + 1
    done = [0] * n
    for o in outcomes:
        done[min(n - 1, max(0, int(o.end_s // bucket_s)))] += 1
    replicas = [0] * n
    rss = [0] * n
    for s in samples:
        if s.t_s < 0:
            continue
        i = min(n - 1, int(s.t_s // bucket_s))
        replicas[i] = max(replicas[i], s.replicas)
        rss[i] = max(rss[i], s.gateway_rss_kib)
    out: list[dict[str, float]] = []
    total = 0
    for i in range(n):
        total += done[i]
        out.append({"t_s": round((i + 1) * bucket_s, 3), "completed": done[i], "completed_total": total,
                    "replicas": replicas[i], "gateway_rss_mib": round(rss[i] / 1024, 1)})
    return out


def _fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f} s"


def markdown_table(rows: Sequence[tuple[str, str]], header: tuple[str, str] = ("metric", "value")) -> str:
    """A two-column markdown table; `|` in cells is escaped."""
    def cell(s: str) -> str:
        return s.replace("|", "\\|")

    lines = [f"| {cell(header[0])} | {cell(header[1])} |", "| --- | --- |"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in rows]
    return "\n".join(lines)


def report_rows(r: Result) -> list[tuple[str, str]]:
    errors = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "none"
    lat = r.latency_s
    return [
        ("requests (concurrent, from zero)", str(r.requests)),
        ("succeeded (200)", str(r.successes)),
        ("errors", errors),
        ("time to first response", _fmt_s(r.time_to_first_response_s)),
        ("time until all complete", _fmt_s(r.time_to_all_complete_s)),
        ("latency p50 / p90 / p99 / max",
         " / ".join("—" if lat[k] is None else f"{lat[k]:.3f}" for k in ("p50", "p90", "p99", "max"))
         + " s"),
        ("peak replicas", str(r.peak_replicas)),
        ("peak gateway RSS (sampled; idle before)",
         f"{r.peak_gateway_rss_mib:.1f} MiB ({r.gateway_idle_rss_mib:.1f} MiB)"),
        ("gateway peak RSS (sum of VmHWM)", f"{r.gateway_rss_hwm_mib:.1f} MiB"),
        ("load generator CPU", f"{r.loadgen_cpu_s:.2f} s over {r.wall_s:.2f} s = "
         f"{100 * r.loadgen_cpu_fraction:.0f} % of a core"),
        ("valid run (load generator ≤ 90 % of a core)", "no — INVALID" if r.invalid else "yes"),
        (f"all succeed, all within {BAR_ALL_COMPLETE_S:g} s", "yes" if r.meets_bar else "no"),
    ]


def timeline_table(rows: Sequence[Mapping[str, float]], max_rows: int = 25) -> str:
    """A compact markdown timeline of at most `max_rows` rows: consecutive buckets are merged
    (completions up to the row's time, the most replicas and RSS within it)."""
    every = max(1, math.ceil(len(rows) / max_rows))
    lines = ["| t (s) | completed | replicas | gateway RSS (MiB) |", "| --- | --- | --- | --- |"]
    for i in range(0, len(rows), every):
        group = rows[i:i + every]
        last = group[-1]
        lines.append(
            f"| {last['t_s']:.2f} | {int(last['completed_total'])} | "
            f"{int(max(r['replicas'] for r in group))} | "
            f"{max(r['gateway_rss_mib'] for r in group):.1f} |"
        )
    return "\n".join(lines)


def manifest(name: str, image: Path, *, delay_ms: float | None = None) -> dict[str, Any]:
    """The Service: the sleepy app from an absolute folder, `containerConcurrency` 0."""
    container: dict[str, Any] = {"image": str(image)}
    if delay_ms is not None:
        container["env"] = [{"name": "SLEEPY_MS", "value": str(delay_ms)}]
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": {"containerConcurrency": 0, "containers": [container]}}},
    }


# --- Flint ---------------------------------------------------------------------------------------


def deploy(f: Flint, name: str, delay_ms: float | None, wait_s: float = 180) -> str:
    """Create the service and wait for it; return its ready revision's name."""
    f.cli("apply", "-f", "-", input=json.dumps(manifest(name, APP_DIR, delay_ms=delay_ms)))
    f.cli("service", "wait", name, "--wait-timeout", str(wait_s), timeout=wait_s + 30)
    ksvc = f.get("ksvc", name)
    rev = (ksvc.get("status") or {}).get("latestReadyRevisionName")
    if not isinstance(rev, str) or not rev:
        raise FlintError(f"service {name} has no ready revision: {ksvc.get('status')}")
    return rev


def replica_groups(f: Flint, revision: str) -> set[int]:
    return procs.process_groups_with_env("K_REVISION", revision, also=str(f.state_dir))


def wait_for_zero(f: Flint, revision: str, timeout_s: float) -> float:
    """Wait until the revision has no replica (status and /proc agree); return the seconds waited."""
    t0 = time.monotonic()

    def at_zero() -> bool:
        if replica_groups(f, revision):
            return False
        status = f.get("rev", revision).get("status") or {}
        return status.get("actualReplicas") == 0 and not replica_groups(f, revision)

    wait_for(at_zero, timeout_s, f"revision {revision} to scale to zero", interval_s=0.5)
    return time.monotonic() - t0


# --- the load ------------------------------------------------------------------------------------


class Sampler(threading.Thread):
    """Samples the replica count and the gateway's RSS every `interval_s` until stopped."""

    def __init__(self, f: Flint, revision: str, interval_s: float = 0.05) -> None:
        super().__init__(name="sampler", daemon=True)
        self.f, self.revision, self.interval_s = f, revision, interval_s
        self.samples: list[Sample] = []
        self.t0 = time.monotonic()
        self.cpu_s = 0.0
        self.gateway_hwm_kib = 0
        self._stop_event = threading.Event()
        self._gateway: int | None = None

    def gateway_memory(self) -> procs.Memory:
        if self._gateway is None or not procs.alive(self._gateway):
            self._gateway = self.f.gateway_pid()
        if self._gateway is None:
            return procs.Memory(0, 0)
        return procs.tree_memory([self._gateway])

    def sample(self) -> None:
        mem = self.gateway_memory()
        self.gateway_hwm_kib = max(self.gateway_hwm_kib, mem.hwm_kib)
        self.samples.append(Sample(time.monotonic() - self.t0, len(replica_groups(self.f, self.revision)),
                                   mem.rss_kib))

    def run(self) -> None:
        c0 = time.thread_time()
        next_t = time.monotonic()
        while not self._stop_event.is_set():
            with contextlib.suppress(Exception):
                self.sample()
            next_t += self.interval_s
            self._stop_event.wait(max(0.0, next_t - time.monotonic()))
        self.cpu_s = time.thread_time() - c0

    def stop(self) -> None:
        self._stop_event.set()
        self.join(10)


@dataclass(frozen=True)
class Fired:
    t_fire: float
    """`time.monotonic()` when the requests were released."""
    outcomes: list[Outcome]
    """Their times are relative to `t_fire`."""
    cpu_s: float
    """This process's CPU seconds from the fire until all completed."""
    wall_s: float
    """Wall seconds from the fire until all completed."""


async def fire(
    port: int, host: str, n: int, timeout_s: float, path: str = "/"
) -> Fired:
    """Start `n` requests at the same moment and wait for all of them."""
    url = f"http://127.0.0.1:{port}{path}"
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    gate = asyncio.Event()
    t_fire = 0.0

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one() -> Outcome:
            await gate.wait()
            start = time.monotonic()
            try:
                async with session.get(url, headers={"Host": host}) as r:
                    await r.read()
                    status: int | None = r.status
                    err = error_kind(status)
            except Exception as exc:
                status, err = None, error_kind(None, exc)
            end = time.monotonic()
            return Outcome(start - t_fire, end - t_fire, status, err)

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(0)  # every task is now parked on the gate
        cpu0, t_fire = time.process_time(), time.monotonic()
        gate.set()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks), timeout_s + 30)
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - t_fire
    return Fired(t_fire, list(outcomes), cpu_s, wall_s)


@dataclass
class Options:
    requests: int = 1000
    timeout_s: float = 60.0
    workers: int = 1
    json_path: Path | None = None
    delay_ms: float | None = None
    zero_timeout_s: float = 120.0
    sample_interval_s: float = 0.05
    check: bool = False
    name: str = "sleepy"


def run_benchmark(o: Options) -> Result:
    """Start Flint, deploy, wait for zero, fire, measure; always stop Flint."""
    workdir = Path(tempfile.mkdtemp(prefix="flint-sfz-"))
    f: Flint | None = None
    failed = True
    try:
        t_setup = time.monotonic()
        f = start_flint(workdir, *PROFILE_ARGS, workers=o.workers)
        print(f"flint up ready in {time.monotonic() - t_setup:.1f} s (state {f.state_dir})",
              file=sys.stderr, flush=True)
        revision = deploy(f, o.name, o.delay_ms)
        print(f"service {o.name} ready (revision {revision}); waiting for zero replicas",
              file=sys.stderr, flush=True)
        waited = wait_for_zero(f, revision, o.zero_timeout_s)
        print(f"revision {revision} at zero after {waited:.1f} s; firing {o.requests} requests",
              file=sys.stderr, flush=True)
        gw = f.gateway_pid()
        idle = procs.tree_memory([gw]).rss_kib if gw else 0

        sampler = Sampler(f, revision, o.sample_interval_s)
        sampler.start()
        try:
            fired = asyncio.run(fire(f.port, f"{o.name}.default.localhost", o.requests, o.timeout_s))
        finally:
            sampler.stop()
        shift = fired.t_fire - sampler.t0  # sampler times → times from the fire
        samples = [Sample(s.t_s - shift, s.replicas, s.gateway_rss_kib) for s in sampler.samples]
        result = summarize(fired.outcomes, samples, loadgen_cpu_s=fired.cpu_s, wall_s=fired.wall_s,
                           gateway_idle_rss_kib=idle, gateway_hwm_kib=sampler.gateway_hwm_kib)
        result.config = {
            "requests": o.requests, "timeout_s": o.timeout_s, "workers": o.workers,
            "app_delay_ms": o.delay_ms if o.delay_ms is not None else 100,
            "container_concurrency": 0, "revision": revision,
            "autoscaler": list(TEST_PROFILE), "sample_interval_s": o.sample_interval_s,
            "sampler_cpu_s": round(sampler.cpu_s, 3), "samples": len(samples),
            "seconds_waiting_for_zero": round(waited, 2),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                        "platform": platform.platform()},
            "command": " ".join([Path(sys.executable).name, "-m", "loadtests.scale_from_zero",
                                 *sys.argv[1:]]),
        }
        failed = False
        return result
    except KeyboardInterrupt:
        failed = False  # not Flint's fault: no log tail
        raise
    finally:
        # A second Ctrl-C must not interrupt the cleanup (it is bounded by its own timeouts).
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if f is not None:
                if failed:
                    print(f"flint up log (tail):\n{f.logs()}", file=sys.stderr)
                for problem in stop_flint(f):
                    print(f"warning: {problem}", file=sys.stderr)
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m loadtests.scale_from_zero",
                                description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=1000, help="concurrent requests (default 1000)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="total timeout of each request, s (default 60)")
    p.add_argument("--workers", type=int, default=1, help="gateway workers (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    p.add_argument("--ms", type=float, default=None, help="the app's delay per request, ms (default 100)")
    p.add_argument("--zero-timeout", type=float, default=120.0,
                   help="seconds to wait for the revision to reach zero (default 120)")
    p.add_argument("--check", action="store_true", help="exit 3 when issue 3's bar is missed")
    a = p.parse_args(argv)
    if not 1 <= a.requests <= MAX_REQUESTS:
        p.error(f"--requests must be between 1 and {MAX_REQUESTS}")
    if not 0 < a.timeout <= 600:
        p.error("--timeout must be in (0, 600]")
    if not 1 <= a.workers <= 64:
        p.error("--workers must be between 1 and 64")
    return Options(requests=a.requests, timeout_s=a.timeout, workers=a.workers, json_path=a.json,
                   delay_ms=a.ms, zero_timeout_s=a.zero_timeout, check=a.check)


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so `finally` blocks stop what we started."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    try:
        with sigterm_as_interrupt():
            result = run_benchmark(o)
    except FlintError as exc:
        print(f"scale_from_zero: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("scale_from_zero: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    print(markdown_table(report_rows(result)))
    print()
    print(timeline_table(result.timeline))
    if result.invalid:
        print(f"\nINVALID: the load generator used {100 * result.loadgen_cpu_fraction:.0f} % of a core",
              file=sys.stderr)
    if o.json_path is not None:
        o.json_path.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if o.check and not result.meets_bar:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
