"""Serving's label keys and naming rules (revision names, hosts, URLs) shared by all components."""

from __future__ import annotations

import hashlib

GROUP = "serving.knative.dev"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
GROUP_PREFIX = GROUP + "/"

# Labels the controller puts on children (knative.dev/serving/pkg/apis/serving/register.go).
SERVICE_LABEL = GROUP_PREFIX + "service"
SERVICE_UID_LABEL = GROUP_PREFIX + "serviceUID"
CONFIGURATION_LABEL = GROUP_PREFIX + "configuration"
CONFIGURATION_UID_LABEL = GROUP_PREFIX + "configurationUID"
CONFIGURATION_GENERATION_LABEL = GROUP_PREFIX + "configurationGeneration"
REVISION_LABEL = GROUP_PREFIX + "revision"
REVISION_UID_LABEL = GROUP_PREFIX + "revisionUID"
ROUTE_LABEL = GROUP_PREFIX + "route"
ROUTING_STATE_LABEL = GROUP_PREFIX + "routingState"

# Annotations.
CREATOR_ANNOTATION = GROUP_PREFIX + "creator"
UPDATER_ANNOTATION = GROUP_PREFIX + "lastModifier"
ROUTES_ANNOTATION = GROUP_PREFIX + "routes"
ROUTING_STATE_MODIFIED_ANNOTATION = GROUP_PREFIX + "routingStateModified"

# Values of ROUTING_STATE_LABEL (v1.RoutingState).
ROUTING_STATE_PENDING = "pending"
ROUTING_STATE_ACTIVE = "active"
ROUTING_STATE_RESERVE = "reserve"

VISIBILITY_LABEL = "networking.knative.dev/visibility"
VISIBILITY_CLUSTER_LOCAL = "cluster-local"

DEFAULT_DOMAIN = "localhost"
MAX_NAME_LENGTH = 63
_MD5_HEX_LEN = 32


def child_name(parent: str, suffix: str) -> str:
    """`parent + suffix`; past 63 chars `parent` is cut and its md5 spliced in (kmeta.ChildName)."""
    if len(parent) <= MAX_NAME_LENGTH - len(suffix):
        return parent + suffix
    head = MAX_NAME_LENGTH - _MD5_HEX_LEN
    if head - len(suffix) <= 0:
        digest = hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
        out = parent[:head] + digest
        if (room := MAX_NAME_LENGTH - len(out)) > 0:
            out += suffix[:room]
        return _trim_to_alphanumeric(out)
    digest = hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest()
    return parent[: head - len(suffix)] + digest + suffix


def _trim_to_alphanumeric(name: str) -> str:
    while name and not (name[-1].isascii() and name[-1].isalnum()):
        name = name[:-1]
    return name


def revision_name(configuration_name: str, generation: int) -> str:
    """`hello-00001`: the generated name of a Configuration's revision (`%s-%05d`)."""
    return child_name(configuration_name, f"-{generation:05d}")


def route_host(route: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """`hello.default.localhost`: the host a Route answers on."""
    return f"{route}.{namespace}.{domain}"


def tag_host(tag: str, route: str, namespace: str, domain: str = DEFAULT_DOMAIN) -> str:
    """`blue-hello.default.localhost`: the host of a tagged traffic target."""
    return route_host(f"{tag}-{route}", namespace, domain)


def url(host: str, port: int | None = None, scheme: str = "http") -> str:
    """`http://host[:port]`, leaving out the scheme's default port."""
    default = 443 if scheme == "https" else 80
    if port is None or port == default:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
