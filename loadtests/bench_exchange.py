"""In-process micro-benchmark of the gateway's per-request path: CPU µs per keep-alive exchange.

`python -m loadtests.bench_exchange [--requests 20000] [--rounds 5] [--baseline REV] [--profile]`

What `loadtests.bench` makes wrk do, without sockets, processes or a load generator: one client
connection of a worker (`gateway.worker.build_context`, on a uvloop loop) sends a keep-alive
`GET /` to a revision with containerConcurrency 0 and one endpoint; the replica's connection (a
fake transport, the pool's connect replaced) answers with nginx's `return 200` response. Each
cycle is both `data_received` calls, i.e. the whole Python path of one request: parse, route,
reserve a slot, build the head, take the pooled connection, parse the response, relay it,
release the slot, count it, advance to the next request. `--requests` cycles per round after a
warm-up, `time.process_time()` around them, µs per cycle per round and the median.

`--baseline REV` also measures REV's gateway (its tree exported with `git archive` into a
temporary directory, this script run under `PYTHONPATH=<tree>`), alternating the two builds
round by round in separate processes; before the composition rework (137055d and older) the
worker's state was a `gateway.proxy_factory.ProxyFactory`, which the driver also knows.
`--profile` prints the cProfile of one round instead (this tree only).

Bounded: a few seconds per round, nothing outside the process but the temporary tree.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HOST = b"bench.default.localhost"
REQUEST = b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST
"""What wrk sends (`-H 'Host: …'`)."""
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\nDate: Mon, 07 Dec 2026 10:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
)
"""What the benchmark's upstream (nginx, `return 200`) answers."""
WARMUP = 2000
RESULT_MARK = "bench-exchange-us: "


class FakeTransport:
    """Enough of `asyncio.Transport` for both sides of the proxy; drops what is written."""

    __slots__ = ("closed", "written")

    def __init__(self) -> None:
        self.closed = False
        self.written = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += 1

    def writelines(self, chunks: Iterable[bytes]) -> None:
        self.written += 1

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass


def _snapshot() -> Any:
    from flint_common.snapshot import Endpoint, RevisionTarget, RouteEntry, Snapshot, TrafficSplit

    rev = RevisionTarget(
        namespace="default", name="bench-1", service="bench", timeout_s=300.0,
        response_start_timeout_s=0.0, idle_timeout_s=0.0, container_concurrency=0,
        endpoints=(Endpoint("bench-1-a", "127.0.0.1", 9),),
    )
    route = RouteEntry("default", "bench", (HOST.decode(),), (TrafficSplit("bench-1", 100),), ())
    return Snapshot(version=1, routes=(route,), revisions=(rev,))


def _client_factory(loop: asyncio.AbstractEventLoop, state_dir: Path) -> Callable[[], Any]:
    """A new client connection of a worker over `_snapshot()`, whatever this tree calls it."""
    import gateway
    from gateway.config import GatewaySettings

    settings = GatewaySettings(state_dir=state_dir)
    # The tree's own modules only: the editable install would lend this checkout's.
    if not (Path(gateway.__file__).parent / "worker.py").exists():
        # Before the composition rework: the protocol factory held the worker's state.
        from gateway.router import Router

        factory: Callable[[], Any] = importlib.import_module("gateway.proxy_factory").ProxyFactory(
            Router(_snapshot()), settings
        )
        return factory
    from gateway.client import ClientConnection
    from gateway.worker import build_context

    ctx = build_context(settings, loop, snapshot=_snapshot())
    return lambda: ClientConnection(ctx)


async def _measure(requests: int, state_dir: Path) -> float:
    """µs of CPU per request/response cycle over `requests` cycles (after a warm-up)."""
    from gateway.upstream import UpstreamConn, UpstreamPool

    opened: list[UpstreamConn] = []

    async def connect(pool: UpstreamPool, endpoint: Any, *_: Any) -> UpstreamConn:
        up = UpstreamConn(pool, endpoint.id)
        up.connection_made(FakeTransport())  # type: ignore[arg-type]
        opened.append(up)
        return up

    UpstreamPool.connect = connect  # type: ignore[method-assign,assignment]
    loop = asyncio.get_running_loop()
    conn = _client_factory(loop, state_dir)()
    client_transport = FakeTransport()
    conn.connection_made(client_transport)
    conn.data_received(REQUEST)
    for _ in range(3):  # the connect task
        await asyncio.sleep(0)
    [up] = opened
    up.data_received(RESPONSE)
    feed_client = conn.data_received
    feed_up = up.data_received
    for _ in range(WARMUP):
        feed_client(REQUEST)
        feed_up(RESPONSE)
    written = client_transport.written
    t0 = time.process_time()
    for _ in range(requests):
        feed_client(REQUEST)
        feed_up(RESPONSE)
    spent = time.process_time() - t0
    if len(opened) != 1 or client_transport.written - written != requests or client_transport.closed:
        raise RuntimeError("the exchange did not run as expected (a connection per request?)")
    return spent / requests * 1e6


def run_round(requests: int) -> float:
    import uvloop

    with tempfile.TemporaryDirectory(prefix="flint-bench-exchange-") as tmp, asyncio.Runner(
        loop_factory=uvloop.new_event_loop
    ) as runner:
        return runner.run(_measure(requests, Path(tmp)))


def _child(tree: Path | None, requests: int) -> float:
    """One round in a fresh process, with `tree`'s gateway (None: this checkout's)."""
    env = dict(os.environ)
    cwd = None
    if tree is not None:
        from loadtests.bench_baseline import pythonpath

        env["PYTHONPATH"] = pythonpath(tree, env.get("PYTHONPATH"))
        cwd = str(tree)
    argv = [sys.executable, str(Path(__file__).resolve()), "--child", "--requests", str(requests)]
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return float(line[len(RESULT_MARK):])
    raise RuntimeError(f"round failed (exit {out.returncode}):\n{out.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=20000, help="cycles per round (default 20000)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--baseline", metavar="REV", help="also measure this git revision's gateway")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one round")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    o = ap.parse_args(argv)
    if o.child:
        print(f"{RESULT_MARK}{run_round(o.requests):.4f}", flush=True)
        return 0
    if o.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run_round, o.requests)
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return 0
    with tempfile.TemporaryDirectory(prefix="flint-bench-exchange-") as tmp:
        builds: list[tuple[str, Path | None]] = [("current", None)]
        if o.baseline:
            from loadtests.bench_baseline import REPO, export

            commit = export(REPO, o.baseline, Path(tmp) / "baseline")
            builds.append((f"baseline {commit.short}", Path(tmp) / "baseline"))
        results: dict[str, list[float]] = {name: [] for name, _ in builds}
        for r in range(o.rounds):
            order = builds if r % 2 == 0 else builds[::-1]
            for name, tree in order:
                us = _child(tree, o.requests)
                results[name].append(us)
                print(f"round {r + 1} {name}: {us:.2f} µs/request", flush=True)
    medians = {name: statistics.median(v) for name, v in results.items()}
    for name, m in medians.items():
        print(f"median {name}: {m:.2f} µs/request")
    if o.baseline:
        cur, base = medians["current"], medians[builds[1][0]]
        print(f"current vs baseline: {(cur / base - 1) * 100:+.1f} %")
    print(json.dumps({name: [round(x, 3) for x in v] for name, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
