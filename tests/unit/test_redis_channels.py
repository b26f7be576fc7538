"""RedisChannel (messaging.flint.dev/v1): the kind, a Channel choosing it by its template, its
status with and without Redis, its stream and its subscriptions' groups created before they are
published, its gateway entries and its subscriptions' plan."""

from __future__ import annotations

import types
from typing import Any

import pytest
from support.redis_logs import FakeRedisLogs

from controller.api import messaging, registry
from controller.api.openapi import kind_schemas
from controller.api.printer_columns import columns_for
from controller.api.types import Invalid
from controller.eventing.plan import RedisLog, SqliteLog, broker_log_relpath, build_plan
from controller.reconcilers.channels import reconcile_channel, reconcile_redis_channel
from controller.reconcilers.conditions import get_condition
from controller.reconcilers.context import IN_MEMORY_CHANNELS, REDIS_CHANNELS
from controller.reconcilers.publisher import redis_channel_entries
from controller.reconcilers.subscription import reconcile_subscription
from controller.redis_health import RedisView
from controller.settings import ControllerSettings
from flint_common.redis_config import RedisSettings
from flint_common.redis_conn import Durability
from flint_common.redis_keys import stream_key
from flint_common.snapshot import BrokerEntry

Obj = dict[str, Any]
M = "messaging.knative.dev/v1"
F = "messaging.flint.dev/v1"
REDIS_TEMPLATE = {"apiVersion": F, "kind": "RedisChannel"}
STREAM = "eventing.flint.dev/stream"
GROUP = "eventing.flint.dev/consumer-group"


def rch(name: str = "orders", uid: str = "rch-uid", address: bool = True, stream_made: bool = True) -> Obj:
    status: Obj = {"address": {"url": f"http://channel-ingress.localhost/ns/{name}"}} if address else {}
    if stream_made:
        status["annotations"] = {STREAM: stream_key(uid)}
    return {
        "apiVersion": F,
        "kind": "RedisChannel",
        "metadata": {"name": name, "namespace": "ns", "uid": uid},
        "spec": {},
        "status": status,
    }


def channel(kind: str = "RedisChannel", name: str = "orders") -> Obj:
    return {
        "apiVersion": M,
        "kind": "Channel",
        "metadata": {"name": name, "namespace": "ns", "uid": "ch"},
        "spec": {},
        "status": {"channel": {"apiVersion": F, "kind": kind, "name": name}},
    }


def sub(kind: str = "Channel", name: str = "orders", group_on: str | None = stream_key("rch-uid")) -> Obj:
    """A subscription; `group_on`: the stream on which its reconciler created its group."""
    status: Obj = {"physicalSubscription": {"subscriberUri": "http://sub"}}
    if group_on is not None:
        status["annotations"] = {GROUP: group_on}
    return {
        "apiVersion": M,
        "kind": "Subscription",
        "metadata": {"name": "s", "namespace": "ns", "uid": "sub-uid"},
        "spec": {"channel": {"apiVersion": M if kind == "Channel" else F, "kind": kind, "name": name}},
        "status": status,
    }


# -- the kind ----------------------------------------------------------------------------------------


def test_redis_channel_is_served_in_flints_messaging_group() -> None:
    rt = registry.lookup("redischannels")
    assert (rt.api_version, rt.kind, rt.short_names) == (F, "RedisChannel", ("rch",))
    assert registry.lookup("rch") is rt and registry.for_api_version_kind(F, "RedisChannel") is rt
    assert (F, "RedisChannel") in kind_schemas()
    assert next(c.name for c in columns_for("messaging.flint.dev", "RedisChannel")) == "URL"


def test_redis_channel_validates_like_an_in_memory_channel() -> None:
    rt = registry.lookup("redischannel")
    obj, warnings = registry.admit(rt, {"metadata": {"name": "c"}, "spec": {"delivery": {"retry": 3}}})
    assert obj["apiVersion"] == F and obj["metadata"]["namespace"] == "default" and warnings == []
    with pytest.raises(Invalid):
        registry.admit(rt, {"metadata": {"name": "c"}, "spec": {"channelTemplate": {}}})
    with pytest.raises(Invalid):
        registry.admit(rt, {"metadata": {"name": "c"}, "spec": {"delivery": {"retry": -1}}})


def test_a_channel_may_name_redis_channel_without_a_warning_and_the_template_is_immutable() -> None:
    rt = registry.lookup("channel")
    obj, warnings = registry.admit(
        rt, {"metadata": {"name": "c"}, "spec": {"channelTemplate": REDIS_TEMPLATE}}
    )
    assert warnings == []
    _other, warnings = registry.admit(
        rt,
        {"metadata": {"name": "c"}, "spec": {"channelTemplate": {"apiVersion": F, "kind": "KafkaChannel"}}},
    )
    assert warnings and "RedisChannel" in warnings[0]
    changed = {**obj, "spec": {"channelTemplate": dict(messaging.DEFAULT_CHANNEL_TEMPLATE)}}
    with pytest.raises(Invalid):
        registry.admit(rt, changed, old=obj)


# -- reconcilers -------------------------------------------------------------------------------------


class _Store:
    def __init__(self) -> None:
        self.created: list[tuple[object, Obj]] = []
        self.written: list[Obj] = []

    async def create(self, kind: object, obj: Obj) -> Obj:
        made = {**obj, "metadata": {**obj["metadata"], "uid": "child-uid"}}
        self.created.append((kind, made))
        return made

    async def update_status(self, kind: object, obj: Obj) -> Obj:
        self.written.append(obj)
        return obj


def _informer(*objs: Obj) -> Any:
    by = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in objs}
    return types.SimpleNamespace(get=lambda ns, n: by.get((ns, n)), list=lambda ns: list(by.values()))


def _ctx(
    *, channels: Any = None, rchans: Any = None, redis: bool = True, view: RedisView | None = None,
    subscriptions: Any = None, logs: FakeRedisLogs | None = None,
) -> Any:
    settings = ControllerSettings(redis=RedisSettings("redis://127.0.0.1:6379/0") if redis else None)
    served = [types.SimpleNamespace(kind="channel", namespace="ns", name="orders")]
    hub = types.SimpleNamespace(
        snapshot=types.SimpleNamespace(brokers=served if redis else []),
        connected=lambda: 1,
        acked_by_all=lambda _v: True,
        version=1,
    )
    return types.SimpleNamespace(
        channels=channels or _informer(),
        imcs=_informer(),
        rchans=rchans or _informer(),
        subscriptions=subscriptions or _informer(),
        settings=settings,
        clock=lambda: 0.0,
        hub=hub,
        dispatch=types.SimpleNamespace(connected=lambda: True, runs=lambda _uid: True,
                                       runners=lambda _uid: 0),
        store=_Store(),
        redis_view=lambda: view or RedisView(),
        snapshot_dirty=lambda: None,
        plan_dirty=lambda: None,
        resolve=lambda _dest, _ns: ("http://sub", ""),
        redis_logs=(logs or FakeRedisLogs()) if redis else None,
    )


async def test_a_channel_with_the_redis_template_creates_and_owns_a_redis_channel() -> None:
    ch = {
        "apiVersion": M,
        "kind": "Channel",
        "metadata": {"name": "orders", "namespace": "ns", "uid": "ch"},
        "spec": {"channelTemplate": REDIS_TEMPLATE, "delivery": {"retry": 2}},
    }
    ctx = _ctx(channels=_informer(ch))
    await reconcile_channel(ctx, ("ns", "orders"))
    ((kind, child),) = ctx.store.created
    assert kind == REDIS_CHANNELS
    assert (child["apiVersion"], child["kind"], child["spec"]) == (
        F,
        "RedisChannel",
        {"delivery": {"retry": 2}},
    )
    assert child["metadata"]["ownerReferences"][0]["uid"] == "ch"
    status = ctx.store.written[-1]["status"]
    assert status["channel"] == {"apiVersion": F, "kind": "RedisChannel", "name": "orders", "namespace": "ns"}


async def test_a_channel_without_a_template_still_creates_an_in_memory_channel() -> None:
    ch = {
        "apiVersion": M,
        "kind": "Channel",
        "metadata": {"name": "orders", "namespace": "ns", "uid": "ch"},
        "spec": {"channelTemplate": dict(messaging.DEFAULT_CHANNEL_TEMPLATE)},
    }
    ctx = _ctx(channels=_informer(ch))
    await reconcile_channel(ctx, ("ns", "orders"))
    ((kind, child),) = ctx.store.created
    assert (kind, child["kind"]) == (IN_MEMORY_CHANNELS, "InMemoryChannel")


async def test_a_redis_channel_says_redis_and_is_ready_but_not_durable_without_aof() -> None:
    view = RedisView(Durability(aof_enabled=False, appendfsync="everysec"))
    ctx = _ctx(rchans=_informer(rch(address=False, stream_made=False)), view=view)
    await reconcile_redis_channel(ctx, ("ns", "orders"))
    status = ctx.store.written[-1]["status"]
    assert status["annotations"] == {"eventing.flint.dev/backend": "redis", STREAM: stream_key("rch-uid")}
    assert ctx.redis_logs.streams == {stream_key("rch-uid")}
    assert status["address"]["url"].startswith("http://channel-ingress.")
    assert get_condition(status, "Ready")["status"] == "True"  # type: ignore[index]
    durable = get_condition(status, "Durable") or {}
    assert (durable["status"], durable["reason"], durable["severity"]) == ("False", "AOFDisabled", "Info")


async def test_a_redis_channel_whose_stream_cannot_be_created_is_not_served() -> None:
    logs = FakeRedisLogs()
    logs.down = True
    ctx = _ctx(rchans=_informer(rch(stream_made=False)), logs=logs)
    assert await reconcile_redis_channel(ctx, ("ns", "orders")) == 2.0
    status = ctx.store.written[-1]["status"]
    assert STREAM not in status["annotations"]
    service = get_condition(status, "ServiceReady") or {}
    assert (service["status"], service["reason"]) == ("Unknown", "RedisUnreachable")
    assert redis_channel_entries([{**rch(), "status": status}], redis=True) == []


async def test_the_subscription_reconciler_creates_its_group_on_the_channels_stream() -> None:
    logs = FakeRedisLogs()
    s = sub(kind="RedisChannel", group_on=None)
    ctx = _ctx(rchans=_informer(rch()), subscriptions=_informer(s), logs=logs)
    assert await reconcile_subscription(ctx, ("ns", "s")) == 2.0  # the stream is not there yet
    status = ctx.store.written[-1]["status"]
    added = get_condition(status, "AddedToChannel") or {}
    assert (added["status"], added["reason"]) == ("Unknown", "WaitingForStream")
    assert "annotations" not in status
    logs.streams.add(stream_key("rch-uid"))
    ctx = _ctx(rchans=_informer(rch()), subscriptions=_informer(s), logs=logs)
    await reconcile_subscription(ctx, ("ns", "s"))
    status = ctx.store.written[-1]["status"]
    assert logs.groups == {(stream_key("rch-uid"), "sub-uid")}
    assert status["annotations"] == {GROUP: stream_key("rch-uid")}
    added = get_condition(status, "AddedToChannel") or {}
    assert (added["status"], added["reason"]) == ("Unknown", "Programming")


async def test_a_redis_channel_without_redis_is_not_ready() -> None:
    ctx = _ctx(rchans=_informer(rch(address=False)), redis=False)
    await reconcile_redis_channel(ctx, ("ns", "orders"))
    status = ctx.store.written[-1]["status"]
    ready = get_condition(status, "Ready") or {}
    assert (ready["status"], ready["reason"]) == ("False", "RedisNotConfigured")
    assert get_condition(status, "Durable") is None


# -- publisher and plan ------------------------------------------------------------------------------


def test_redis_channels_go_to_the_gateways_as_streams_only_with_redis() -> None:
    assert redis_channel_entries([rch()], redis=False) == []
    assert redis_channel_entries([rch(stream_made=False)], redis=True) == []  # not created yet
    (e,) = redis_channel_entries([rch()], redis=True)
    assert e == BrokerEntry(
        "ns",
        "orders",
        "rch-uid",
        broker_log_relpath("rch-uid"),
        kind="channel",
        backend="redis",
        stream=stream_key("rch-uid"),
    )


def test_subscriptions_of_a_redis_channel_read_its_stream_through_their_group() -> None:
    for subs, channels in (([sub()], [channel()]), ([sub(kind="RedisChannel")], [])):
        (t,) = build_plan([], [], rchans=[rch()], channels=channels, subscriptions=subs, redis=True).triggers
        assert (t.kind, t.log_uid, t.log) == (
            "subscription",
            "rch-uid",
            RedisLog(stream_key("rch-uid"), "sub-uid"),
        )
    # Without Redis the subscription waits (the channel is not Ready) but stays known; so it does
    # until its reconciler created its group.
    p = build_plan([], [], rchans=[rch()], channels=[channel()], subscriptions=[sub()], redis=False)
    assert p.triggers == () and p.known == ("sub-uid",)
    p = build_plan([], [], rchans=[rch()], channels=[channel()], subscriptions=[sub(group_on=None)],
                   redis=True)
    assert p.triggers == () and p.known == ("sub-uid",)


def test_an_in_memory_channels_subscriptions_keep_their_sqlite_log() -> None:
    imc = {**rch(uid="imc-uid"), "apiVersion": M, "kind": "InMemoryChannel"}
    (t,) = build_plan(
        [], [], imcs=[imc], channels=[channel(kind="InMemoryChannel")], subscriptions=[sub()], redis=True
    ).triggers
    assert t.log == SqliteLog(broker_log_relpath("imc-uid"))


def test_the_cli_names_redis_channels() -> None:
    from controller.cli.channel_cmd import parse_channel_ref, parse_channel_type

    assert parse_channel_type("redis") == REDIS_TEMPLATE
    assert parse_channel_type("messaging.flint.dev:v1:RedisChannel") == REDIS_TEMPLATE
    assert parse_channel_ref("rch:orders") == {**REDIS_TEMPLATE, "name": "orders"}
