"""One consumer's delivery loop (a Trigger's or a Subscription's): read its log, filter, deliver at
least once, retry.

The runner is typed against its seams (`controller.eventing.consumer`): a `ConsumerSource` (the
events, acks), a `ConsumerState` (pending retries, dead letters) and the `Sender`. Acks and
retries make delivery at least once across crashes:

* events are read from the source and delivered in parallel, at most `window` at a time (one at
  a time, in order, with the `delivery.order: ordered` annotation);
* an event is acked only once it is handled: delivered, filtered out, stored as a pending retry,
  or dead-lettered. Acks go over a contiguous prefix in read order, so a crash redelivers what
  was in flight (duplicates), never skips;
* a failed first attempt becomes a *pending retry* in the state (event, attempt, time), and the
  event is acked: an event in its long backoff never holds the others back. A retry loop
  delivers due retries; when they run out the event goes to the dead-letter sink with Knative's
  `knativeerror*` extensions, or, without one or when the sink fails too, is kept as a dead letter
  in the state (counted and logged; `flint trigger dead-letters` / `redeliver`);
* the retry loop *takes* due retries from the state (`take_due`, leased: several dispatchers may
  share one consumer's retries) at least every `RETRY_POLL_S`, sooner when a retry it knows of
  (one it stored or rescheduled) comes due or when `requeued` is called; each take renews the
  leases of the retries being attempted here;
* a source that blocks in `read` (`blocks`: Redis) is read again at once after an empty read;
  one that does not (SQLite) is read again on a wake-up or after `POLL_S`;
* in ordered mode a failed event is retried in place (the acks wait), so order holds; each
  attempt (and a give-up) first asks the source whether it is still this reader's turn
  (`check_turn`: an ordered consumer's lease), so a dispatcher that stalled past its lease stops
  there and fails, delivering at most the attempt it was making;
* a retry given up on goes to the dead-letter sink only while this runner still holds it
  (`ConsumerState.hold`, asked before each send to the sink): one whose lease another dispatcher
  took over meanwhile is that dispatcher's to finish, and this outcome is dropped (logged);
* a trigger's reply is sent to the broker (its TTL one less; at 0 a recorded drop) and must be
  accepted (202, so stored durably) before the original counts as delivered; a subscription's
  goes to its `reply` destination (any 2xx), or is dropped without one, as Knative does.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from controller.eventing.consumer import ConsumerSource, ConsumerState
from controller.eventing.delivery import (
    DeliveryPolicy,
    GiveUp,
    Retry,
    after_failure,
    dead_letter_extensions,
    dead_letter_retry_s,
)
from controller.eventing.filters import Matcher, compile_trigger_filter
from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import ConsumerPlan
from controller.eventing.sender import Outcome, Sender
from flint_common.cloudevents.codec import Event
from flint_common.cloudevents.knative import DEFAULT_TTL, TTL_ATTR

__all__ = ["ConsumerRunner"]

log = logging.getLogger("flint.dispatcher")

WINDOW = 64
"""Events one consumer has in flight at most (unordered)."""
READ_BATCH = 256
POLL_S = 1.0
"""Re-read the log's tail this often even without a wake-up (a lost datagram costs this much)."""
REPLY_TIMEOUT_S = 30.0
STOP_RECANCEL_S = 5.0
"""`stop` cancels a task again if it is still running this long after it was cancelled."""
RETRY_POLL_S = 1.0
"""Take due retries at least this often: other dispatchers of the consumer store retries too, and
each take renews the leases of the retries in flight here (leases last far longer)."""


@dataclass(slots=True)
class _Slot:
    id: str
    done: bool = False


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until `event` is set, for at most `timeout_s`. Not `asyncio.wait_for`: on Python 3.11
    it swallows a cancellation that comes just as the event is set (it returns the result), and a
    loop that went on waiting would keep `ConsumerRunner.stop` from ever returning."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def reply_ttl(event: Event) -> int:
    """The TTL a reply to `event` gets: one less than the event's."""
    raw = event.get(TTL_ATTR)
    try:
        ttl = int(raw) if raw is not None and not isinstance(raw, bool) else DEFAULT_TTL
    except ValueError:
        ttl = DEFAULT_TTL
    return ttl - 1


class ConsumerRunner:
    def __init__(
        self,
        plan: ConsumerPlan,
        source: ConsumerSource,
        state: ConsumerState,
        sender: Sender,
        metrics: DispatcherMetrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plan = plan
        self.key = plan.uid
        self.source = source
        self.state = state
        self._sender = sender
        self._metrics = metrics
        self._clock = clock
        self.matcher: Matcher = compile_trigger_filter(plan.filter_attributes, plan.filters)
        self.policy = DeliveryPolicy.from_spec(plan.delivery, dead_letter_uri=plan.dead_letter_uri)
        self.window = 1 if plan.ordered else WINDOW
        self._wake = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._slots: deque[_Slot] = deque()
        self._sem = asyncio.Semaphore(self.window)
        self._retrying = 0
        """Retries being attempted here (at most `window`)."""
        self._due: list[float] = []
        """When retries this runner knows of come due (a heap): the retry loop wakes then."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._main: list[asyncio.Task[None]] = []
        self.failed = False
        self._stopping = False
        self.on_failure: Callable[[ConsumerRunner], None] | None = None
        self._labels = (plan.namespace, plan.label)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._main = [
            asyncio.create_task(self._run(), name=f"trigger:{self.plan.key}"),
            asyncio.create_task(self._run_retries(), name=f"trigger-retries:{self.plan.key}"),
        ]
        for task in self._main:
            task.add_done_callback(self._crashed)

    def _crashed(self, task: asyncio.Task[None]) -> None:
        """A loop of this runner died: say so loudly; the dispatcher restarts the runner."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("event=runner_failed trigger=%s task=%s", self.plan.key, task.get_name(),
                  exc_info=task.exception())
        if self.failed:
            return  # another of its loops failed first (say, maintain and read on a lost lease)
        self.failed = True
        if self.on_failure is not None:
            self.on_failure(self)

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Cancel every task of the runner and wait until all have ended. A task still running
        `STOP_RECANCEL_S` after its cancellation is cancelled again: on Python 3.11 a cancellation
        can be lost (`asyncio.wait_for`, which redis-py wraps around its socket I/O when it has a
        socket timeout, swallows one that comes just as the awaited call completes), and a loop
        that lost it would run on (the read and retry loops also end at their next turn once
        stopping). The interval is longer than any task's own cleanup (a Redis source gives its
        acks and its lease a second each)."""
        self._stopping = True  # the loops end at their next turn even if a cancellation was lost
        ended: list[asyncio.Task[None]] = []
        while pending := [t for t in (*self._main, *self._tasks) if not t.done()]:
            for t in pending:
                t.cancel()
            ended += pending
            await asyncio.wait(pending, timeout=STOP_RECANCEL_S)
        await asyncio.gather(*ended, *self._main, return_exceptions=True)  # their errors: seen

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._crashed(task)

    # -- reading the log -----------------------------------------------------------------------

    async def _run(self) -> None:
        await self.source.open()
        self._spawn(self.source.maintain())
        # What an earlier reader of this consumer read and never acked (a crashed dispatcher's)
        # goes first, before anything new (a SQLite log has none: it is read again from the position).
        claimed = await self.source.claim(await self.source.pending())
        while not self._stopping:
            self._wake.clear()
            room = self.window - len(self._slots)
            if claimed:
                batch, claimed = claimed[:READ_BATCH], claimed[READ_BATCH:]
            else:
                batch = await self.source.read(min(READ_BATCH, max(room, 1))) if room > 0 else []
            if not batch:
                self._metrics.backlog.labels(*self._labels).set(len(self._slots))
                if room > 0 and self.source.blocks:
                    continue  # the read waited for events itself
                await _wait(self._wake, POLL_S)
                continue
            for event_id, raw in batch:
                slot = _Slot(event_id)
                self._slots.append(slot)
                event = Event.from_log(raw)
                if not self.matcher(event.attributes):
                    self._done(slot)
                    continue
                await self._sem.acquire()
                if self.plan.ordered:
                    try:
                        await self._deliver_ordered(slot, raw, event)
                    finally:
                        self._sem.release()
                else:
                    self._spawn(self._deliver_first(slot, raw, event))
            self._metrics.backlog.labels(*self._labels).set(await self.source.backlog())

    def _done(self, slot: _Slot) -> None:
        slot.done = True
        acked: list[str] = []
        while self._slots and self._slots[0].done:
            acked.append(self._slots.popleft().id)
        if acked:
            self._spawn(self.source.ack(acked))
            if len(self._slots) < self.window:
                self._wake.set()

    # -- delivering ----------------------------------------------------------------------------

    async def _deliver_first(self, slot: _Slot, raw: bytes, event: Event) -> None:
        try:
            outcome = await self._attempt(event)
            if outcome.ok:
                self._done(slot)
                return
            now = self._clock()
            decision = after_failure(self.policy, 1, outcome.status, outcome.retry_after, now)
            if isinstance(decision, Retry):
                await self.state.add_retry(slot.id, raw, decision.attempt, decision.at)
                self._metrics.retried.labels(*self._labels).inc()
                self._schedule(decision.at)
            else:
                await self._give_up(slot.id, raw, event, outcome, decision, retry_id=None)
            self._done(slot)
        finally:
            self._sem.release()

    async def _deliver_ordered(self, slot: _Slot, raw: bytes, event: Event) -> None:
        attempt = 1
        while True:
            await self.source.check_turn()  # raises once another reader may deliver in our place
            outcome = await self._attempt(event)
            if outcome.ok:
                break
            now = self._clock()
            decision = after_failure(self.policy, attempt, outcome.status, outcome.retry_after, now)
            if isinstance(decision, GiveUp):
                await self.source.check_turn()
                await self._give_up(slot.id, raw, event, outcome, decision, retry_id=None)
                break
            self._metrics.retried.labels(*self._labels).inc()
            attempt = decision.attempt
            await asyncio.sleep(max(0.0, decision.at - now))
        self._done(slot)

    async def _attempt(self, event: Event) -> Outcome:
        t0 = time.monotonic()
        outcome = await self._sender.send(
            self.plan.subscriber,
            event,
            structured=self.policy.format == "json",
            timeout_s=self.policy.timeout_s,
        )
        if outcome.ok and outcome.reply is not None:
            outcome = await self._send_reply(event, outcome)
        if outcome.ok:
            self._metrics.delivered.labels(*self._labels).inc()
            self._metrics.latency.labels(*self._labels).observe(time.monotonic() - t0)
        else:
            log.info(
                "event=delivery_failed trigger=%s id=%s status=%s detail=%s",
                self.plan.key,
                event.id,
                outcome.status,
                outcome.detail,
            )
        return outcome

    async def _send_reply(self, original: Event, outcome: Outcome) -> Outcome:
        assert outcome.reply is not None
        if self.plan.kind != "trigger":
            return await self._send_channel_reply(outcome)
        ttl = reply_ttl(original)
        if ttl <= 0:
            self._metrics.dropped.labels(*self._labels, "ttl-exhausted").inc()
            log.warning(
                "event=reply_dropped trigger=%s id=%s reason=ttl-exhausted", self.plan.key, outcome.reply.id
            )
            return outcome
        reply = outcome.reply.with_extensions(**{TTL_ATTR: ttl})
        sent = await self._sender.send(
            self.plan.reply, reply, structured=True, timeout_s=REPLY_TIMEOUT_S, prefer_reply=False
        )
        if sent.status == 202:
            return outcome
        return Outcome(
            False,
            sent.status,
            retry_after=sent.retry_after,
            body=sent.body,
            detail=f"the broker refused the reply: {sent.detail}",
        )

    async def _send_channel_reply(self, outcome: Outcome) -> Outcome:
        """A subscription's reply goes to its `reply` as it came; without one it is dropped."""
        assert outcome.reply is not None
        if not self.plan.reply:
            return outcome
        sent = await self._sender.send(
            self.plan.reply, outcome.reply, structured=self.policy.format == "json",
            timeout_s=self.policy.timeout_s, prefer_reply=False,
        )
        if sent.ok:
            return outcome
        return Outcome(False, sent.status, retry_after=sent.retry_after, body=sent.body,
                       detail=f"the reply destination refused the reply: {sent.detail}")

    async def _give_up(
        self,
        event_id: str,
        raw: bytes,
        event: Event,
        outcome: Outcome,
        decision: GiveUp,
        *,
        retry_id: int | None,
    ) -> None:
        dls = self.policy.dead_letter_uri
        if dls:
            ext = dead_letter_extensions(self.plan.subscriber, outcome.status, outcome.body)
            dead = event.with_extensions(**ext)
            attempt = 1
            while True:
                if retry_id is not None and not await self.state.hold(retry_id):
                    # Another dispatcher took the retry over (this one stalled past its lease),
                    # or it is gone: its outcome is the holder's now, not ours to send.
                    log.warning(
                        "event=outcome_dropped trigger=%s id=%s retry=%d reason=the retry is held "
                        "by another dispatcher now (or gone); its dead-letter send is skipped",
                        self.plan.key, event.id, retry_id)
                    return
                sent = await self._sender.send(
                    dls,
                    dead,
                    structured=self.policy.format == "json",
                    timeout_s=self.policy.timeout_s,
                    prefer_reply=False,
                )
                if sent.ok:
                    if retry_id is not None:
                        await self.state.remove_retry(retry_id)
                    self._metrics.dead_lettered.labels(*self._labels).inc()
                    log.warning(
                        "event=dead_lettered trigger=%s id=%s reason=%s status=%s sink=%s",
                        self.plan.key,
                        event.id,
                        decision.reason,
                        outcome.status,
                        dls,
                    )
                    return
                delay = dead_letter_retry_s(self.policy, attempt)
                if delay is None:
                    break
                await asyncio.sleep(delay)
                attempt += 1
            reason = f"{decision.reason}; dead-letter sink failed"
        else:
            reason = decision.reason
        kept = await self.state.add_dead_letter(
            event_id, raw, reason, outcome.status, outcome.detail, self._clock(), retry_id=retry_id
        )
        if not kept:  # the retry is another dispatcher's now (or gone): its outcome, not ours
            log.warning("event=outcome_dropped trigger=%s id=%s retry=%s reason=the retry is held "
                        "by another dispatcher now (or gone); no dead letter kept here",
                        self.plan.key, event.id, retry_id)
            return
        self._metrics.dropped.labels(*self._labels, decision.reason).inc()
        log.error(
            "event=dropped trigger=%s id=%s reason=%s status=%s detail=%s",
            self.plan.key,
            event.id,
            reason,
            outcome.status,
            outcome.detail,
        )

    # -- retries -------------------------------------------------------------------------------

    def _schedule(self, at: float) -> None:
        """A retry comes due at `at` (stored or rescheduled here): the retry loop looks then."""
        heapq.heappush(self._due, at)
        self._retry_wake.set()

    async def _run_retries(self) -> None:
        while not self._stopping:
            self._retry_wake.clear()
            now = self._clock()
            room = self.window - self._retrying
            taken = await self.state.take_due(now, room)  # room 0: renews the leases only
            for r in taken:
                self._retrying += 1
                self._spawn(self._retry(r.id, r.event_id, r.event, max(r.attempt, 1)))
            while self._due and self._due[0] <= now:
                heapq.heappop(self._due)
            if len(taken) < room:
                delay = RETRY_POLL_S if not self._due else min(RETRY_POLL_S, self._due[0] - now)
            else:
                delay = RETRY_POLL_S  # full (more may be due): a finished retry wakes the loop
            await _wait(self._retry_wake, max(delay, 0.0))

    async def _retry(self, rid: int, event_id: str, raw: bytes, attempt: int) -> None:
        try:
            event = Event.from_log(raw)
            outcome = await self._attempt(event)
            if outcome.ok:
                await self.state.remove_retry(rid)
                return
            now = self._clock()
            decision = after_failure(self.policy, attempt, outcome.status, outcome.retry_after, now)
            if isinstance(decision, Retry):
                await self.state.update_retry(rid, decision.attempt, decision.at)
                self._metrics.retried.labels(*self._labels).inc()
                self._schedule(decision.at)
            else:
                await self._give_up(event_id, raw, event, outcome, decision, retry_id=rid)
        finally:
            self._retrying -= 1
            self._retry_wake.set()

    def requeued(self) -> None:
        """Dead letters were turned into retries (`redeliver`): take them."""
        self._retry_wake.set()
