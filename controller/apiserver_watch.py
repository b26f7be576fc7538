"""A watch's query (resourceVersion, timeoutSeconds, the watch-list options) and its BOOKMARK."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from controller.apiserver_codec import bad_request
from controller.store.base import Obj

INITIAL_EVENTS_END = "k8s.io/initial-events-end"
"""The annotation of the BOOKMARK that ends a watch-list's initial events."""
NOT_OLDER_THAN = "NotOlderThan"
RESOURCE_VERSION_MATCHES = (NOT_OLDER_THAN, "Exact")


@dataclass(frozen=True, slots=True)
class WatchOptions:
    """What a `?watch=true` request asked for."""

    since: str
    """Resume after this resourceVersion (opaque: the store checks it); "" or "0" starts with
    an ADDED for every current object."""
    timeout_s: float | None
    send_initial_events: bool | None
    """True: a watch-list (ADDED for the current objects, then a BOOKMARK); False: only changes
    after `since` (0: after now); None (not asked): `since` 0 sends the current objects too."""
    bookmarks: bool


def _flag(query: Mapping[str, str], name: str) -> bool | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise bad_request(f'{name} "{raw}" is not true or false')


def watch_options(query: Mapping[str, str]) -> WatchOptions:
    """The watch's options, checked the way the Kubernetes API server checks them."""
    since = query.get("resourceVersion", "")
    if since == "0":
        since = ""
    timeout = query.get("timeoutSeconds")
    try:
        timeout_s = float(timeout) if timeout else None
    except ValueError:
        raise bad_request(f'timeoutSeconds "{timeout}" is not a number') from None
    initial = _flag(query, "sendInitialEvents")
    bookmarks = bool(_flag(query, "allowWatchBookmarks"))
    match = query.get("resourceVersionMatch", "")
    if match and match not in RESOURCE_VERSION_MATCHES:
        raise bad_request(
            f'resourceVersionMatch "{match}" is not one of {", ".join(RESOURCE_VERSION_MATCHES)}'
        )
    if initial is None:
        if match:
            raise bad_request(
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is given"
            )
    elif match != NOT_OLDER_THAN:
        raise bad_request(
            f"sendInitialEvents needs resourceVersionMatch={NOT_OLDER_THAN} (got "
            f'"{match}")'
        )
    elif initial and not bookmarks:
        raise bad_request("sendInitialEvents=true needs allowWatchBookmarks=true")
    return WatchOptions(since, timeout_s, initial, bookmarks)


def initial_events_end(api_version: str, kind: str, resource_version: str) -> Obj:
    """The BOOKMARK event that says every current object was sent, as of `resource_version`."""
    return {
        "type": "BOOKMARK",
        "object": {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {
                "resourceVersion": str(resource_version),
                "annotations": {INITIAL_EVENTS_END: "true"},
            },
        },
    }
