"""A watch of one kind on the API server that resumes from its last resourceVersion, never losing
or repeating an event.

The watch stream is read line by line here rather than through kubernetes_asyncio's `Watch`:
`Watch` retries a 410 once with the same stale version on its own, keeps its resume point to
itself and has no inactivity timeout; reading the raw response (`CustomObjects.watch`) makes
every reconnection this module's decision, from the version it has seen last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any, Literal, cast

import aiohttp
import orjson

from controller.store.base import Kind, Obj, StoreError, WatchEvent
from controller.store.kubernetes_api import CustomObjects
from controller.store.kubernetes_config import KubernetesSettings
from controller.store.kubernetes_errors import store_error

log = logging.getLogger("flint.store.kubernetes")

_EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED")
_DROPPED = (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError)
"""What a connection cut mid-stream raises: the watch resumes from its last version."""


def parse_line(line: bytes) -> tuple[str, Obj]:
    """A watch line's event type and object (a `Status` for ERROR, a raw object for BOOKMARK)."""
    try:
        decoded: Any = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise StoreError(f"the API server sent a watch line that is not JSON: {line[:200]!r}") from None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("object"), dict):
        raise StoreError(f"the API server sent a watch line without an object: {line[:200]!r}")
    return str(decoded.get("type", "")), decoded["object"]


def resource_version_of(obj: Obj) -> str:
    meta = obj.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


class KubeWatch:
    """`Store.watch` on Kubernetes: an async iterator of the changes of one kind.

    Without `since` (or "0") it lists first and yields every object as ADDED, then watches from
    the list's resourceVersion. Each watch request asks for BOOKMARKs and `timeoutSeconds`
    (`settings.watch_timeout_s`); the resume point (`resource_version`) moves with every event
    and every BOOKMARK (which are not yielded). A watch that ends (timeoutSeconds), a dropped
    connection and a watch silent for `settings.inactivity_s` (hung) all reconnect from the
    resume point: at once after a connection that carried something, else after a pause
    (`reconnect_backoff_s`, doubling up to `reconnect_backoff_max_s`), as after a failure to
    connect. An ERROR event raises its Status as a store error: 410 is `Gone` (list again). It
    ends, without an error, when the store closes.
    """

    def __init__(
        self,
        api: CustomObjects,
        kind: Kind,
        namespace: str | None,
        since: str,
        settings: KubernetesSettings,
        closing: asyncio.Event,
        open_responses: set[aiohttp.ClientResponse],
        field_selector: str | None = None,
    ) -> None:
        self.kind = kind
        self.field_selector = field_selector
        """Only the objects it matches (`metadata.name=X`), on the list and on every watch."""
        self.namespace = namespace
        self.resource_version = "" if since == "0" else since
        """Where the next watch request resumes: the last event's or BOOKMARK's version."""
        self.connections = 0
        """Watch requests made so far (reconnections are `connections - 1`)."""
        self._api = api
        self._settings = settings
        self._closing = closing
        self._open = open_responses
        self._lines = 0
        self._events = self._run()

    def __aiter__(self) -> KubeWatch:
        return self

    async def __anext__(self) -> WatchEvent:
        return await self._events.__anext__()

    async def aclose(self) -> None:
        await self._events.aclose()

    async def _run(self) -> AsyncGenerator[WatchEvent, None]:
        if not self.resource_version:
            query = {"field_selector": self.field_selector} if self.field_selector else {}
            listed = await self._api.list(self.kind, self.namespace, **query)
            for obj in listed.get("items") or []:
                yield WatchEvent("ADDED", obj, resource_version_of(obj))
            self.resource_version = resource_version_of(listed)
        backoff = self._settings.reconnect_backoff_s
        while not self._closing.is_set():
            try:
                response = await asyncio.wait_for(
                    self._api.watch(
                        self.kind,
                        self.namespace,
                        self.resource_version,
                        self._settings.watch_timeout_s,
                        self._settings.request_timeout_s,
                        self.field_selector,
                    ),
                    self._settings.inactivity_s,
                )
            except (*_DROPPED, OSError, TimeoutError) as e:
                if self._closing.is_set():
                    return
                log.warning("watch of %s could not connect (%r); retrying in %.1f s",
                            self.kind, e, backoff)
                await self._pause(backoff)
                backoff = min(backoff * 2, self._settings.reconnect_backoff_max_s)
                continue
            self.connections += 1
            self._open.add(response)
            self._lines = 0
            try:
                async with contextlib.aclosing(self._read(response)) as events:
                    async for event in events:
                        backoff = self._settings.reconnect_backoff_s
                        yield event
                if self._lines == 0 and not self._closing.is_set():
                    # Ended (or went silent) without a line, not even a BOOKMARK: do not spin on
                    # a server that closes every watch at once.
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self._settings.reconnect_backoff_max_s)
                elif self._lines:
                    backoff = self._settings.reconnect_backoff_s
            except _DROPPED as e:
                if self._closing.is_set():
                    return
                log.info("watch of %s dropped (%r); resuming from %s",
                         self.kind, e, self.resource_version)
                if self._lines == 0:  # a connection that keeps failing at once: back off
                    await self._pause(backoff)
                    backoff = min(backoff * 2, self._settings.reconnect_backoff_max_s)
            finally:
                self._open.discard(response)
                response.close()

    async def _read(self, response: aiohttp.ClientResponse) -> AsyncGenerator[WatchEvent, None]:
        """The events of one watch response; returns at its end or when it has gone silent."""
        while True:
            try:
                line = await asyncio.wait_for(
                    response.content.readline(), self._settings.inactivity_s
                )
            except TimeoutError:
                log.warning("watch of %s silent for %.0f s; reconnecting from %s",
                            self.kind, self._settings.inactivity_s, self.resource_version)
                return
            if not line:
                return  # timeoutSeconds ended it (or the store is closing)
            self._lines += 1
            if not line.strip():
                continue
            type_, obj = parse_line(line)
            if type_ == "ERROR":
                raise store_error(int(obj.get("code") or 500), obj, kind=self.kind)
            rv = resource_version_of(obj)
            if rv:
                self.resource_version = rv
            if type_ == "BOOKMARK":
                continue
            if type_ not in _EVENT_TYPES:
                raise StoreError(f"the API server sent a watch event of unknown type {type_!r}")
            yield WatchEvent(cast(Literal["ADDED", "MODIFIED", "DELETED"], type_), obj, rv)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the store closes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)
