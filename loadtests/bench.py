"""The side-by-side benchmark: Flint's gateway against direct access and nginx (issue 4).

`python -m loadtests.bench [--rounds 3] [--duration 5] [--connections 32] [--workers 1]
[--json out.json] [--cold-start-samples 5] [--skip-cold-start] [--skip-scale] [--baseline REV]`

1. starts, in a private temporary directory, the upstream (nginx, one worker, `return 200`),
   nginx as a reverse proxy to it (`--workers` workers, upstream keep-alive) and the Flint
   gateway (`--workers` workers) standalone, serving a persisted routing snapshot whose only
   endpoint is that upstream (its controller URL is unreachable on purpose);
2. throughput: wrk (closed loop, one thread) against each path alternately (direct, gateway,
   nginx, direct, …), `--rounds` times `--duration` s; CPU per request of each proxy's process
   tree and of the upstream from /proc utime+stime deltas ÷ requests served;
3. latency: hey at a fixed rate of half the gateway's median throughput, alternately again;
4. cold start: a real `flint up` (the test profile), the sleepy app with no delay; the first
   request to its revision at zero against a bare start of the same app (spawn it with `PORT`,
   poll the port every 5 ms, one request), `--cold-start-samples` times;
5. scale from zero to 1,000 concurrent requests (`loadtests.scale_from_zero`);
6. prints markdown tables and writes JSON to `--json`.

`--baseline REV` (a git revision of this repository: `main`, `HEAD~3`, a commit id) runs REV's
gateway beside the current one in the same run (issue 10): REV's tree is exported into the
temporary directory (`git archive`), checked to import its own `gateway` and `flint_common` with
this interpreter and `PYTHONPATH=<tree>` (`loadtests.bench_baseline`), and started like the
current gateway (same upstream, workers and flags, its own port and state dir). It is a fourth
path, "(b0)", measured in every round (direct, gateway, baseline, nginx, …) in the throughput and
the latency phases; the report compares the current gateway with it: the median CPU µs per
request (no regression: at most +3 %) and the gateway/nginx throughput ratio (at most 0.02
lower), each also paired by round, and a verdict line. To check a change against main:
`python -m loadtests.bench --baseline main --rounds 5 --skip-cold-start --skip-scale`
(`--baseline HEAD` compares uncommitted changes with the last commit).

Loopback only, bounded in requests and time. Every process it starts carries the temporary
directory in its command line or environment; all are stopped in `finally` and /proc is checked
for any survivor (killed, and reported). Exit status: 0 when the benchmark ran, 1 when it could not.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flint_common.lifetime import die_with_parent
from flint_common.secret import load_or_create_token
from loadtests import (
    bench_baseline,
    bench_cpu,
    bench_nginx,
    bench_report,
    bench_stats,
    bench_tools,
    flint_process,
    procs,
)
from loadtests import scale_from_zero as sfz

HOST = "bench.default.localhost"
MARKER_ENV = "FLINT_BENCH_DIR"
"""Set in the environment of everything the benchmark starts: the reaper looks for its value."""
HEY_WORKERS = 8
BARE_POLL_S = 0.005
"""The gateway probes a starting replica every 5 ms (`GatewaySettings.probe_interval_s`)."""


class BenchError(Exception):
    """The benchmark could not run."""


@dataclass
class Options:
    rounds: int = 3
    duration_s: float = 5.0
    connections: int = 32
    workers: int = 1
    json_path: Path | None = None
    cold_start_samples: int = 5
    skip_cold_start: bool = False
    skip_scale: bool = False
    scale_requests: int = 1000
    baseline: str | None = None
    """A git revision whose gateway runs beside the current one (`--baseline`)."""
    argv: list[str] = field(default_factory=list)


# --- process bookkeeping -------------------------------------------------------------------------


class Started:
    """Every long-lived process the benchmark started, stopped in reverse order by `reap`."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.procs: list[tuple[subprocess.Popen[bytes], int]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, MARKER_ENV: self.marker, **extra}

    def add(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> subprocess.Popen[bytes]:
        self.procs.append((proc, sig))
        return proc


def reap(started: Started, timeout_s: float = 10.0) -> dict[int, str]:
    """Stop every tracked process (its signal, then SIGKILL of its group), then kill anything still
    mentioning the marker (a grandchild that escaped). Returns what had to be killed that way."""
    for proc, sig in reversed(started.procs):
        with contextlib.suppress(Exception):
            procs.stop(proc, sig=sig, timeout_s=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the rest of its group, if any survived it
    started.procs.clear()
    return procs.reap_mentioning(started.marker, timeout_s=3.0)


# --- waiting -------------------------------------------------------------------------------------


def get(port: int, host: str | None = None, timeout_s: float = 5.0) -> int:
    """One GET / to 127.0.0.1:`port` (Host `host`); the status code."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/", headers={"Host": host} if host else {})
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def wait_status_200(port: int, host: str | None, what: str, alive: Callable[[], bool],
                    timeout_s: float = 30.0) -> None:
    def ok() -> bool:
        if not alive():
            raise flint_process.FlintExited(f"{what} exited")
        return get(port, host, timeout_s=2) == 200

    try:
        flint_process.wait_for(ok, timeout_s, what, interval_s=0.05)
    except flint_process.FlintError as exc:
        raise BenchError(str(exc)) from exc


# --- the system under test ----------------------------------------------------------------------


def snapshot(upstream_port: int) -> dict[str, Any]:
    """A routing snapshot (gateway/config.py `Snapshot`, wire form): HOST → one revision whose only
    endpoint is the upstream nginx, no concurrency limit."""
    return {
        "version": 1,
        "routes": [{"namespace": "default", "name": "bench", "hosts": [HOST],
                    "traffic": [{"revision": "bench-00001", "percent": 100}], "tags": []}],
        "revisions": [{
            "namespace": "default", "name": "bench-00001", "service": "bench",
            "timeout_s": 300.0, "response_start_timeout_s": 0.0, "idle_timeout_s": 0.0,
            "container_concurrency": 0,
            "endpoints": [{"id": "upstream-nginx", "host": "127.0.0.1", "port": upstream_port,
                           "starting": False}],
            "failure": "",
        }],
    }


CONTROLLER_URL = "http://127.0.0.1:1"
"""The gateway's controller link: unreachable on purpose (it serves the persisted snapshot)."""


def write_state(state: Path, upstream_port: int) -> Path:
    """A gateway state dir: the persisted snapshot and the owner's token (the gateway starts only
    with it, for its controller link). Returns the token file."""
    (state / "gateway").mkdir(parents=True, exist_ok=True)
    (state / "gateway" / "snapshot.json").write_text(json.dumps(snapshot(upstream_port)))
    token = state / "auth" / "token"
    load_or_create_token(token)
    return token


def _spawn_gateway(started: Started, argv: list[str], log_path: Path, env: dict[str, str], cwd: Path,
                   port: int, what: str) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        proc = started.add(subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=die_with_parent, cwd=str(cwd)))
    try:
        wait_status_200(port, HOST, what, lambda: proc.poll() is None)
    except BenchError as exc:
        tail = log_path.read_text(errors="replace").strip()[-1500:]
        raise BenchError(f"{exc}; its log ({log_path.name}):\n{tail}") from exc
    return proc


def start_gateway(
    started: Started, workdir: Path, upstream_port: int, workers: int
) -> tuple[int, subprocess.Popen[bytes]]:
    state = workdir / "gateway-state"
    write_state(state, upstream_port)
    port, admin = flint_process.free_ports(2)
    argv = [sys.executable, "-m", "gateway", "--port", str(port), "--admin-port", str(admin),
            "--workers", str(workers), "--controller", CONTROLLER_URL, "--state-dir", str(state),
            "--log-level", "WARNING"]
    proc = _spawn_gateway(started, argv, workdir / "gateway.log", started.env(),
                          Path(__file__).resolve().parent.parent, port, "the gateway")
    return port, proc


def prepare_baseline(rev: str, workdir: Path, started: Started) -> bench_baseline.Baseline:
    """Export `rev` into `workdir/baseline` and check that it runs as its own code."""
    try:
        b = bench_baseline.prepare(rev, workdir / "baseline", started.env(), snapshot(1))
    except bench_baseline.BaselineError as exc:
        raise BenchError(f"--baseline {rev}: {exc}") from exc
    log(f"baseline {rev}: {b.commit.short} {b.commit.subject[:70]!r}, gateway from {b.modules['gateway']}")
    return b


def start_baseline_gateway(started: Started, workdir: Path, b: bench_baseline.Baseline, upstream_port: int,
                           workers: int) -> tuple[int, subprocess.Popen[bytes]]:
    """REV's gateway: the same interpreter and venv, `PYTHONPATH=<its tree>` first and cwd there,
    its own port and state dir (snapshot + token), the same upstream and workers."""
    state = workdir / "baseline-state"
    token = write_state(state, upstream_port)
    port, admin = flint_process.free_ports(2)
    try:
        argv = bench_baseline.gateway_argv(b.flags, sys.executable, port=port, admin_port=admin,
                                           workers=workers, controller=CONTROLLER_URL, state_dir=state,
                                           token_file=token)
    except bench_baseline.BaselineError as exc:
        raise BenchError(f"--baseline {b.rev} ({b.commit.short}): {exc}") from exc
    proc = _spawn_gateway(started, argv, workdir / "baseline-gateway.log", b.env(started.env()), b.tree,
                          port, f"the baseline gateway ({b.rev}, {b.commit.short})")
    return port, proc


def start_nginx(started: Started, prefix: Path, config: Callable[[int], str], what: str) -> bench_nginx.Nginx:
    port = flint_process.free_port()
    n = bench_nginx.start(prefix, config(port), port)
    started.add(n.proc)
    wait_status_200(port, None, what, lambda: n.proc.poll() is None, timeout_s=10)
    return n


# --- measuring -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Path_:
    name: str
    port: int
    host: str | None
    proxy_roots: list[int]
    """Process trees of the proxy under test (none for direct)."""


def measure_throughput(p: Path_, rnd: int, upstream_pid: int, o: Options) -> bench_report.ThroughputRun:
    argv = bench_tools.wrk_argv(f"http://127.0.0.1:{p.port}/", connections=o.connections,
                                duration_s=o.duration_s, host=p.host)
    proxy0, up0 = bench_cpu.tree_ticks(p.proxy_roots), bench_cpu.tree_ticks([upstream_pid])
    run = bench_tools.run(argv, timeout_s=o.duration_s + 15)
    proxy1, up1 = bench_cpu.tree_ticks(p.proxy_roots), bench_cpu.tree_ticks([upstream_pid])
    if run.returncode != 0:
        raise BenchError(f"wrk exited {run.returncode}: {run.stderr.strip()[-500:]}")
    w = bench_tools.parse_wrk(run.stdout)
    detail = dict(w.socket_errors) | ({"non-2xx": w.non_2xx} if w.non_2xx else {})
    return bench_report.ThroughputRun(
        round=rnd, path=p.name, rps=w.rps, requests=w.requests, errors=w.errors, error_detail=detail,
        proxy_cpu_us=bench_cpu.us_per_request(bench_cpu.delta_ticks(proxy0, proxy1), w.requests)
        if p.proxy_roots else None,
        upstream_cpu_us=bench_cpu.us_per_request(bench_cpu.delta_ticks(up0, up1), w.requests),
        loadgen_cpu_fraction=run.cpu_fraction, wall_s=run.wall_s)


def measure_latency(p: Path_, rnd: int, rate: float, o: Options) -> bench_report.LatencyRun:
    argv = bench_tools.hey_argv(f"http://127.0.0.1:{p.port}/", rate=rate, duration_s=o.duration_s,
                                workers=HEY_WORKERS, host=p.host)
    proxy0 = bench_cpu.tree_ticks(p.proxy_roots)
    run = bench_tools.run(argv, timeout_s=o.duration_s + 30)
    proxy1 = bench_cpu.tree_ticks(p.proxy_roots)
    if run.returncode != 0:
        raise BenchError(f"hey exited {run.returncode}: {run.stderr.strip()[-500:]}")
    h = bench_tools.parse_hey(run.stdout)
    detail = dict(h.errors) | {f"status {k}": v for k, v in h.status.items() if not 200 <= k < 300}
    return bench_report.LatencyRun(
        round=rnd, path=p.name, rate=rate, rps=h.rps, requests=h.requests, latency_s=h.latency_s,
        errors=h.error_count, error_detail=detail,
        proxy_cpu_us=bench_cpu.us_per_request(bench_cpu.delta_ticks(proxy0, proxy1), h.requests)
        if p.proxy_roots else None,
        loadgen_cpu_fraction=run.cpu_fraction, wall_s=run.wall_s)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def proxy_phase(o: Options, workdir: Path, started: Started,
                baseline: bench_baseline.Baseline | None = None) -> tuple[
        list[bench_report.ThroughputRun], list[bench_report.LatencyRun]]:
    up_dir, px_dir = workdir / "nginx-upstream", workdir / "nginx-proxy"
    up = start_nginx(started, up_dir, lambda port: bench_nginx.upstream_config(up_dir, port),
                     "upstream nginx")
    px = start_nginx(started, px_dir, lambda port: bench_nginx.proxy_config(px_dir, port, up.port, o.workers),
                     "nginx proxy")
    gw_port, gw = start_gateway(started, workdir, up.port, o.workers)
    paths = {
        "direct": Path_("direct", up.port, None, []),
        "gateway": Path_("gateway", gw_port, HOST, [gw.pid]),
    }
    if baseline is not None:
        bl_port, bl = start_baseline_gateway(started, workdir, baseline, up.port, o.workers)
        paths["baseline"] = Path_("baseline", bl_port, HOST, [bl.pid])
        log(f"baseline gateway ({baseline.rev}, {baseline.commit.short}) :{bl_port}")
    paths["nginx"] = Path_("nginx", px.port, HOST, [px.pid])
    log(f"upstream nginx :{up.port}, nginx proxy :{px.port}, gateway :{gw_port} ({o.workers} worker(s))")
    for p in paths.values():  # warm up: connections, pools, caches; not counted
        bench_tools.run(bench_tools.wrk_argv(f"http://127.0.0.1:{p.port}/", connections=o.connections,
                                             duration_s=1, host=p.host), timeout_s=15)
    order = bench_stats.alternate(list(paths), o.rounds)
    throughput: list[bench_report.ThroughputRun] = []
    for rnd, name in order:
        r = measure_throughput(paths[name], rnd, up.pid, o)
        throughput.append(r)
        log(f"throughput round {rnd + 1} {name}: {r.rps:.0f} req/s, proxy {r.proxy_cpu_us or 0:.1f} µs/req, "
            f"wrk {100 * r.loadgen_cpu_fraction:.0f} % of a core, errors {r.errors}")
    gw_rps = bench_stats.median([r.rps for r in throughput if r.path == "gateway"]) or 0.0
    rate = max(10.0, round(gw_rps / 2))
    latency: list[bench_report.LatencyRun] = []
    for rnd, name in order:
        lr = measure_latency(paths[name], rnd, rate, o)
        latency.append(lr)
        lat = lr.latency_s
        log(f"latency round {rnd + 1} {name} at {rate:.0f} req/s: "
            f"p50 {1000 * (lat.get('p50') or 0):.2f} ms, p99 {1000 * (lat.get('p99') or 0):.2f} ms, "
            f"hey {100 * lr.loadgen_cpu_fraction:.0f} % of a core, errors {lr.errors}")
    return throughput, latency


# --- cold start ----------------------------------------------------------------------------------


def timed_request(port: int, host: str | None, timeout_s: float = 30.0) -> tuple[float, int | None]:
    t0 = time.monotonic()
    try:
        status: int | None = get(port, host, timeout_s)
    except OSError:
        status = None
    return time.monotonic() - t0, status


def bare_start(started: Started, timeout_s: float = 30.0) -> tuple[float, int | None]:
    """Spawn the sleepy app as Flint would (its Procfile's `python3 app.py`, `PORT` set), poll
    its port every 5 ms until it accepts, then one request: seconds from the spawn to the answer."""
    port = flint_process.free_port()
    python = shutil.which("python3") or sys.executable
    t0 = time.monotonic()
    proc = subprocess.Popen([python, "app.py"], cwd=sfz.APP_DIR, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent,
                            env=started.env(PORT=str(port), SLEEPY_MS="0", K_REVISION="bare"))
    try:
        deadline = t0 + timeout_s
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                return time.monotonic() - t0, None
            time.sleep(BARE_POLL_S)
        _, status = timed_request(port, None)
        return time.monotonic() - t0, status
    finally:
        procs.stop(proc, sig=signal.SIGTERM, timeout_s=5)


def cold_start_phase(o: Options, workdir: Path, started: Started) -> list[bench_report.ColdSample]:
    os.environ[MARKER_ENV] = started.marker  # `flint up` and its replicas inherit it
    try:
        (workdir / "cold").mkdir(parents=True, exist_ok=True)
        f = flint_process.start_flint(workdir / "cold", *sfz.PROFILE_ARGS, workers=o.workers)
    finally:
        del os.environ[MARKER_ENV]
    started.add(f.proc, signal.SIGINT)
    samples: list[bench_report.ColdSample] = []
    try:
        rev = sfz.deploy(f, "coldstart", delay_ms=0)
        host = "coldstart.default.localhost"
        for i in range(o.cold_start_samples):
            sfz.wait_for_zero(f, rev, 120)
            time.sleep(0.2)
            flint_s, flint_status = timed_request(f.port, host)
            bare_s, bare_status = bare_start(started)
            samples.append(bench_report.ColdSample(flint_s, bare_s, flint_status, bare_status))
            log(f"cold start {i + 1}/{o.cold_start_samples}: through Flint {1000 * flint_s:.1f} ms "
                f"({flint_status}), bare {1000 * bare_s:.1f} ms ({bare_status})")
    except flint_process.FlintError as exc:
        raise BenchError(f"cold start: {exc}\n{f.logs()}") from exc
    finally:
        for problem in flint_process.stop_flint(f):
            log(f"warning: {problem}")
    return samples


def scale_phase(o: Options) -> dict[str, Any]:
    r = sfz.run_benchmark(sfz.Options(requests=o.scale_requests, workers=o.workers))
    data = r.to_json()
    data.pop("timeline", None)
    return data


# --- main ----------------------------------------------------------------------------------------


def run(o: Options) -> bench_report.Summary:
    for tool in (bench_tools.WRK, bench_tools.HEY, bench_nginx.NGINX):
        if not shutil.which(tool):
            raise BenchError(f"{tool} is not installed "
                             "(loadtests/setup-tools.sh installs nginx-light, wrk, hey)")
    workdir = Path(tempfile.mkdtemp(prefix="flint-bench-"))
    started = Started(str(workdir))
    leftovers: dict[int, str] = {}
    baseline: bench_baseline.Baseline | None = None
    try:
        if o.baseline is not None:
            baseline = prepare_baseline(o.baseline, workdir, started)
        throughput, latency = proxy_phase(o, workdir, started, baseline)
        leftovers |= reap(started)  # the proxies must not compete with what follows
        cold = None if o.skip_cold_start else cold_start_phase(o, workdir, started)
        leftovers |= reap(started)
        scale = None if o.skip_scale else scale_phase(o)
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            leftovers |= reap(started)
            leftovers |= procs.reap_mentioning(str(workdir), timeout_s=2)
            shutil.rmtree(workdir, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
    config = {
        "rounds": o.rounds, "duration_s": o.duration_s, "connections": o.connections, "workers": o.workers,
        "hey_workers": HEY_WORKERS, "cold_start_samples": 0 if o.skip_cold_start else o.cold_start_samples,
        "scale_requests": None if o.skip_scale else o.scale_requests,
        "command": " ".join(["python", "-m", "loadtests.bench", *o.argv]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    if baseline is not None:
        config["baseline"] = baseline.to_json() | {"new": current_build()}
    s = bench_report.summarize(throughput, latency, cold, scale, config)
    s.leftover_processes = {str(k): v for k, v in leftovers.items()}
    return s


def current_build() -> dict[str, Any]:
    """The checkout the current gateway runs from: its HEAD and whether it has local changes."""
    try:
        head = bench_baseline.resolve(bench_baseline.REPO, "HEAD")
        dirty = bool(bench_baseline.git(bench_baseline.REPO, "status", "--porcelain", "--untracked-files=no"))
    except bench_baseline.BaselineError:
        return {"head": None, "dirty": None}
    return {"head": head.id, "dirty": dirty}


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3, help="alternated rounds per path (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--workers", type=int, default=1, help="gateway and nginx-proxy workers (default 1)")
    p.add_argument("--json", type=Path, default=None, help="write everything as JSON here")
    p.add_argument("--cold-start-samples", type=int, default=5, help="cold-start samples (default 5)")
    p.add_argument("--skip-cold-start", action="store_true")
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--scale-requests", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--baseline", metavar="REV", default=None,
                   help="also run the gateway of git revision REV (e.g. main, HEAD~3) and compare")
    args = list(sys.argv[1:] if argv is None else argv)
    a = p.parse_args(args)
    if not 1 <= a.rounds <= 20:
        p.error("--rounds must be between 1 and 20")
    if not 0.5 <= a.duration <= 60:
        p.error("--duration must be between 0.5 and 60 s")
    if not 1 <= a.connections <= 1000:
        p.error("--connections must be between 1 and 1000")
    if not 1 <= a.workers <= 16:
        p.error("--workers must be between 1 and 16")
    if not 1 <= a.cold_start_samples <= 50:
        p.error("--cold-start-samples must be between 1 and 50")
    if not 1 <= a.scale_requests <= sfz.MAX_REQUESTS:
        p.error(f"--scale-requests must be between 1 and {sfz.MAX_REQUESTS}")
    return Options(rounds=a.rounds, duration_s=a.duration, connections=a.connections, workers=a.workers,
                   json_path=a.json, cold_start_samples=a.cold_start_samples,
                   skip_cold_start=a.skip_cold_start, skip_scale=a.skip_scale,
                   scale_requests=a.scale_requests, baseline=a.baseline, argv=args)


def main(argv: Sequence[str] | None = None) -> int:
    o = parse_args(argv)
    try:
        with sfz.sigterm_as_interrupt():
            summary = run(o)
    except (BenchError, flint_process.FlintError, bench_tools.ToolError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; everything it started was stopped", file=sys.stderr)
        return 130
    print(bench_report.markdown(summary))
    if o.json_path is not None:
        o.json_path.write_text(json.dumps(summary.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
