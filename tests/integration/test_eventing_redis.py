"""Eventing on Redis Streams across processes (issue 12, "Tests"): real processes, a real Redis.

Topology: one `flint up --redis <url>` (its gateway and its embedded dispatcher), a second
gateway process (`--gateway-id gw-b`, its own state dir and port) and a second dispatcher process
paired with it (its own admin port), as a second machine would run them (`support.multi`); one
redis-server with its append-only file on (`support.redis_server`). Brokers carry
`eventing.knative.dev/broker.class: FlintRedis`.

Skipped until the Redis backend is on the branch: the dispatcher's Redis consumer
(`controller.eventing.redis_consumer`) and the gateway's Redis ingress
(`gateway.channels.redis_writer`). Every load is bounded in events and time.

The Redis crash test kills redis-server's process only: the append-only file is written before
Redis answers, so it shows durability across a process crash, not across a power cut (with
`appendfsync everysec` up to about a second of acknowledged events can be lost to one).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.events import (
    Recorder,
    Sent,
    apply,
    backend_of,
    broker,
    condition_is,
    conditions,
    recorder,
    send_many,
    send_one,
    trigger,
)
from support.harness import APPS, Flint, poll, start_flint, stop_flint
from support.multi import joined_dispatcher, joined_gateway
from support.redis_server import RedisServer, kill_redis, restart_redis

from controller.eventing.__main__ import ENV_LEASE_S
from loadtests.flint_process import Joined

pytest.importorskip(
    "controller.eventing.redis_consumer",
    reason="the dispatcher's Redis consumer (issue 12 §3) is not on this branch yet")
pytest.importorskip(
    "gateway.channels.redis_writer",
    reason="the gateway's Redis ingress (issue 12 §2) is not on this branch yet")

SINK = str(APPS / "eventsink")
REDIS_CLASS = "FlintRedis"
CLAIM_WAIT_S = 120.0
"""Bound on waiting for a dead dispatcher's entries to be taken over: `claim_after_s` (30 s by
default) plus heartbeats and the delivery itself."""


# --- the topology ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flint(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    f = start_flint(tmp_path_factory.mktemp("flint-redis"), "--redis", redis_server.url)
    try:
        yield f
    finally:
        stop_flint(f)


@pytest.fixture(scope="module")
def gw_b(flint: Flint) -> Iterator[Joined]:
    with joined_gateway(flint, gateway_id="gw-b") as gw:
        yield gw


@pytest.fixture(scope="module")
def dispatcher_b(flint: Flint, gw_b: Joined) -> Iterator[Joined]:
    """The second machine's dispatcher: posts through gw-b."""
    with joined_dispatcher(flint, gateway=gw_b, name="dispatcher-b") as d:
        yield d


@pytest.fixture
def redis_up(redis_server: RedisServer) -> RedisServer:
    """The module's redis-server, running (a test that killed it restarts it; this checks)."""
    assert redis_server.proc.poll() is None, "an earlier test left redis-server down"
    return redis_server


def redis_broker(name: str) -> dict[str, Any]:
    return broker(name, broker_class=REDIS_CLASS)


def run_by(n: int) -> str:
    return f"run by {n} dispatcher{'' if n == 1 else 's'}"


def wait_broker(f: Flint, name: str) -> None:
    poll(lambda: condition_is(f, "broker", name, "Ready"), 60, f"broker {name} Ready")
    assert backend_of(f.get("broker", name)) == "redis", f.get("broker", name).get("status")


def wait_trigger(f: Flint, name: str, dispatchers: int = 2) -> None:
    """Ready, and run by `dispatchers` dispatchers (each polled the plan that has it)."""
    poll(lambda: condition_is(f, "trigger", name, "Ready")
         and condition_is(f, "trigger", name, "SubscriptionReady", message_has=run_by(dispatchers)),
         60, f"trigger {name} Ready and {run_by(dispatchers)}")


def metric(admin_port: int, name: str, **labels: str) -> float:
    """The sum of a dispatcher's samples of `name` whose labels include `labels` (0 if none)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def delivered_by(port: int, trigger_name: str) -> float:
    return metric(port, "flint_dispatcher_events_delivered_total", trigger=trigger_name)


def accepts(port: int, broker_name: str, event_id: str) -> Callable[[], bool]:
    return lambda: send_one(port, broker_name, event_id) == 202


def missing(want: set[str], got: list[str]) -> str:
    left = sorted(want - set(got))
    return f"missing {len(left)}: {left[:10]}"


def poll_all(rec: Recorder, want: set[str], timeout_s: float, what: str) -> None:
    try:
        poll(lambda: want <= set(rec.ids()), timeout_s, what, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {missing(want, rec.ids())}") from None


@contextlib.contextmanager
def sending_in_background(ports: list[int], broker_name: str, ids: list[str], *, rate: float,
                          concurrency: int = 16) -> Iterator[Sent]:
    """Send `ids` at `rate` per second from a thread while the block runs; waits (bounded) for
    the last answer when the block ends."""
    sent = Sent()
    thread = threading.Thread(target=lambda: asyncio.run(send_many(
        ports, broker_name, ids, rate=rate, concurrency=concurrency, sent=sent, timeout_s=10)),
        daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        thread.join(len(ids) / rate + 30)
        assert not thread.is_alive(), "the sender did not finish"


# --- the tests -------------------------------------------------------------------------------


def test_a_redis_broker_says_its_backend_and_both_dispatchers_run_its_trigger(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined, redis_up: RedisServer) -> None:
    apply(flint, redis_broker("shared"))
    wait_broker(flint, "shared")
    assert condition_is(flint, "broker", "shared", "Durable", "True"), conditions(flint, "broker", "shared")
    with recorder() as rec:
        apply(flint, trigger("shared-t", "shared", {"uri": rec.url}))
        wait_trigger(flint, "shared-t")
        # Either gateway appends (no home worker): both answer 202 for the same broker.
        assert send_one(flint.port, "shared", "a-1") == 202
        assert send_one(gw_b.port, "shared", "b-1") == 202
        poll(lambda: sorted(rec.ids()) == ["a-1", "b-1"], 30, "both events, once each")


@pytest.mark.timeout(240)
def test_two_gateways_and_two_dispatchers_with_a_subscriber_failing_a_third(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined, redis_up: RedisServer) -> None:
    retry = 2
    delivery = {"retry": retry, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}
    apply(flint, redis_broker("busy"))
    wait_broker(flint, "busy")
    with recorder(fail_share=1 / 3) as flaky, recorder() as dls:
        apply(flint, trigger("busy-t", "busy", {"uri": flaky.url},
                             delivery={**delivery, "deadLetterSink": {"uri": dls.url}}))
        wait_trigger(flint, "busy-t")
        ids = [f"m-{i}" for i in range(600)]
        sent = asyncio.run(send_many([flint.port, gw_b.port], "busy", ids, rate=300, concurrency=16))
        assert sorted(sent.accepted()) == sorted(ids), {i: s for i, s in sent.status.items() if s != 202}
        # Failure depends on (event, attempt) only: the events whose three attempts all fail are
        # known in advance, and only they may reach the dead-letter sink.
        dead = flaky.expected_dead(ids, retry)
        alive = set(ids) - dead
        assert 0 < len(dead) < 60, len(dead)  # (1/3)^3 of 600 is about 22
        poll_all(flaky, alive, 90, "every event that a retry recovers")
        poll_all(dls, dead, 90, "every event whose attempts all failed, dead-lettered")
        poll(lambda: quiet(redis_up, flint, "busy", "busy-t"), 60, "nothing left in flight")
        assert not set(flaky.ids()) & dead
        assert sorted(dls.ids()) == sorted(dead)  # each once, and nothing else
        counts = flaky.attempt_counts()
        assert all(counts[i] == retry + 1 for i in dead), {i: counts[i] for i in dead}
        assert all(counts[i] <= retry + 1 for i in alive)
        h = dls.events[0]["headers"]
        assert h["ce-knativeerrorcode"] == "500" and h["ce-knativeerrordest"] == flaky.url
        # The group shared the work: both dispatchers delivered some of it.
        by_a, by_b = delivered_by(flint.dispatcher_port, "busy-t"), delivered_by(dispatcher_b.admin_port,
                                                                                 "busy-t")
        assert by_a > 0 and by_b > 0, (by_a, by_b)
        assert by_a + by_b >= len(alive)


@pytest.mark.timeout(300)
def test_every_event_is_delivered_when_a_dispatcher_is_killed_mid_stream(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined, redis_up: RedisServer) -> None:
    apply(flint, redis_broker("crash"))
    wait_broker(flint, "crash")
    # A slow subscriber (50 ms an answer): each dispatcher always has deliveries in flight, so
    # the killed one leaves entries pending in the group.
    with recorder(delay_s=0.05) as rec:
        apply(flint, trigger("crash-t", "crash", {"uri": rec.url}))
        wait_trigger(flint, "crash-t")
        with joined_dispatcher(flint, name="dispatcher-c") as doomed:
            # A Ready trigger's status follows the dispatchers that join.
            wait_trigger(flint, "crash-t", dispatchers=3)
            run_and_kill(flint, gw_b, rec, doomed, redis_up)
    assert doomed.killed and doomed not in flint.joined


def quiet(server: RedisServer, flint: Flint, broker_name: str, trigger_name: str) -> bool:
    """Nothing of the trigger is in flight anywhere: its group has no entry undelivered or
    pending (lag and pending 0) and it has no retry waiting or being attempted. Once true, no
    dispatcher can deliver anything more for it, so exact counts may be asserted."""
    from flint_common.redis_keys import consumer_key, stream_key

    log_uid = flint.get("broker", broker_name)["metadata"]["uid"]
    group = flint.get("trigger", trigger_name)["metadata"]["uid"]
    c = server.client()
    try:
        stream = stream_key(log_uid)
        groups = [g for g in c.xinfo_groups(stream) if g["name"] == group]
        if len(groups) != 1 or groups[0]["pending"] != 0:
            return False
        lag = groups[0]["lag"]  # None when Redis 7.0 cannot tell: compare the ids then
        at_end = lag == 0 or (lag is None and groups[0]["last-delivered-id"]
                              == c.xinfo_stream(stream)["last-generated-id"])
        return (at_end and c.zcard(consumer_key(log_uid, group, "retries")) == 0
                and c.hlen(consumer_key(log_uid, group, "inflight")) == 0)
    finally:
        c.close()


def held_by(server: RedisServer, flint: Flint, broker_name: str, trigger_name: str,
            dispatcher: Joined) -> int | None:
    """Entries pending for `dispatcher` in the trigger's consumer group (None: it is not in the
    group). Its consumer is named by its dispatcher id (`<hostname>/<hash of its state dir>`)."""
    from flint_common.redis_keys import stream_key

    stream = stream_key(flint.get("broker", broker_name)["metadata"]["uid"])
    group = flint.get("trigger", trigger_name)["metadata"]["uid"]
    c = server.client()
    try:
        consumers = c.xinfo_consumers(stream, group)
    finally:
        c.close()
    mine = [x for x in consumers if str(x["name"]).startswith(dispatcher.dispatcher_id)]
    return sum(int(x["pending"]) for x in mine) if mine else None


def run_and_kill(flint: Flint, gw_b: Joined, rec: Recorder, doomed: Joined, server: RedisServer) -> None:
    """Events through both gateways at 200/s; `doomed` SIGKILLed once it delivers; every event
    arrives, what it held taken over by the others."""
    ids = [f"k-{i}" for i in range(800)]
    with sending_in_background([flint.port, gw_b.port], "crash", ids, rate=200) as sent:
        poll(lambda: delivered_by(doomed.admin_port, "crash-t") >= 20, 30,
             "the third dispatcher to be delivering")
        doomed.kill()  # SIGKILL: what it had read and not acknowledged stays pending for it
        killed_at = len(sent.status)
    held = held_by(server, flint, "crash", "crash-t", doomed)
    assert held, f"the killed dispatcher held no entries ({held}): nothing to take over"
    assert 0 < killed_at < len(ids), killed_at  # killed mid-stream
    accepted = set(sent.accepted())
    assert accepted == set(ids), {i: s for i, s in sent.status.items() if s != 202}
    # The others take its pending entries over once they are idle for claim_after_s.
    poll_all(rec, accepted, CLAIM_WAIT_S, "every event, the killed dispatcher's included")
    poll(lambda: not held_by(server, flint, "crash", "crash-t", doomed), CLAIM_WAIT_S,
         "the killed dispatcher's entries taken over", interval=0.5)


@pytest.mark.timeout(300)
def test_every_acknowledged_event_survives_a_redis_crash_and_the_outage_answers_503(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined, redis_up: RedisServer) -> None:
    apply(flint, redis_broker("outage"))
    wait_broker(flint, "outage")
    with recorder() as rec:
        apply(flint, trigger("outage-t", "outage", {"uri": rec.url}))
        wait_trigger(flint, "outage-t")
        ids = [f"o-{i}" for i in range(700)]
        try:
            with sending_in_background([flint.port, gw_b.port], "outage", ids, rate=100) as sent:
                poll(lambda: len(sent.accepted()) >= 150, 30, "150 events acknowledged")
                kill_redis(redis_up)  # mid-ingest
                down_at = time.monotonic()
                # Redis stays down until 60 requests sent after it went were answered.
                poll(lambda: sum(1 for i, t in list(sent.started.items())
                                 if t > down_at + 0.2 and i in sent.status) >= 60, 30,
                     "60 requests answered during the outage")
                up_at = time.monotonic()
                restart_redis(redis_up)  # same port and data dir: it loads its append-only file
        finally:
            if redis_up.proc.poll() is not None:
                restart_redis(redis_up)
        statuses = set(sent.status.values())
        assert statuses <= {202, 503}, sorted(statuses)  # never a silent failure or a 500
        during = [i for i in ids if i in sent.started
                  and sent.started[i] > down_at + 0.2 and sent.ended[i] < up_at]
        assert len(during) >= 50, len(during)
        assert all(sent.status[i] == 503 for i in during), {i: sent.status[i] for i in during}
        assert all(i in sent.retry_after for i in during)  # 503 with Retry-After
        # Both gateways take events again once Redis is back.
        for port in (flint.port, gw_b.port):
            poll(accepts(port, "outage", f"after-{port}"), 60, f"the gateway on {port} to accept again")
        accepted = {*sent.accepted(), f"after-{flint.port}", f"after-{gw_b.port}"}
        poll_all(rec, accepted, CLAIM_WAIT_S, "every event that got a 202")
        assert not set(rec.ids()) & set(sent.answered(503))  # a 503 was never stored


def test_a_reply_loop_is_stopped_by_the_ttl(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined, redis_up: RedisServer, tmp_path: Path) -> None:
    sink_file = tmp_path / "loop.jsonl"
    flint.cli("service", "create", "redis-looper", "--image", SINK, "--env", f"SINK_FILE={sink_file}",
              "--env", "REPLY_TYPE=loop", "--scale-min", "1")
    apply(flint, redis_broker("loop"))
    wait_broker(flint, "loop")
    apply(flint, trigger(
        "looping", "loop",
        {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "redis-looper"}},
        filter={"attributes": {"type": "loop"}}))
    wait_trigger(flint, "looping")
    assert send_one(gw_b.port, "loop", "seed", type_="loop", extra={"ce-knativebrokerttl": "5"}) == 202

    def count() -> int:
        return len(sink_file.read_text().splitlines()) if sink_file.exists() else 0

    poll(lambda: count() == 5, 60, "five passes of the loop")
    ttls = [json.loads(x)["headers"]["ce-knativebrokerttl"] for x in sink_file.read_text().splitlines()]
    assert ttls == ["5", "4", "3", "2", "1"]

    def dropped() -> float:  # whichever dispatcher read the last reply dropped it
        return sum(metric(port, "flint_dispatcher_events_dropped_total", reason="ttl-exhausted",
                          trigger="looping")
                   for port in (flint.dispatcher_port, dispatcher_b.admin_port))

    poll(lambda: dropped() == 1, 20, "the TTL drop to be counted once")
    poll(lambda: quiet(redis_up, flint, "loop", "looping"), 30, "nothing left in flight")
    assert count() == 5  # and nothing after it


def test_ordered_delivery_stays_ordered_with_two_dispatchers(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined, redis_up: RedisServer) -> None:
    apply(flint, redis_broker("order"))
    wait_broker(flint, "order")
    # The first attempt of every event fails: in ordered mode it is retried before the next.
    with recorder(fail_first=1) as rec:
        apply(flint, trigger("in-order", "order", {"uri": rec.url}, ordered=True,
                             delivery={"retry": 5, "backoffPolicy": "linear", "backoffDelay": "PT0.02S"}))
        wait_trigger(flint, "in-order")
        ids = [f"q-{i}" for i in range(40)]
        for k, i in enumerate(ids):  # one after the other, through either gateway: the stream order
            assert send_one((flint.port, gw_b.port)[k % 2], "order", i) == 202
        poll(lambda: len(rec.ids()) >= len(ids), 60, "all events")
        poll(lambda: quiet(redis_up, flint, "order", "in-order"), 30, "nothing left in flight")
        assert rec.ids() == ids  # in order, each once
        # Every event was retried in place: all its attempts came before the next event's first.
        log = [i for i, _ in rec.attempt_log()]
        assert [k for k, _ in itertools.groupby(log)] == ids, log
        assert all(n >= 2 for n in rec.attempt_counts().values())


PAUSE_LEASE_S = 2.0
"""The dispatchers' leases in the pause test (`FLINT_REDIS_LEASE_S`): a pause outlasts it soon."""


def within_one(got: list[str], want: list[str]) -> bool:
    """`got` is `want`, or `want` with one event more in it (out of order, or a duplicate)."""
    return got == want or any(got[:i] + got[i + 1:] == want for i in range(len(got)))


def lease_holder(server: RedisServer, flint: Flint, broker_name: str, trigger_name: str) -> str:
    """The dispatcher id holding the ordered trigger's lease ('' if none)."""
    from flint_common.redis_keys import consumer_key

    log_uid = flint.get("broker", broker_name)["metadata"]["uid"]
    group = flint.get("trigger", trigger_name)["metadata"]["uid"]
    c = server.client()
    try:
        value = c.get(consumer_key(log_uid, group, "lease"))
    finally:
        c.close()
    return str(value).rpartition("|")[0] if value else ""


def dead_letters_kept(server: RedisServer, flint: Flint, broker_name: str, trigger_name: str) -> int:
    from flint_common.redis_keys import consumer_key

    log_uid = flint.get("broker", broker_name)["metadata"]["uid"]
    group = flint.get("trigger", trigger_name)["metadata"]["uid"]
    c = server.client()
    try:
        return int(c.zcard(consumer_key(log_uid, group, "dead")))
    finally:
        c.close()


@pytest.mark.timeout(300)
def test_an_ordered_holder_paused_past_its_lease_delivers_at_most_the_event_it_was_sending(
        redis_up: RedisServer, tmp_path: Path) -> None:
    """`flint up`'s dispatcher and a joined one, both with a 2 s lease, run an ordered trigger
    whose subscriber always fails one event (a poison event, retried in place). The lease holder
    is SIGSTOPped while it retries that event; the other takes the lease over, retries the event
    itself, dead-letters it and delivers the rest in order. Then the paused one resumes: it finds
    its lease gone before its next attempt, so it sends at most the one request it was about to
    send (the documented bound), never retries the event again nor dead-letters it, and fails and
    restarts to wait for the lease. Every event is delivered, in order (within that bound)."""
    f = start_flint(tmp_path / "flint", "--redis", redis_up.url,
                    env={ENV_LEASE_S: str(PAUSE_LEASE_S)})
    try:
        with joined_dispatcher(f, name="dispatcher-b") as b:
            apply(f, redis_broker("paused"))
            wait_broker(f, "paused")
            ids = [f"p-{i}" for i in range(12)]
            poison = "p-5"
            with recorder(fail_ids={poison}) as rec:
                apply(f, trigger("paused-t", "paused", {"uri": rec.url}, ordered=True,
                                 delivery={"retry": 6, "backoffPolicy": "linear",
                                           "backoffDelay": "PT0.1S"}))
                wait_trigger(f, "paused-t")
                for i in ids:  # one after the other: the stream's order
                    assert send_one(f.port, "paused", i) == 202
                poll(lambda: rec.attempt_counts().get(poison, 0) >= 1, 60,
                     "the poison event being retried in place")
                holder = lease_holder(redis_up, f, "paused", "paused-t")
                embedded = f.dispatcher_pid()
                assert embedded is not None
                pids = {f.dispatcher_id: embedded, b.dispatcher_id: b.proc.pid}
                logs = {f.dispatcher_id: lambda: f.logs(None), b.dispatcher_id: lambda: b.logs(None)}
                assert holder in pids, (holder, pids)
                restarts = logs[holder]().count("event=runner_restarted trigger=default/paused-t")
                os.kill(pids[holder], signal.SIGSTOP)
                try:
                    poll(lambda: lease_holder(redis_up, f, "paused", "paused-t") not in ("", holder),
                         60, "the other dispatcher holding the lease")
                    delivered = [i for i in ids if i != poison]
                    poll(lambda: set(rec.ids()) >= set(delivered), 60,
                         "every other event delivered by the new holder")
                    poll(lambda: quiet(redis_up, f, "paused", "paused-t"), 30, "nothing in flight")
                    assert dead_letters_kept(redis_up, f, "paused", "paused-t") == 1
                    before = len(rec.attempt_log())
                finally:
                    os.kill(pids[holder], signal.SIGCONT)
                poll(lambda: logs[holder]().count("event=runner_restarted trigger=default/paused-t")
                     > restarts, 60, "the resumed dispatcher's runner failed and restarted")
                after = rec.attempt_log()[before:]
                assert len(after) <= 1 and {i for i, _ in after} <= {poison}, after
                assert dead_letters_kept(redis_up, f, "paused", "paused-t") == 1  # not twice
                assert within_one(rec.ids(), delivered), rec.ids()
                poll(lambda: quiet(redis_up, f, "paused", "paused-t"), 30, "nothing in flight")
    finally:
        stop_flint(f)


def test_a_broker_on_a_redis_without_aof_is_not_durable(
        redis_servers: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_servers(appendonly=False)  # Debian's default configuration
    f = start_flint(tmp_path / "flint", "--redis", server.url)
    try:
        apply(f, redis_broker("volatile"))
        poll(lambda: condition_is(f, "broker", "volatile", "Durable", "False", reason="AOFDisabled"),
             60, "broker volatile Durable=False (AOFDisabled)")
        assert backend_of(f.get("broker", "volatile")) == "redis"
    finally:
        stop_flint(f)
