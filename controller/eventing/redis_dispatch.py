"""The dispatcher's Redis side: its two clients, the runners of the consumers of Redis streams, and
the trimming of those streams (one dispatcher per stream and period, whatever their number).

Two clients, because a blocking `XREADGROUP` holds its connection for up to `block_ms`: with one
pool, the blocking reads of many consumers would take every connection and the short commands
(acks, heartbeats, claims, retries, leases, trims) would wait behind them. `reads` serves the
blocking reads alone; `control` everything else.

Trimming (`redis_retention.trim`) runs every `trim_every_s` on every dispatcher, but for each
stream only the one that takes its lock does it (`SET flint:{<log uid>}:trim <dispatcher id> NX
PX <period>`): the lock is left to expire, so that the stream is trimmed once per period, not once
per dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from controller.eventing.metrics import DispatcherMetrics
from controller.eventing.plan import ConsumerPlan, DispatchPlan, RedisLog
from controller.eventing.redis_consumer import RedisConsumerSettings, RedisConsumerSource
from controller.eventing.redis_retention import trim
from controller.eventing.redis_state import RedisConsumerState
from controller.eventing.runner import ConsumerRunner
from controller.eventing.sender import Sender
from flint_common import redis_conn
from flint_common.httpauth import describe_error
from flint_common.redis_config import RedisSettings
from flint_common.redis_keys import trim_lock_key

__all__ = [
    "CONTROL_CONNECTIONS",
    "CONTROL_TIMEOUT_S",
    "READ_CONNECTIONS",
    "READ_TIMEOUT_MARGIN_S",
    "TRIM_EVERY_S",
    "RedisDispatch",
]

log = logging.getLogger("flint.dispatcher")

READ_CONNECTIONS = 512
"""The blocking reads' pool: one connection per Redis runner while it waits in `XREADGROUP`. Past
that many runners, a read waits for a connection (each is given back within `block_ms`): reads
come later, nothing fails."""
READ_TIMEOUT_MARGIN_S = 5.0
"""The reads' socket timeout is the blocking read's (`block_ms`) plus this: a partitioned Redis
fails the runners (restarted with back-off) instead of hanging them."""
CONTROL_CONNECTIONS = 64
"""The pool of every other command, each holding a connection for one round trip: acks (one in
flight per runner), heartbeats, claims, retries (up to a runner's window of 64 at once), leases,
trims. A command past 64 in flight waits for a connection rather than opening one more."""
CONTROL_TIMEOUT_S = 5.0
"""The socket timeout of those commands: none of them blocks server-side."""
TRIM_EVERY_S = 30.0
"""How often the Redis streams of the plan are trimmed (by one dispatcher each)."""


class RedisDispatch:
    """One dispatcher's clients of its Redis, and what it does with them."""

    def __init__(
        self,
        settings: RedisSettings,
        *,
        owner: str,
        metrics: DispatcherMetrics,
        consumer: RedisConsumerSettings,
        log_max_age_s: float | None = None,
        log_max_records: int | None = None,
        trim_every_s: float = TRIM_EVERY_S,
    ) -> None:
        self.owner = owner
        """This dispatcher's id: its consumer name in the groups, the value of the locks it takes."""
        self.consumer = consumer
        self.metrics = metrics
        self.log_max_age_s = log_max_age_s
        self.log_max_records = log_max_records
        self.trim_every_s = trim_every_s
        # Both connect on first use; bytes (stream entries are).
        self.reads = redis_conn.client(
            settings, decode=False, socket_timeout_s=consumer.block_ms / 1000 + READ_TIMEOUT_MARGIN_S,
            max_connections=READ_CONNECTIONS)
        """The blocking `XREADGROUP`s of the sources, alone."""
        self.control = redis_conn.client(settings, decode=False, socket_timeout_s=CONTROL_TIMEOUT_S,
                                         max_connections=CONTROL_CONNECTIONS)
        """Everything else: acks, heartbeats, claims, retries, leases, trims."""

    def runner(self, tp: ConsumerPlan, sender: Sender) -> ConsumerRunner:
        """The runner of the consumer `tp` (of a Redis stream), not started; `ValueError` for a
        filter or delivery the API let through but the runner cannot run."""
        assert isinstance(tp.log, RedisLog)
        source = RedisConsumerSource(
            self.control, reads=self.reads, log_uid=tp.log_uid, stream=tp.log.stream,
            group=tp.log.group, consumer=self.owner, ordered=tp.ordered, settings=self.consumer,
            label=tp.key)
        state = RedisConsumerState(self.control, log_uid=tp.log_uid, consumer_uid=tp.uid,
                                   owner=self.owner, lease_s=self.consumer.lease_s)
        return ConsumerRunner(tp, source, state, sender, self.metrics)

    async def trim(self, plan: DispatchPlan) -> tuple[int, int]:
        """Trim every Redis stream of `plan` whose lock this dispatcher takes (the others were
        trimmed by another this period): below what all its consumers handled, and past the age
        and size caps (counted and logged as dropped); (handled, dropped) trimmed."""
        logs = {(t.log_uid, t.log.stream) for t in plan.triggers if isinstance(t.log, RedisLog)}
        handled = dropped = 0
        period_ms = max(int(self.trim_every_s * 1000), 1)
        for log_uid, stream in sorted(logs):
            if not await self.control.set(trim_lock_key(log_uid), self.owner, nx=True, px=period_ms):
                continue  # another dispatcher trims it this period
            h, d = await trim(self.control, log_uid, stream, max_age_s=self.log_max_age_s,
                              max_records=self.log_max_records)
            handled += h
            dropped += d
            if d:
                self.metrics.retention_dropped.labels(log_uid).inc(d)
                log.error("event=retention_dropped log=%s stream=%s records=%d (past the log's age "
                          "or size cap before every consumer handled them)", log_uid, stream, d)
        return handled, dropped

    async def trim_forever(self, plan: Callable[[], DispatchPlan]) -> None:
        """`trim` the current `plan()` every `trim_every_s`."""
        while True:
            await asyncio.sleep(self.trim_every_s)
            try:
                await self.trim(plan())
            except Exception as exc:  # Redis away: the next round tries again
                log.warning("event=trim_failed error=%s", describe_error(exc))

    async def close(self) -> None:
        await self.reads.aclose()
        await self.control.aclose()
