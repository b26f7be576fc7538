"""Each reconciler's declared watches (`WATCHES` in its module): which changes wake it for which
keys, and what a deleted object leaves on Redis for the janitor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest
from support.caches import ObjectCache

from controller.api.eventing import BROKER_CLASS_ANNOTATION, FLINT_REDIS_BROKER_CLASS
from controller.informer import Informer
from controller.reconcilers import (
    broker,
    channels,
    configuration,
    revision,
    route,
    service,
    subscription,
    trigger,
)
from controller.reconcilers.context import (
    BROKERS,
    CHANNELS,
    CONFIGURATIONS,
    IN_MEMORY_CHANNELS,
    LABEL_CONFIGURATION,
    LABEL_SERVICE,
    REDIS_CHANNELS,
    REFERABLE_KINDS,
    REVISIONS,
    ROUTES,
    SERVICES,
    SUBSCRIPTIONS,
    TRIGGERS,
    EventingContext,
    Informers,
)
from controller.reconcilers.publisher import SNAPSHOT_KINDS
from controller.reconcilers.redis_leftovers import Leftovers, leftovers
from controller.reconcilers.sets import EVENTING, PLAN_KINDS, SERVING
from controller.reconcilers.watches import ADDED, DELETED, MODIFIED, Change, Reconciler
from controller.settings import ControllerSettings
from controller.store.base import Kind

Obj = dict[str, Any]


def obj(name: str, ns: str = "default", *, uid: str = "", labels: dict[str, str] | None = None,
        annotations: dict[str, str] | None = None, refs: list[Obj] | None = None, **body: Any) -> Obj:
    meta: Obj = {"name": name, "namespace": ns, "uid": uid or f"uid-{name}"}
    if labels:
        meta["labels"] = labels
    if annotations:
        meta["annotations"] = annotations
    if refs:
        meta["ownerReferences"] = refs
    return {"metadata": meta, **body}


ALL_KINDS = (SERVICES, CONFIGURATIONS, REVISIONS, ROUTES, BROKERS, TRIGGERS, CHANNELS,
             IN_MEMORY_CHANNELS, REDIS_CHANNELS, SUBSCRIPTIONS)


def caches(**objects: list[Obj]) -> Informers:
    by_name = {"services": SERVICES, "configurations": CONFIGURATIONS, "revisions": REVISIONS,
               "routes": ROUTES, "brokers": BROKERS, "triggers": TRIGGERS, "channels": CHANNELS,
               "imcs": IN_MEMORY_CHANNELS, "rchans": REDIS_CHANNELS, "subscriptions": SUBSCRIPTIONS}
    by_kind = {k: ObjectCache([]) for k in ALL_KINDS}
    for name, objs in objects.items():
        by_kind[by_name[name]] = ObjectCache(objs)
    return Informers(cast(dict[Kind, Informer], by_kind))


def woken(r: Reconciler[Any], kind: Kind, change: Change, c: Informers) -> set[tuple[str, str]]:
    """The keys of `r`'s kind a change of `kind` enqueues, over all of `r`'s watches."""
    return {key for w in r.watches if w.kind == kind for key in w.keys(change, c)}


EMPTY = caches()


def test_every_kind_the_controller_reconciles_is_run_once() -> None:
    every: list[Reconciler[Any]] = [*SERVING, *EVENTING]
    assert sorted(str(r.kind) for r in every) == sorted(map(str, ALL_KINDS))
    for r in every:  # each wakes for its own objects at least
        assert any(w.kind == r.kind for w in r.watches), r.kind


def test_a_service_follows_its_configuration_and_route_by_their_label() -> None:
    child = obj("svc", labels={LABEL_SERVICE: "svc"})
    assert woken(service.RECONCILER, CONFIGURATIONS, Change(MODIFIED, child), EMPTY) == {("default", "svc")}
    assert woken(service.RECONCILER, ROUTES, Change(DELETED, child), EMPTY) == {("default", "svc")}
    assert woken(service.RECONCILER, SERVICES, Change(DELETED, obj("svc")), EMPTY) == set()
    assert woken(service.RECONCILER, ROUTES, Change(ADDED, obj("loose")), EMPTY) == set()


def test_a_configuration_follows_its_revisions_and_revisions_their_configuration() -> None:
    rev = obj("cfg-00002", labels={LABEL_CONFIGURATION: "cfg"})
    other = obj("x-00001", labels={LABEL_CONFIGURATION: "x"})
    assert woken(configuration.RECONCILER, REVISIONS, Change(MODIFIED, rev), EMPTY) == {("default", "cfg")}
    c = caches(revisions=[rev, other])
    assert woken(revision.RECONCILER, CONFIGURATIONS, Change(MODIFIED, obj("cfg")), c) == {
        ("default", "cfg-00002")}
    # A deleted revision is still reconciled: its replicas are stopped.
    assert woken(revision.RECONCILER, REVISIONS, Change(DELETED, rev), c) == {("default", "cfg-00002")}


def test_a_route_change_wakes_the_revisions_of_its_namespace() -> None:
    c = caches(revisions=[obj("a-1"), obj("b-1"), obj("c-1", "elsewhere")])
    assert woken(revision.RECONCILER, ROUTES, Change(MODIFIED, obj("r")), c) == {
        ("default", "a-1"), ("default", "b-1")}


def test_routes_follow_hosts_configurations_and_revisions() -> None:
    r1 = obj("r1", spec={"traffic": [{"configurationName": "cfg", "percent": 100}]})
    r2 = obj("r2", spec={"traffic": [{"revisionName": "x-1", "percent": 100}]})
    r3 = obj("r3", "elsewhere")
    c = caches(routes=[r1, r2, r3])
    # A route appearing or going may make or clear a host conflict anywhere.
    assert woken(route.RECONCILER, ROUTES, Change(ADDED, obj("new")), c) == {
        ("default", "new"), ("default", "r1"), ("default", "r2"), ("elsewhere", "r3")}
    assert woken(route.RECONCILER, ROUTES, Change(MODIFIED, r1, r1), c) == {("default", "r1")}
    assert woken(route.RECONCILER, CONFIGURATIONS, Change(MODIFIED, obj("cfg")), c) == {("default", "r1")}
    assert woken(route.RECONCILER, REVISIONS, Change(MODIFIED, obj("x-1")), c) == {
        ("default", "r1"), ("default", "r2")}


def test_triggers_follow_their_broker_and_whatever_they_may_refer_to() -> None:
    t1, t2 = obj("t1", spec={"broker": "b"}), obj("t2", spec={"broker": "other"})
    c = caches(triggers=[t1, t2, obj("t3", "elsewhere", spec={"broker": "b"})])
    assert woken(trigger.RECONCILER, BROKERS, Change(MODIFIED, obj("b")), c) >= {("default", "t1")}
    for kind in REFERABLE_KINDS:  # a subscriber or dead-letter sink may resolve now
        assert woken(trigger.RECONCILER, kind, Change(MODIFIED, obj("x")), c) == {
            ("default", "t1"), ("default", "t2")}, kind


def test_a_broker_with_a_dead_letter_sink_follows_the_addressables() -> None:
    with_dls = obj("b1", spec={"delivery": {"deadLetterSink": {"uri": "http://x"}}})
    c = caches(brokers=[with_dls, obj("b2", spec={})])
    for kind in REFERABLE_KINDS:
        assert woken(broker.RECONCILER, kind, Change(MODIFIED, obj("svc")), c) >= {("default", "b1")}
        assert ("default", "b2") not in woken(broker.RECONCILER, kind, Change(MODIFIED, obj("svc")), c)


def test_channels_follow_their_backing_channel_and_the_subscriptions() -> None:
    imc = obj("ch", refs=[{"kind": "Channel", "name": "ch", "uid": "uid-ch"}])
    assert woken(channels.CHANNEL, IN_MEMORY_CHANNELS, Change(MODIFIED, imc), EMPTY) == {("default", "ch")}
    assert woken(channels.CHANNEL, REDIS_CHANNELS, Change(MODIFIED, imc), EMPTY) == {("default", "ch")}
    c = caches(channels=[obj("ch")], imcs=[obj("i")], rchans=[obj("r")])
    sub = Change(ADDED, obj("s"))
    assert woken(channels.CHANNEL, SUBSCRIPTIONS, sub, c) == {("default", "ch")}
    assert woken(channels.IN_MEMORY_CHANNEL, SUBSCRIPTIONS, sub, c) == {("default", "i")}
    assert woken(channels.REDIS_CHANNEL, SUBSCRIPTIONS, sub, c) == {("default", "r")}


def test_subscriptions_follow_whatever_they_may_refer_to() -> None:
    c = caches(subscriptions=[obj("s1"), obj("s2", "elsewhere")])
    for kind in REFERABLE_KINDS:
        assert woken(subscription.RECONCILER, kind, Change(MODIFIED, obj("x")), c) == {("default", "s1")}


def test_snapshot_and_plan_inputs() -> None:
    assert set(map(str, SNAPSHOT_KINDS)) == {str(k) for k in (ROUTES, REVISIONS, BROKERS,
                                                              IN_MEMORY_CHANNELS, REDIS_CHANNELS)}
    assert SUBSCRIPTIONS in PLAN_KINDS and TRIGGERS in PLAN_KINDS and SERVICES not in PLAN_KINDS


# -- what a deletion leaves on Redis ----------------------------------------------------------


def eventing(c: Informers, tmp_path: Path) -> EventingContext:
    settings = ControllerSettings(state_dir=tmp_path)
    return EventingContext(store=cast(Any, None), settings=settings, informers=c, hub=cast(Any, None),
                           snapshot_dirty=lambda: None, dispatch=cast(Any, None),
                           plan_dirty=lambda: None)


REDIS_BROKER = obj("rb", uid="u-rb", annotations={BROKER_CLASS_ANNOTATION: FLINT_REDIS_BROKER_CLASS})
SQLITE_BROKER = obj("sb", uid="u-sb")


@pytest.mark.parametrize(("kind", "deleted", "expected"), [
    (BROKERS, REDIS_BROKER, Leftovers(logs=("u-rb",))),
    (BROKERS, SQLITE_BROKER, Leftovers()),
    (REDIS_CHANNELS, obj("rc", uid="u-rc"), Leftovers(logs=("u-rc",))),
    (IN_MEMORY_CHANNELS, obj("imc", uid="u-imc"), Leftovers()),
    (TRIGGERS, obj("t", uid="u-t", spec={"broker": "rb"}), Leftovers(consumers=(("u-rb", "u-t"),))),
    (TRIGGERS, obj("t", uid="u-t", spec={"broker": "sb"}), Leftovers()),
    (TRIGGERS, obj("t", uid="u-t", spec={"broker": "gone"}), Leftovers()),
    (SUBSCRIPTIONS, obj("s", uid="u-s", spec={"channel": {"kind": "RedisChannel", "name": "rc"}}),
     Leftovers(consumers=(("u-rc", "u-s"),))),
    (SUBSCRIPTIONS, obj("s", uid="u-s", spec={"channel": {"kind": "InMemoryChannel", "name": "imc"}}),
     Leftovers()),
    (SERVICES, obj("svc"), Leftovers()),
])
def test_leftovers_of_a_deletion(kind: Kind, deleted: Obj, expected: Leftovers, tmp_path: Path) -> None:
    c = caches(brokers=[REDIS_BROKER, SQLITE_BROKER], rchans=[obj("rc", uid="u-rc", kind="RedisChannel")],
               imcs=[obj("imc", uid="u-imc", kind="InMemoryChannel")])
    assert leftovers(eventing(c, tmp_path), kind, deleted) == expected


# -- what a deletion sets off in the controller -----------------------------------------------


@pytest.mark.parametrize(("engine", "collected"), [("embedded", True), ("kubernetes", False)])
async def test_a_deleted_owner_s_children_are_collected_on_the_embedded_engine_only(
        engine: str, collected: bool, tmp_path: Path) -> None:
    from controller.app import Controller
    from controller.store.memory import MemoryStore

    store = MemoryStore()
    await store.open()
    owner = obj("svc", uid="owner-uid")
    child = await store.create(CONFIGURATIONS, obj("svc", refs=[{"kind": "Service", "name": "svc",
                                                                   "uid": "owner-uid"}]))
    loose = await store.create(CONFIGURATIONS, obj("other", refs=[{"kind": "Service", "name": "x"}]))
    c = Controller(ControllerSettings(state_dir=tmp_path, engine=engine), store=store)
    c.informers = caches(configurations=[child, loose])
    c._effects(SERVICES)("DELETED", owner, None)
    await asyncio.gather(*c._background)
    names = {o["metadata"]["name"] for o in (await store.list(CONFIGURATIONS))[0]}
    assert names == ({"other"} if collected else {"svc", "other"})  # a uid-less ref owns nothing
    await store.close()
