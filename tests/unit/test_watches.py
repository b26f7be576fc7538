"""The watch mappers (`controller.reconcilers.watches`): which keys a change enqueues."""

from __future__ import annotations

from typing import Any

from controller.reconcilers.watches import (
    ADDED,
    DELETED,
    MODIFIED,
    Change,
    all_in_namespace,
    every,
    itself,
    itself_even_deleted,
    matching,
    named_by_label,
    on,
    owners,
    unless_deleted,
)
from controller.store.base import Kind

Obj = dict[str, Any]
A = Kind("example.dev", "as")
B = Kind("example.dev", "bs")


def obj(name: str, ns: str = "default", **meta: Any) -> Obj:
    return {"metadata": {"name": name, "namespace": ns, **meta}}


class Caches:
    def __init__(self, objects: dict[Kind, list[Obj]]) -> None:
        self.objects = objects

    def list(self, kind: Kind, namespace: str | None = None) -> list[Obj]:
        return [o for o in self.objects.get(kind, [])
                if namespace is None or o["metadata"]["namespace"] == namespace]


NONE = Caches({})
CACHES = Caches({A: [obj("a1"), obj("a2"), obj("a3", "other")]})


def test_itself_is_the_changed_object_unless_deleted() -> None:
    assert list(itself(Change(ADDED, obj("x", "ns")), NONE)) == [("ns", "x")]
    assert list(itself(Change(MODIFIED, obj("x"), obj("x")), NONE)) == [("default", "x")]
    assert list(itself(Change(DELETED, obj("x")), NONE)) == []
    assert list(itself_even_deleted(Change(DELETED, obj("x")), NONE)) == [("default", "x")]


def test_a_label_names_the_owner_in_the_same_namespace() -> None:
    mapper = named_by_label("serving.knative.dev/service")
    child = obj("svc-00001", "ns", labels={"serving.knative.dev/service": "svc"})
    assert list(mapper(Change(MODIFIED, child), NONE)) == [("ns", "svc")]
    assert list(mapper(Change(DELETED, child), NONE)) == [("ns", "svc")]  # the owner sees it go
    assert list(mapper(Change(ADDED, obj("loose", "ns")), NONE)) == []
    assert list(mapper(Change(ADDED, obj("e", labels={"serving.knative.dev/service": ""})),
                       NONE)) == []


def test_owner_references_of_one_kind_only() -> None:
    refs = [{"kind": "Channel", "name": "ch", "uid": "u1"},
            {"kind": "Service", "name": "svc", "uid": "u2"}, {"kind": "Channel"}]
    child = obj("imc", "ns", ownerReferences=refs)
    assert list(owners("Channel")(Change(ADDED, child), NONE)) == [("ns", "ch")]
    assert list(owners("Broker")(Change(ADDED, child), NONE)) == []


def test_all_in_namespace_and_every() -> None:
    change = Change(MODIFIED, obj("b", "default"))
    assert sorted(all_in_namespace(A)(change, CACHES)) == [("default", "a1"), ("default", "a2")]
    assert sorted(every(A)(change, CACHES)) == [("default", "a1"), ("default", "a2"), ("other", "a3")]
    assert list(all_in_namespace(B)(change, CACHES)) == []


def test_matching_asks_the_predicate_with_the_change() -> None:
    caches = Caches({A: [obj("t1", spec="b"), obj("t2", spec="c"), obj("t3", "other", spec="b")]})
    names_it = matching(A, lambda o, ch: o["metadata"]["spec"] == ch.name)
    assert list(names_it(Change(MODIFIED, obj("b")), caches)) == [("default", "t1")]


def test_filters_by_type() -> None:
    everything = all_in_namespace(A)
    assert list(unless_deleted(everything)(Change(DELETED, obj("b")), CACHES)) == []
    assert len(list(unless_deleted(everything)(Change(ADDED, obj("b")), CACHES))) == 2
    added_or_gone = on((ADDED, DELETED), everything)
    assert list(added_or_gone(Change(MODIFIED, obj("b"), obj("b")), CACHES)) == []
    assert len(list(added_or_gone(Change(DELETED, obj("b")), CACHES))) == 2


def test_versions_give_the_object_then_its_past() -> None:
    new, old = obj("x", spec=2), obj("x", spec=1)
    assert list(Change(MODIFIED, new, old).versions()) == [new, old]
    assert list(Change(ADDED, new).versions()) == [new]
