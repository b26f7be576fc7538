"""The scale subresource: an autoscaling/v1 Scale read from and written back to its object (pure)."""

from __future__ import annotations

import copy
from typing import Any

from .resources import Resource, Scale

JSON = dict[str, Any]


def _path(dotted: str) -> list[str]:
    return [p for p in dotted.split(".") if p]


def _read(obj: JSON, dotted: str) -> Any:
    node: Any = obj
    for part in _path(dotted):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _selector(scale: Scale, obj: JSON) -> str | None:
    if scale.label_selector is not None:
        return str(_read(obj, scale.label_selector) or "")
    if not scale.match_labels:
        return None
    labels = _read(obj, ".spec.selector.matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def to_scale(res: Resource, obj: JSON) -> JSON:
    """The Scale an object shows (`spec.replicas`, `status.replicas`, `status.selector`)."""
    assert res.scale is not None
    meta = obj["metadata"]
    status: JSON = {"replicas": _read(obj, res.scale.status_replicas) or 0}
    selector = _selector(res.scale, obj)
    if selector is not None:
        status["selector"] = selector
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": _read(obj, res.scale.spec_replicas) or 0},
        "status": status,
    }


def with_replicas(res: Resource, obj: JSON, replicas: Any) -> JSON:
    """A copy of `obj` whose spec replicas are `replicas` (what a Scale write changes)."""
    assert res.scale is not None
    out = copy.deepcopy(obj)
    parts = _path(res.scale.spec_replicas)
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = replicas
    return out
