"""The Lua scripts of the Redis consumer backend, and the pure helpers around them: what must
happen atomically on one consumer's keys (take due retries with a lease, move a retry to the dead
letters and back, an ordered consumer's lease with its fencing number) happens in one script.

Every script touches only keys of one log (one hash tag, `flint_common.redis_keys`), passed as
KEYS, so it is legal on a Redis Cluster. Values the scripts parse:

* `retries` (retry id, score = when due) and `inflight` (retry id → `<lease until>|<due>|<owner>`):
  the times are unix seconds on Redis's clock (`TIME` in the script), never a dispatcher's: a
  caller passes a delay (its `next_at` minus its own present), so a dispatcher whose clock is off
  can neither take a retry early nor take over a live lease;
* `retrydata` (retry id → JSON `{"event_id", "event" (base64 of `Event.to_log()`), "attempt"}`)
  and `deaddata` (dead letter id → JSON with `reason`, `status`, `detail`, `at` too);
* `retryfloor` (retry id, score = the millisecond part of its event's stream id, `floor_score`):
  kept with `retrydata` by every script that adds or removes a retry, so retention finds the
  oldest retry's event with one `ZRANGE` instead of reading every retry;
* `lease` (`<owner>|<fencing number>`), `fence` (the counter of fencing numbers).
"""

from __future__ import annotations

__all__ = [
    "ACQUIRE_LEASE",
    "ADD_DEAD_LETTER",
    "ADD_RETRY",
    "HEARTBEAT",
    "HOLD",
    "REDELIVER",
    "RELEASE_LEASE",
    "REMOVE_DEAD_CONSUMERS",
    "REMOVE_RETRY",
    "RENEW_LEASE",
    "TAKE_DUE",
    "UPDATE_RETRY",
    "floor_score",
    "lease_value",
    "min_stream_id",
    "parse_stream_id",
    "text",
]

_PARSE_INFLIGHT = """
local function parse(v)
  local a = string.find(v, '|', 1, true)
  local b = string.find(v, '|', a + 1, true)
  return tonumber(string.sub(v, 1, a - 1)), string.sub(v, a + 1, b - 1), string.sub(v, b + 1)
end
"""

_CLOCK = """
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function fmt(x) return string.format('%.6f', x) end
"""
"""Redis's own present (`TIME`, unix seconds with microseconds) and the exact text of a time: the
retries' due times and leases are on Redis's clock, so dispatchers whose clocks disagree still
agree on them (a script may call `TIME` before writing: scripts replicate their effects)."""

TAKE_DUE = _PARSE_INFLIGHT + _CLOCK + """
-- KEYS: retries, inflight, retrydata, retryfloor
-- ARGV: offset (the caller's `now` minus its clock's present, seconds: 0 for "now"), limit,
-- lease (seconds), owner, then the retry ids the owner holds (renewed).
-- Returns Redis's present (TIME), then id, data and due time of each retry taken.
local t = clock()
local now, limit, owner = t + tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local untl = fmt(now + tonumber(ARGV[3]))
for i = 5, #ARGV do
  local v = redis.call('HGET', KEYS[2], ARGV[i])
  if v then
    local _, nxt, who = parse(v)
    if who == owner then redis.call('HSET', KEYS[2], ARGV[i], untl .. '|' .. nxt .. '|' .. owner) end
  end
end
local out = {fmt(t)}
if limit <= 0 then return out end
local taken = 0
local function take(id, nxt)
  local data = redis.call('HGET', KEYS[3], id)
  if not data then
    redis.call('HDEL', KEYS[2], id)
    redis.call('ZREM', KEYS[4], id)
    return
  end
  redis.call('HSET', KEYS[2], id, untl .. '|' .. nxt .. '|' .. owner)
  out[#out + 1] = id
  out[#out + 1] = data
  out[#out + 1] = nxt
  taken = taken + 1
end
-- a lease that expired (its taker died or stalled) is taken over like a due retry
local flat = redis.call('HGETALL', KEYS[2])
for i = 1, #flat, 2 do
  if taken >= limit then break end
  local u, nxt = parse(flat[i + 1])
  if u <= now then take(flat[i], nxt) end
end
if taken < limit then
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now), 'WITHSCORES', 'LIMIT', 0,
                         limit - taken)
  for i = 1, #due, 2 do
    redis.call('ZREM', KEYS[1], due[i])
    take(due[i], fmt(tonumber(due[i + 1])))
  end
end
return out
"""

ADD_RETRY = _CLOCK + """
-- KEYS: seq, retries, retrydata, retryfloor; ARGV: delay (seconds from Redis's present), data,
-- the millisecond part of the event's stream id ('' if none). Returns the new retry id.
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], id, ARGV[2])
redis.call('ZADD', KEYS[2], fmt(clock() + tonumber(ARGV[1])), id)
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[4], ARGV[3], id) end
return id
"""

OWNED = """
local function taken_by_other(inflight, id, owner)
  local v = redis.call('HGET', KEYS[inflight], id)
  return v ~= false and string.sub(v, -(#owner + 1)) ~= '|' .. owner
end
"""
"""Is retry `id` in progress under another taker's lease (`inflight`: the index of that key in
KEYS; its value `until|next|owner`)? A taker whose lease expired and was taken over must not
write its outcome over the new taker's."""

HOLD = _PARSE_INFLIGHT + _CLOCK + """
-- KEYS: inflight; ARGV: retry id, lease (seconds), owner.
-- 1 if the retry is in progress under the owner's lease, which is extended to `lease` from
-- Redis's present; else 0: it is gone, back in the waiting set, or another taker holds it now.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local _, nxt, who = parse(v)
if who ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], fmt(clock() + tonumber(ARGV[2])) .. '|' .. nxt .. '|' .. who)
return 1
"""

UPDATE_RETRY = OWNED + _CLOCK + """
-- KEYS: retries, inflight, retrydata, retryfloor; ARGV: retry id, attempt, delay (seconds from
-- Redis's present), owner. Not while another taker holds its lease: a stalled taker's outcome is
-- dropped (0). A retry gone (delivered, dead-lettered elsewhere) is not brought back.
if taken_by_other(2, ARGV[1], ARGV[4]) then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
local data = redis.call('HGET', KEYS[3], ARGV[1])
if not data then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 0
end
local obj = cjson.decode(data)
obj['attempt'] = tonumber(ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], cjson.encode(obj))
redis.call('ZADD', KEYS[1], fmt(clock() + tonumber(ARGV[3])), ARGV[1])
return 1
"""

REMOVE_RETRY = """
-- KEYS: retries, inflight, retrydata, retryfloor; ARGV: retry id. The retry was delivered: it
-- goes from every key at once (a missing id is not an error).
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""

ADD_DEAD_LETTER = OWNED + """
-- KEYS: seq, dead, deaddata, retries, inflight, retrydata, retryfloor; ARGV: data, retry id or '',
-- owner. Returns the dead letter's id; the retry (if any) goes in the same step — unless another
-- taker holds its lease now, or it is gone (delivered elsewhere): then 0 and no dead letter.
if ARGV[2] ~= '' and (taken_by_other(5, ARGV[2], ARGV[3])
                     or redis.call('HEXISTS', KEYS[6], ARGV[2]) == 0) then return 0 end
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], id, ARGV[1])
redis.call('ZADD', KEYS[2], id, id)
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('HDEL', KEYS[5], ARGV[2])
  redis.call('HDEL', KEYS[6], ARGV[2])
  redis.call('ZREM', KEYS[7], ARGV[2])
end
return id
"""

REDELIVER = _CLOCK + """
-- KEYS: seq, dead, deaddata, retries, retrydata, retryfloor; ARGV: delay (seconds from Redis's
-- present), then dead letter ids (none: all). Each dead letter becomes a retry with attempt 0,
-- due then. Returns how many moved.
local ids = {}
if #ARGV == 1 then
  ids = redis.call('ZRANGE', KEYS[2], 0, -1)
else
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local due = fmt(clock() + tonumber(ARGV[1]))
local moved = 0
for _, id in ipairs(ids) do
  local data = redis.call('HGET', KEYS[3], id)
  if data then
    local d = cjson.decode(data)
    local rid = redis.call('INCR', KEYS[1])
    redis.call('HSET', KEYS[5], rid,
               cjson.encode({event_id = d['event_id'], event = d['event'], attempt = 0}))
    redis.call('ZADD', KEYS[4], due, rid)
    local ms = type(d['event_id']) == 'string' and string.match(d['event_id'], '^(%d+)%-%d+$')
    if ms and #ms <= 15 then redis.call('ZADD', KEYS[6], ms, rid) end
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    moved = moved + 1
  end
end
return moved
"""

ACQUIRE_LEASE = """
-- KEYS: lease, fence; ARGV: owner, lease ms. Returns the new fencing number, or 0 when another
-- owner holds the lease. The same owner (a restarted dispatcher: stable name) takes it again.
local v = redis.call('GET', KEYS[1])
if v then
  local who = string.match(v, '^(.*)|%d+$')
  if who ~= ARGV[1] then return 0 end
end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. f, 'PX', ARGV[2])
return f
"""

RENEW_LEASE = """
-- KEYS: lease; ARGV: our value, lease ms. 1 if still ours (renewed), else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE_LEASE = """
-- KEYS: lease; ARGV: our value. Deletes the lease only if it is still ours.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

HEARTBEAT = """
-- KEYS: stream; ARGV: group, our name, then the ids we hold. Resets the idle time of those still
-- pending with us (XCLAIM … JUSTID: not a delivery); returns the others, each followed by the
-- consumer that claimed it meanwhile, or '' when it is pending no more (acked meanwhile): we
-- must stop holding them.
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
    lost[#lost + 1] = p[1] and p[1][2] or ''
  end
end
return lost
"""

REMOVE_DEAD_CONSUMERS = """
-- KEYS: stream; ARGV: group, our name, min idle ms. Deletes the group's other consumers that
-- have nothing pending and were idle that long, in one step (none can read in between and lose
-- its pending entries with it). Returns their names.
local gone = {}
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[2] and tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    gone[#gone + 1] = f['name']
  end
end
return gone
"""


def text(value: object) -> str:
    """A reply of a client without `decode_responses` (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_stream_id(value: object) -> tuple[int, int]:
    """`<ms>-<seq>` as a pair that sorts as Redis orders stream ids."""
    ms, _, seq = text(value).partition("-")
    return int(ms), int(seq or 0)


def floor_score(event_id: str) -> str | None:
    """A retry's `retryfloor` score: the millisecond part of its event's stream id (`<ms>-<seq>`),
    as digits that a double holds exactly; None for an id that is not a stream id."""
    ms, dash, seq = event_id.partition("-")
    if not (dash and ms.isdigit() and seq.isdigit() and ms.isascii() and seq.isascii()
            and len(ms) <= 15):
        return None
    return str(int(ms))


def min_stream_id(ids: list[str]) -> str | None:
    """The smallest of `ids` in stream order (None for none)."""
    return min(ids, key=parse_stream_id) if ids else None


def lease_value(owner: str, fence: int) -> str:
    """What the `lease` key holds while `owner` holds it with fencing number `fence`."""
    return f"{owner}|{fence}"
