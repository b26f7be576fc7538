"""What `flint export` writes for an object: what its author wrote, in a form `kubectl apply` takes.

Moving from one machine to a cluster is re-applying what was authored there: the objects a user
made (Services, Brokers, Triggers, Channels, Subscriptions, a Configuration or Route made by
hand, and later sources and builds) without what the server added — status, uid,
resourceVersion, generation, timestamps, managedFields, finalizers, owner references — and
without what a controller made for them (a Service's Configuration and Route, its Revisions, a
Broker's or Channel's backing channel: anything with a controlling owner reference, and every
Revision, which is immutable output). Pure: objects in, objects out.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from controller.api.messaging import DEFAULT_CHANNEL_TEMPLATE

Obj = dict[str, Any]

SKIPPED_KINDS = frozenset({("serving.knative.dev", "Revision")})
"""Kinds never exported: a Revision is made from its Configuration's template on the cluster."""
SERVER_METADATA = ("uid", "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
                   "deletionGracePeriodSeconds", "managedFields", "selfLink", "ownerReferences",
                   "finalizers", "generateName")
"""Metadata the server sets (or that names objects of this server only)."""
SERVER_ANNOTATIONS = ("serving.knative.dev/creator", "serving.knative.dev/lastModifier",
                      "kubectl.kubernetes.io/last-applied-configuration",
                      "messaging.flint.dev/subscription-uids")
"""Annotations the server, its controllers or kubectl write (some name this server's uids): the
cluster writes its own."""
CONTROLLER_SPEC = {"Channel": ("subscribers",), "InMemoryChannel": ("subscribers",),
                   "RedisChannel": ("subscribers",)}
"""Spec fields a controller writes (a channel's `spec.subscribers` is its Subscriptions'), by kind."""
ORDER = ("Namespace", "Broker", "InMemoryChannel", "RedisChannel", "Channel", "Configuration",
         "Service", "Route", "Trigger", "Subscription")
"""The order objects are written in: what others refer to first (an apply in one pass then finds
every reference; the rest sort after these, by kind)."""
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class LocalImage:
    """A container image that exists on this machine only (a folder or a stored snapshot)."""

    kind: str
    namespace: str
    name: str
    path: str
    """The field, e.g. `spec.template.spec.containers[0].image`."""
    image: str


def group_of(obj: Mapping[str, Any]) -> str:
    api_version = str(obj.get("apiVersion") or "")
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def controlled(obj: Mapping[str, Any]) -> bool:
    """Has a controlling owner: a controller made it and makes it again from its owner."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return any(isinstance(r, dict) and r.get("controller") is True for r in refs)


def exportable(obj: Mapping[str, Any]) -> bool:
    """Whether `obj` is something its author wrote (not status, not a controller's output)."""
    return (group_of(obj), str(obj.get("kind") or "")) not in SKIPPED_KINDS and not controlled(obj)


def cleaned(obj: Mapping[str, Any]) -> Obj:
    """A copy of `obj` without status, the server's metadata and annotations, and the spec
    fields controllers write."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k not in SERVER_METADATA}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k not in SERVER_ANNOTATIONS}
    if annotations:
        meta["annotations"] = annotations
    else:
        meta.pop("annotations", None)
    if not meta.get("labels"):
        meta.pop("labels", None)
    out["metadata"] = meta
    spec = out.get("spec")
    if isinstance(spec, dict):
        for field in CONTROLLER_SPEC.get(str(out.get("kind") or ""), ()):
            spec.pop(field, None)
        # the embedded engine's default, left out so that the cluster's (a RedisChannel: no
        # dispatcher pod reads the embedded engine's SQLite logs) applies there
        if out.get("kind") == "Channel" and spec.get("channelTemplate") == DEFAULT_CHANNEL_TEMPLATE:
            del spec["channelTemplate"]
    return out


def containers(obj: Obj) -> list[tuple[str, Obj]]:
    """(field path, container) of a Service's or Configuration's template."""
    spec = obj.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else None
    found = pod.get("containers") if isinstance(pod, dict) else None
    if obj.get("kind") not in ("Service", "Configuration") or not isinstance(found, list):
        return []
    return [(f"spec.template.spec.containers[{i}]", c) for i, c in enumerate(found)
            if isinstance(c, dict)]


def is_local_image(image: str) -> bool:
    """An embedded engine's image that no registry holds: an absolute folder path, a relative
    one, `file://…`, or a stored snapshot's `sha256:` digest."""
    return image.startswith(("/", "./", "../", "file://")) or image in (".", "..") or bool(
        _DIGEST.match(image))


def replace_images(obj: Obj, images: Mapping[str, str]) -> Obj:
    """`obj` (changed in place and returned) with each container image found in `images`
    replaced by its value."""
    for _, c in containers(obj):
        image = c.get("image")
        if isinstance(image, str) and image in images:
            c["image"] = images[image]
    return obj


def local_images(obj: Obj) -> list[LocalImage]:
    meta = obj.get("metadata") or {}
    return [LocalImage(str(obj.get("kind")), str(meta.get("namespace") or ""),
                       str(meta.get("name") or ""), f"{path}.image", str(c.get("image")))
            for path, c in containers(obj)
            if isinstance(c.get("image"), str) and is_local_image(str(c["image"]))]


def namespace_object(name: str) -> Obj:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _order(obj: Obj) -> tuple[int, str, str, str]:
    kind = str(obj.get("kind") or "")
    meta = obj.get("metadata") or {}
    rank = ORDER.index(kind) if kind in ORDER else len(ORDER)
    return rank, kind, str(meta.get("namespace") or ""), str(meta.get("name") or "")


def export_objects(objs: Iterable[Mapping[str, Any]], images: Mapping[str, str] | None = None,
                   namespaces: bool = True) -> list[Obj]:
    """The exportable objects of `objs`, cleaned, with `images` replaced, in apply order; with
    `namespaces`, a Namespace object first for each namespace other than `default` they use."""
    out = [replace_images(cleaned(o), images or {}) for o in objs if exportable(o)]
    if namespaces:
        used = sorted({str((o.get("metadata") or {}).get("namespace") or "") for o in out}
                      - {"", "default"})
        out += [namespace_object(ns) for ns in used]
    return sorted(out, key=_order)


def as_list(objs: list[Obj]) -> Obj:
    """A `v1 List` of `objs` (`-o json`: kubectl apply takes it like a YAML stream)."""
    return {"apiVersion": "v1", "kind": "List", "items": objs}
