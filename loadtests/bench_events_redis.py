"""`python -m loadtests.bench_events --redis`: the eventing benchmark on a SQLite broker and a
FlintRedis broker side by side in one run, then the Redis broker with two dispatchers.

1. starts its own `redis-server` (free loopback port, `appendonly yes`, `appendfsync everysec`,
   data in the run's temporary dir; reaped at the end), the fast subscriber, and `flint up
   --redis <url>` with one gateway worker;
2. two brokers, each with a trigger to the subscriber: `bench` (the engine's default class: SQLite
   on the embedded engine) and `bench-redis` (`eventing.knative.dev/broker.class: FlintRedis`);
3. for each, the measurements of `bench_events.measure`: closed-loop ingest with the dispatchers
   paused (gateway CPU per event; redis-server's CPU per event apart), delivery of that backlog,
   end-to-end latency at `--rate` events/s, lost events (the log's ids and the subscriber's);
4. a second dispatcher process joins (`python -m controller.eventing`, its own state dir and
   admin port, the Redis settings in its environment); once the Redis trigger says `run by 2
   dispatchers` the Redis measurements run again, both dispatchers paused during ingest;
5. reports the ratios against issue 12's targets: Redis ingest ≥ 0.8× SQLite; gateway CPU per
   ingested event ≤ 1.3× SQLite's; delivery with two dispatchers ≥ 0.9× one; p99 at 500 events/s
   < 20 ms; 0 lost. Whether `hiredis` (redis-py's C parser) was installed is recorded: run it
   with and without it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from loadtests import procs, redis_proc
from loadtests.bench_events import (
    Result,
    Target,
    manifests,
    measure,
    start_sink,
    trigger_ready,
)
from loadtests.flint_process import Flint, FlintError, start_flint, stop_flint, wait_for
from loadtests.scale_from_zero import PROFILE_ARGS

REDIS_CLASS = "FlintRedis"
BACKEND_ANNOTATION = "eventing.flint.dev/backend"
TARGETS = {"ingest_ratio": 0.8, "gateway_cpu_ratio": 1.3, "two_vs_one": 0.9, "p99_ms": 20.0}


@dataclass
class RedisResult:
    sqlite: Result = field(default_factory=Result)
    redis: Result = field(default_factory=Result)
    redis_two_dispatchers: Result = field(default_factory=Result)
    hiredis: bool = False
    redis_backend_status: str | None = None
    """What the Redis broker's status says its backend is (`redis` expected)."""
    ratios: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(r: RedisResult) -> dict[str, float | None]:
    return {
        "ingest_ratio": ratio(r.redis.ingest_eps, r.sqlite.ingest_eps),
        "gateway_cpu_ratio": ratio(r.redis.gateway_cpu_us_per_event, r.sqlite.gateway_cpu_us_per_event),
        "gateway_and_redis_cpu_ratio": ratio(
            None if r.redis.gateway_cpu_us_per_event is None
            else r.redis.gateway_cpu_us_per_event + (r.redis.store_cpu_us_per_event or 0.0),
            r.sqlite.gateway_cpu_us_per_event),
        "two_vs_one": ratio(r.redis_two_dispatchers.delivery_eps, r.redis.delivery_eps),
    }


def lost(r: RedisResult) -> int:
    return sum(x.lost + x.rate_lost for x in (r.sqlite, r.redis, r.redis_two_dispatchers))


def stream_ids(f: Flint, server: redis_proc.RedisProc, broker: str) -> set[str]:
    """The ids of the events the Redis broker's stream holds (`flint_common.redis_keys`)."""
    import redis

    from flint_common.cloudevents.codec import Event
    from flint_common.redis_keys import EVENT_FIELD, stream_key

    uid = f.get("broker", broker)["metadata"]["uid"]
    key = stream_key(uid)
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)
    ids: set[str] = set()
    try:
        start = "-"
        while True:
            batch = cast("list[tuple[bytes, dict[bytes, bytes]]]",
                         client.xrange(key, start, "+", count=10_000))
            for _, fields in batch:
                ids.add(Event.from_log(fields[EVENT_FIELD]).id)
            if len(batch) < 10_000:
                return ids
            start = "(" + batch[-1][0].decode()
    finally:
        client.close()


def subscription_message(f: Flint, trigger: str) -> str:
    conds = {c["type"]: c for c in (f.get("trigger", trigger).get("status") or {}).get("conditions") or []}
    return str(conds.get("SubscriptionReady", {}).get("message", ""))


def runs_on(f: Flint, trigger: str, dispatchers: int) -> bool:
    """The trigger's status says `run by <dispatchers> dispatcher(s)`."""
    return f"run by {dispatchers} dispatcher" in subscription_message(f, trigger)


def backend_status(f: Flint, broker: str) -> str | None:
    status: dict[str, Any] = f.get("broker", broker).get("status") or {}
    value = (status.get("annotations") or {}).get(BACKEND_ANNOTATION)
    return None if value is None else str(value)


def run_redis_benchmark(duration_s: float, rate: float, rate_duration_s: float,
                        workdir: Path) -> RedisResult:
    res = RedisResult(hiredis=importlib.util.find_spec("hiredis") is not None)
    res.sqlite.rate = res.redis.rate = res.redis_two_dispatchers.rate = rate
    server = redis_proc.start(workdir / "redis")
    sink = f = None
    try:
        sink, sink_url = start_sink(workdir)
        # Keep every SQLite record for the exact loss count (no retention pass during the run).
        os.environ["FLINT_GATEWAY_LOG_COMPACT_INTERVAL_S"] = "3600"
        f = start_flint(workdir / "flint", *PROFILE_ARGS, "--redis", server.url, workers=1)
        f.cli("apply", "-f", "-", input=manifests(sink_url + "/", "bench"))
        f.cli("apply", "-f", "-", input=manifests(sink_url + "/", "bench-redis", REDIS_CLASS))
        wait_for(lambda: trigger_ready(f, "bench") and trigger_ready(f, "bench-redis"), 60,
                 "both triggers to be Ready")
        res.redis_backend_status = backend_status(f, "bench-redis")
        if res.redis_backend_status != "redis":
            res.problems.append(f"the FlintRedis broker's status says backend "
                                f"{res.redis_backend_status!r}, not 'redis'")
        disp = f.dispatcher_pid()
        embedded = [disp] if disp else []
        redis_pids = [server.proc.pid]

        def redis_log() -> set[str]:
            return stream_ids(f, server, "bench-redis")

        measure(Target(f, sink_url, "bench", "bench", embedded), duration_s, rate, rate_duration_s,
                workdir, res.sqlite)
        measure(Target(f, sink_url, "bench-redis", "bench-redis", embedded, redis_log, "r1-",
                       redis_pids), duration_s, rate, rate_duration_s, workdir, res.redis)

        second = f.start_dispatcher(name="dispatcher-2")
        try:
            wait_for(lambda: runs_on(f, "bench-redis", 2), 60,
                     "the Redis trigger to be run by 2 dispatchers")
        except FlintError as exc:  # report what was measured, and why the rest was not
            res.problems.append(f"{exc}; its status: {subscription_message(f, 'bench-redis')!r}")
        else:
            embedded = [p for p in [f.dispatcher_pid()] if p]  # flint up may have restarted it
            measure(Target(f, sink_url, "bench-redis", "bench-redis", [*embedded, second.proc.pid],
                           redis_log, "r2-", redis_pids),
                    duration_s, rate, rate_duration_s, workdir, res.redis_two_dispatchers)
    finally:
        if sink is not None:
            procs.stop(sink, timeout_s=10)
        if f is not None:
            res.problems += stop_flint(f)
        if not redis_proc.stop(server):
            res.problems.append("redis-server did not stop on SIGTERM; killed it")
        left = procs.reap_mentioning(str(workdir), timeout_s=10)
        if left:
            res.problems.append(f"killed survivors: {sorted(left)}")
    res.ratios = ratios(res)
    return res


def report(res: RedisResult, command: str) -> str:
    def fmt(v: float | None, unit: str = "", digits: int = 1) -> str:
        return "—" if v is None else f"{v:,.{digits}f}{unit}"

    def row(label: str, get: Any, unit: str = "", digits: int = 0) -> str:
        cells = [fmt(get(r), unit, digits) for r in (res.sqlite, res.redis, res.redis_two_dispatchers)]
        return f"| {label} | " + " | ".join(cells) + " |"

    def p99(r: Result) -> float | None:
        return r.latency_ms.get("p99")

    lines = [
        "| metric | SQLite broker | FlintRedis, 1 dispatcher | FlintRedis, 2 dispatchers |",
        "| --- | --- | --- | --- |",
        row("ingest (binary, 1 KiB, 202 after the store acknowledged)", lambda r: r.ingest_eps, " events/s"),
        row("delivery of that backlog", lambda r: r.delivery_eps, " events/s"),
        row("gateway CPU per ingested event", lambda r: r.gateway_cpu_us_per_event, " µs", 1),
        row("redis-server CPU per ingested event", lambda r: r.store_cpu_us_per_event, " µs", 1),
        row("dispatcher CPU per delivered event (all dispatchers)",
            lambda r: r.dispatcher_cpu_us_per_event, " µs", 1),
        row(f"p50 end to end at {res.sqlite.rate:g} events/s", lambda r: r.latency_ms.get("p50"), " ms", 1),
        row(f"p99 end to end at {res.sqlite.rate:g} events/s", p99, " ms", 1),
        row("accepted in the closed loop", lambda r: float(r.ingest_accepted)),
        row("lost (accepted, never delivered; both phases)", lambda r: float(r.lost + r.rate_lost)),
        row("wrk CPU (of one core; > 90 % invalidates)", lambda r: r.wrk_cpu * 100, " %"),
    ]
    q = res.ratios
    p99s = [p99(res.redis), p99(res.redis_two_dispatchers)]
    targets = [
        ("Redis ingest ≥ 0.8× SQLite (one gateway worker)", fmt(q.get("ingest_ratio"), "×", 2),
         (q.get("ingest_ratio") or 0) >= TARGETS["ingest_ratio"]),
        ("gateway CPU per ingested event ≤ 1.3× SQLite's", fmt(q.get("gateway_cpu_ratio"), "×", 2),
         q.get("gateway_cpu_ratio") is not None
         and (q.get("gateway_cpu_ratio") or 0) <= TARGETS["gateway_cpu_ratio"]),
        ("delivery with two dispatchers ≥ 0.9× one", fmt(q.get("two_vs_one"), "×", 2),
         (q.get("two_vs_one") or 0) >= TARGETS["two_vs_one"]),
        (f"Redis p99 < 20 ms at {res.sqlite.rate:g} events/s (1 / 2 dispatchers)",
         " / ".join(fmt(x, " ms") for x in p99s),
         all(x is not None and x < TARGETS["p99_ms"] for x in p99s)),
        ("lost = 0", str(lost(res)), lost(res) == 0),
    ]
    out = "\n".join(lines)
    out += "\n\n| target | measured | met |\n| --- | --- | --- |\n"
    out += "\n".join(f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in targets)
    out += (f"\n\nGateway + redis-server CPU per event / SQLite gateway CPU: "
            f"{fmt(q.get('gateway_and_redis_cpu_ratio'), '×', 2)}. hiredis: "
            f"{'installed' if res.hiredis else 'not installed'}. Redis: appendonly yes, appendfsync "
            f"everysec, on loopback.")
    out += f"\n\nCommand: `{command}`; machine: {os.cpu_count()} CPUs, {socket.gethostname()}."
    if res.problems:
        out += "\n\nProblems: " + "; ".join(res.problems)
    return out
