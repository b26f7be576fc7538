"""The controller's end of the dispatcher link: serves the dispatch plan by long poll.

The dispatcher asks `GET /internal/dispatch/plan?version=N&id=X` with the version it runs;
the answer comes at once when a newer plan exists, else when one is published or after
`LONG_POLL_S` (the same plan again). Each request doubles as the dispatcher's ack: the hub
knows which version it applied and when it was last seen, so Trigger status can say whether
the dispatcher runs a trigger yet. Versions start from the wall clock in milliseconds, so a
restarted controller's plans are newer than any the dispatcher holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import orjson
from aiohttp import web

from controller.eventing.plan import DispatchPlan

LONG_POLL_S = 20.0
SEEN_TIMEOUT_S = LONG_POLL_S + 10.0
"""A dispatcher not heard from for this long counts as disconnected."""


class DispatchHub:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self._plan = DispatchPlan(version=0)
        self._changed = asyncio.Event()
        self._acked = 0
        self._seen = 0.0
        self._on_progress = on_progress
        self._closing = False

    @property
    def plan(self) -> DispatchPlan:
        return self._plan

    def publish(self, plan: DispatchPlan) -> int:
        """Serve `plan` under a new version unless it equals the current one; the version."""
        if self._plan.version and (plan.triggers, plan.known) == (self._plan.triggers, self._plan.known):
            return self._plan.version
        version = max(self._plan.version + 1, int(self._clock() * 1000))
        self._plan = DispatchPlan(version=version, triggers=plan.triggers, known=plan.known)
        self._changed.set()
        self._changed = asyncio.Event()
        return version

    def close(self) -> None:
        """Answer every waiting long poll now (the controller is stopping)."""
        self._closing = True
        self._changed.set()

    def connected(self) -> bool:
        return self._seen > 0 and self._clock() - self._seen < SEEN_TIMEOUT_S

    def applied(self, version: int) -> bool:
        """A connected dispatcher runs `version` or newer."""
        return self.connected() and self._acked >= version

    def runs(self, trigger_uid: str) -> bool:
        """The connected dispatcher runs the current plan and it includes this trigger."""
        return self.applied(self._plan.version) and any(t.uid == trigger_uid for t in self._plan.triggers)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            have = int(request.query.get("version", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="version must be an integer") from None
        self._note(have)
        # Nothing published yet (a controller just started): an empty plan would make the
        # dispatcher stop and forget every trigger, so wait for the first real one.
        if (have == self._plan.version or self._plan.version == 0) and not self._closing:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), LONG_POLL_S)
            self._note(have)
        return web.Response(body=orjson.dumps(self._plan.to_wire()), content_type="application/json")

    def _note(self, version: int) -> None:
        was_connected = self.connected()
        # A version above the current plan's comes from an earlier controller run: it says
        # nothing about the plans of this one.
        version = version if version <= self._plan.version else 0
        progressed = version > self._acked
        self._acked = version
        self._seen = self._clock()
        if (progressed or not was_connected) and self._on_progress is not None:
            self._on_progress()
