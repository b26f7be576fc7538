"""The dispatch plan built from Broker and Trigger objects (plain dicts shaped like Kubernetes objects)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from controller.eventing.plan import (
    ConsumerPlan,
    DispatchPlan,
    RedisLog,
    SqliteLog,
    UnknownLogBackend,
    broker_log_relpath,
    build_plan,
    log_from_wire,
)

CLASS = "eventing.knative.dev/broker.class"
ORDER = "kafka.eventing.knative.dev/delivery.order"
DEFAULT_DELIVERY = {"retry": 10, "backoffPolicy": "exponential", "backoffDelay": "PT0.2S"}


def broker(
    name: str = "default",
    namespace: str = "ns",
    *,
    uid: str | None = None,
    cls: str | None = "Flint",
    delivery: dict[str, Any] | None = None,
    dls_uri: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid or f"buid-{namespace}-{name}"}
    if cls is not None:
        meta["annotations"] = {CLASS: cls}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    status: dict[str, Any] = {
        "address": {"url": f"http://broker-ingress.localhost/{namespace}/{name}"},
    }
    if dls_uri is not None:
        status["deadLetterSinkUri"] = dls_uri
    spec: dict[str, Any] = {}
    if delivery is not None:
        spec["delivery"] = delivery
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Broker",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def trigger(
    name: str = "t1",
    namespace: str = "ns",
    *,
    broker_name: str = "default",
    uid: str | None = "auto",
    subscriber: str | None = "http://sub.ns.localhost",
    delivery: dict[str, Any] | None = None,
    dls_uri: str | None = None,
    annotations: dict[str, str] | None = None,
    filter_attributes: dict[str, str] | None = None,
    filters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if uid is not None:
        meta["uid"] = f"tuid-{namespace}-{name}" if uid == "auto" else uid
    if annotations is not None:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"broker": broker_name, "subscriber": {"uri": subscriber or "http://x"}}
    if delivery is not None:
        spec["delivery"] = delivery
    if filter_attributes is not None:
        spec["filter"] = {"attributes": filter_attributes}
    if filters is not None:
        spec["filters"] = filters
    status: dict[str, Any] = {}
    if subscriber is not None:
        status["subscriberUri"] = subscriber
    if dls_uri is not None:
        status["deadLetterSinkUri"] = dls_uri
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": meta,
        "spec": spec,
        "status": status,
    }


def only(plan: DispatchPlan) -> ConsumerPlan:
    assert len(plan.triggers) == 1
    return plan.triggers[0]


# ------------------------------------------------------------------------------------------
# which triggers are in the plan
# ------------------------------------------------------------------------------------------


def test_a_ready_trigger_is_planned_with_its_broker() -> None:
    plan = build_plan([broker(uid="b-123")], [trigger()], version=7)
    assert plan.version == 7
    t = only(plan)
    assert t.uid == "tuid-ns-t1"
    assert (t.namespace, t.name, t.key) == ("ns", "t1", "ns/t1")
    assert t.broker == "default"
    assert t.log_uid == "b-123"
    assert t.log == SqliteLog("eventing/logs/b-123.db")
    assert t.log.path == broker_log_relpath("b-123")
    assert t.subscriber == "http://sub.ns.localhost"
    assert t.reply == "http://broker-ingress.localhost/ns/default"
    assert t.filter_attributes is None
    assert t.filters is None
    assert t.ordered is False


def test_broker_log_relpath() -> None:
    assert broker_log_relpath("abc") == "eventing/logs/abc.db"


def test_no_broker_no_trigger() -> None:
    assert build_plan([], [trigger()]).triggers == ()


def test_broker_of_another_namespace_does_not_count() -> None:
    assert build_plan([broker(namespace="other")], [trigger()]).triggers == ()


def test_broker_of_another_name_does_not_count() -> None:
    assert build_plan([broker(name="other")], [trigger()]).triggers == ()


@pytest.mark.parametrize("cls", [None, "", "MTChannelBasedBroker", "Kafka", "flint"])
def test_broker_of_another_class_is_not_planned(cls: str | None) -> None:
    assert build_plan([broker(cls=cls)], [trigger()]).triggers == ()


def test_broker_being_deleted_is_not_planned() -> None:
    assert build_plan([broker(deleting=True)], [trigger()]).triggers == ()


def test_trigger_without_subscriber_uri_is_not_planned() -> None:
    assert build_plan([broker()], [trigger(subscriber=None)]).triggers == ()


@pytest.mark.parametrize("uid", [None, ""])
def test_trigger_without_uid_is_not_planned(uid: str | None) -> None:
    assert build_plan([broker()], [trigger(uid=uid)]).triggers == ()


def test_trigger_without_status_is_not_planned() -> None:
    t = trigger()
    del t["status"]
    assert build_plan([broker()], [t]).triggers == ()


def test_triggers_are_sorted_by_namespace_then_name() -> None:
    brokers = [broker(namespace="b"), broker(namespace="a")]
    triggers = [
        trigger("z", "b"),
        trigger("m", "a"),
        trigger("a", "b"),
        trigger("b", "a"),
    ]
    plan = build_plan(brokers, triggers)
    assert [t.key for t in plan.triggers] == ["a/b", "a/m", "b/a", "b/z"]


def test_ready_and_unready_triggers_mix() -> None:
    triggers = [trigger("ok"), trigger("pending", subscriber=None), trigger("lost", broker_name="gone")]
    assert [t.name for t in build_plan([broker()], triggers).triggers] == ["ok"]


# ------------------------------------------------------------------------------------------
# delivery and dead letters
# ------------------------------------------------------------------------------------------


def test_default_delivery_is_knatives_broker_default() -> None:
    t = only(build_plan([broker()], [trigger()]))
    assert t.delivery == DEFAULT_DELIVERY
    assert t.dead_letter_uri is None


def test_broker_delivery_applies_without_a_trigger_delivery() -> None:
    b = broker(delivery={"retry": 3, "backoffPolicy": "linear"}, dls_uri="http://dls.broker")
    t = only(build_plan([b], [trigger(dls_uri="http://dls.trigger-status")]))
    assert t.delivery == {"retry": 3, "backoffPolicy": "linear"}
    assert t.dead_letter_uri == "http://dls.broker"


def test_trigger_delivery_wins_over_the_brokers() -> None:
    b = broker(delivery={"retry": 3}, dls_uri="http://dls.broker")
    sink = {"deadLetterSink": {"uri": "http://dls.trigger"}}
    tr = trigger(delivery={"retry": 1, "timeout": "PT5S", **sink}, dls_uri="http://dls.trigger")
    t = only(build_plan([b], [tr]))
    assert t.delivery == {"retry": 1, "timeout": "PT5S"}
    assert t.dead_letter_uri == "http://dls.trigger"


def test_empty_trigger_delivery_falls_back_to_the_brokers() -> None:
    b = broker(delivery={"retry": 3}, dls_uri="http://dls.broker")
    t = only(build_plan([b], [trigger(delivery={}, dls_uri="http://dls.trigger")]))
    assert t.delivery == {"retry": 3}
    assert t.dead_letter_uri == "http://dls.broker"


def test_a_trigger_delivery_without_a_sink_falls_back_to_the_brokers_sink() -> None:
    # Knative's trigger reconciler: the trigger's dead-letter sink, else its broker's.
    b = broker(dls_uri="http://dls.broker")
    t = only(build_plan([b], [trigger(delivery={"retry": 2})]))
    assert t.dead_letter_uri == "http://dls.broker"
    assert only(build_plan([broker()], [trigger(delivery={"retry": 2})])).dead_letter_uri is None


def test_dead_letter_sink_is_removed_from_the_delivery() -> None:
    sink = {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "dls"}}
    tr = trigger(delivery={"retry": 2, "deadLetterSink": sink}, dls_uri="http://dls.ns.localhost")
    t = only(build_plan([broker()], [tr]))
    assert t.delivery == {"retry": 2}
    assert t.dead_letter_uri == "http://dls.ns.localhost"


def test_delivery_in_the_plan_is_a_copy() -> None:
    delivery = {"retry": 2, "deadLetterSink": {"uri": "http://dls"}}
    tr = trigger(delivery=delivery)
    t = only(build_plan([broker()], [tr]))
    t.delivery["retry"] = 99
    assert tr["spec"]["delivery"] == {"retry": 2, "deadLetterSink": {"uri": "http://dls"}}
    again = only(build_plan([broker()], [trigger()]))
    again.delivery["retry"] = 99
    assert only(build_plan([broker()], [trigger()])).delivery == DEFAULT_DELIVERY


# ------------------------------------------------------------------------------------------
# ordering and filters
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotations", "ordered"),
    [
        (None, False),
        ({ORDER: "ordered"}, True),
        ({ORDER: "unordered"}, False),
        ({ORDER: "Ordered"}, False),
        ({"other": "ordered"}, False),
    ],
)
def test_ordered_from_the_annotation(annotations: dict[str, str] | None, ordered: bool) -> None:
    assert only(build_plan([broker()], [trigger(annotations=annotations)])).ordered is ordered


def test_filters_are_carried() -> None:
    filters: list[dict[str, Any]] = [{"exact": {"type": "a"}}, {"not": {"prefix": {"source": "/x"}}}]
    tr = trigger(filter_attributes={"type": "a", "source": ""}, filters=filters)
    t = only(build_plan([broker()], [tr]))
    assert t.filter_attributes == {"type": "a", "source": ""}
    assert t.filters == filters


def test_empty_filters_are_none() -> None:
    t = only(build_plan([broker()], [trigger(filter_attributes={}, filters=[])]))
    assert t.filter_attributes is None
    assert t.filters is None


# ------------------------------------------------------------------------------------------
# wire format
# ------------------------------------------------------------------------------------------


def test_wire_round_trip() -> None:
    brokers = [broker(), broker("b2", dls_uri="http://dls.b2", delivery={"retry": 4})]
    triggers = [
        trigger("t1", filter_attributes={"type": "x"}, annotations={ORDER: "ordered"}),
        trigger("t2", broker_name="b2", filters=[{"suffix": {"type": ".done"}}]),
        trigger("t3", delivery={"retry": 1, "backoffDelay": "PT1S"}, dls_uri="http://dls.t3"),
    ]
    plan = build_plan(brokers, triggers, version=1234)
    assert len(plan.triggers) == 3
    wire = orjson.loads(orjson.dumps(plan.to_wire()))
    assert wire["version"] == 1234
    assert [t["name"] for t in wire["triggers"]] == ["t1", "t2", "t3"]
    back = DispatchPlan.from_wire(wire)
    assert back == plan


def test_from_wire_of_an_empty_plan() -> None:
    assert DispatchPlan.from_wire({"version": "5"}) == DispatchPlan(version=5)
    assert DispatchPlan.from_wire({"version": 5, "triggers": None}) == DispatchPlan(version=5)
    assert DispatchPlan(version=3).to_wire() == {"version": 3, "triggers": [], "known": []}


def test_the_wire_names_each_consumers_log_backend_and_key() -> None:
    wire = orjson.loads(orjson.dumps(build_plan([broker(uid="b-9")], [trigger()], version=1).to_wire()))
    [t] = wire["triggers"]
    assert t["log"] == {"backend": "sqlite", "path": "eventing/logs/b-9.db"}
    assert t["log_uid"] == "b-9"
    assert DispatchPlan.from_wire(wire).triggers[0].log == SqliteLog("eventing/logs/b-9.db")


def test_log_from_wire_decodes_sqlite() -> None:
    wire = {"backend": "sqlite", "path": "eventing/logs/x.db"}
    assert log_from_wire(wire) == SqliteLog("eventing/logs/x.db")


def test_log_from_wire_decodes_redis() -> None:
    wire = {"backend": "redis", "stream": "flint:{u1}:events", "group": "t1"}
    assert log_from_wire(wire) == RedisLog("flint:{u1}:events", "t1")
    assert RedisLog("flint:{u1}:events", "t1").to_wire() == wire


@pytest.mark.parametrize("log", [{"backend": "redis"}, {"backend": "redis", "stream": "s"},
                                 {"backend": "redis", "stream": "", "group": "g"}])
def test_a_redis_log_without_its_stream_and_group_is_refused(log: object) -> None:
    with pytest.raises(ValueError, match="stream and a group"):
        log_from_wire(log)


@pytest.mark.parametrize("backend", ["kafka", "", None, "SQLITE"])
def test_an_unknown_log_backend_is_refused_by_name(backend: object) -> None:
    with pytest.raises(UnknownLogBackend, match=f"unknown log backend {backend!r}.*knows sqlite, redis"):
        log_from_wire({"backend": backend, "path": "eventing/logs/x.db"})


@pytest.mark.parametrize(
    "log", ["eventing/logs/x.db", None, {"backend": "sqlite"}, {"backend": "sqlite", "path": 3}]
)
def test_a_bare_path_or_a_log_without_its_key_is_refused(log: object) -> None:
    with pytest.raises(ValueError, match="log"):
        log_from_wire(log)


def test_a_plan_with_an_unknown_backend_is_refused() -> None:
    wire = build_plan([broker()], [trigger()], version=1).to_wire()
    wire["triggers"][0]["log"] = {"backend": "kafka", "topic": "s"}
    with pytest.raises(UnknownLogBackend):
        DispatchPlan.from_wire(wire)


def test_from_wire_rejects_unknown_fields() -> None:
    wire = build_plan([broker()], [trigger()], version=1).to_wire()
    wire["triggers"][0]["surprise"] = 1
    with pytest.raises(TypeError):
        DispatchPlan.from_wire(wire)


def test_known_lists_every_trigger_uid_even_the_unrunnable() -> None:
    runnable = trigger()
    orphan = trigger(name="orphan", broker_name="missing")
    orphan["metadata"]["uid"] = "uid-orphan"
    plan = build_plan([broker()], [runnable, orphan])
    assert [t.name for t in plan.triggers] == [runnable["metadata"]["name"]]
    assert set(plan.known) == {runnable["metadata"]["uid"], "uid-orphan"}
    assert DispatchPlan.from_wire(plan.to_wire()) == plan
