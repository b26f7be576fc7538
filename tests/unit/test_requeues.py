"""What the controller looks at again when something outside the objects changed, and what a
deleted owner leaves (`controller.requeues`), over caches the test controls."""

from __future__ import annotations

from typing import Any

from support.caches import ObjectCache

from controller.reconcilers.context import (
    BROKERS,
    CONFIGURATIONS,
    REDIS_CHANNELS,
    ROUTES,
    SERVICES,
    TRIGGERS,
    Informers,
)
from controller.requeues import owned, redis_dependents, unready_eventing, unready_routes


def obj(name: str, *, ready: str | None = None, cond: str = "Ready", cls: str | None = None,
        uid: str = "", owner: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}"}
    if cls:
        meta["annotations"] = {"eventing.knative.dev/broker.class": cls}
    if owner:
        meta["ownerReferences"] = [{"uid": owner}]
    status = {"conditions": [{"type": cond, "status": ready}]} if ready else {}
    return {"metadata": meta, "status": status}


def caches(**by_kind: list[dict[str, Any]]) -> Informers:
    kinds = {"brokers": BROKERS, "triggers": TRIGGERS, "redis_channels": REDIS_CHANNELS,
             "routes": ROUTES, "services": SERVICES, "configurations": CONFIGURATIONS}
    c: Any = {kinds[k]: ObjectCache(v) for k, v in by_kind.items()}
    return Informers(c)


def test_a_redis_change_requeues_the_redis_brokers_and_channels_only() -> None:
    c = caches(brokers=[obj("r", cls="FlintRedis"), obj("s", cls="Flint")],
               redis_channels=[obj("ch")])
    assert list(redis_dependents(c, "embedded")) == [(BROKERS, ("default", "r")),
                                                    (REDIS_CHANNELS, ("default", "ch"))]
    # On Kubernetes a `Flint` broker's log is Redis too.
    assert (BROKERS, ("default", "s")) in list(redis_dependents(c, "kubernetes"))


def test_progress_requeues_unready_brokers_and_every_trigger() -> None:
    c = caches(brokers=[obj("ready", ready="True"), obj("not", ready="False"), obj("new")],
               triggers=[obj("t", ready="True")])
    assert list(unready_eventing(c)) == [(BROKERS, ("default", "not")), (BROKERS, ("default", "new")),
                                         (TRIGGERS, ("default", "t"))]


def test_acks_requeue_the_routes_whose_ingress_is_not_ready() -> None:
    c = caches(routes=[obj("a", ready="True", cond="IngressReady"), obj("b", ready="Unknown",
                                                                      cond="IngressReady"),
                       obj("c", ready="True")])  # Ready but no IngressReady yet
    assert list(unready_routes(c)) == [(ROUTES, ("default", "b")), (ROUTES, ("default", "c"))]


def test_what_an_owner_owned_of_every_kind_in_its_namespace() -> None:
    svc = obj("hello", uid="u1")
    cfg = obj("hello", owner="u1")
    other = obj("other", owner="u2")
    c = caches(services=[svc], configurations=[cfg, other], routes=[obj("hello", owner="u1")])
    assert sorted((k.plural, o["metadata"]["name"]) for k, o in owned(c, svc)) == [
        ("configurations", "hello"), ("routes", "hello")]
    assert list(owned(c, {"metadata": {"name": "x"}})) == []  # no uid: owns nothing
