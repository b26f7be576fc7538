"""How far behind each consumer of a Redis stream is: `XINFO GROUPS` lag plus pending.

`lag` is what the group has not yet been given (entries after its last-delivered id); Redis 7.0
reports it as null when it cannot tell (after deletions or trims in the stream), and then the
entries after the last-delivered id are counted with `XRANGE`, at most `COUNT_CAP` of them.
`pending` is what was given to a dispatcher and not yet acknowledged. Backlog = lag + pending.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

__all__ = ["COUNT_CAP", "GroupBacklog", "group_backlogs", "parse_groups"]

COUNT_CAP = 10_000
"""Most entries an XRANGE count reads when Redis reports no lag (the backlog then says `≥`)."""


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
    for name, g in list(out.items()):
        if g.lag is None:
            entries = await client.xrange(stream, min=_after(g.last_delivered), max="+",
                                          count=COUNT_CAP)
            n = len(entries or ())
            out[name] = GroupBacklog(group=name, lag=n, pending=g.pending,
                                     last_delivered=g.last_delivered, counted=True,
                                     capped=n >= COUNT_CAP)
    return out
