"""The eventing benchmark: broker ingest rate, delivery rate and end-to-end latency, lost events.

`python -m loadtests.bench_events [--duration 10] [--rate 500] [--rate-duration 10] [--json out.json]
[--redis]`

With `--redis`, the same measurements on a SQLite and a FlintRedis broker in one run, then with
two dispatchers (`loadtests.bench_events_redis`, which says how).

1. starts a real `flint up` (private temporary state dir, free loopback ports), a fast subscriber
   (`loadtests/apps/eventsink`, aiohttp on uvloop, answers 202 and records ids and latency) as
   its own process, a Broker and a Trigger whose subscriber is that process's URL;
2. **ingest**: wrk (closed loop, one thread, 32 connections) POSTs binary-mode events with 1 KiB
   of JSON data to the broker's address for `--duration` s, each with its own `ce-id`; events/s
   are the 202 answers per second (each 202 is sent after the commit that stores the event with
   `synchronous=FULL`). The dispatcher is paused (SIGSTOP) meanwhile, so the figure is the
   ingress's and the events pile up as a backlog;
3. **delivery**: the dispatcher resumes (SIGCONT) and delivers the backlog; the subscriber's
   first-to-last receive time gives the delivery rate of the one trigger; **lost** = events
   answered 202 that never reached the
   subscriber (exact: every event answered 202 is in the broker's log, so the log must hold at
   least as many events as were accepted and every one of them must reach the subscriber);
4. **latency**: events at a fixed `--rate` (Python asyncio sender, ids and a send timestamp in
   the data) for `--rate-duration` s; end-to-end latency (send → subscriber) p50/p99/max, lost;
5. CPU per event of the gateway (all its processes) and of the dispatcher, from /proc;
6. prints a markdown table, writes JSON to `--json`. Loopback only, bounded in events and time;
   every process it started is stopped, and /proc is checked for survivors.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flint_common.lifetime import die_with_parent
from loadtests import bench_cpu, bench_tools, procs
from loadtests.flint_process import Flint, FlintError, free_port, start_flint, stop_flint, wait_for
from loadtests.scale_from_zero import PROFILE_ARGS, markdown_table, percentile

SINK_APP = Path(__file__).resolve().parent / "apps" / "eventsink" / "app.py"
INGRESS_HOST = "broker-ingress.localhost"
DATA_BYTES = 1024
MAX_RATE_EVENTS = 50_000
"""Upper bound on the fixed-rate phase's events, whatever the flags say."""

TARGETS = {"ingest_eps": 5000.0, "delivery_eps": 2000.0, "p99_ms": 50.0}

WRK_SCRIPT = """
-- Binary-mode CloudEvents, each with its own id (one wrk thread).
local counter = 0
local body = '{"pad": "' .. string.rep("x", %(pad)d) .. '"}'
wrk.method = "POST"
wrk.headers["Host"] = "%(host)s"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["ce-specversion"] = "1.0"
wrk.headers["ce-source"] = "/bench"
wrk.headers["ce-type"] = "bench.event"
request = function()
  counter = counter + 1
  wrk.headers["ce-id"] = "%(prefix)s" .. counter
  return wrk.format(nil, "%(path)s", nil, body)
end
"""


@dataclass
class Result:
    ingest_eps: float = 0.0
    ingest_accepted: int = 0
    ingest_errors: int = 0
    wrk_cpu: float = 0.0
    delivery_eps: float = 0.0
    delivered_unique: int = 0
    logged: int = 0
    lost: int = 0
    rate: float = 0.0
    rate_sent: int = 0
    rate_accepted: int = 0
    rate_lost: int = 0
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    gateway_cpu_us_per_event: float | None = None
    dispatcher_cpu_us_per_event: float | None = None
    store_cpu_us_per_event: float | None = None
    """CPU per ingested event of the log's own server (redis-server; None for SQLite, whose
    writes are the gateway's)."""
    problems: list[str] = field(default_factory=list)


def http_json(url: str, *, method: str = "GET", timeout_s: float = 10) -> Any:
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        data = r.read()
    return json.loads(data) if data else None


def manifests(sink_url: str, name: str = "bench", broker_class: str | None = None) -> str:
    """A Broker and a Trigger, both `name`, the trigger's subscriber `sink_url`; the broker of
    `broker_class` (its annotation) when given, else the engine's default."""
    meta: dict[str, Any] = {"name": name}
    if broker_class:
        meta["annotations"] = {"eventing.knative.dev/broker.class": broker_class}
    broker = {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": meta}
    trigger = {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": {"broker": name, "subscriber": {"uri": sink_url}},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [broker, trigger]})


def trigger_ready(f: Flint, name: str = "bench") -> bool:
    t = f.get("trigger", name)
    conds = {c["type"]: c for c in (t.get("status") or {}).get("conditions") or []}
    return bool(conds.get("Ready", {}).get("status") == "True")


def log_ids(f: Flint, broker: str = "bench") -> set[str]:
    """The ids of the events stored in a SQLite broker's log (read-only)."""
    import sqlite3

    from flint_common.cloudevents.codec import Event

    uid = f.get("broker", broker)["metadata"]["uid"]
    path = f.state_dir / "eventing" / "logs" / f"{uid}.db"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {Event.from_log(bytes(raw)).id for (raw,) in conn.execute("SELECT data FROM records")}
    finally:
        conn.close()


def wrk_script(path: str, prefix: str = "w-") -> str:
    return WRK_SCRIPT % {"pad": DATA_BYTES - 12, "host": INGRESS_HOST, "path": path, "prefix": prefix}


def process_cpu_ticks(pids: Sequence[int]) -> int:
    return sum(bench_cpu.tree_ticks(pids).values())


async def fixed_rate(port: int, path: str, rate: float, duration_s: float) -> tuple[int, set[str]]:
    """Send events at `rate`/s for `duration_s`; returns (sent, ids answered 202)."""
    import aiohttp

    total = min(int(rate * duration_s), MAX_RATE_EVENTS)
    accepted: set[str] = set()
    url = f"http://127.0.0.1:{port}{path}"
    loop = asyncio.get_running_loop()
    start = loop.time()
    pad = "x" * (DATA_BYTES - 40)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def one(i: int) -> None:
            eid = f"r-{i}"
            data = json.dumps({"t": time.time(), "pad": pad}).encode()
            headers = {
                "Host": INGRESS_HOST,
                "Content-Type": "application/json",
                "ce-specversion": "1.0",
                "ce-id": eid,
                "ce-source": "/bench",
                "ce-type": "bench.rate",
            }
            with contextlib.suppress(Exception):
                async with session.post(
                    url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=10)
                ) as r:
                    if r.status == 202:
                        accepted.add(eid)

        tasks = []
        for i in range(total):
            at = start + i / rate
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return total, accepted


@dataclass
class Target:
    """What one measurement runs against: a broker and its trigger on a running Flint."""

    f: Flint
    sink_url: str
    broker: str = "bench"
    trigger: str = "bench"
    dispatcher_pids: list[int] = field(default_factory=list)
    """Paused during ingest, resumed for the delivery of the backlog."""
    log_ids: Callable[[], set[str]] | None = None
    """The ids of the events the broker's log holds (None: `log_ids(f)`, the SQLite log)."""
    id_prefix: str = "w-"
    """Of the ingested events' ids: distinct per measurement on one broker."""
    store_pids: list[int] = field(default_factory=list)
    """A log server's processes (redis-server), whose CPU during ingest is counted apart."""


def measure(t: Target, duration_s: float, rate: float, rate_duration_s: float, workdir: Path,
            res: Result | None = None) -> Result:
    """Ingest (dispatchers paused), delivery of the backlog, fixed-rate latency, against `t`."""
    res = res if res is not None else Result(rate=rate)
    f, sink_url = t.f, t.sink_url
    path = f"/default/{t.broker}"
    gw = procs.find_child(f.proc.pid, "-m gateway")
    gw_pids = [gw] if gw else []
    disp_pids = list(t.dispatcher_pids)
    http_json(sink_url + "/reset", method="POST")
    try:
        # -- ingest (the dispatchers paused, so ingest has the machine) --------------------------
        for pid in disp_pids:
            os.kill(pid, signal.SIGSTOP)
        script = workdir / f"events-{t.broker}-{t.id_prefix.strip('-')}.lua"
        script.write_text(wrk_script(path, t.id_prefix))
        before_gw, before_disp = process_cpu_ticks(gw_pids), process_cpu_ticks(disp_pids)
        before_store = process_cpu_ticks(t.store_pids)
        argv = [bench_tools.WRK, "-t1", "-c32", f"-d{duration_s:g}s", "--timeout", "5s", "-s",
                str(script), f"http://127.0.0.1:{f.port}{path}"]
        run = bench_tools.run(argv, timeout_s=duration_s + 30)
        wrk = bench_tools.parse_wrk(run.stdout)
        res.wrk_cpu = run.cpu_fraction
        res.ingest_errors = wrk.errors
        res.ingest_accepted = wrk.requests - wrk.errors
        res.ingest_eps = res.ingest_accepted / wrk.duration_s

        # -- delivery of the backlog ------------------------------------------------------------
        ticks_gw = process_cpu_ticks(gw_pids) - before_gw
        ticks_store = process_cpu_ticks(t.store_pids) - before_store
    finally:
        for pid in disp_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def caught_up() -> bool:
        stats = http_json(sink_url + "/stats")
        return bool(stats["unique"] >= res.ingest_accepted)

    with contextlib.suppress(FlintError):
        wait_for(caught_up, max(60.0, duration_s * 10), "the subscriber to receive every accepted event")
    time.sleep(1.0)  # let deliveries in flight land before counting (bounded, not a wait for state)
    stats = http_json(sink_url + "/stats")
    res.delivered_unique = int(stats["unique"])
    span = float(stats["last"]) - float(stats["first"])
    res.delivery_eps = res.delivered_unique / span if span > 0 else 0.0
    ticks_disp = process_cpu_ticks(disp_pids) - before_disp
    if res.ingest_accepted:
        res.gateway_cpu_us_per_event = bench_cpu.us_per_request(ticks_gw, res.ingest_accepted)
        res.dispatcher_cpu_us_per_event = bench_cpu.us_per_request(ticks_disp, res.delivered_unique)
        if t.store_pids:
            res.store_cpu_us_per_event = bench_cpu.us_per_request(ticks_store, res.ingest_accepted)
    # Loss, exactly: every event answered 202 is in the broker's log (the 202 follows the
    # commit) or was handled and then trimmed from it, so the log and the subscriber together
    # must hold at least as many events as were accepted, and each logged one must have reached
    # the subscriber.
    ids = sink_ids(sink_url)
    logged = t.log_ids() if t.log_ids is not None else log_ids(f, t.broker)
    logged = {i for i in logged if i.startswith(t.id_prefix)}  # this measurement's, not earlier ones'
    res.logged = len(logged)
    res.lost = len(logged - ids) + max(0, res.ingest_accepted - len(logged | ids))

    # -- fixed-rate latency -------------------------------------------------------------------
    http_json(sink_url + "/reset", method="POST")
    sent, accepted = asyncio.run(fixed_rate(f.port, path, rate, rate_duration_s))
    res.rate_sent, res.rate_accepted = sent, len(accepted)

    def all_rate_delivered() -> bool:
        return bool(http_json(sink_url + "/stats")["unique"] >= len(accepted))

    with contextlib.suppress(FlintError):
        wait_for(all_rate_delivered, 60, "the fixed-rate events")
    res.rate_lost = len(accepted - sink_ids(sink_url))
    lat = [x * 1000 for x in http_json(sink_url + "/stats?latencies=1")["latencies"]]
    res.latency_ms = {
        "p50": percentile(lat, 50),
        "p90": percentile(lat, 90),
        "p99": percentile(lat, 99),
        "max": max(lat) if lat else None,
    }
    return res


def sink_ids(sink_url: str) -> set[str]:
    with urllib.request.urlopen(sink_url + "/ids", timeout=30) as r:
        return set(r.read().decode().split())


def start_sink(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The fast subscriber as its own process; its URL once it answers."""
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(SINK_APP)],
        env={**os.environ, "PORT": str(sink_port), "FLINT_BENCH": str(workdir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True, preexec_fn=die_with_parent,
    )
    sink_url = f"http://127.0.0.1:{sink_port}"
    try:
        wait_for(lambda: http_json(sink_url + "/stats") is not None, 30, "the subscriber")
    except BaseException:
        procs.stop(sink, timeout_s=10)
        raise
    return sink, sink_url


def run_benchmark(duration_s: float, rate: float, rate_duration_s: float, workdir: Path) -> Result:
    res = Result(rate=rate)
    sink, sink_url = start_sink(workdir)
    f: Flint | None = None
    try:
        # Keep every record in the log for the exact loss count (no retention pass during the run).
        os.environ["FLINT_GATEWAY_LOG_COMPACT_INTERVAL_S"] = "3600"
        f = start_flint(workdir, *PROFILE_ARGS, workers=1)
        f.cli("apply", "-f", "-", input=manifests(sink_url + "/"))
        wait_for(lambda: trigger_ready(f), 60, "the trigger to be Ready")
        disp = f.dispatcher_pid()
        measure(Target(f, sink_url, dispatcher_pids=[disp] if disp else []), duration_s, rate,
                rate_duration_s, workdir, res)
    finally:
        procs.stop(sink, timeout_s=10)
        if f is not None:
            res.problems += stop_flint(f)
        left = procs.reap_mentioning(str(workdir), timeout_s=10)
        if left:
            res.problems.append(f"killed survivors: {sorted(left)}")
    return res


def report(res: Result, command: str) -> str:
    def fmt(v: float | None, unit: str = "") -> str:
        return "—" if v is None else f"{v:,.1f}{unit}"

    rows = [
        ("ingest (binary, 1 KiB, 202 after an fsync'd commit)", f"{res.ingest_eps:,.0f} events/s"),
        (
            "events accepted / errors / in the log",
            f"{res.ingest_accepted:,} / {res.ingest_errors:,} / {res.logged:,}",
        ),
        ("delivery of that backlog to one trigger", f"{res.delivery_eps:,.0f} events/s"),
        ("lost (accepted, never delivered)", f"{res.lost}"),
        (
            f"end to end at {res.rate:g} events/s: p50 / p90 / p99 / max",
            " / ".join(fmt(res.latency_ms.get(k), " ms") for k in ("p50", "p90", "p99", "max")),
        ),
        ("fixed-rate sent / accepted / lost", f"{res.rate_sent:,} / {res.rate_accepted:,} / {res.rate_lost}"),
        ("gateway CPU per ingested event", fmt(res.gateway_cpu_us_per_event, " µs")),
        ("dispatcher CPU per delivered event", fmt(res.dispatcher_cpu_us_per_event, " µs")),
        ("wrk CPU (of one core)", f"{res.wrk_cpu:.0%}" + (" — INVALID" if res.wrk_cpu > 0.9 else "")),
    ]
    p99 = res.latency_ms.get("p99")
    targets = [
        ("ingest ≥ 5,000 events/s", f"{res.ingest_eps:,.0f}", res.ingest_eps >= TARGETS["ingest_eps"]),
        (
            "delivery ≥ 2,000 events/s",
            f"{res.delivery_eps:,.0f}",
            res.delivery_eps >= TARGETS["delivery_eps"],
        ),
        ("p99 < 50 ms at 500 events/s", fmt(p99, " ms"), p99 is not None and p99 < TARGETS["p99_ms"]),
        ("lost = 0", str(res.lost + res.rate_lost), res.lost + res.rate_lost == 0),
    ]
    out = markdown_table(rows)
    out += "\n\n| target | measured | met |\n| --- | --- | --- |\n"
    out += "\n".join(f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in targets)
    out += f"\n\nCommand: `{command}`; machine: {os.cpu_count()} CPUs."
    if res.problems:
        out += "\n\nProblems: " + "; ".join(res.problems)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.bench_events",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds of closed-loop ingest (default 10)")
    p.add_argument("--rate", type=float, default=500.0, help="events/s of the latency phase (default 500)")
    p.add_argument("--rate-duration", type=float, default=10.0, help="seconds of the latency phase")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    p.add_argument("--redis", action="store_true",
                   help="side by side: a SQLite and a FlintRedis broker in one run (its own "
                   "redis-server), then the Redis broker with two dispatchers "
                   "(loadtests.bench_events_redis)")
    a = p.parse_args(argv)
    if not bench_tools.available(bench_tools.WRK):
        print("wrk is not installed: sh loadtests/setup-tools.sh", file=sys.stderr)
        return 1
    if not 0 < a.duration <= 120 or not 0 < a.rate_duration <= 120 or not 0 < a.rate <= 5000:
        p.error("--duration and --rate-duration must be in (0, 120], --rate in (0, 5000]")
    command = "python -m loadtests.bench_events " + " ".join(argv if argv is not None else sys.argv[1:])
    if a.redis:
        from loadtests import bench_events_redis, redis_proc

        if not redis_proc.available():
            print("redis-server is not installed (Debian: apt-get install redis-server)", file=sys.stderr)
            return 1
        with tempfile.TemporaryDirectory(prefix="flint-bench-events-") as tmp:
            try:
                both = bench_events_redis.run_redis_benchmark(a.duration, a.rate, a.rate_duration,
                                                              Path(tmp))
            except FlintError as exc:
                print(f"benchmark failed: {exc}", file=sys.stderr)
                return 1
        print(bench_events_redis.report(both, command.strip()))
        if a.json is not None:
            a.json.write_text(json.dumps(asdict(both), indent=2))
        return 0
    with tempfile.TemporaryDirectory(prefix="flint-bench-events-") as tmp:
        try:
            res = run_benchmark(a.duration, a.rate, a.rate_duration, Path(tmp))
        except FlintError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
    print(report(res, command.strip()))
    if a.json is not None:
        a.json.write_text(json.dumps(asdict(res), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
