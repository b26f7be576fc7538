"""Discovery documents (`/apis`, `/apis/{group}/{version}`) built from the registry's types."""

from __future__ import annotations

from collections.abc import Iterable

from controller.api.types import ResourceType
from controller.store.base import Obj

VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]
STATUS_VERBS = ["get", "patch", "update"]


def _versions(types: Iterable[ResourceType]) -> dict[str, list[str]]:
    """Group → its versions, in registry order (the first is the preferred one)."""
    versions: dict[str, list[str]] = {}
    for rt in types:
        listed = versions.setdefault(rt.group, [])
        if rt.version not in listed:
            listed.append(rt.version)
    return versions


def _group_entry(group: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(types: Iterable[ResourceType]) -> Obj:
    groups = [_group_entry(g, vs) for g, vs in _versions(types).items() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(types: Iterable[ResourceType], group: str) -> Obj | None:
    versions = _versions(types).get(group)
    if not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(group, versions)}


def api_resource_list(types: Iterable[ResourceType], group: str, version: str) -> Obj | None:
    """Each type and its status subresource, as `kubectl api-resources` reads them."""
    resources: list[Obj] = []
    for rt in types:
        if (rt.group, rt.version) != (group, version):
            continue
        common = {"namespaced": rt.namespaced, "kind": rt.kind}
        resources.append(
            {
                "name": rt.plural,
                "singularName": rt.singular,
                **common,
                "verbs": VERBS,
                "shortNames": list(rt.short_names),
            }
        )
        resources.append(
            {"name": f"{rt.plural}/status", "singularName": "", **common, "verbs": STATUS_VERBS}
        )
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}",
        "resources": resources,
    }
