"""The multi-process harness on SQLite brokers (issue 12's topology without Redis): one `flint up`,
a second gateway process (`--gateway-id gw-b`, its own state dir and port) and a second
dispatcher process (its own state dir and admin port), from `support.multi`.

A SQLite broker's log is a file in `flint up`'s state dir: only the embedded dispatcher may run
its triggers, so their status says `run by 1 dispatcher` while the second one polls the same plan
under its own id and delivers nothing."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.events import apply, broker, condition_is, recorder, send_many, trigger
from support.harness import APPS, Flint, fetch, pid_alive, poll, procs_mentioning, start_flint, stop_flint
from support.multi import joined_dispatcher, joined_gateway
from support.redis_server import RedisServer, kill_redis, restart_redis

from loadtests.flint_process import Joined

ECHO = str(APPS / "echo")


@pytest.fixture(scope="module")
def flint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flint]:
    f = start_flint(tmp_path_factory.mktemp("flint-multi"))
    try:
        yield f
    finally:
        stop_flint(f)


@pytest.fixture(scope="module")
def gw_b(flint: Flint) -> Iterator[Joined]:
    with joined_gateway(flint, gateway_id="gw-b") as gw:
        yield gw


@pytest.fixture(scope="module")
def dispatcher_b(flint: Flint) -> Iterator[Joined]:
    with joined_dispatcher(flint, name="dispatcher-b") as d:
        yield d


def _applied_versions(log: str) -> list[int]:
    return [int(v) for v in re.findall(r"event=plan_applied version=(\d+)", log)]


def _run_by(f: Flint, name: str, n: int) -> bool:
    return condition_is(f, "trigger", name, "SubscriptionReady",
                        message_has=f"run by {n} dispatcher{'' if n == 1 else 's'}")


def _delivered(d: Joined) -> float:
    """The second dispatcher's `flint_dispatcher_events_delivered_total`, summed (0 when absent)."""
    with urllib.request.urlopen(d.admin + "/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("flint_dispatcher_events_delivered_total"))


def test_a_sqlite_trigger_is_run_by_the_embedded_dispatcher_only(
        flint: Flint, gw_b: Joined, dispatcher_b: Joined) -> None:
    # Two dispatchers, two ids: the embedded one's (the controller computes it from its state
    # dir) and the joined one's, `<hostname>/<hash of its state dir>`.
    assert dispatcher_b.dispatcher_id != flint.dispatcher_id
    assert dispatcher_b.dispatcher_id.split("/")[0] == flint.dispatcher_id.split("/")[0]
    assert re.fullmatch(r"[^/]+/[0-9a-f]{16}", dispatcher_b.dispatcher_id), dispatcher_b.dispatcher_id

    apply(flint, broker("local"))
    with recorder() as rec:
        apply(flint, trigger("local-t", "local", {"uri": rec.url}))
        poll(lambda: condition_is(flint, "trigger", "local-t", "Ready"), 60, "trigger local-t Ready")
        assert _run_by(flint, "local-t", 1)
        # The second dispatcher polled the plan that has the trigger: it applied the version
        # the embedded one applied.
        def same_version() -> set[int]:
            return set(_applied_versions(flint.logs(None))) & set(_applied_versions(dispatcher_b.logs(None)))

        poll(same_version, 30, "both dispatchers to apply the same plan version")
        assert dispatcher_b.alive() and pid_alive(dispatcher_b.proc.pid)

        ids = [f"s-{i}" for i in range(60)]
        sent = asyncio.run(send_many([flint.port], "local", ids, concurrency=8))
        assert sorted(sent.accepted()) == sorted(ids), sent.status
        poll(lambda: sorted(rec.ids()) == sorted(ids), 60, "every event, once")
        assert _delivered(dispatcher_b) == 0  # the SQLite log is not its to read
        # Still one runner in the status while both poll.
        assert _run_by(flint, "local-t", 1)


def test_the_second_gateway_serves_a_services_route(flint: Flint, gw_b: Joined) -> None:
    assert gw_b.gateway_id == "gw-b" and "--gateway-id gw-b" in " ".join(gw_b.argv)
    poll(lambda: "worker=gw-b/0 " in flint.logs(None), 30, "the controller to see gw-b's worker")
    flint.cli("service", "create", "multi-echo", "--image", ECHO, "--env", "TARGET=b")
    poll(lambda: condition_is(flint, "ksvc", "multi-echo", "Ready"), 90, "service multi-echo Ready")
    status, _, body = asyncio.run(fetch(gw_b.port, flint.host("multi-echo"), deadline_s=30))
    assert status == 200, body
    assert json.loads(body)["revision"] == "multi-echo-00001"
    status, _, _ = asyncio.run(fetch(gw_b.port, flint.host("no-such-service"), deadline_s=10))
    assert status == 404


def test_a_joined_process_is_reaped_and_a_killed_one_is_no_failure(flint: Flint, tmp_path: Path) -> None:
    with joined_dispatcher(flint, name="dispatcher-doomed") as d:
        assert pid_alive(d.proc.pid)
        d.kill()
        assert not d.alive() and d.killed
    assert d not in flint.joined
    assert procs_mentioning(str(d.state_dir)) == {}
    with joined_gateway(flint, gateway_id="gw-c", workers=2, name="gateway-c") as gw:
        members = procs_mentioning(str(gw.state_dir))
        assert gw.proc.pid in members and len(members) >= 3, members  # main and two workers
    assert gw.proc.returncode == 0, gw.logs()
    assert not [p for p in members if pid_alive(p)]


def test_joined_processes_get_flint_ups_redis_settings(
        redis_servers: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_servers()
    f = start_flint(tmp_path / "flint", "--redis", server.url)
    try:
        assert f.redis_env == {"FLINT_REDIS_URL": server.url}
        with joined_gateway(f, gateway_id="gw-r") as gw, joined_dispatcher(f) as d:
            line = f"event=redis_connected role=%s url={server.url} durable=True"
            poll(lambda: line % "gateway" in gw.logs(None), 30, "gw-r's redis_connected line")
            poll(lambda: line % "dispatcher" in d.logs(None), 30, "the dispatcher's redis_connected line")
            assert server.url not in " ".join(gw.argv + d.argv)  # by the environment, as flint up does
    finally:
        stop_flint(f)


def test_a_killed_redis_server_restarts_on_its_port_with_its_data(
        redis_servers: Callable[..., RedisServer]) -> None:
    server = redis_servers()
    port, c = server.port, server.client()
    assert c.set("kept", "yes")
    c.close()
    kill_redis(server)
    assert server.proc.returncode == -signal.SIGKILL
    restart_redis(server)
    assert server.port == port
    c = server.client()
    try:
        assert c.get("kept") == "yes"  # written to the append-only file before the reply
    finally:
        c.close()
