"""The control plane at N Knative Services (issue 15 §5): snapshot build, apply, memory, one change.

Why: every Service change sends each gateway worker a routing update; at 10,000 Services the
controller's build, the worker's decode + table build and the worker's memory must stay within
the issue's criteria (one change reaches every worker within 100 ms at p99 and costs a worker
under 20 ms of CPU; gateway RSS under 500 MiB). Measured:

1. the controller's snapshot build (`controller.routing` + `controller.routing_subsets`, as
   `SnapshotPublisher.build` calls them) from N Routes, their Revisions and endpoints;
2. encode (the hub's) + decode + apply (`gateway.worker.build_context`'s router with its
   listeners, as a worker has it) of the full snapshot, CPU ms;
3. memory of the applied structures (tracemalloc), MiB at N and bytes per route;
4. one Service change reaching every worker, end to end: a real `GatewayHub` on loopback and
   the real gateway (`python -m gateway --workers W`) linked to it; each change is a new
   endpoint of one Service's revision, rebuilt and published as the controller does. Latency is
   from the change (before the rebuild) to the hub receiving each worker's ack of its version
   (so it includes the ack's way back); worker CPU per change is the workers' utime+stime over
   the changes (/proc), divided by the changes; RSS is the gateway's (main + workers).

Bounded (`--changes`, a deadline on every wait) and self-cleaning (the gateway is killed with
its workers, the temp state dir removed). Prints a report; `--json` writes it too.

    python -m loadtests.bench_control_plane [--services 10000] [--workers 2] [--changes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from controller.gatewayhub import GatewayHub
from controller.routing import build_snapshot, plan_hosts
from controller.routing_subsets import peer_table, subset_snapshot
from controller.snapshot_builder import HostPlanner, SnapshotBuilder
from flint_common import heap
from flint_common.secret import load_or_create_token
from flint_common.snapshot import Endpoint, Snapshot
from flint_common.wire import LINK_PATH, SnapshotMessage, decode_down
from gateway.config import GatewaySettings
from gateway.worker import build_context
from loadtests import procs
from loadtests.bench_cpu import process_ticks, ticks_to_s

REPO = Path(__file__).resolve().parent.parent
DEADLINE_S = 60.0
"""Longest wait for the gateway to start, link, or ack one change (seconds)."""
SERVING = re.compile(rb"gateway: serving on [\d.]+:\d+(?:, \S+)* with (\d+) workers")
Obj = dict[str, Any]
Key = tuple[str, str]


# ---------------------------------------------------------------------------------------------
# Inputs: N Services as the controller sees them (a Route, one or two Revisions, endpoints)
# ---------------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """The informers' objects and the runtime's endpoints of N Services."""

    routes: list[Obj]
    revisions: dict[Key, Obj]
    endpoints: dict[Key, tuple[Endpoint, ...]]
    next_port: int = 20000

    def add_endpoint(self, i: int) -> None:
        """Service `i`'s latest revision gets one more ready replica (a scale-up: one change)."""
        route = self.routes[i % len(self.routes)]
        ns = route["metadata"]["namespace"]
        rev = route["status"]["traffic"][-1]["revisionName"]
        self.next_port += 1
        old = self.endpoints.get((ns, rev), ())
        self.endpoints[(ns, rev)] = (*old, Endpoint(f"{ns}-{rev}-r{self.next_port}", "10.0.0.9",
                                                    self.next_port))


def make_cluster(n: int) -> Cluster:
    """N Services in 10 namespaces; every 5th has two revisions splitting 90/10 with a tag on
    the new one; every 3rd revision is limited (containerConcurrency 10); 1-3 replicas each."""
    routes: list[Obj] = []
    revisions: dict[Key, Obj] = {}
    endpoints: dict[Key, tuple[Endpoint, ...]] = {}
    for i in range(n):
        ns, name = f"team-{i % 10}", f"svc-{i}"
        revs = [f"{name}-00001"] + ([f"{name}-00002"] if i % 5 == 0 else [])
        traffic: list[Obj] = [{"revisionName": revs[0], "percent": 100 if len(revs) == 1 else 90}]
        if len(revs) == 2:
            traffic.append({"revisionName": revs[1], "percent": 10, "tag": "canary"})
        routes.append({
            "metadata": {"namespace": ns, "name": name, "creationTimestamp": f"2026-01-01T00:{i:08d}",
                         "labels": {"serving.knative.dev/service": name}},
            "spec": {"traffic": [dict(t) for t in traffic]},
            "status": {"traffic": traffic},
        })
        for j, rev in enumerate(revs):
            revisions[(ns, rev)] = {
                "metadata": {"namespace": ns, "name": rev,
                             "labels": {"serving.knative.dev/service": name}},
                "spec": {"containerConcurrency": 10 if (i + j) % 3 == 0 else 0,
                         "timeoutSeconds": 300},
            }
            endpoints[(ns, rev)] = tuple(
                Endpoint(f"{ns}-{rev}-r{k}", f"10.{i % 250}.{k}.{j + 1}", 8080)
                for k in range(1 + (i + j) % 3)
            )
    return Cluster(routes, revisions, endpoints)


def build(cluster: Cluster, peers: dict[str, tuple[str, int]] | None = None) -> Snapshot:
    """Every entry built from scratch (`controller.routing`, what a new leader's first build does)."""
    plan = plan_hosts(cluster.routes, "example.com")
    snapshot = build_snapshot(cluster.routes, cluster.revisions, cluster.endpoints, plan, version=0)
    return subset_snapshot(snapshot, peers or {})


class Rebuilder:
    """What `SnapshotPublisher.build` does on every change (no brokers, no failures; `peers`:
    the gateways with a peer listener, for subsetting):
    the host plan and the entries rebuilt from what changed (`controller.snapshot_builder`),
    the endpoints given as new tuples as the publisher's listing of the runtime gives them
    (that listing itself, O(replicas), is the runtime's and not measured here)."""

    def __init__(self, peers: Callable[[], dict[str, tuple[str, int]]] = dict) -> None:
        self.planner, self.builder = HostPlanner(), SnapshotBuilder()
        self.peers = peers

    def __call__(self, cluster: Cluster) -> Snapshot:
        plan = self.planner.plan(cluster.routes, "example.com")
        # the publisher lists the runtime's replicas afresh for every build: new tuples
        endpoints = {k: tuple([*v]) for k, v in cluster.endpoints.items()}
        peers = self.peers()
        snapshot = self.builder.build(cluster.routes, cluster.revisions, endpoints, plan, version=0,
                                      gateways=sorted(peers))
        return replace(snapshot, peers=peer_table(peers)) if peers else snapshot


# ---------------------------------------------------------------------------------------------
# 1-3: the pure parts, in this process
# ---------------------------------------------------------------------------------------------


@dataclass
class Report:
    services: int
    routes: int
    revisions: int
    endpoints: int
    snapshot_bytes: int
    build_ms: float
    rebuild_ms: float
    """The publisher's build after one change (entries reused), median CPU ms."""
    encode_ms: float
    decode_apply_cpu_ms: float
    applied_mib: float
    bytes_per_route: float
    workers: int = 0
    changes: int = 0
    subsetting: bool = False
    change_p50_ms: float | None = None
    change_p99_ms: float | None = None
    change_max_ms: float | None = None
    worker_cpu_ms_per_change: float | None = None
    gateway_rss_mib: float | None = None


def _cpu_ms(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """Median CPU ms of `fn` over `repeat` runs, and its last result."""
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        start = time.process_time()
        out = fn()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times), out


def measure_pure(n: int, state_dir: Path) -> tuple[Report, Cluster]:
    cluster = make_cluster(n)
    build_ms, built = _cpu_ms(lambda: build(cluster))
    rebuild = Rebuilder()
    rebuild(cluster)
    changes = iter(range(1, 10**6))

    def one_change() -> Snapshot:
        cluster.add_endpoint(next(changes) * 7919)
        return rebuild(cluster)

    rebuild_ms, _ = _cpu_ms(one_change, repeat=9)
    assert isinstance(built, Snapshot)
    snapshot = replace(built, version=1)
    encode_ms, text = _cpu_ms(lambda: SnapshotMessage(snapshot).encode())
    assert isinstance(text, str)
    settings = GatewaySettings(state_dir=state_dir)

    async def decode_apply() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        times, applied = [], 0
        for round_ in range(3):
            ctx = build_context(settings, loop)
            gc.collect()
            if round_ == 2:
                tracemalloc.start()
            start = time.process_time()
            message = decode_down(text)
            assert isinstance(message, SnapshotMessage)
            ctx.router.apply(message.snapshot)
            times.append((time.process_time() - start) * 1000)
            if round_ == 2:
                del message
                gc.collect()
                applied, _ = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            await ctx.aclose()
        return statistics.median(times), applied

    apply_ms, applied = asyncio.run(decode_apply())
    report = Report(
        services=n, routes=len(snapshot.routes), revisions=len(snapshot.revisions),
        endpoints=sum(len(r.endpoints) for r in snapshot.revisions), snapshot_bytes=len(text),
        build_ms=build_ms, rebuild_ms=rebuild_ms, encode_ms=encode_ms, decode_apply_cpu_ms=apply_ms,
        applied_mib=applied / 2**20, bytes_per_route=applied / max(1, len(snapshot.routes)),
    )
    return report, cluster


# ---------------------------------------------------------------------------------------------
# 4: one change reaching every worker, with the real gateway linked to a real hub
# ---------------------------------------------------------------------------------------------


class Acks:
    """The hub's `on_progress`: when each worker first acked each version (monotonic)."""

    def __init__(self) -> None:
        self.hub = GatewayHub(on_progress=self)
        self.at: dict[tuple[str, int], float] = {}
        self.event = asyncio.Event()

    def __call__(self) -> None:
        now = time.perf_counter()
        for w in self.hub.workers():
            self.at.setdefault((w.id, w.version), now)
        self.event.set()

    def reached(self, version: int) -> dict[str, float]:
        """Worker id → when it first acked `version` or newer."""
        out: dict[str, float] = {}
        for (wid, v), t in self.at.items():
            if v >= version:
                out[wid] = min(out.get(wid, t), t)
        return out

    async def wait(self, version: int, workers: int) -> dict[str, float]:
        async with asyncio.timeout(DEADLINE_S):
            while len(got := self.reached(version)) < workers:
                self.event.clear()
                await self.event.wait()
        return got


@contextlib.asynccontextmanager
async def serve_hub(hub: GatewayHub) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get(LINK_PATH, hub.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield int(runner.addresses[0][1])
    finally:
        await hub.close()
        await runner.cleanup()


@contextlib.asynccontextmanager
async def gateway(state_dir: Path, port: int, workers: int, peer_port: int | None = None
                  ) -> AsyncIterator[tuple[int, list[int]]]:
    """`python -m gateway` linked to the hub on `port` (with a peer listener on `peer_port`: it
    takes part in subsetting); killed with its workers on the way out."""
    await asyncio.to_thread(load_or_create_token, state_dir / "auth" / "token")
    peer = ["--peer-listen", f"127.0.0.1:{peer_port}"] if peer_port else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "--port", "0", "--admin-port", "0", *peer,
        "--workers", str(workers), "--controller", f"http://127.0.0.1:{port}",
        "--state-dir", str(state_dir), "--domain", "example.com", "--gateway-id", "bench",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), DEADLINE_S)
        if not SERVING.search(line):
            raise RuntimeError(f"the gateway did not start: {line!r}")
        pids = await asyncio.to_thread(procs.children, proc.pid)
        yield proc.pid, pids
    finally:
        if proc.returncode is None:
            pids += await asyncio.to_thread(procs.children, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ticks(pids: list[int]) -> int:
    return sum(t or 0 for t in (process_ticks(p) for p in pids))


OTHER_PEER = ("bench-other", ("127.0.0.2", 9))
"""With `--subsetting`, a second gateway in the peer table (never linked, never sent to): it owns
about half of each limited revision's replicas, so the bench gateway forwards some revisions."""


async def measure_changes(report: Report, cluster: Cluster, state_dir: Path, workers: int,
                          changes: int, subsetting: bool = False) -> None:
    acks = Acks()
    hub = acks.hub
    peer_port = _free_port() if subsetting else None
    async with serve_hub(hub) as port, gateway(state_dir, port, workers, peer_port) as (root, pids):
        rebuild = Rebuilder(lambda: {**hub.peers(), OTHER_PEER[0]: OTHER_PEER[1]} if subsetting else {})
        version = hub.publish(rebuild(cluster))
        await acks.wait(version, workers)
        heap.settle()  # as the controller does once its caches are listed
        latencies: list[float] = []
        before = await asyncio.to_thread(_ticks, pids)
        for i in range(changes):
            start = time.perf_counter()
            cluster.add_endpoint(i * 7919)
            version = hub.publish(rebuild(cluster))
            got = await acks.wait(version, workers)
            latencies += [(t - start) * 1000 for t in got.values()]
        after = await asyncio.to_thread(_ticks, pids)
        memory = await asyncio.to_thread(procs.tree_memory, [root])
    latencies.sort()
    report.workers, report.changes, report.subsetting = workers, changes, subsetting
    report.change_p50_ms = statistics.median(latencies)
    report.change_p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    report.change_max_ms = latencies[-1]
    report.worker_cpu_ms_per_change = ticks_to_s(after - before) * 1000 / changes / workers
    report.gateway_rss_mib = memory.rss_kib / 1024


# ---------------------------------------------------------------------------------------------


def render(r: Report) -> str:
    lines = [
        f"control plane at {r.services} services: {r.routes} routes, {r.revisions} revisions, "
        f"{r.endpoints} endpoints; snapshot {r.snapshot_bytes / 2**20:.1f} MiB on the wire",
        f"  1. snapshot build (controller)        {r.build_ms:8.1f} ms CPU",
        f"     rebuild after one change           {r.rebuild_ms:8.1f} ms CPU",
        f"  2. encode (hub)                       {r.encode_ms:8.1f} ms CPU",
        f"     decode + apply (one worker)        {r.decode_apply_cpu_ms:8.1f} ms CPU",
        f"  3. applied structures (one worker)    {r.applied_mib:8.1f} MiB, "
        f"{r.bytes_per_route:.0f} bytes per route",
    ]
    if r.changes:
        how = f"{r.workers} workers, {r.changes} changes" + (", subsetting" if r.subsetting else "")
        lines += [
            f"  4. one change → every worker ({how}): "
            f"p50 {r.change_p50_ms:.1f} ms, p99 {r.change_p99_ms:.1f} ms, "
            f"max {r.change_max_ms:.1f} ms",
            f"     worker CPU per change              {r.worker_cpu_ms_per_change:8.1f} ms",
            f"     gateway RSS (main + workers)       {r.gateway_rss_mib:8.1f} MiB",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.bench_control_plane",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000, help="Knative Services (default 10000)")
    parser.add_argument("--workers", type=int, default=2, help="gateway workers (default 2)")
    parser.add_argument("--changes", type=int, default=50,
                        help="Service changes sent end to end (default 50; 0 skips part 4)")
    parser.add_argument("--subsetting", action="store_true",
                        help="the gateway with a peer listener, limited revisions' replicas owned "
                        "by it and by a second gateway (as deploy/'s gateways are)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    if args.services < 1 or args.workers < 1 or args.changes < 0:
        parser.error("--services and --workers must be at least 1, --changes at least 0")
    with tempfile.TemporaryDirectory(prefix="flint-bench-cp-") as tmp:
        report, cluster = measure_pure(args.services, Path(tmp) / "pure")
        if args.changes:
            asyncio.run(measure_changes(report, cluster, Path(tmp) / "state", args.workers,
                                        args.changes, args.subsetting))
    print(render(report))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
