"""How far behind each consumer of a Redis stream is: `XINFO GROUPS` lag plus pending.

`lag` is what the group has not yet been given (entries after its last-delivered id); Redis 7.0
reports it as null when it cannot tell (after deletions or trims in the stream, or a group moved
with `XGROUP SETID`). Then, from `XINFO STREAM`: a group at or past the stream's last id has lag
0, one before its first entry has the whole stream to go; else the entries after its
last-delivered id are counted with `XRANGE`, at most `COUNT_CAP` of them, inside Redis (a script
returns the count, not the entries). Counting is not free: Redis materializes each entry (about
6 ms per 1,000 entries of 1 KiB, during which it serves nobody), hence the low cap.
`pending` is what was given to a dispatcher and not yet acknowledged. Backlog = lag + pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

__all__ = ["COUNT_CAP", "GroupBacklog", "group_backlogs", "parse_groups"]

COUNT_CAP = 1_000
"""Most entries an XRANGE count reads when Redis reports no lag (the backlog then says `≥`)."""

COUNT_AFTER = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
return #entries
"""
"""The number of entries of stream KEYS[1] from ARGV[1] (an XRANGE start), at most ARGV[2]."""


@dataclass(frozen=True)
class GroupBacklog:
    """One consumer group's backlog."""

    group: str
    lag: int | None
    """Entries not yet delivered to the group; None: Redis did not say (see `counted`)."""
    pending: int
    """Delivered to a consumer, not yet acknowledged."""
    last_delivered: str
    counted: bool = False
    """`lag` was counted with XRANGE (Redis reported null)."""
    capped: bool = False
    """The count stopped at `COUNT_CAP`: the lag is at least that."""

    @property
    def backlog(self) -> int | None:
        return None if self.lag is None else self.lag + self.pending

    def to_wire(self) -> dict[str, Any]:
        return {"group": self.group, "lag": self.lag, "pending": self.pending,
                "backlog": self.backlog, "lastDeliveredId": self.last_delivered,
                "counted": self.counted, "capped": self.capped}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_groups(reply: Sequence[Mapping[Any, Any]]) -> dict[str, GroupBacklog]:
    """redis-py's `XINFO GROUPS` reply → group name → backlog (lag None when Redis said null).
    Pure."""
    out: dict[str, GroupBacklog] = {}
    for g in reply:
        info = {_text(k): v for k, v in g.items()}
        lag = info.get("lag")
        name = _text(info.get("name", ""))
        out[name] = GroupBacklog(
            group=name, lag=None if lag is None else int(lag), pending=int(info.get("pending") or 0),
            last_delivered=_text(info.get("last-delivered-id", "0-0")))
    return out


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _after(stream_id: str) -> str:
    """The XRANGE start just after `stream_id` (exclusive range, Redis ≥ 6.2)."""
    return f"({stream_id}"


async def group_backlogs(client: aioredis.Redis, stream: str) -> dict[str, GroupBacklog]:
    """The backlog of every group of `stream` ({} when the stream does not exist yet)."""
    try:
        reply = await client.xinfo_groups(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return {}
        raise
    out = parse_groups(reply)
    unknown = [g for g in out.values() if g.lag is None]
    if not unknown:
        return out
    info = {_text(k): v for k, v in (await client.xinfo_stream(stream)).items()}
    length = int(info.get("length") or 0)
    first = info.get("first-entry")
    first_id = _id(_text(first[0])) if first else None
    last_id = _id(_text(info.get("last-generated-id") or "0-0"))
    count_after = client.register_script(COUNT_AFTER)
    for g in unknown:
        at = _id(g.last_delivered)
        if at >= last_id or first_id is None:
            n, counted = 0, False
        elif at < first_id:
            n, counted = length, False
        else:
            n = int(await count_after(keys=[stream], args=[_after(g.last_delivered), COUNT_CAP]))
            counted = True
        out[g.group] = GroupBacklog(group=g.group, lag=n, pending=g.pending,
                                    last_delivered=g.last_delivered, counted=counted,
                                    capped=counted and n >= COUNT_CAP)
    return out
