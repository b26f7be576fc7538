"""Resolving a Knative Destination (`ref` and/or `uri`) to the URL events are sent to (pure).

`ref` names an Addressable: a Knative Service or Route (`status.url`, else
`status.address.url`), a Broker, Channel or InMemoryChannel (`status.address.url`); a `uri`
with a `ref` is resolved
against the ref's URL (RFC 3986), a `uri` alone is used as it is.

A core Service (`ref: {apiVersion: v1, kind: Service, name: x}`) is Knative's one non-duck
Addressable: on the Kubernetes engine it resolves to `http://x.<namespace>.svc.<cluster domain>`
once it exists (looked up as group "", kind Service: the engine's informer of core Services);
the embedded engine has no cluster DNS to resolve that name with and refuses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.api.duck import resolve_uri
from controller.api.eventing import ENGINE_EMBEDDED, ENGINE_KUBERNETES

Obj = dict[str, Any]
Lookup = Callable[[str, str, str, str], Obj | None]
"""(group, kind, namespace, name) → the object from the caches, or None."""

ADDRESSABLE: dict[tuple[str, str], str] = {
    ("serving.knative.dev", "Service"): "services.serving.knative.dev",
    ("serving.knative.dev", "Route"): "routes.serving.knative.dev",
    ("eventing.knative.dev", "Broker"): "brokers.eventing.knative.dev",
    ("messaging.knative.dev", "Channel"): "channels.messaging.knative.dev",
    ("messaging.knative.dev", "InMemoryChannel"): "inmemorychannels.messaging.knative.dev",
    ("messaging.flint.dev", "RedisChannel"): "redischannels.messaging.flint.dev",
}
"""The kinds a `ref` may name, with the resource name used in messages."""
CORE_SERVICE = ("", "Service")
"""A core v1 Service: addressable by its cluster DNS name (Kubernetes engine only)."""
CLUSTER_DOMAIN = "cluster.local"
"""The cluster's DNS domain (Knative's default, `network.GetClusterDomainName`)."""


def _group(ref: Obj) -> str:
    if ref.get("group"):
        return str(ref["group"])
    group, slash, _ = str(ref.get("apiVersion") or "").partition("/")
    return group if slash else ""  # `v1` alone is the core group


def resolve_destination(dest: Any, namespace: str, lookup: Lookup, *, engine: str = ENGINE_EMBEDDED,
                        cluster_domain: str = CLUSTER_DOMAIN) -> tuple[str | None, str]:
    """`(url, "")` or `(None, why not)` for a Destination whose ref lives in `namespace` unless
    it says otherwise, on `engine` (which decides whether a core Service resolves)."""
    if not isinstance(dest, dict):
        return None, "no destination"
    uri = dest.get("uri") or None
    ref = dest.get("ref")
    if not ref:
        return (str(uri), "") if uri else (None, "the destination has neither ref nor uri")
    group, kind = _group(ref), str(ref.get("kind") or "")
    ns = str(ref.get("namespace") or namespace)
    name = str(ref.get("name") or "")
    if (group, kind) == CORE_SERVICE:
        return _core_service(ns, name, uri, lookup, engine, cluster_domain)
    resource = ADDRESSABLE.get((group, kind))
    if resource is None:
        return None, f"{kind} ({group or 'core'}) is not an addressable kind Flint resolves"
    obj = lookup(group, kind, ns, name)
    if obj is None:
        return None, f'failed to get ref {ns}/{name}: {resource} "{name}" not found'
    status: Obj = obj.get("status") or {}
    url = status.get("url") if group == "serving.knative.dev" else None
    url = url or (status.get("address") or {}).get("url")
    if not url:
        return None, f"{kind} {ns}/{name} does not have an address yet"
    return resolve_uri(str(url), str(uri) if uri else None), ""


def _core_service(namespace: str, name: str, uri: Any, lookup: Lookup, engine: str,
                  cluster_domain: str) -> tuple[str | None, str]:
    """A core Service's cluster URL (`uri` resolved against it), once it exists."""
    if engine != ENGINE_KUBERNETES:
        return None, (f"a core Service (v1 Service {namespace}/{name}) is addressed by the cluster's "
                      "DNS, which only the Kubernetes engine has: on this engine refer to a Knative "
                      "Service (serving.knative.dev/v1) or give a uri")
    if lookup(*CORE_SERVICE, namespace, name) is None:
        return None, f'failed to get ref {namespace}/{name}: services "{name}" not found'
    url = f"http://{name}.{namespace}.svc.{cluster_domain}"
    return resolve_uri(url, str(uri) if uri else None), ""
