"""`FlintRedis` brokers through `flint up --redis URL` and a real redis-server: the backend in
status and in `flint broker describe`, the backlog per trigger, `Durable` from the Redis' AOF,
`RedisNotConfigured` without Redis, the stream and the trigger's group made by the controller
before they are published (a broker made while Redis is down is Ready once it answers), and a
deleted broker's or trigger's keys gone from Redis."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.events import apply, condition_is, send_one, trigger
from support.harness import Flint, poll, start_flint, stop_flint
from support.redis_server import RedisServer, restart_redis, stop_redis

from flint_common.redis_keys import consumer_key, stream_key, trim_lock_key

BACKEND = "eventing.flint.dev/backend"
STREAM = "eventing.flint.dev/stream"
GROUP = "eventing.flint.dev/consumer-group"
Obj = dict[str, Any]


def _conditions(f: Flint, kind: str, name: str) -> dict[str, Obj]:
    conds = (f.get(kind, name).get("status") or {}).get("conditions") or []
    return {c["type"]: c for c in conds}


def _condition_is(f: Flint, kind: str, name: str, type_: str, status: str, reason: str = "") -> bool:
    c = _conditions(f, kind, name).get(type_) or {}
    return c.get("status") == status and (not reason or c.get("reason") == reason)


def _keys(server: RedisServer, uid: str) -> list[str]:
    with server.client() as r:
        return sorted(r.scan_iter(match=f"flint:{{{uid}}}:*"))


def test_a_redis_broker_is_ready_on_redis_and_its_keys_go_with_it(
        redis_server: RedisServer, tmp_path: Path) -> None:
    f = start_flint(tmp_path / "flint", "--redis", redis_server.url)
    try:
        f.cli("broker", "create", "rb", "--class", "FlintRedis")
        f.cli("broker", "create", "plain")
        poll(lambda: _condition_is(f, "broker", "rb", "Ready", "True"), 60, "broker rb Ready")
        poll(lambda: _condition_is(f, "broker", "rb", "Durable", "True", "AOFEnabled"), 30,
             "broker rb Durable=True")
        rb = f.get("broker", "rb")
        assert rb["status"]["annotations"][BACKEND] == "redis"
        with redis_server.client() as r:  # made by the controller, empty, before the gateways had it
            assert rb["status"]["annotations"][STREAM] == stream_key(rb["metadata"]["uid"])
            assert r.xlen(stream_key(rb["metadata"]["uid"])) == 0
        poll(lambda: _condition_is(f, "broker", "plain", "Ready", "True"), 60, "broker plain Ready")
        plain = f.get("broker", "plain")
        assert plain["status"]["annotations"][BACKEND] == "sqlite"
        assert "Durable" not in _conditions(f, "broker", "plain")

        uid = rb["metadata"]["uid"]
        stream = stream_key(uid)
        # The dispatcher runs t1: its two events fail (nothing listens on port 9) and wait as
        # retries in Redis for ten minutes, acked in the group: backlog 0, pending 0, 2 retries.
        apply(f, trigger("t1", "rb", {"uri": "http://127.0.0.1:9/"},
                         delivery={"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT600S"}))
        poll(lambda: condition_is(f, "trigger", "t1", "Ready"), 60, "trigger t1 Ready")
        t1 = f.get("trigger", "t1")["metadata"]["uid"]
        assert f.get("trigger", "t1")["status"]["annotations"][GROUP] == stream
        with redis_server.client() as r:
            assert [g["name"] for g in r.xinfo_groups(stream)] == [t1]
        assert [send_one(f.port, "rb", f"e{i}") for i in range(2)] == [202, 202]

        def described() -> list[str]:
            out = f.cli("broker", "describe", "rb").stdout
            assert "Backend:     redis (stream " + stream + ")" in out, out
            return next(line for line in out.splitlines() if line.strip().startswith("t1 ")).split()

        def retries() -> int:
            with redis_server.client() as r:
                return int(r.zcard(consumer_key(uid, t1, "retries")))

        poll(lambda: retries() == 2, 60, "t1's two events waiting as retries")
        # Handled (stored as retries): in no backlog, as a SQLite trigger's position passes them.
        assert described()[:4] == ["t1", "0", "0", "0"]
        assert "Backend:" in f.cli("describe", "broker", "rb").stdout
        path = f"{f.api}/internal/eventing/brokers/default/rb/backlog"
        with pytest.raises(urllib.error.HTTPError) as refused:  # the owner's credential only
            urllib.request.urlopen(path, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(path, headers=f.api_headers())
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["backend"] == "redis" and body["triggers"][0]["backlog"] == 0
        assert "Backend:     sqlite" in f.cli("broker", "describe", "plain").stdout
        f.cli("trigger", "create", "tp", "--broker", "plain", "--sink", "http://127.0.0.1:9/")

        def sqlite_backlog_shown() -> bool:  # the dispatcher's gauge, once it runs the trigger
            lines = f.cli("broker", "describe", "plain").stdout.splitlines()
            return any(line.split() == ["tp", "0"] for line in lines)

        poll(sqlite_backlog_shown, 60, "trigger tp's backlog in describe")

        f.cli("trigger", "delete", "t1")  # its group and its keys go; the stream stays

        def trigger_gone() -> bool:
            with redis_server.client() as r:
                return not r.xinfo_groups(stream) and not r.exists(consumer_key(uid, t1, "retries"))

        poll(trigger_gone, 30, "trigger t1's group and keys deleted")
        assert [k for k in _keys(redis_server, uid) if k != trim_lock_key(uid)] == [stream]

        f.cli("broker", "delete", "rb")
        poll(lambda: not _keys(redis_server, uid), 30, "broker rb's keys deleted")
    finally:
        stop_flint(f)


def test_a_redis_broker_on_a_redis_without_aof_is_ready_but_not_durable(
        redis_servers: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_servers(appendonly=False)
    f = start_flint(tmp_path / "flint", "--redis", server.url)
    try:
        f.cli("broker", "create", "rb", "--class", "FlintRedis")
        poll(lambda: _condition_is(f, "broker", "rb", "Durable", "False", "AOFDisabled"), 60,
             "broker rb Durable=False AOFDisabled")
        poll(lambda: _condition_is(f, "broker", "rb", "Ready", "True"), 60, "broker rb Ready")
        durable = _conditions(f, "broker", "rb")["Durable"]
        assert durable["severity"] == "Info" and "appendonly no" in durable["message"]
    finally:
        stop_flint(f)


def test_a_redis_broker_without_redis_is_not_ready(flint: Flint) -> None:
    flint.cli("broker", "create", "rb", "--class", "FlintRedis")
    poll(lambda: _condition_is(flint, "broker", "rb", "Ready", "False", "RedisNotConfigured"), 60,
         "broker rb Ready=False RedisNotConfigured")
    ready = _conditions(flint, "broker", "rb")["Ready"]
    assert "flint up --redis" in ready["message"]
    assert flint.get("broker", "rb")["status"]["annotations"][BACKEND] == "redis"
    out = flint.cli("broker", "describe", "rb").stdout
    assert "Backend:     redis" in out and "RedisNotConfigured" in out, out
    flint.cli("broker", "delete", "rb")


def test_a_redis_broker_made_while_redis_does_not_answer_is_ready_once_it_does(
        redis_servers: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_servers()
    stop_redis(server)  # configured, but down
    f = start_flint(tmp_path / "flint", "--redis", server.url)
    try:
        f.cli("broker", "create", "rb", "--class", "FlintRedis")
        poll(lambda: _condition_is(f, "broker", "rb", "Durable", "Unknown", "RedisUnreachable"), 60,
             "broker rb Durable=Unknown RedisUnreachable")
        # Its stream cannot be made: the gateways do not get it, it is not Ready.
        poll(lambda: _condition_is(f, "broker", "rb", "TriggerChannelReady", "Unknown",
                                   "RedisUnreachable"), 60, "broker rb TriggerChannelReady=Unknown")
        assert _condition_is(f, "broker", "rb", "Ready", "Unknown", "RedisUnreachable")
        assert send_one(f.port, "rb", "too-early") == 404
        out = f.cli("broker", "describe", "rb").stdout
        assert "Backlog:     unavailable (Error from server (ServiceUnavailable): Redis did not" in out
        assert "event=redis_unreachable role=controller" in f.logs(None)
        restart_redis(server)
        poll(lambda: _condition_is(f, "broker", "rb", "Ready", "True"), 60, "broker rb Ready")
        poll(lambda: send_one(f.port, "rb", "in-time") == 202, 30, "the broker served")
    finally:
        stop_flint(f)
