"""Where a Redis-backed broker or channel keeps its data: every key of one log carries the hash
tag `{<log uid>}`, so a Redis Cluster puts them all in one slot (scripts and pipelines over them
stay legal) and `SCAN MATCH flint:{<uid>}:*` finds them all when the broker is deleted. Pure.

Layout, for log uid U and consumer (Trigger or Subscription) uid C:

* `flint:{U}:events` — the stream of events (entry field `e`: the bytes of `Event.to_log()`);
  each consumer reads it through its consumer group, named C;
* `flint:{U}:c:{C}:<part>` — that consumer's delivery state (`CONSUMER_PARTS`): pending retries
  (`retries`: sorted set, score = next attempt), their data (`retrydata`), retries being attempted
  (`inflight`: retry id → lease), the retries' event ids for retention (`retryfloor`: sorted set,
  member = retry id, score = the millisecond part of the retry's stream id), dead letters (`dead`,
  `deaddata`), id counters (`seq`), the ordered consumer's lease and fencing counter (`lease`,
  `fence`);
* `flint:{U}:trim` — the lock of the stream's trimming: the id of the dispatcher that trims it
  this period (`SET … NX PX <period>`), so that one dispatcher does it, not every one.
"""

from __future__ import annotations

__all__ = [
    "CONSUMER_PARTS",
    "EVENT_FIELD",
    "consumer_key",
    "consumer_pattern",
    "log_pattern",
    "stream_key",
    "trim_lock_key",
]

EVENT_FIELD = b"e"
"""The stream entry's one field: the event as stored (`Event.to_log()`)."""

CONSUMER_PARTS = ("retries", "retrydata", "inflight", "retryfloor", "dead", "deaddata", "seq", "lease",
                  "fence")


def _tag(log_uid: str) -> str:
    if not log_uid or any(c in log_uid for c in "{}*?[] \t\r\n"):
        raise ValueError(f"not a log uid: {log_uid!r}")
    return "{" + log_uid + "}"


def stream_key(log_uid: str) -> str:
    """The stream of the broker or channel with uid `log_uid`."""
    return f"flint:{_tag(log_uid)}:events"


def trim_lock_key(log_uid: str) -> str:
    """The lock that lets one dispatcher trim the stream of `log_uid` per period."""
    return f"flint:{_tag(log_uid)}:trim"


def consumer_key(log_uid: str, consumer_uid: str, part: str) -> str:
    """One part (`CONSUMER_PARTS`) of a consumer's delivery state, in its log's slot."""
    if part not in CONSUMER_PARTS:
        raise ValueError(f"unknown consumer key part {part!r}")
    if not consumer_uid or any(c in consumer_uid for c in "{}*?[]: \t\r\n"):
        raise ValueError(f"not a consumer uid: {consumer_uid!r}")
    return f"flint:{_tag(log_uid)}:c:{consumer_uid}:{part}"


def consumer_pattern(log_uid: str, consumer_uid: str) -> str:
    """`SCAN MATCH` pattern of every key of one consumer (it was deleted)."""
    consumer_key(log_uid, consumer_uid, "seq")  # validates both
    return f"flint:{_tag(log_uid)}:c:{consumer_uid}:*"


def log_pattern(log_uid: str) -> str:
    """`SCAN MATCH` pattern of every key of one log (its broker or channel was deleted)."""
    return f"flint:{_tag(log_uid)}:*"
