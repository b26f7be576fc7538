"""RedisChannel through `flint up --redis URL` and a real redis-server: a Channel whose template
names messaging.flint.dev/v1 RedisChannel is backed by one, events POSTed to its address reach a
Subscription's subscriber and are in the channel's Redis stream; deleting the Subscription
destroys its group, deleting the Channel its RedisChannel and its keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from support.events import backend_of, condition_is, recorder
from support.harness import fetch, poll, start_flint, stop_flint
from support.redis_server import RedisServer

from flint_common.redis_keys import stream_key

CHANNEL_HOST = "channel-ingress.localhost"


def _keys(server: RedisServer, uid: str) -> list[str]:
    with server.client() as r:
        return sorted(r.scan_iter(match=f"flint:{{{uid}}}:*"))


def _groups(server: RedisServer, uid: str) -> list[str]:
    with server.client() as r:
        return [str(g["name"]) for g in r.xinfo_groups(stream_key(uid))]


def test_a_channel_backed_by_a_redis_channel_delivers_from_its_stream(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    f = start_flint(tmp_path / "flint", "--redis", redis_server.url)
    try:
        with recorder() as sink:
            channel = {
                "apiVersion": "messaging.knative.dev/v1",
                "kind": "Channel",
                "metadata": {"name": "orders"},
                "spec": {"channelTemplate": {"apiVersion": "messaging.flint.dev/v1", "kind": "RedisChannel"}},
            }
            sub = {
                "apiVersion": "messaging.knative.dev/v1",
                "kind": "Subscription",
                "metadata": {"name": "s1"},
                "spec": {
                    "channel": {
                        "apiVersion": "messaging.knative.dev/v1",
                        "kind": "Channel",
                        "name": "orders",
                    },
                    "subscriber": {"uri": sink.url},
                },
            }

            f.cli("apply", "-f", "-", input=yaml.safe_dump_all([channel, sub]))
            poll(lambda: condition_is(f, "channel", "orders", "Ready"), 60, "channel orders Ready")
            poll(lambda: condition_is(f, "subscription", "s1", "Ready"), 60, "subscription s1 Ready")
            ch = f.get("channel", "orders")
            assert ch["status"]["channel"]["kind"] == "RedisChannel"
            assert ch["status"]["address"]["url"] == f"http://{CHANNEL_HOST}:{f.port}/default/orders"
            rch = f.get("redischannel", "orders")
            assert backend_of(rch) == "redis"
            assert condition_is(f, "redischannel", "orders", "Durable")
            uid = rch["metadata"]["uid"]
            ids = [f"o-{i}" for i in range(5)]
            for event_id in ids:
                status, _, body = asyncio.run(
                    fetch(
                        f.port,
                        CHANNEL_HOST,
                        "/default/orders",
                        method="POST",
                        data=b'{"n": 1}',
                        headers={
                            "ce-specversion": "1.0",
                            "ce-id": event_id,
                            "ce-source": "/t",
                            "ce-type": "order",
                            "Content-Type": "application/json",
                        },
                    )
                )
                assert status == 202, body
            poll(lambda: sorted(sink.ids()) == ids, 60, "every event at the subscriber")
            with redis_server.client() as r:
                assert r.xlen(stream_key(uid)) == len(ids)
            assert _keys(redis_server, uid)
            s1 = f.get("subscription", "s1")
            sub_uid = s1["metadata"]["uid"]
            assert sub_uid in _groups(redis_server, uid)  # made by the controller, marked in status
            assert s1["status"]["annotations"]["eventing.flint.dev/consumer-group"] == stream_key(uid)
            assert rch["status"]["annotations"]["eventing.flint.dev/stream"] == stream_key(uid)
            f.cli("delete", "subscription", "s1")
            poll(lambda: sub_uid not in _groups(redis_server, uid), 30, "the subscription's group destroyed")
            f.cli("delete", "channel", "orders")
            poll(
                lambda: f.cli("get", "redischannel", "orders", check=False).returncode != 0,
                30,
                "the RedisChannel to go with its Channel",
            )
            poll(lambda: not _keys(redis_server, uid), 30, "the RedisChannel's keys gone from Redis")
    finally:
        stop_flint(f)
