"""Finds what Flint's Redis holds for objects the store no longer has (orphans), for the janitor
(`redis_janitor`) to delete: the consumer groups (and consumer keys) of Triggers and Subscriptions
that do not exist, and every key of a log whose broker or channel does not exist. They come from
a deletion missed (a controller down at the time, a journal lost) or made undone by a late writer
(a reconcile that began before the deletion), and a leftover group would hold back its stream's
retention floor forever (`controller.eventing.redis_retention`).

The store is the authority, and the order of the two looks is what keeps the sweep off live
objects: Redis is listed first, the store is read after. A consumer is created in the store before
its group exists (its reconciler creates the group once it sees it: `controller.redis_logs`), and
a broker or channel before its stream; so whatever the listing found for an object that exists
was in the store already when the store was read, and a sweep never takes a live consumer's group
or a live log's stream. Read the other way round, a consumer created between the two reads (and
its group) would look orphaned.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from controller.eventing.redis_scripts import text
from controller.reconcilers.context import BROKERS, REDIS_CHANNELS, SUBSCRIPTIONS, TRIGGERS
from controller.store.base import Kind, Store

__all__ = ["Live", "Orphans", "find_orphans", "orphans_of", "store_owners"]

SCAN_COUNT = 500
_KEY = re.compile(r"^flint:\{([^{}]+)\}:(.*)$")
_CONSUMER_PART = re.compile(r"^c:([^:]+):")


@dataclass(frozen=True)
class Live:
    """What exists in the store: the uids of brokers and channels (logs), and of Triggers and
    Subscriptions (consumers)."""

    logs: frozenset[str] = frozenset()
    consumers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Orphans:
    """What a sweep found to delete."""

    logs: list[str] = field(default_factory=list)
    """Log uids none of whose keys has an owner: delete every key."""
    consumers: list[tuple[str, str]] = field(default_factory=list)
    """(log uid, group or consumer uid) on a live log whose consumer does not exist."""


async def store_owners(store: Store) -> Live:
    """What may own keys on Redis, read from the store itself (not an informer's cache, which may
    lag): the uids of every Broker and RedisChannel, and of every Trigger and Subscription."""

    async def uids(*kinds: Kind) -> frozenset[str]:
        out: set[str] = set()
        for kind in kinds:
            items, _ = await store.list(kind)
            out.update(str(o["metadata"]["uid"]) for o in items if o["metadata"].get("uid"))
        return frozenset(out)

    return Live(logs=await uids(BROKERS, REDIS_CHANNELS), consumers=await uids(TRIGGERS, SUBSCRIPTIONS))


def orphans_of(found: Mapping[str, set[str]], live: Live) -> Orphans:
    """Orphans among `found` (log uid → the groups on its stream and the consumers with keys in
    its slot) given what the store has. Pure."""
    logs = sorted(uid for uid in found if uid not in live.logs)
    consumers = sorted((uid, c) for uid, names in found.items() if uid in live.logs
                       for c in names if c not in live.consumers)
    return Orphans(logs, consumers)


async def list_flint_keys(client: aioredis.Redis) -> dict[str, set[str]]:
    """Every log with a key on this Redis (`flint:{<uid>}:…`) → the groups on its stream and the
    consumers with keys of their own (`flint:{<uid>}:c:<consumer>:…`)."""
    found: dict[str, set[str]] = {}
    streams: list[tuple[str, str]] = []
    async for raw in client.scan_iter(match="flint:{*}:*", count=SCAN_COUNT):
        m = _KEY.match(text(raw))
        if m is None:
            continue
        uid, rest = m.group(1), m.group(2)
        names = found.setdefault(uid, set())
        if rest == "events":
            streams.append((uid, m.group(0)))
        elif (c := _CONSUMER_PART.match(rest)) is not None:
            names.add(c.group(1))
    for uid, stream in streams:
        try:
            groups: Any = await client.xinfo_groups(stream)
        except ResponseError:  # deleted meanwhile, or not a stream
            continue
        found[uid].update(text(g["name"]) for g in groups)
    return found


async def find_orphans(client: aioredis.Redis, live: Callable[[], Awaitable[Live]]) -> Orphans:
    """List Flint's keys on Redis, then (in this order: see the module docstring) ask the store
    what exists; the orphans."""
    found = await list_flint_keys(client)
    if not found:
        return Orphans()
    return orphans_of(found, await live())
