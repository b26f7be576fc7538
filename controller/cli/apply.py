"""`flint apply`: create-or-update, with the pure created/configured/unchanged decision."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from controller.cli.client import CONFLICT_RETRIES, ApiClient, ApiError, CliError
from controller.cli.kinds import ResourceInfo
from controller.cli.manifests import Manifest

Obj = dict[str, Any]
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class Applied:
    info: ResourceInfo
    name: str
    namespace: str
    action: str  # created | configured | unchanged
    obj: Obj

    def line(self) -> str:
        return f"{self.info.qualified}/{self.name} {self.action}"


def canonical(obj: Obj) -> str:
    """The manifest as recorded in the last-applied annotation (that annotation left out)."""
    clean = copy.deepcopy(obj)
    md = clean.get("metadata") or {}
    annotations = dict(md.get("annotations") or {})
    annotations.pop(LAST_APPLIED, None)
    if annotations:
        md["annotations"] = annotations
    else:
        md.pop("annotations", None)
    return json.dumps(clean, sort_keys=True, separators=(",", ":"))


def desired(manifest: Obj, namespace: str) -> Obj:
    """What apply sends: the manifest in its namespace, recording itself as last applied."""
    out = copy.deepcopy(manifest)
    md = out.setdefault("metadata", {})
    md["namespace"] = namespace
    out.pop("status", None)
    md.setdefault("annotations", {})[LAST_APPLIED] = canonical(out)
    return out


def contains(live: Any, want: Any) -> bool:
    """Whether every field of `want` has the same value in `live` (server defaults may add more)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(
            k in live and contains(live[k], v) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(live, list)
            and len(live) == len(want)
            and all(contains(a, b) for a, b in zip(live, want, strict=True))
        )
    return bool(live == want)


def unchanged(live: Obj, want: Obj) -> bool:
    """Nothing to do: the same manifest was applied last and the live object still matches it."""
    recorded = ((live.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    mine = want["metadata"]["annotations"][LAST_APPLIED]
    return recorded == mine and contains(live, {k: v for k, v in want.items() if k != "status"})


def namespace_of(manifest: Obj, default: str) -> str:
    return str((manifest.get("metadata") or {}).get("namespace") or default)


async def apply_one(api: ApiClient, manifest: Manifest, default_namespace: str) -> Applied:
    """Create the object, or replace it with the manifest when it differs (409 → re-read, retry)."""
    info = await api.resolve_manifest(manifest.obj)
    ns = namespace_of(manifest.obj, default_namespace)
    want = desired(manifest.obj, ns)
    name = str(want["metadata"].get("name") or "")
    if not name:
        if not want["metadata"].get("generateName"):
            raise CliError(f"error validating {manifest.source}: metadata.name is required")
        made = await api.create(info, ns, want)
        return Applied(info, made["metadata"]["name"], ns, "created", made)
    for attempt in range(CONFLICT_RETRIES + 1):
        live = await api.get_or_none(info, ns, name)
        if live is None:
            try:
                made = await api.create(info, ns, want)
            except ApiError as e:
                if e.code_http == 409 and attempt < CONFLICT_RETRIES:
                    continue  # created meanwhile: update it instead
                raise
            return Applied(info, name, ns, "created", made)
        if unchanged(live, want):
            return Applied(info, name, ns, "unchanged", live)
        body = copy.deepcopy(want)
        body["metadata"]["resourceVersion"] = live["metadata"].get("resourceVersion")
        try:
            put = await api.replace(info, ns, body)
        except ApiError as e:
            if e.code_http == 409 and attempt < CONFLICT_RETRIES:
                continue
            raise
        return Applied(info, name, ns, "configured", put)
    raise AssertionError("unreachable")  # pragma: no cover
