"""The controller's end of the dispatcher link: serves the dispatch plan by long poll.

The dispatcher asks `GET /internal/dispatch/plan?version=N&id=X` with the version it runs;
the answer comes at once when a newer plan exists, else when one is published or after
`LONG_POLL_S` (the same plan again). Each request doubles as the dispatcher's ack: the hub
keeps one record per dispatcher id (which version it applied, when it was last seen, whether it
is the embedded one), so Trigger and Subscription status can say how many dispatchers run them.
Versions start from the wall clock in milliseconds, so a restarted controller's plans are newer
than any the dispatcher holds. A standby controller (not the leader) answers 503 with
`Retry-After`, and ends the long polls it holds when it stops leading: the dispatcher keeps its
plan and asks another controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiohttp import web

from controller.eventing.plan import ConsumerPlan, DispatchPlan, SqliteLog
from flint_common.status import failure

LONG_POLL_S = 20.0
SEEN_TIMEOUT_S = LONG_POLL_S + 10.0
"""A dispatcher not heard from for this long counts as gone: its record is dropped."""


@dataclass
class DispatcherRecord:
    """What the hub knows of one dispatcher, keyed by the id it sends."""

    id: str
    acked: int
    """The plan version it runs (its last poll said so)."""
    seen: float
    """When it last polled (the hub's clock)."""
    embedded: bool
    """The dispatcher of the controller's own state dir: the one that may run SQLite consumers."""


def may_run(record: DispatcherRecord, consumer: ConsumerPlan) -> bool:
    """SQLite logs are files in the controller's state dir: only the embedded dispatcher reads them."""
    return record.embedded or consumer.log.backend != SqliteLog.backend


class DispatchHub:
    """The plan and the dispatchers that poll it, one record per dispatcher id.

    Readiness: a consumer is dispatched-ready when at least one live dispatcher (heard from within
    `SEEN_TIMEOUT_S`) that may run it (`may_run`) has applied the current plan, which contains it.
    A poll without an id counts under the id "" (never the embedded dispatcher, unless the hub
    was built with `embedded_id=""`)."""

    def __init__(
        self,
        *,
        embedded_id: str | None = None,
        clock: Callable[[], float] = time.time,
        on_progress: Callable[[], None] | None = None,
        accepting: Callable[[], bool] = lambda: True,
    ) -> None:
        self._clock = clock
        self._accepting = accepting
        """Whether this controller serves the plan (it leads)."""
        self._embedded_id = embedded_id
        self._plan = DispatchPlan(version=0)
        self._changed = asyncio.Event()
        self._dispatchers: dict[str, DispatcherRecord] = {}
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

    def refuse_all(self) -> None:
        """End every waiting long poll (this controller stopped leading): each is answered
        `not_leader()`."""
        self._changed.set()
        self._changed = asyncio.Event()

    def dispatchers(self, now: float | None = None) -> list[DispatcherRecord]:
        """The live dispatchers at `now` (default: the clock), by id."""
        t = self._clock() if now is None else now
        return sorted((r for r in self._dispatchers.values() if t - r.seen < SEEN_TIMEOUT_S),
                      key=lambda r: r.id)

    def connected(self, now: float | None = None) -> bool:
        """At least one dispatcher is live."""
        return bool(self.dispatchers(now))

    def applied(self, version: int, now: float | None = None) -> bool:
        """A live dispatcher runs `version` or newer."""
        return any(r.acked >= version for r in self.dispatchers(now))

    def runners(self, consumer_uid: str, now: float | None = None) -> int:
        """How many live dispatchers that may run this consumer run the current plan (which has it)."""
        consumer = next((t for t in self._plan.triggers if t.uid == consumer_uid), None)
        if consumer is None:
            return 0
        return sum(1 for r in self.dispatchers(now)
                   if r.acked >= self._plan.version and may_run(r, consumer))

    def runs(self, consumer_uid: str, now: float | None = None) -> bool:
        """Dispatched-ready: at least one live dispatcher that may run it runs the current plan."""
        return self.runners(consumer_uid, now) > 0

    def note(self, dispatcher: str, version: int, now: float) -> bool:
        """Record a poll of `dispatcher` saying it runs `version`, at `now`; drop the dispatchers
        silent for `SEEN_TIMEOUT_S`. True when readiness may have changed (a new or returning
        dispatcher, a newer version applied, one dropped)."""
        dropped = [k for k, r in self._dispatchers.items()
                   if k != dispatcher and now - r.seen >= SEEN_TIMEOUT_S]
        for k in dropped:
            del self._dispatchers[k]
        # A version above the current plan's comes from an earlier controller run: it says
        # nothing about the plans of this one.
        version = version if version <= self._plan.version else 0
        old = self._dispatchers.get(dispatcher)
        returning = old is None or now - old.seen >= SEEN_TIMEOUT_S
        progressed = old is None or version > old.acked
        # A reconnect under the same id replaces the old record: never two for one dispatcher.
        self._dispatchers[dispatcher] = DispatcherRecord(
            id=dispatcher, acked=version, seen=now, embedded=dispatcher == self._embedded_id
        )
        return bool(dropped) or returning or progressed

    async def handle(self, request: web.Request) -> web.Response:
        if not self._accepting():
            return not_leader()
        try:
            have = int(request.query.get("version", "0"))
        except ValueError:
            raise web.HTTPBadRequest(text="version must be an integer") from None
        dispatcher = request.query.get("id", "")
        self._note(dispatcher, have)
        # Nothing published yet (a controller just started): an empty plan would make the
        # dispatcher stop and forget every trigger, so wait for the first real one.
        if (have == self._plan.version or self._plan.version == 0) and not self._closing:
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), LONG_POLL_S)
            if not self._accepting():
                return not_leader()
            self._note(dispatcher, have)
        return web.Response(body=orjson.dumps(self._plan.to_wire()), content_type="application/json")

    def _note(self, dispatcher: str, version: int) -> None:
        if self.note(dispatcher, version, self._clock()) and self._on_progress is not None:
            self._on_progress()


def not_leader() -> web.Response:
    """A standby's answer to a plan poll: 503, retry (another controller) soon."""
    return web.Response(
        status=503, headers={"Retry-After": "1"}, content_type="application/json",
        body=orjson.dumps(failure(503, "ServiceUnavailable",
                                  "this controller is a standby: the plan is the leader's")))
