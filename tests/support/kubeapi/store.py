"""The fake's state: objects, the global resourceVersion, the event history and the write rules."""

from __future__ import annotations

import asyncio
import copy
import secrets
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import cascade, crds, errors, pods, resources, schema
from .clock import now_rfc3339
from .errors import ApiError
from .resources import Resource

JSON = dict[str, Any]
Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name


@dataclass
class Event:
    """One committed change: what a watch from before `rv` is owed."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    group: str
    plural: str
    namespace: str
    obj: JSON
    old: JSON | None = None  # the object before a MODIFIED, for selector transitions


@dataclass(eq=False)
class Watcher:
    """A live watch: the store pushes every event of its kind here (None: the server is stopping)."""

    group: str
    plural: str
    namespace: str | None
    queue: asyncio.Queue[Event | None] = field(default_factory=asyncio.Queue)


def _meta(obj: JSON) -> JSON:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _without(obj: JSON, *keys: str) -> JSON:
    return {k: v for k, v in obj.items() if k not in keys}


class Store:
    """Objects by group, plural, namespace and name; every write bumps one global resourceVersion."""

    def __init__(self) -> None:
        self.rv = 0
        self.objects: dict[Key, JSON] = {}
        self.history: list[Event] = []
        self.compacted_rv = 0  # a watch from a resourceVersion older than this is 410 Gone
        self.watchers: set[Watcher] = set()
        self.served: dict[tuple[str, str, str], Resource] = {}  # (group, version, plural)
        for res in [*resources.builtin_resources(), crds.CRDS]:
            self.serve(res)
        self.create(self.resource("", "v1", "namespaces"), "", {"metadata": {"name": "default"}})

    # --- kinds ---------------------------------------------------------------------------------

    def serve(self, res: Resource) -> None:
        self.served[(res.group, res.version, res.plural)] = res

    def resource(self, group: str, version: str, plural: str) -> Resource:
        res = self.served.get((group, version, plural))
        if res is None:
            raise ApiError(
                404,
                "NotFound",
                "the server could not find the requested resource",
                {"group": group, "kind": plural} if group else {"kind": plural},
            )
        return res

    def by_group_version(self, group: str, version: str) -> list[Resource]:
        return [r for (g, v, _), r in self.served.items() if g == group and v == version]

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for group, version, _ in self.served:
            if group and version not in out.setdefault(group, []):
                out[group].append(version)
        return out

    def _sync_crd(self, crd: JSON | None, old: JSON | None) -> None:
        """Serve what a CRD defines now (and stop serving what it defined before)."""
        for res in crds.served_kinds(old) if old else []:
            self.served.pop((res.group, res.version, res.plural), None)
        for res in crds.served_kinds(crd) if crd else []:
            self.serve(res)

    # --- reads ---------------------------------------------------------------------------------

    def view(self, res: Resource, obj: JSON) -> JSON:
        """A copy of a stored object as the requested version shows it."""
        out = copy.deepcopy(obj)
        out["apiVersion"] = res.api_version
        out["kind"] = res.kind
        return out

    def _key(self, res: Resource, namespace: str, name: str) -> Key:
        return (res.group, res.plural, namespace if res.namespaced else "", name)

    def get(self, res: Resource, namespace: str, name: str) -> JSON:
        obj = self.objects.get(self._key(res, namespace, name))
        if obj is None:
            raise errors.not_found(res, name)
        return self.view(res, obj)

    def list_objects(
        self, res: Resource, namespace: str | None, match: Callable[[JSON], bool]
    ) -> tuple[list[JSON], str]:
        items = [
            self.view(res, obj)
            for (g, p, ns, _), obj in sorted(self.objects.items())
            if g == res.group and p == res.plural and (namespace is None or ns == namespace) and match(obj)
        ]
        return items, str(self.rv)

    # --- watches -------------------------------------------------------------------------------

    def watch(self, res: Resource, namespace: str | None, since: str | None) -> tuple[Watcher, list[Event]]:
        """Register a watch; return it with the events it is owed first (synthetic ADDEDs without `since`)."""
        watcher = Watcher(res.group, res.plural, namespace)
        if since in (None, "", "0"):
            backlog = [
                Event(int(obj["metadata"]["resourceVersion"]), "ADDED", g, p, ns, obj)
                for (g, p, ns, _), obj in sorted(self.objects.items())
                if g == res.group and p == res.plural and (namespace is None or ns == namespace)
            ]
        else:
            try:
                start = int(since)
            except ValueError:
                raise errors.bad_request(f'invalid resource version "{since}"') from None
            if start < self.compacted_rv:
                raise errors.expired(f"too old resource version: {start} ({self.compacted_rv})")
            backlog = [e for e in self.history if e.rv > start and self._wants(watcher, e)]
        self.watchers.add(watcher)
        return watcher, backlog

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    @staticmethod
    def _wants(watcher: Watcher, event: Event) -> bool:
        return (
            event.group == watcher.group
            and event.plural == watcher.plural
            and (watcher.namespace is None or event.namespace == watcher.namespace)
        )

    def compact(self) -> int:
        """Forget the history up to now (etcd compaction): a watch from an older resourceVersion is 410."""
        self.history.clear()
        self.compacted_rv = self.rv
        return self.rv

    def close_watches(self) -> None:
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)

    def commit(self, res: Resource, kind: str, key: Key, obj: JSON, old: JSON | None = None) -> JSON:
        self.rv += 1
        _meta(obj)["resourceVersion"] = str(self.rv)
        if kind == "DELETED":
            self.objects.pop(key, None)
        else:
            self.objects[key] = obj
        event = Event(self.rv, kind, key[0], key[1], key[2], copy.deepcopy(obj), old)
        self.history.append(event)
        for watcher in self.watchers:
            if self._wants(watcher, event):
                watcher.queue.put_nowait(event)
        if res.group == "apiextensions.k8s.io" and res.plural == "customresourcedefinitions":
            self._sync_crd(None, obj) if kind == "DELETED" else self._sync_crd(obj, old)
            if kind == "DELETED":
                cascade.drop_custom_objects(self, obj)
        return self.view(res, obj)

    # --- writes --------------------------------------------------------------------------------

    def _check_schema(
        self, res: Resource, obj: JSON, name: str, field_validation: str | None
    ) -> tuple[JSON, list[str]]:
        checked = schema.check(res.schema, obj)
        if checked.unknown and field_validation == "Strict":
            fields = ", ".join(f'unknown field "{p}"' for p in checked.unknown)
            raise errors.bad_request(
                f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                f"strict decoding error: {fields}"
            )
        if checked.causes:
            raise errors.invalid(res, name, checked.causes)
        warnings = [] if field_validation == "Ignore" else [f'unknown field "{p}"' for p in checked.unknown]
        return checked.obj, warnings

    def _namespace_of(self, res: Resource, namespace: str) -> str:
        if not res.namespaced:
            return ""
        ns = self.objects.get(("", "namespaces", "", namespace))
        if ns is None:
            raise errors.namespace_not_found(namespace)
        return namespace

    def create(
        self, res: Resource, namespace: str, body: JSON, field_validation: str | None = None,
        dry_run: bool = False,
    ) -> tuple[JSON, list[str]]:
        """POST: the object as stored, and the warnings; `dry_run`: every check, nothing stored
        (what the validating admission webhooks are shown: admission.py)."""
        obj = copy.deepcopy(body)
        meta = _meta(obj)
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            namespace = self._namespace_of(res, namespace)
            ns_obj = self.objects[("", "namespaces", "", namespace)]
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(
                    403,
                    "Forbidden",
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                    {"name": meta.get("name", ""), "kind": res.plural},
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if meta.get("generateName"):
                alphabet = string.ascii_lowercase + string.digits
                meta["name"] = meta["generateName"] + "".join(secrets.choice(alphabet) for _ in range(5))
            else:
                raise errors.invalid(
                    res,
                    "",
                    [
                        errors.cause(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
        if str(meta.get("resourceVersion", "0") or "0").isdigit() and int(meta.get("resourceVersion") or 0):
            # etcd's storage refuses it (a 500, no reason); a copied object's resourceVersion is a bug
            raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
        name = meta["name"]
        key = self._key(res, namespace, name)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        obj, warnings = self._check_schema(res, obj, name, field_validation)
        meta = _meta(obj)
        if res.plural == "customresourcedefinitions":
            crds.check(obj)
        if key in self.objects:
            raise errors.already_exists(res, name)
        for dropped in (
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "generation",
            "managedFields",
        ):
            meta.pop(dropped, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if res.generation:
            meta["generation"] = 1
        if res.status:
            obj.pop("status", None)
        if res.plural == "deployments":
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        if res.plural == "customresourcedefinitions":
            obj["status"] = crds.initial_status(obj)
        if res.plural == "namespaces":
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
        if dry_run:
            return self.view(res, obj), warnings
        out = self.commit(res, "ADDED", key, obj)
        if meta.get("ownerReferences"):  # an owner deleted before its dependent was created
            asyncio.get_running_loop().call_soon(cascade.collect_dangling, self, key)
        return out, warnings

    def update(
        self,
        res: Resource,
        namespace: str,
        name: str,
        body: JSON,
        subresource: str | None = None,
        field_validation: str | None = None,
        require_rv: bool = True,
        dry_run: bool = False,
    ) -> tuple[JSON, list[str]]:
        """PUT (and the end of every PATCH): the rules of an update, main resource or `status`;
        `dry_run`: every check, nothing stored (the object as it would be, before its new
        resourceVersion and generation)."""
        key = self._key(res, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise errors.not_found(res, name)
        meta = _meta(body)
        if meta.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        if res.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        sent_rv = meta.get("resourceVersion")
        if require_rv and not sent_rv and not res.unconditional_update:
            raise errors.invalid(
                res,
                name,
                [
                    errors.cause(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
            raise errors.conflict(res, name)
        old_meta = current["metadata"]
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
            else:
                new.pop("status", None)
        else:
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = res.api_version, res.kind
            if res.status:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            new_meta = _meta(new)
            for kept in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if kept in old_meta:
                    new_meta[kept] = old_meta[kept]
                else:
                    new_meta.pop(kept, None)
            new_meta.pop("managedFields", None)
        new, warnings = self._check_schema(res, new, name, field_validation)
        if res.plural == "customresourcedefinitions":
            crds.check(new)
        new_meta = _meta(new)
        new_meta["resourceVersion"] = old_meta["resourceVersion"]
        if old_meta.get("deletionTimestamp"):
            added = [
                f for f in new_meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])
            ]
            if added:
                raise errors.invalid(
                    res,
                    name,
                    [
                        errors.cause(
                            "FieldValueForbidden",
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being deleted, "
                            f"found new finalizers {added}",
                        )
                    ],
                )
        if dry_run:
            return self.view(res, new), warnings
        if new == current:
            return self.view(res, current), warnings  # a no-op write: no new resourceVersion, no event
        if res.generation and "generation" in old_meta:
            ignored = ("metadata", "status") if res.status else ("metadata",)
            if _without(new, *ignored) != _without(current, *ignored):
                new_meta["generation"] = old_meta["generation"] + 1
        if old_meta.get("deletionTimestamp") and not new_meta.get("finalizers"):
            new_meta.pop("finalizers", None)
            out = self.commit(res, "DELETED", key, new, copy.deepcopy(current))
            cascade.after_delete(self, res, new)
            return out, warnings
        return self.commit(res, "MODIFIED", key, new, copy.deepcopy(current)), warnings

    def delete(self, res: Resource, namespace: str, name: str, options: JSON) -> tuple[JSON, bool]:
        """DELETE: gone at once, or marked with deletionTimestamp while finalizers remain (False)."""
        key = self._key(res, namespace, name)
        current = self.objects.get(key)
        if current is None:
            raise errors.not_found(res, name)
        meta = current["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta["uid"]:
            raise errors.conflict(
                res,
                name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta['uid']}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
            raise errors.conflict(
                res,
                name,
                f"Precondition failed: ResourceVersion in precondition: "
                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                f"{meta['resourceVersion']}",
            )
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan":
            cascade.orphan(self, meta["uid"])
        elif (
            policy == "Foreground"
            and cascade.dependents(self, meta["uid"])
            and "foregroundDeletion" not in finalizers
        ):
            finalizers.append("foregroundDeletion")
        if res.plural == "namespaces" and "kubernetes" in (
            (current.get("spec") or {}).get("finalizers") or []
        ):
            return cascade.delete_namespace(self, res, key, current), False
        if pods.is_pod(res):
            grace = pods.grace_period(current, options)
            if grace is not None:
                return pods.start_graceful(self, res, key, current, grace)
        if not finalizers:
            gone = copy.deepcopy(current)
            out = self.commit(res, "DELETED", key, gone)
            cascade.after_delete(self, res, gone)
            return out, True
        if meta.get("deletionTimestamp") and finalizers == meta.get("finalizers"):
            return self.view(res, current), False
        new = copy.deepcopy(current)
        new_meta = new["metadata"]
        new_meta["finalizers"] = finalizers
        new_meta.setdefault("deletionTimestamp", now_rfc3339())
        new_meta.setdefault("deletionGracePeriodSeconds", 0)
        if "generation" in new_meta:
            new_meta["generation"] += 1
        out = self.commit(res, "MODIFIED", key, new, copy.deepcopy(current))
        if "foregroundDeletion" in finalizers:
            cascade.delete_dependents(self, meta["uid"])
        return out, False

    # --- lookups for what a delete sets off (cascade.py) ---------------------------------------

    def resource_of(self, group: str, plural: str) -> Resource | None:
        for (g, _, p), res in self.served.items():
            if g == group and p == plural:
                return res
        return None

    def delete_if_present(self, group: str, plural: str, namespace: str, name: str) -> None:
        res = self.resource_of(group, plural)
        if res is not None and (group, plural, namespace, name) in self.objects:
            self.delete(res, namespace, name, {})
