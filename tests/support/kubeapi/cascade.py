"""What a delete sets off in a cluster: the garbage collector, the namespace controller, a CRD's objects."""

from __future__ import annotations

import asyncio
import copy
from typing import TYPE_CHECKING, Any

from .clock import now_rfc3339
from .resources import Resource

if TYPE_CHECKING:
    from .store import Key, Store

JSON = dict[str, Any]


def delete_namespace(store: Store, res: Resource, key: Key, current: JSON) -> JSON:
    """A namespace terminates: its objects are deleted (finalizers hold them), then it goes."""
    ns = current["metadata"]["name"]
    if not current["metadata"].get("deletionTimestamp"):
        new = copy.deepcopy(current)
        new["metadata"]["deletionTimestamp"] = now_rfc3339()
        new["status"] = {"phase": "Terminating"}
        store.commit(res, "MODIFIED", key, new, copy.deepcopy(current))
        current = new
    for (g, p, o_ns, name), obj in list(store.objects.items()):
        if o_ns == ns and not obj["metadata"].get("deletionTimestamp"):
            store.delete_if_present(g, p, ns, name)
    finish_namespace(store, ns)
    return store.view(res, store.objects.get(key, current))


def finish_namespace(store: Store, ns: str) -> JSON | None:
    key: Key = ("", "namespaces", "", ns)
    current = store.objects.get(key)
    if current is None or not current["metadata"].get("deletionTimestamp"):
        return None
    if any(k[2] == ns for k in store.objects):
        return None
    res = store.resource("", "v1", "namespaces")
    gone = copy.deepcopy(current)
    gone["spec"] = {}
    return store.commit(res, "DELETED", key, gone)


def dependents(store: Store, uid: str) -> list[Key]:
    return [
        key
        for key, obj in store.objects.items()
        if any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])
    ]


def after_delete(store: Store, res: Resource, gone: JSON) -> None:
    """Background garbage collection, and what waited for this object to go."""
    uid = gone["metadata"]["uid"]
    namespace = gone["metadata"].get("namespace", "")
    asyncio.get_running_loop().call_soon(collect, store, uid)
    if namespace:
        finish_namespace(store, namespace)
    for key, obj in list(store.objects.items()):  # a foreground owner waiting for its last dependent
        meta = obj["metadata"]
        if "foregroundDeletion" in (meta.get("finalizers") or []) and not dependents(store, meta["uid"]):
            owner_res = store.resource_of(key[0], key[1])
            if owner_res is not None:
                drop_finalizer(store, owner_res, key, "foregroundDeletion")


def drop_finalizer(store: Store, res: Resource, key: Key, finalizer: str) -> None:
    current = store.objects[key]
    new = copy.deepcopy(current)
    new["metadata"]["finalizers"] = [f for f in current["metadata"]["finalizers"] if f != finalizer]
    store.update(res, key[2], key[3], new, require_rv=False)


def collect(store: Store, uid: str) -> None:
    """Dependents whose every owner is gone are deleted; a dangling reference beside a live owner goes."""
    live = {obj["metadata"]["uid"] for obj in store.objects.values()}
    for key in dependents(store, uid):
        obj = store.objects.get(key)
        res = store.resource_of(key[0], key[1])
        if obj is None or res is None:
            continue
        refs = obj["metadata"].get("ownerReferences") or []
        if any(ref.get("uid") in live for ref in refs):
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
            store.update(res, key[2], key[3], new, require_rv=False)
        elif not obj["metadata"].get("deletionTimestamp"):
            store.delete(res, key[2], key[3], {})


def collect_dangling(store: Store, key: Key) -> None:
    """A new object whose owners are all gone is deleted (the garbage collector looks its owners
    up); references to gone owners beside a live one are removed."""
    obj = store.objects.get(key)
    res = store.resource_of(key[0], key[1])
    if obj is None or res is None:
        return
    live = {o["metadata"]["uid"] for o in store.objects.values()}
    refs = obj["metadata"].get("ownerReferences") or []
    dangling = [r for r in refs if r.get("uid") not in live]
    if not dangling:
        return
    if len(dangling) < len(refs):
        new = copy.deepcopy(obj)
        new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") in live]
        store.update(res, key[2], key[3], new, require_rv=False)
    elif not obj["metadata"].get("deletionTimestamp"):
        store.delete(res, key[2], key[3], {})


def delete_dependents(store: Store, uid: str) -> None:
    for key in dependents(store, uid):
        if key in store.objects and not store.objects[key]["metadata"].get("deletionTimestamp"):
            store.delete_if_present(*key)


def orphan(store: Store, uid: str) -> None:
    for key in dependents(store, uid):
        res = store.resource_of(key[0], key[1])
        if res is None:
            continue
        new = copy.deepcopy(store.objects[key])
        refs = new["metadata"]["ownerReferences"]
        new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
        if not new["metadata"]["ownerReferences"]:
            del new["metadata"]["ownerReferences"]
        store.update(res, key[2], key[3], new, require_rv=False)


def drop_custom_objects(store: Store, crd: JSON) -> None:
    spec = crd.get("spec") or {}
    group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
    for key in [k for k in store.objects if k[0] == group and k[1] == plural]:
        gone = store.objects.pop(key)
        store.rv += 1
        gone["metadata"]["resourceVersion"] = str(store.rv)
