"""What a reconciler creates in Redis before the object it reconciles is published, and marks in
the object's `status.annotations`: a Redis-backed log's stream before the gateways get its broker
or channel (`STREAM_ANNOTATION`), a consumer's group before it enters the dispatch plan
(`CONSUMER_GROUP_ANNOTATION`). The publisher and the plan look at the marks
(`controller.redis_logs` says why the controller, and only it, creates these).

A mark stays once set: a Redis outage afterwards changes nothing (the gateways answer 503, the
dispatchers wait), and what Redis lost is created again by a later reconcile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from controller.api.eventing import CONSUMER_GROUP_ANNOTATION, STREAM_ANNOTATION
from controller.reconcilers.context import EventingContext, Obj
from controller.redis_logs import StreamMissing
from flint_common.redis_keys import stream_key

__all__ = ["NotCreated", "ensure_group", "ensure_stream", "unmark_group"]

log = logging.getLogger("flint.redis")

NotCreated = tuple[str, str]
"""(reason, message) of a condition saying why a stream or group does not exist yet."""


def _marked(status: Obj, key: str, stream: str) -> bool:
    return bool((status.get("annotations") or {}).get(key) == stream)


def _mark(status: Obj, key: str, stream: str) -> None:
    annotations: dict[str, Any] = dict(status.get("annotations") or {})
    annotations[key] = stream
    status["annotations"] = annotations


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def ensure_stream(ctx: EventingContext, status: Obj, log_uid: str,
                        recreated: Callable[[], None] = lambda: None) -> NotCreated | None:
    """Create the stream of the log `log_uid` (a broker's or RedisChannel's) and mark it in
    `status`; None once it exists (created now or before), else why not. `recreated()` is called
    when the stream had to be made again (it was marked: Redis lost it): the log's consumers are
    to make their groups again now, not at their next recheck."""
    assert ctx.redis_logs is not None
    stream = stream_key(log_uid)
    try:
        created = await ctx.redis_logs.ensure_stream(stream)
    except (RedisError, OSError) as exc:
        if _marked(status, STREAM_ANNOTATION, stream):
            return None  # created before: the outage is the gateways' 503, not a new state
        return "RedisUnreachable", f"creating the Redis stream {stream} failed: {_error(exc)}"
    if created and _marked(status, STREAM_ANNOTATION, stream):
        log.warning("event=stream_recreated stream=%s (Redis lost it: its consumers make their "
                    "groups again from its first entry)", stream)
        recreated()
    _mark(status, STREAM_ANNOTATION, stream)
    return None


async def ensure_group(
    ctx: EventingContext, status: Obj, log_uid: str, consumer_uid: str
) -> NotCreated | None:
    """Create the consumer group of `consumer_uid` at the tail of the log's stream and mark it in
    `status`; None once it exists (created now or before), else why not (the stream does not
    exist yet, or Redis did not answer)."""
    assert ctx.redis_logs is not None
    stream = stream_key(log_uid)
    marked = _marked(status, CONSUMER_GROUP_ANNOTATION, stream)
    try:
        # Marked: the group was made before, so one missing now was lost with its stream (made
        # again since, holding only entries appended after): start at the first, skip nothing.
        await ctx.redis_logs.ensure_group(stream, consumer_uid, from_start=marked)
    except StreamMissing:
        if marked:
            return None  # Redis lost it: the log's reconciler makes it again, then so do we
        return "WaitingForStream", f"waiting for the Redis stream {stream} (its log's reconciler creates it)"
    except (RedisError, OSError) as exc:
        if marked:
            return None
        return "RedisUnreachable", f"creating the consumer group on {stream} failed: {_error(exc)}"
    _mark(status, CONSUMER_GROUP_ANNOTATION, stream)
    return None


def unmark_group(status: Obj) -> None:
    """The consumer reads no Redis stream (now): drop its group's mark."""
    annotations = dict(status.get("annotations") or {})
    if annotations.pop(CONSUMER_GROUP_ANNOTATION, None) is None:
        return
    if annotations:
        status["annotations"] = annotations
    else:
        status.pop("annotations", None)
