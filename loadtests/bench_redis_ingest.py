"""Broker ingest into a SQLite log vs a Redis stream, gateway side: events/s and CPU per event.

`python -m loadtests.bench_redis_ingest [--duration 8] [--rounds 2] [--events 20000] [--json out.json]`

Needs no controller (issue 12 §1's broker classes come with it): it starts its own `redis-server`
(free loopback port, `--appendonly yes`, Debian's default `appendfsync everysec`, data in a temp
dir) and measures two ways, each bounded in time and events:

1. **gateway** — a standalone `python -m gateway` (one worker) serving a persisted snapshot with
   two brokers, one on a SQLite log (`synchronous=FULL`: fsync'd before the 202) and one on a
   Redis stream (its batching writer, `FLINT_REDIS_URL` in the environment as `flint up` passes
   it); wrk (one thread, 32 connections) POSTs 1 KiB binary-mode events to each in turn for
   `--duration` s, `--rounds` times alternated. Per backend: the 202s per second, gateway CPU
   (main process and worker, from /proc) and redis-server CPU per event, and a check that the
   log or stream holds at least as many events as were answered 202;
2. **micro** — in this process, no HTTP: `BrokerIngress.accept` called by 32 concurrent tasks on
   uvloop until `--events` events, into a SQLite log, into Redis through the batching writer, and
   into Redis with one XADD per request (redis-py's pool, one connection per concurrent request):
   the CPU of this process (every thread: the SQLite writer's too) per event, which isolates what
   the batching saves.

Prints a markdown table, writes JSON to `--json`; reaps every process it started. Run it with
and without `hiredis` importable (redis-py uses it when it is): the table says which.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flint_common.lifetime import die_with_parent
from loadtests import bench_cpu, bench_tools, procs
from loadtests.bench_events import DATA_BYTES, INGRESS_HOST, wrk_script
from loadtests.flint_process import free_port, free_ports

REPO = Path(__file__).resolve().parent.parent
CONCURRENCY = 32
MAX_EVENTS = 200_000
"""Upper bound on the micro benchmark's events per backend, whatever the flags say."""
CONTROLLER_URL = "http://127.0.0.1:1"
"""The gateway's controller link: unreachable on purpose (it serves the persisted snapshot)."""
SQLITE_UID = "bench-sqlite"
REDIS_UID = "bench-redis"


@dataclass
class Backend:
    """One backend's figures (gateway or micro)."""

    name: str
    events: int = 0
    errors: int = 0
    wall_s: float = 0.0
    events_per_s: float = 0.0
    cpu_us_per_event: float | None = None
    """The gateway's (gateway runs) or this process's (micro runs) CPU per accepted event."""
    redis_cpu_us_per_event: float | None = None
    stored: int | None = None
    """Events in the log or stream afterwards (≥ accepted: nothing answered 202 was lost)."""
    pipelines: int | None = None


@dataclass
class Result:
    hiredis: bool
    gateway: list[Backend] = field(default_factory=list)
    micro: list[Backend] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


# --- redis-server ----------------------------------------------------------------------------------


@dataclass
class Redis:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def start_redis(workdir: Path) -> Redis:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
         "--appendonly", "yes", "--save", "", "--dir", str(workdir),
         "--logfile", str(workdir / "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=die_with_parent)
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
    end = time.monotonic() + 15
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {proc.returncode}")
            with contextlib.suppress(redis.ConnectionError, redis.TimeoutError):
                if client.ping():
                    return Redis(proc, port)
            if time.monotonic() > end:
                procs.stop(proc, timeout_s=5)
                raise RuntimeError("redis-server did not answer PING within 15 s")
            time.sleep(0.02)
    finally:
        client.close()


async def create_stream(r: Redis, uid: str) -> None:
    """The broker's stream, as the controller's broker reconciler creates it (gateways append with
    NOMKSTREAM and never create one)."""
    import redis.asyncio as aioredis

    from controller.redis_logs import create_stream
    from flint_common.redis_keys import stream_key

    client = aioredis.Redis(host="127.0.0.1", port=r.port, socket_timeout=10)
    try:
        await create_stream(client, stream_key(uid))
    finally:
        await client.aclose()


def stream_length(r: Redis, uid: str) -> int:
    import redis

    from flint_common.redis_keys import stream_key

    client = redis.Redis(host="127.0.0.1", port=r.port, socket_timeout=10)
    try:
        return int(client.xlen(stream_key(uid)))
    finally:
        client.close()


def sqlite_records(path: Path) -> int:
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
    finally:
        conn.close()


def cpu_us(ticks: int, events: int) -> float | None:
    return bench_cpu.us_per_request(ticks, events)


# --- 1. the gateway process ----------------------------------------------------------------------


def brokers() -> list[Any]:
    from flint_common.redis_keys import stream_key
    from flint_common.snapshot import BrokerEntry

    return [BrokerEntry("default", "sqlite", SQLITE_UID, f"eventing/logs/{SQLITE_UID}.db"),
            BrokerEntry("default", "redis", REDIS_UID, f"eventing/logs/{REDIS_UID}.db",
                        backend="redis", stream=stream_key(REDIS_UID))]


def write_state(state: Path) -> None:
    from flint_common.secret import load_or_create_token
    from flint_common.snapshot import Snapshot
    from flint_common.wire import encode_snapshot

    (state / "gateway").mkdir(parents=True, exist_ok=True)
    snap = Snapshot(version=1, routes=(), revisions=(), brokers=tuple(brokers()))
    (state / "gateway" / "snapshot.json").write_bytes(encode_snapshot(snap))
    load_or_create_token(state / "auth" / "token")


def wait_accepting(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    import socket

    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError("the gateway did not accept connections")


def post_once(port: int, path: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, body=b'{"warm": 1}', headers={
            "Host": INGRESS_HOST, "Content-Type": "application/json", "ce-specversion": "1.0",
            "ce-id": "warm", "ce-source": "/bench", "ce-type": "bench.warm"})
        return conn.getresponse().status
    finally:
        conn.close()


def run_gateway(r: Redis, workdir: Path, duration_s: float, rounds: int) -> tuple[list[Backend], list[str]]:
    state = workdir / "gateway-state"
    write_state(state)
    asyncio.run(create_stream(r, REDIS_UID))
    port, admin = free_ports(2)
    env = {**os.environ, "FLINT_REDIS_URL": r.url, "FLINT_GATEWAY_LOG_COMPACT_INTERVAL_S": "3600"}
    log_path = workdir / "gateway.log"
    problems: list[str] = []
    with log_path.open("wb") as log:
        gw = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", str(port), "--admin-port", str(admin),
             "--workers", "1", "--controller", CONTROLLER_URL, "--state-dir", str(state),
             "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=die_with_parent, cwd=str(REPO))
    totals = {name: Backend(name=f"gateway, {label}") for name, label in
              (("sqlite", "SQLite log (fsync per commit)"), ("redis", "Redis stream (batching writer)"))}
    ticks = {"sqlite": [0, 0], "redis": [0, 0]}
    try:
        wait_accepting(port, gw)
        for name in ("sqlite", "redis"):
            deadline = time.monotonic() + 30
            while (status := post_once(port, f"/default/{name}")) != 202 and time.monotonic() < deadline:
                time.sleep(0.1)  # the persisted snapshot is applied as the worker starts
            if status != 202:
                raise RuntimeError(f"the {name} broker answered {status}: {log_path.read_text()[-1500:]}")
        for _ in range(rounds):
            for name in ("sqlite", "redis"):
                script = workdir / f"{name}.lua"
                script.write_text(wrk_script(f"/default/{name}"))
                argv = [bench_tools.WRK, "-t1", f"-c{CONCURRENCY}", f"-d{duration_s:g}s", "--timeout", "5s",
                        "-s", str(script), f"http://127.0.0.1:{port}/default/{name}"]
                gw0, r0 = bench_cpu.tree_ticks([gw.pid]), bench_cpu.tree_ticks([r.proc.pid])
                run = bench_tools.run(argv, timeout_s=duration_s + 30)
                gw1, r1 = bench_cpu.tree_ticks([gw.pid]), bench_cpu.tree_ticks([r.proc.pid])
                w = bench_tools.parse_wrk(run.stdout)
                b = totals[name]
                b.events += w.requests - w.errors
                b.errors += w.errors
                b.wall_s += w.duration_s
                ticks[name][0] += bench_cpu.delta_ticks(gw0, gw1)
                ticks[name][1] += bench_cpu.delta_ticks(r0, r1)
                if run.cpu_fraction > 0.9:
                    problems.append(f"wrk used {run.cpu_fraction:.0%} of a core on {name}: the load "
                                    "generator may be the limit")
    finally:
        procs.stop(gw, timeout_s=10)
    for name, b in totals.items():
        b.events_per_s = b.events / b.wall_s if b.wall_s else 0.0
        b.cpu_us_per_event = cpu_us(ticks[name][0], b.events)
        b.redis_cpu_us_per_event = cpu_us(ticks[name][1], b.events) if name == "redis" else None
    totals["sqlite"].stored = sqlite_records(state / "eventing" / "logs" / f"{SQLITE_UID}.db") - 1
    totals["redis"].stored = stream_length(r, REDIS_UID) - 1  # minus the warm-up event
    for b in totals.values():
        if b.stored is not None and b.stored < b.events:
            problems.append(f"{b.name}: {b.events} answered 202 but {b.stored} stored")
    return list(totals.values()), problems


# --- 2. in this process ----------------------------------------------------------------------------


class OneXaddPerRequest:
    """A `StreamAppender` without batching: each request its own XADD on a pooled connection."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(url, socket_timeout=5)
        self.pipelines = 0

    async def append(self, stream: str, records: Sequence[bytes]) -> list[str]:
        from flint_common.redis_keys import EVENT_FIELD

        out = []
        for record in records:
            self.pipelines += 1
            out.append(str(await self.client.xadd(stream, {EVENT_FIELD: record}, nomkstream=True)))
        return out

    def warm_up(self) -> None:
        pass

    async def close(self) -> None:
        await self.client.aclose()


async def _micro_one(mode: str, r: Redis, state: Path, events: int) -> Backend:
    from flint_common.redis_config import RedisSettings
    from gateway.channels.redis_writer import StreamAppender, open_redis_writer
    from gateway.ingress import BrokerIngress

    sqlite_b, redis_b = brokers()
    writers: list[StreamAppender] = []
    await create_stream(r, REDIS_UID)

    def open_writer() -> StreamAppender:
        w: StreamAppender = (OneXaddPerRequest(r.url) if mode == "per-request"
                             else open_redis_writer(RedisSettings(url=r.url), role="bench"))
        writers.append(w)
        return w

    ingress = BrokerIngress(state, "localhost", max_event_bytes=256 * 1024, open_stream_writer=open_writer)
    entry = sqlite_b if mode == "sqlite" else redis_b
    body = b'{"pad": "' + b"x" * (DATA_BYTES - 12) + b'"}'
    base = [(b"content-type", b"application/json"), (b"ce-specversion", b"1.0"),
            (b"ce-source", b"/bench"), (b"ce-type", b"bench.event")]
    counter = [0]
    statuses: dict[int, int] = {}

    async def client(limit: int) -> None:
        while counter[0] < limit:
            counter[0] += 1
            answer = await ingress.accept(entry, [*base, (b"ce-id", b"m-%d" % counter[0])], body)
            statuses[answer.status] = statuses.get(answer.status, 0) + 1

    try:
        await asyncio.gather(*(client(500) for _ in range(CONCURRENCY)))  # connect, warm the caches
        statuses.clear()
        counter[0] = 0
        before = bench_cpu.tree_ticks([r.proc.pid])
        pipelines0 = _pipelines(writers)
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client(events) for _ in range(CONCURRENCY)))
        cpu1, t1 = time.process_time(), time.perf_counter()
        after = bench_cpu.tree_ticks([r.proc.pid])
        pipelines = _pipelines(writers) - pipelines0
    finally:
        await ingress.close()
    ok = statuses.get(202, 0)
    label = {"sqlite": "SQLite log (fsync per commit)", "batched": "Redis, batching writer",
             "per-request": "Redis, one XADD per request"}[mode]
    b = Backend(name=f"in process, {label}", events=ok, errors=sum(statuses.values()) - ok,
                wall_s=t1 - t0, events_per_s=ok / (t1 - t0) if t1 > t0 else 0.0,
                cpu_us_per_event=(cpu1 - cpu0) * 1e6 / ok if ok else None)
    if mode != "sqlite":
        b.redis_cpu_us_per_event = cpu_us(bench_cpu.delta_ticks(before, after), ok)
        b.pipelines = pipelines
    return b


def _pipelines(writers: Sequence[object]) -> int:
    return sum(int(getattr(w, "pipelines", 0)) for w in writers)


def run_micro(r: Redis, workdir: Path, events: int) -> list[Backend]:
    import uvloop

    out = []
    for mode in ("sqlite", "batched", "per-request"):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            out.append(runner.run(_micro_one(mode, r, workdir / f"micro-{mode}", events)))
    return out


# --- the report ------------------------------------------------------------------------------------


def report(res: Result, command: str) -> str:
    def fmt(v: float | None, unit: str = "") -> str:
        return "—" if v is None else f"{v:,.1f}{unit}"

    lines = ["| path | events/s | CPU µs/event (gateway side) | redis-server µs/event | accepted / errors "
             "/ stored | pipelines |", "| --- | --- | --- | --- | --- | --- |"]
    for b in [*res.gateway, *res.micro]:
        stored = "—" if b.stored is None else f"{b.stored:,}"
        lines.append(f"| {b.name} | {b.events_per_s:,.0f} | {fmt(b.cpu_us_per_event)} | "
                     f"{fmt(b.redis_cpu_us_per_event)} | {b.events:,} / {b.errors:,} / {stored} | "
                     f"{'—' if b.pipelines is None else f'{b.pipelines:,}'} |")
    out = "\n".join(lines)
    by = {b.name: b for b in res.gateway}
    sq = by.get("gateway, SQLite log (fsync per commit)")
    rd = by.get("gateway, Redis stream (batching writer)")
    if sq and rd and sq.events_per_s and sq.cpu_us_per_event and rd.cpu_us_per_event:
        out += (f"\n\nRedis / SQLite through the gateway: ingest {rd.events_per_s / sq.events_per_s:.2f}× "
                f"(target ≥ 0.8), gateway CPU per event {rd.cpu_us_per_event / sq.cpu_us_per_event:.2f}× "
                "(target ≤ 1.3).")
    micro = {b.name.rsplit(", ", 1)[-1]: b for b in res.micro}
    one, batched = micro.get("one XADD per request"), micro.get("batching writer")
    if one and batched and one.cpu_us_per_event and batched.cpu_us_per_event:
        out += (f"\nOne XADD per request costs {one.cpu_us_per_event / batched.cpu_us_per_event:.1f}× "
                "the CPU of the batching writer (in process).")
    out += (f"\n\nCommand: `{command}`; hiredis: {'yes' if res.hiredis else 'no'}; machine: "
            f"{os.cpu_count()} CPUs; 1 KiB binary-mode events, {CONCURRENCY} concurrent requests.")
    if res.problems:
        out += "\n\nProblems: " + "; ".join(res.problems)
    return out


def hiredis_available() -> bool:
    from redis.utils import HIREDIS_AVAILABLE

    return bool(HIREDIS_AVAILABLE)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.bench_redis_ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=8.0, help="seconds of wrk per backend and round")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds through the gateway")
    p.add_argument("--events", type=int, default=20_000, help="events per backend in process")
    p.add_argument("--only", choices=("gateway", "micro"), default=None, help="run one part only")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    if not 0 < a.duration <= 60 or not 1 <= a.rounds <= 5 or not 1000 <= a.events <= MAX_EVENTS:
        p.error(f"--duration in (0, 60], --rounds in [1, 5], --events in [1000, {MAX_EVENTS}]")
    if a.only != "micro" and not bench_tools.available(bench_tools.WRK):
        print("wrk is not installed: sh loadtests/setup-tools.sh (or --only micro)", file=sys.stderr)
        return 1
    res = Result(hiredis=hiredis_available())
    with tempfile.TemporaryDirectory(prefix="flint-bench-redis-") as tmp:
        workdir = Path(tmp)
        r = start_redis(workdir / "redis")
        try:
            if a.only != "micro":
                res.gateway, problems = run_gateway(r, workdir, a.duration, a.rounds)
                res.problems += problems
            if a.only != "gateway":
                res.micro = run_micro(r, workdir, a.events)
        finally:
            procs.stop(r.proc, timeout_s=10)
            left = procs.reap_mentioning(str(workdir), timeout_s=10)
            if left:
                res.problems.append(f"killed survivors: {sorted(left)}")
    command = "python -m loadtests.bench_redis_ingest " + " ".join(argv if argv is not None else sys.argv[1:])
    print(report(res, command.strip()))
    if a.json is not None:
        a.json.write_text(json.dumps(asdict(res), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
