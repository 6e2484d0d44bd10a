/**
 * The Redis engine's server-side scripts. Each touches one channel's keys only (`KEYS[1]`, the stream;
 * the shard channel shares its hash tag), so they run on a Redis Cluster too. Needs Redis ≥ 7.0 (XADD
 * `<ms>-*`, XSETID MAXDELETEDID, sharded pub/sub).
 *
 * The gap rule reads the stream's `max-deleted-entry-id`: the newest id the channel no longer holds.
 * Redis 7.0 updates it on XDEL but not on XTRIM, so {@link trim} records it itself with XSETID.
 *
 * A key can vanish before its TTL: evicted under `maxmemory` (any policy but `noeviction`), deleted, or
 * flushed. Its messages are gone with it, so a cursor into them must get a gap, while a cursor handed out
 * for a channel without a key (nothing published in the TTL window) must not. Those positions therefore
 * carry the sequence {@link POSITION_SEQ}, which no stream entry reaches, and a new key records its birth
 * as `max-deleted-entry-id` `<ms-1>-POSITION_SEQ`: a message id before it (from a vanished key) gets a
 * `trimmed` gap; a position before it does not (docs/scale-out.md, "Memory").
 */
import { createHash } from "node:crypto";

export interface RedisScript {
  readonly source: string;
  readonly sha: string;
}

function script(source: string): RedisScript {
  return { source, sha: createHash("sha1").update(source).digest("hex") };
}

/** The sequence of a position handed out for a channel without a key (Number.MAX_SAFE_INTEGER: exact in Lua's doubles). */
export const POSITION_SEQ = "9007199254740991";

const HELPERS = String.raw`
local POSITION_SEQ = ${POSITION_SEQ}
local function fmt(n) return string.format('%.0f', n) end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function cmp(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm and -1 or 1 end
  if as ~= bs then return as < bs and -1 or 1 end
  return 0
end
-- The broker's clock unless the caller injects one (tests move time).
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function isPosition(id)
  local _, seq = parse(id)
  return seq == POSITION_SEQ
end
local function lastEntry(key)
  local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #e == 0 then return nil end
  return e[1][1]
end
local function info(key)
  local flat = redis.call('XINFO', 'STREAM', key)
  local out = {}
  for i = 1, #flat, 2 do out[flat[i]] = flat[i + 1] end
  return out['last-generated-id'], out['max-deleted-entry-id']
end
-- Drops what is past the count or age limit and records the newest dropped id as max-deleted-entry-id.
local function trim(key, maxCount, cutoff)
  local dropped = nil
  local excess = redis.call('XLEN', key) - maxCount
  if excess > 0 then
    local e = redis.call('XRANGE', key, '-', '+', 'COUNT', excess)
    dropped = e[#e][1]
  end
  if cutoff > 0 then
    local old = redis.call('XREVRANGE', key, '(' .. fmt(cutoff) .. '-0', '-', 'COUNT', 1)
    if #old > 0 and (dropped == nil or cmp(old[1][1], dropped) > 0) then dropped = old[1][1] end
  end
  if dropped == nil then return end
  local ms, seq = parse(dropped)
  redis.call('XTRIM', key, 'MINID', '=', fmt(ms) .. '-' .. fmt(seq + 1))
  -- Trimming only removes from the front, so when nothing is left the dropped id was the last one.
  redis.call('XSETID', key, lastEntry(key) or dropped, 'MAXDELETEDID', dropped)
end
local function entry(e)
  local fields = {}
  for i = 1, #e[2], 2 do fields[e[2][i]] = e[2][i + 1] end
  return e[1], fields['t'], fields['d']
end
`;

/**
 * KEYS[1] stream, KEYS[2] (optional) the publish's idempotency key; ARGV: live shard channel, maxCount,
 * maxAgeMs, ttlMs, now ('' = broker clock), data JSON, dedupe window ms.
 * Appends, trims, refreshes the key's expiry and announces `<id> <prev> <time> <data>` on the shard
 * channel, in one round trip. Returns {id, time}. With KEYS[2] already set (a retry within the window)
 * it appends nothing and returns {id, time, 1} of the first publish; otherwise it sets KEYS[2] to
 * `<id> <time>` with the window as its expiry, in the same atomic step as the append.
 */
export const PUBLISH_SCRIPT = script(String.raw`${HELPERS}
if #KEYS > 1 then
  local seen = redis.call('GET', KEYS[2])
  if seen then
    local sid, st = string.match(seen, '^(%S+) (%d+)$')
    return {sid, st, 1}
  end
end
local key = KEYS[1]
local maxCount, maxAge, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = clock(ARGV[5])
local existed = redis.call('EXISTS', key) == 1
local prev = '0-0'
local ms = now
if existed then
  local last = lastEntry(key)
  if last then prev = last else last = info(key) end
  local lastMs = parse(last)
  if lastMs > ms then ms = lastMs end
end
local id = redis.call('XADD', key, fmt(ms) .. '-*', 'd', ARGV[6], 't', fmt(now))
if not existed and now > 0 then
  -- A new key records its birth: a message id before it was in a key that expired or vanished (the read script).
  redis.call('XSETID', key, id, 'MAXDELETEDID', fmt(now - 1) .. '-' .. fmt(POSITION_SEQ))
end
trim(key, maxCount, now - maxAge)
redis.call('PEXPIRE', key, ttl)
redis.call('SPUBLISH', ARGV[1], id .. ' ' .. prev .. ' ' .. fmt(now) .. ' ' .. ARGV[6])
if #KEYS > 1 then redis.call('SET', KEYS[2], id .. ' ' .. fmt(now), 'PX', ARGV[7]) end
return {id, fmt(now)}
`);

/**
 * KEYS[1] stream; ARGV: since ('' = position only, '0' = from the start, or an id), limit, maxCount,
 * maxAgeMs, ttlMs, now ('' = broker clock). Returns {reason, resume, cursor, id, time, data, id, …}
 * with reason '' when there is no gap.
 */
export const READ_SCRIPT = script(String.raw`${HELPERS}
local key = KEYS[1]
local since, limit = ARGV[1], tonumber(ARGV[2])
local maxCount, maxAge, ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local now = clock(ARGV[6])
if redis.call('EXISTS', key) == 0 then
  -- The key expires ttl after its last publish, so every id an expired key held is below horizon and
  -- every id a publish will make is above position.
  local position = fmt(math.max(now - 1, 0)) .. '-' .. fmt(POSITION_SEQ)
  local horizon = fmt(math.max(now - ttl + 1, 0)) .. '-0'
  if since == '' or since == '0' then return {'', '', position} end
  if cmp(since, position) > 0 then return {'unknown', position, position} end
  if cmp(since, horizon) < 0 then return {'trimmed', horizon, position} end
  -- A message id inside the TTL window: its key was evicted or deleted, with whatever followed it.
  if not isPosition(since) then return {'trimmed', position, position} end
  return {'', '', position}
end
trim(key, maxCount, now - maxAge)
local last, deleted = info(key)
if since == '' then return {'', '', last} end
local out = {'', '', ''}
local from = '-'
if since ~= '0' then
  from = since
  if cmp(since, deleted) < 0 and not (isPosition(since) and isPosition(deleted) and cmp(since, fmt(math.max(parse(deleted) + 1 - ttl, 0)) .. '-0') >= 0) then
    -- (The exception: a position handed out while the channel had no key, in the TTL window before this
    -- key's birth and nothing trimmed since. No key of the channel can have expired in between.)
    out[1], out[2], from = 'trimmed', deleted, deleted
  elseif cmp(since, last) > 0 then
    out[1], out[2], from = 'unknown', last, last
  end
  from = '(' .. from
end
local cursor = last
if since ~= '0' then cursor = string.sub(from, 2) end
if limit > 0 then
  local entries = redis.call('XRANGE', key, from, '+', 'COUNT', limit)
  for _, e in ipairs(entries) do
    local id, t, d = entry(e)
    out[#out + 1] = id
    out[#out + 1] = t
    out[#out + 1] = d
    cursor = id
  end
end
out[3] = cursor
return out
`);
