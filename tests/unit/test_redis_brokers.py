"""Broker classes and the Redis backend on the controller's side, pure parts: the classes and the
engine's default, validation, the gateways' entries, the plan, the broker's conditions and
status, its stream and its triggers' groups created before they are published (the broker and
trigger reconcilers on a stand-in context), the backlog's parsing and its describe text."""

from __future__ import annotations

import types
from typing import Any

import pytest
from support.redis_logs import FakeRedisLogs

from controller.api import eventing
from controller.broker_backlog import backlog_answer, dispatcher_backlogs
from controller.cli.backlog import backend_lines, backlog_lines
from controller.eventing.plan import RedisLog, SqliteLog, build_plan
from controller.reconcilers.broker import (
    REDIS_NOT_CONFIGURED,
    channel_condition,
    durable_condition,
    reconcile_broker,
)
from controller.reconcilers.conditions import get_condition, roll_up, set_condition
from controller.reconcilers.publisher import broker_entries
from controller.reconcilers.trigger import reconcile_trigger
from controller.redis_backlog import GroupBacklog, parse_groups
from controller.redis_health import RedisView
from controller.settings import ControllerSettings
from flint_common.redis_config import RedisSettings
from flint_common.redis_conn import Durability
from flint_common.redis_keys import stream_key
from flint_common.snapshot import BrokerEntry

CLASS = "eventing.knative.dev/broker.class"
STREAM = "eventing.flint.dev/stream"
GROUP = "eventing.flint.dev/consumer-group"
Obj = dict[str, Any]


def broker(cls: str | None = "Flint", name: str = "b", uid: str = "u-b", *,
           stream_made: bool = True) -> Obj:
    """A broker; a Redis one whose stream the reconciler created (`stream_made`)."""
    meta: Obj = {"name": name, "namespace": "ns", "uid": uid, "generation": 1}
    if cls is not None:
        meta["annotations"] = {CLASS: cls}
    status: Obj = {"address": {"url": f"http://broker-ingress.localhost/ns/{name}"}}
    if stream_made:
        status["annotations"] = {STREAM: stream_key(uid)}
    return {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "metadata": meta, "spec": {},
            "status": status}


def trigger(name: str = "t1", broker_name: str = "b", *, group_on: str | None = None) -> Obj:
    """A trigger; `group_on`: the stream on which the reconciler created its group."""
    status: Obj = {"subscriberUri": "http://sub"}
    if group_on is not None:
        status["annotations"] = {GROUP: group_on}
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"},
            "spec": {"broker": broker_name, "subscriber": {"uri": "http://sub"}},
            "status": status}


# -- classes -----------------------------------------------------------------------------------


def test_three_classes_are_flints_and_flint_is_the_engines_default() -> None:
    assert eventing.FLINT_BROKER_CLASSES == ("Flint", "FlintSQLite", "FlintRedis")
    assert eventing.default_backend() == "sqlite" == eventing.default_backend("embedded")
    assert eventing.default_backend("kubernetes") == "redis"
    with pytest.raises(ValueError, match="unknown engine 'nomad'"):
        eventing.default_backend("nomad")
    assert eventing.broker_backend(broker("Flint")) == "sqlite"
    assert eventing.broker_backend(broker("Flint"), "kubernetes") == "redis"
    assert eventing.broker_backend(broker("FlintSQLite"), "kubernetes") == "sqlite"
    assert eventing.broker_backend(broker("FlintRedis")) == "redis"
    assert eventing.broker_backend(broker("MTChannelBasedBroker")) is None
    for cls in eventing.FLINT_BROKER_CLASSES:
        assert eventing.is_flint_broker(broker(cls)) and eventing.broker_warnings(broker(cls)) == []
    assert not eventing.is_flint_broker(broker("Other"))


def test_the_class_stays_immutable_between_flints_own_classes() -> None:
    new = broker("FlintRedis")
    errs = eventing.validate_broker(new, broker("FlintSQLite"))
    assert [e.path for e in errs] == [f"metadata.annotations.{CLASS}"]
    assert '-: "FlintSQLite", +: "FlintRedis"' in errs[0].message
    assert eventing.validate_broker(new, broker("FlintRedis")) == []


# -- gateways' entries and the plan ----------------------------------------------------------------


def test_redis_brokers_go_to_the_gateways_as_streams_only_when_redis_is_configured() -> None:
    brokers = [broker("Flint", "a", "u-a"), broker("FlintSQLite", "s", "u-s"),
               broker("FlintRedis", "r", "u-r"), broker("Other", "o", "u-o")]
    assert broker_entries(brokers, redis=True) == [
        BrokerEntry("ns", "a", "u-a", "eventing/logs/u-a.db"),
        BrokerEntry("ns", "s", "u-s", "eventing/logs/u-s.db"),
        BrokerEntry("ns", "r", "u-r", "eventing/logs/u-r.db", backend="redis",
                    stream="flint:{u-r}:events"),
    ]
    assert [e.name for e in broker_entries(brokers, redis=False)] == ["a", "s"]
    on_k8s = broker_entries(brokers[:1], engine="kubernetes", redis=True)
    assert on_k8s == [BrokerEntry("ns", "a", "u-a", "eventing/logs/u-a.db", backend="redis",
                                  stream=stream_key("u-a"))]


def test_a_redis_broker_goes_to_the_gateways_only_once_its_stream_was_created() -> None:
    # Gateways append with NOMKSTREAM: a broker whose stream does not exist yet would answer 404.
    new = broker("FlintRedis", "r", "u-r", stream_made=False)
    assert broker_entries([new], redis=True) == []
    recreated = broker("FlintRedis", "r", "u-r2")
    recreated["status"]["annotations"] = {STREAM: stream_key("u-r")}  # the old broker's stream
    assert broker_entries([recreated], redis=True) == []
    assert [e.uid for e in broker_entries([broker("FlintRedis", "r", "u-r")], redis=True)] == ["u-r"]
    # A SQLite broker needs no stream.
    assert [e.name for e in broker_entries([broker("FlintSQLite", "s", stream_made=False)])] == ["s"]


def test_a_redis_brokers_triggers_read_its_stream_through_their_own_group() -> None:
    brokers = [broker("FlintRedis", "r", "u-r"), broker("FlintSQLite", "s", "u-s")]
    on = stream_key("u-r")
    triggers = [trigger("t1", "r", group_on=on), trigger("t2", "r", group_on=on), trigger("t3", "s")]
    plan = build_plan(brokers, triggers, redis=True)
    logs = {t.name: t.log for t in plan.triggers}
    assert logs == {"t1": RedisLog("flint:{u-r}:events", "u-t1"),
                    "t2": RedisLog("flint:{u-r}:events", "u-t2"),
                    "t3": SqliteLog("eventing/logs/u-s.db")}
    assert {t.log_uid for t in plan.triggers if t.broker == "r"} == {"u-r"}
    # Without Redis the Redis broker's triggers are not runnable (still known: their state stays).
    plan = build_plan(brokers, triggers, redis=False)
    assert [t.name for t in plan.triggers] == ["t3"]
    assert plan.known == ("u-t1", "u-t2", "u-t3")


def test_a_redis_trigger_enters_the_plan_only_once_its_group_was_created() -> None:
    # A dispatcher never creates a group: the plan has the trigger once the reconciler did.
    brokers = [broker("FlintRedis", "r", "u-r")]
    triggers = [trigger("new", "r"), trigger("old", "r", group_on=stream_key("u-gone")),
                trigger("made", "r", group_on=stream_key("u-r"))]
    plan = build_plan(brokers, triggers, redis=True)
    assert [t.name for t in plan.triggers] == ["made"]
    assert plan.known == ("u-made", "u-new", "u-old")  # the others are known: their state stays


def test_objects_from_before_the_marks_stay_served_and_planned_across_the_upgrade() -> None:
    # A Flint before the marks made streams and groups in the gateways and dispatchers; its
    # Ready objects carry no mark until their reconciler (at once) writes it.
    old_broker = broker("FlintRedis", "r", "u-r", stream_made=False)
    old_broker["status"]["conditions"] = [{"type": "TriggerChannelReady", "status": "True",
                                           "reason": "StreamReady"}]
    assert [e.uid for e in broker_entries([old_broker], redis=True)] == ["u-r"]
    old_trigger = trigger("old", "r")
    old_trigger["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    not_ready = trigger("new", "r")
    plan = build_plan([broker("FlintRedis", "r", "u-r")], [old_trigger, not_ready], redis=True)
    assert [t.name for t in plan.triggers] == ["old"]
    # A mark, once written, is what counts: one for another stream keeps it out.
    moved = trigger("moved", "r", group_on=stream_key("u-gone"))
    moved["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert build_plan([broker("FlintRedis", "r", "u-r")], [moved], redis=True).triggers == ()


# -- conditions ------------------------------------------------------------------------------------


def test_durable_condition_follows_what_redis_said() -> None:
    off = Durability(aof_enabled=False, appendfsync="everysec")
    assert durable_condition(RedisView(off)) == ("False", "AOFDisabled", off.message)
    nofsync = Durability(aof_enabled=True, appendfsync="no")
    assert durable_condition(RedisView(nofsync))[:2] == ("False", "AOFNoFsync")
    on = Durability(aof_enabled=True, appendfsync="everysec")
    assert durable_condition(RedisView(on)) == ("True", "AOFEnabled", on.message)
    status, reason, message = durable_condition(RedisView(error="ConnectionError: refused"))
    assert (status, reason) == ("Unknown", "RedisUnreachable") and "refused" in message
    assert durable_condition(RedisView())[:2] == ("Unknown", "Checking")


def test_channel_condition_per_backend() -> None:
    view = RedisView(Durability(aof_enabled=False, appendfsync=None))
    assert channel_condition("sqlite", "u", redis=True, view=view) == (
        "True", "ChannelLogReady", "durable SQLite log eventing/logs/u.db", None)
    assert channel_condition("redis", "u", redis=False, view=view) == (
        "False", "RedisNotConfigured", REDIS_NOT_CONFIGURED, None)
    assert "flint up --redis" in REDIS_NOT_CONFIGURED
    st, reason, message, durable = channel_condition("redis", "u", redis=True, view=view)
    assert (st, reason, message) == ("True", "StreamReady", "Redis stream flint:{u}:events")
    assert durable is not None and durable[:2] == ("False", "AOFDisabled")


def test_an_informative_condition_has_a_severity_and_does_not_roll_up() -> None:
    status: Obj = {}
    set_condition(status, "IngressReady", "True", now=0)
    set_condition(status, "Durable", "False", "AOFDisabled", "no AOF", now=0, severity="Info")
    roll_up(status, ["IngressReady"], now=0)
    assert get_condition(status, "Ready")["status"] == "True"  # type: ignore[index]
    assert get_condition(status, "Durable") == {
        "type": "Durable", "status": "False", "severity": "Info", "reason": "AOFDisabled",
        "message": "no AOF", "lastTransitionTime": "1970-01-01T00:00:00Z"}


class _Store:
    def __init__(self) -> None:
        self.written: list[Obj] = []

    async def update_status(self, kind: object, obj: Obj) -> Obj:
        self.written.append(obj)
        return obj


def _ctx(b: Obj, *, redis: bool, view: RedisView, t: Obj | None = None,
         logs: FakeRedisLogs | None = None, runners: int = 1) -> Any:
    settings = ControllerSettings(redis=RedisSettings("redis://127.0.0.1:6379/0") if redis else None)
    enqueued: list[tuple[str, tuple[str, str]]] = []
    served = [types.SimpleNamespace(kind="broker", namespace="ns", name=b["metadata"]["name"])]
    hub = types.SimpleNamespace(snapshot=types.SimpleNamespace(brokers=served if redis else []),
                                connected=lambda: 1, acked_by_all=lambda _v: True, version=1)
    return types.SimpleNamespace(
        brokers=types.SimpleNamespace(get=lambda _ns, _n: b), settings=settings, clock=lambda: 0.0,
        triggers=types.SimpleNamespace(get=lambda _ns, _n: t, list=lambda _ns: [t] if t else []),
        resolve=lambda _dest, _ns: ("http://sub", ""),
        hub=hub, dispatch=types.SimpleNamespace(connected=lambda: True, runners=lambda _uid: runners),
        store=_Store(), redis_view=lambda: view, snapshot_dirty=lambda: None, plan_dirty=lambda: None,
        redis_logs=(logs or FakeRedisLogs()) if redis else None, enqueued=enqueued,
        enqueue=lambda kind, key: enqueued.append((kind.plural, key)))


NO_VIEW = RedisView()


async def _reconciled(b: Obj, *, redis: bool, view: RedisView = NO_VIEW) -> Obj:
    ctx = _ctx(b, redis=redis, view=view)
    await reconcile_broker(ctx, ("ns", b["metadata"]["name"]))
    status: Obj = ctx.store.written[-1]["status"]
    return status


async def test_a_redis_broker_on_a_redis_without_aof_is_ready_but_not_durable() -> None:
    view = RedisView(Durability(aof_enabled=False, appendfsync="everysec"))
    status = await _reconciled(broker("FlintRedis", stream_made=False), redis=True, view=view)
    assert status["annotations"] == {"eventing.flint.dev/backend": "redis",
                                     STREAM: "flint:{u-b}:events"}
    assert get_condition(status, "Ready")["status"] == "True"  # type: ignore[index]
    durable = get_condition(status, "Durable") or {}
    assert (durable["status"], durable["reason"], durable["severity"]) == ("False", "AOFDisabled", "Info")


async def test_the_broker_reconciler_creates_the_stream_before_the_broker_is_served() -> None:
    logs = FakeRedisLogs()
    logs.down = True
    ctx = _ctx(broker("FlintRedis", stream_made=False), redis=True, view=NO_VIEW, logs=logs)
    assert await reconcile_broker(ctx, ("ns", "b")) == 2.0  # tried again soon
    status = ctx.store.written[-1]["status"]
    assert STREAM not in status["annotations"] and logs.streams == set()
    for type_ in ("TriggerChannelReady", "IngressReady", "Ready"):
        cond = get_condition(status, type_) or {}
        assert (cond["status"], cond["reason"]) == ("Unknown", "RedisUnreachable"), type_
    channel = get_condition(status, "TriggerChannelReady") or {}
    assert "creating the Redis stream flint:{u-b}:events failed" in channel["message"]
    logs.down = False
    ctx = _ctx(broker("FlintRedis", stream_made=False), redis=True, view=NO_VIEW, logs=logs)
    assert await reconcile_broker(ctx, ("ns", "b")) == logs.recheck_s  # made again if Redis loses it
    status = ctx.store.written[-1]["status"]
    assert logs.streams == {"flint:{u-b}:events"} and status["annotations"][STREAM] == "flint:{u-b}:events"
    assert get_condition(status, "Ready")["status"] == "True"  # type: ignore[index]
    # Created once: an outage afterwards is the gateways' 503, the broker stays Ready.
    logs.down = True
    ctx = _ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, logs=logs)
    await reconcile_broker(ctx, ("ns", "b"))
    assert get_condition(ctx.store.written[-1]["status"], "Ready")["status"] == "True"  # type: ignore[index]


async def test_the_trigger_reconciler_creates_the_group_on_the_brokers_stream() -> None:
    logs = FakeRedisLogs()
    t = trigger("t1", "b")
    # The broker's stream does not exist yet: the trigger waits for it, without a mark.
    ctx = _ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, t=t, logs=logs, runners=0)
    assert await reconcile_trigger(ctx, ("ns", "t1")) == 2.0
    status = ctx.store.written[-1]["status"]
    sub = get_condition(status, "SubscriptionReady") or {}
    assert (sub["status"], sub["reason"]) == ("Unknown", "WaitingForStream")
    assert "annotations" not in status and logs.groups == set()
    logs.streams.add(stream_key("u-b"))
    ctx = _ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, t=t, logs=logs, runners=0)
    await reconcile_trigger(ctx, ("ns", "t1"))
    status = ctx.store.written[-1]["status"]
    assert logs.groups == {(stream_key("u-b"), "u-t1")}
    assert status["annotations"] == {GROUP: stream_key("u-b")}  # the plan may have it now
    sub = get_condition(status, "SubscriptionReady") or {}
    assert (sub["status"], sub["reason"]) == ("Unknown", "Programming")
    t_made = {**t, "status": status}
    ctx = _ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, t=t_made, logs=logs, runners=2)
    await reconcile_trigger(ctx, ("ns", "t1"))
    sub = get_condition(ctx.store.written[-1]["status"], "SubscriptionReady") or {}
    assert (sub["status"], sub["message"]) == ("True", "run by 2 dispatchers")
    # A SQLite broker's trigger has no group (nor a mark left from anything).
    ctx = _ctx(broker("FlintSQLite"), redis=True, view=NO_VIEW, t=t_made, logs=logs)
    await reconcile_trigger(ctx, ("ns", "t1"))
    assert "annotations" not in ctx.store.written[-1]["status"]


async def test_a_stream_redis_lost_is_made_again_and_wakes_the_brokers_triggers() -> None:
    logs = FakeRedisLogs()  # Redis restarted without its append-only file: it has nothing
    ctx = _ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, t=trigger("t1", "b"), logs=logs)
    await reconcile_broker(ctx, ("ns", "b"))
    assert logs.streams == {stream_key("u-b")}
    assert ctx.enqueued == [("triggers", ("ns", "t1"))]  # its group is made again now, not later
    ctx = _ctx(broker("FlintRedis", stream_made=False), redis=True, view=NO_VIEW,
               t=trigger("t2", "b"), logs=FakeRedisLogs())
    await reconcile_broker(ctx, ("ns", "b"))  # a first creation wakes nobody: nothing was lost
    assert ctx.enqueued == []


async def test_a_lost_group_is_made_again_from_the_first_entry_a_new_one_at_the_tail() -> None:
    logs = FakeRedisLogs()
    logs.streams.add(stream_key("u-b"))
    lost = trigger("t1", "b", group_on=stream_key("u-b"))  # marked: its group existed
    await reconcile_trigger(_ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, t=lost, logs=logs),
                            ("ns", "t1"))
    new = trigger("t2", "b")
    await reconcile_trigger(_ctx(broker("FlintRedis"), redis=True, view=NO_VIEW, t=new, logs=logs),
                            ("ns", "t2"))
    assert logs.made_from_start == {(stream_key("u-b"), "u-t1"): True, (stream_key("u-b"), "u-t2"): False}


async def test_a_redis_broker_without_redis_is_not_ready() -> None:
    status = await _reconciled(broker("FlintRedis"), redis=False)
    ready = get_condition(status, "Ready") or {}
    assert (ready["status"], ready["reason"]) == ("False", "RedisNotConfigured")
    assert ready["message"] == REDIS_NOT_CONFIGURED
    assert get_condition(status, "Durable") is None


async def test_a_flint_broker_says_sqlite_and_has_no_durable_condition() -> None:
    status = await _reconciled(broker("Flint", stream_made=False), redis=True)
    assert status["annotations"] == {"eventing.flint.dev/backend": "sqlite"}
    assert get_condition(status, "Durable") is None
    assert get_condition(status, "Ready")["status"] == "True"  # type: ignore[index]


async def test_reconcile_leaves_other_classes_alone() -> None:
    ctx = _ctx(broker("MTChannelBasedBroker"), redis=True, view=RedisView())
    assert await reconcile_broker(ctx, ("ns", "b")) is None
    assert ctx.store.written == []


# -- backlog ---------------------------------------------------------------------------------------


def test_xinfo_groups_reply_parses_with_and_without_lag() -> None:
    reply: list[dict[Any, Any]] = [
        {"name": "u-t1", "consumers": 1, "pending": 2, "last-delivered-id": "5-0",
         "entries-read": 5, "lag": 3},
        {b"name": b"u-t2", b"pending": 0, b"last-delivered-id": b"1-0", b"lag": None},
    ]
    groups = parse_groups(reply)
    assert groups["u-t1"] == GroupBacklog("u-t1", lag=3, pending=2, last_delivered="5-0")
    assert groups["u-t1"].backlog == 5
    assert groups["u-t2"].lag is None and groups["u-t2"].backlog is None


def test_describe_lines_show_the_backend_and_each_triggers_backlog() -> None:
    b = broker("FlintRedis")
    b["status"]["annotations"] = {"eventing.flint.dev/backend": "redis"}
    answer = {"backend": "redis", "stream": "flint:{u-b}:events", "triggers": [
        {"name": "t1", **GroupBacklog("u-t1", 3, 2, "5-0").to_wire()},
        {"name": "t2", **GroupBacklog("u-t2", 10000, 0, "1-0", counted=True, capped=True).to_wire()},
        {"name": "t3", "group": None, "backlog": None},
    ]}
    lines = backend_lines(b, answer)
    assert lines[0] == "Backend:     redis (stream flint:{u-b}:events)"
    assert lines[1] == "Backlog:"
    assert lines[2].split() == ["TRIGGER", "BACKLOG", "LAG", "PENDING", "NOTE"]
    assert lines[3].split() == ["t1", "5", "3", "2"]
    assert lines[4].split()[:4] == ["t2", ">=10000", "10000", "0"]
    assert "no consumer group yet" in lines[5]
    assert backlog_lines("Error from server (ServiceUnavailable): Redis did not answer") == [
        "Backlog:     unavailable (Error from server (ServiceUnavailable): Redis did not answer)"]
    assert backend_lines(broker("Other"), "Error from server (NotFound): …") == []


def test_a_sqlite_brokers_backlog_is_the_dispatchers_gauge() -> None:
    text = (
        "# HELP flint_dispatcher_backlog_events Events not yet handled.\n"
        "# TYPE flint_dispatcher_backlog_events gauge\n"
        'flint_dispatcher_backlog_events{namespace="ns",trigger="t1"} 7.0\n'
        'flint_dispatcher_backlog_events{namespace="other",trigger="t1"} 1.0\n'
        "# TYPE flint_dispatcher_event_loop_lag_seconds gauge\n"
        "flint_dispatcher_event_loop_lag_seconds 0.001\n"
    )
    gauges = dispatcher_backlogs(text)
    assert gauges == {("ns", "t1"): 7, ("other", "t1"): 1}
    b = broker("FlintSQLite")
    answer = backlog_answer(b, "sqlite", [trigger("t1"), trigger("t2")], None, gauges)
    assert [(t["name"], t["backlog"]) for t in answer["triggers"]] == [("t1", 7), ("t2", None)]
    b["status"]["annotations"] = {"eventing.flint.dev/backend": "sqlite"}
    lines = backend_lines(b, answer)
    assert lines[0] == "Backend:     sqlite"
    assert [line.split() for line in lines[2:]] == [["TRIGGER", "BACKLOG"], ["t1", "7"], ["t2", "-"]]
    down = backlog_answer(b, "sqlite", [trigger("t1")], None, "the dispatcher did not answer")
    assert "the dispatcher did not answer" in down["note"] and down["triggers"][0]["backlog"] is None


def test_the_controllers_engine_must_be_known() -> None:
    assert ControllerSettings().engine == "embedded"
    with pytest.raises(ValueError, match="unknown engine 'nomad' \\(known: embedded, kubernetes\\)"):
        ControllerSettings(engine="nomad")
    with pytest.raises(ValueError, match="redis_check_every_s must be above 0"):
        ControllerSettings(redis_check_every_s=0)


def test_without_redis_the_message_says_what_to_do_on_each_engine() -> None:
    from controller.reconcilers.broker import broker_needs_redis, redis_not_configured

    flint = {"metadata": {"annotations": {"eventing.knative.dev/broker.class": "Flint"}}}
    on_cluster = broker_needs_redis(flint, "kubernetes")
    assert on_cluster.startswith("the broker's class Flint keeps its log on Redis here")
    assert "FLINT_REDIS_URL" in on_cluster and "deploy/overlays/redis" in on_cluster
    assert "flint up" not in on_cluster
    assert broker_needs_redis(flint, "embedded") == REDIS_NOT_CONFIGURED
    channel = redis_not_configured("a RedisChannel keeps its log on Redis", "kubernetes")
    assert channel.startswith("a RedisChannel keeps its log on Redis but") and "broker" not in channel
