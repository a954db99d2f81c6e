//! The Lua scripts: each runs atomically in Redis, which is what keeps seq numbers
//! gap-free, history in step with them, and presence counts exact.
//!
//! Every script gets the key prefix as `ARGV[1]` and builds the names of the keys
//! it touches from it (see [`super::wire`]); times come from Redis' clock, so
//! nodes with skewed clocks agree on heartbeat deadlines and epochs. Scripts that
//! derive key names from their arguments need a single Redis (not Redis Cluster).

use redis::Script;

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r#"
local pre = ARGV[1]
local function int(n) return string.format('%d', n) end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A presence tuple: 'r{ns} {room} {user}' or 'o{ns} {user}'. Returns the hash
-- counting the user's nodes, the channel for events, the user, and the event head.
local function place(t)
  local sp = string.find(t, ' ', 2, true)
  local ns = string.sub(t, 2, sp - 1)
  if string.sub(t, 1, 1) == 'r' then
    local sp2 = string.find(t, ' ', sp + 1, true)
    local room = string.sub(t, sp + 1, sp2 - 1)
    local user = string.sub(t, sp2 + 1)
    return pre .. 'members:' .. ns .. ':' .. room, pre .. 'ch:room:' .. ns .. ':' .. room, user,
      function(flag) return 'P' .. flag .. user end
  end
  local user = string.sub(t, sp + 1)
  return pre .. 'online:' .. ns, pre .. 'ch:all', user,
    function(flag) return 'O' .. flag .. ns .. ' ' .. user end
end
-- One more node has the user there: the first one announces the join. Returns 0
-- (no change), 1 (the user's first node there) or 3 (and the first user there).
-- Beside each count hash, `index:{hash}` holds its users sorted (a sorted set of
-- equal scores), so lists are read a page at a time.
local function index(hash) return pre .. 'index:' .. string.sub(hash, #pre + 1) end
local function add(t)
  local hash, chan, user, event = place(t)
  if redis.call('HINCRBY', hash, user, 1) == 1 then
    redis.call('ZADD', index(hash), 0, user)
    redis.call('PUBLISH', chan, event('1'))
    if redis.call('HLEN', hash) == 1 then return 3 end
    return 1
  end
  return 0
end
-- One node less: the last one announces the leave. Returns 0, 1 (the user's last
-- node left) or 3 (and nobody is left there).
local function drop(t)
  local hash, chan, user, event = place(t)
  if redis.call('HINCRBY', hash, user, -1) <= 0 then
    redis.call('HDEL', hash, user)
    redis.call('ZREM', index(hash), user)
    redis.call('PUBLISH', chan, event('0'))
    if redis.call('EXISTS', hash) == 0 then return 3 end
    return 1
  end
  return 0
end
-- Uncounts a room's history bytes (`member` is 'ns room'), deleting it.
local function forget_history(ns, room)
  local member = ns .. ' ' .. room
  local held = tonumber(redis.call('HGET', pre .. 'hist-bytes', member) or '0')
  redis.call('DEL', pre .. 'hist:' .. ns .. ':' .. room)
  redis.call('HDEL', pre .. 'hist-bytes', member)
  redis.call('ZREM', pre .. 'hist-lru', member)
  return redis.call('DECRBY', pre .. 'hist-total', held)
end
-- Rooms per namespace: a sorted set of room names by last activity. A room not
-- in it yet takes a place, made when the namespace is full by forgetting rooms
-- whose keys expired or, with `presence` on, the longest-idle room without
-- members; returns false when no place can be made (every room has members).
local function admit_room(ns, room, max, presence)
  local rooms = pre .. 'rooms:' .. ns
  local now = int(now_ms())
  if redis.call('ZSCORE', rooms, room) then
    redis.call('ZADD', rooms, now, room)
    return true
  end
  if redis.call('ZCARD', rooms) >= max then
    local made = false
    for _, r in ipairs(redis.call('ZRANGE', rooms, 0, 31)) do
      local key = pre .. 'room:' .. ns .. ':' .. r
      local gone = redis.call('EXISTS', key) == 0
      local empty = presence and redis.call('EXISTS', pre .. 'members:' .. ns .. ':' .. r) == 0
      if gone or empty then
        redis.call('DEL', key)
        forget_history(ns, r)
        redis.call('ZREM', rooms, r)
        made = true
        if empty then break end
      end
    end
    if not made then return false end
  end
  redis.call('ZADD', rooms, now, room)
  return true
end
-- History bytes of every room: `hist-bytes` ('ns room' → bytes) and `hist-total`,
-- with `hist-lru` ordering rooms by last publish; all three hold at most the rooms
-- of `rooms:{ns}`, which admit_room bounds. Over `max`, the least recently
-- published rooms lose their whole history (a replay is never partial) until 9/10
-- of it is left; rooms whose history expired are found there first and only
-- uncounted.
local function count_history(ns, room, delta, max)
  local member = ns .. ' ' .. room
  redis.call('HINCRBY', pre .. 'hist-bytes', member, delta)
  local total = redis.call('INCRBY', pre .. 'hist-total', delta)
  redis.call('ZADD', pre .. 'hist-lru', int(now_ms()), member)
  if total <= max then return end
  local target = math.floor(max / 10 * 9)
  while total > target do
    local oldest = redis.call('ZRANGE', pre .. 'hist-lru', 0, 0)[1]
    if not oldest or oldest == member then break end
    local sp = string.find(oldest, ' ', 1, true)
    local ons, oroom = string.sub(oldest, 1, sp - 1), string.sub(oldest, sp + 1)
    local okey = pre .. 'room:' .. ons .. ':' .. oroom
    if redis.call('EXISTS', okey) == 1 then redis.call('HSET', okey, 'hbytes', 0) end
    total = forget_history(ons, oroom)
  end
end
-- Removes everything a node contributed.
local function reap(node)
  local set = pre .. 'node:' .. node
  for _, t in ipairs(redis.call('SMEMBERS', set)) do drop(t) end
  redis.call('DEL', set)
end
"#;

/// KEYS: room, hist, channel. ARGV: prefix, record, history cap, ttl ms, history
/// bytes cap, namespace, room, rooms cap, '1' with room presence, history bytes
/// cap of all rooms. Creates the room's epoch if needed (when the namespace has a
/// place for it), assigns the next seq, stores the message (the oldest go past the
/// cap in messages or in bytes, kept in the room's `hbytes`; least recently
/// published rooms' history goes past the cap of all rooms) and publishes it.
/// Returns the seq, or the error `TOOMANYROOMS`.
const PUBLISH: &str = r#"
local room, hist, chan = KEYS[1], KEYS[2], KEYS[3]
local cap, ttl, max_bytes = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local ns, name = ARGV[6], ARGV[7]
if not admit_room(ns, name, tonumber(ARGV[8]), ARGV[9] == '1') then
  return redis.error_reply('TOOMANYROOMS ' .. ns .. ' holds the ' .. ARGV[8] .. ' rooms the server allows, all with members')
end
redis.call('HSETNX', room, 'epoch', int(now_ms()))
local epoch = redis.call('HGET', room, 'epoch')
local seq = redis.call('HINCRBY', room, 'seq', 1)
local entry = int(seq) .. ':' .. ARGV[2]
if cap > 0 then
  if redis.call('EXISTS', hist) == 0 then
    -- New, or expired: whatever was counted for it is gone.
    redis.call('HSET', room, 'hbytes', 0)
    forget_history(ns, name)
  end
  redis.call('RPUSH', hist, entry)
  local before = tonumber(redis.call('HGET', room, 'hbytes') or '0')
  local bytes = redis.call('HINCRBY', room, 'hbytes', #entry)
  local held = redis.call('LLEN', hist)
  while held > 0 and (held > cap or bytes > max_bytes) do
    local old = redis.call('LPOP', hist)
    bytes = redis.call('HINCRBY', room, 'hbytes', -#old)
    held = held - 1
  end
  redis.call('PEXPIRE', hist, ttl)
  count_history(ns, name, bytes - before, tonumber(ARGV[10]))
end
redis.call('PEXPIRE', room, ttl)
redis.call('PUBLISH', chan, 'M' .. epoch .. ':' .. entry)
return seq
"#;

/// KEYS: room, hist. ARGV: prefix, ttl ms, since epoch ('' for none), since seq,
/// namespace, room, rooms cap, '1' with room presence. Creates the room's epoch if
/// needed (a member's epoch stays valid; a new room needs a place in the namespace)
/// and returns `{epoch, last seq, 1 when recovered, entries after since}`, or the
/// error `TOOMANYROOMS`.
const RECOVER: &str = r#"
local room, hist, ttl = KEYS[1], KEYS[2], ARGV[2]
if not admit_room(ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8] == '1') then
  return redis.error_reply('TOOMANYROOMS ' .. ARGV[5] .. ' holds the ' .. ARGV[7] .. ' rooms the server allows, all with members')
end
redis.call('HSETNX', room, 'epoch', int(now_ms()))
redis.call('PEXPIRE', room, ttl)
redis.call('PEXPIRE', hist, ttl)
local epoch = redis.call('HGET', room, 'epoch')
local last = tonumber(redis.call('HGET', room, 'seq') or '0')
local ok, entries = 0, {}
if ARGV[3] ~= '' and ARGV[3] == epoch then
  local since = tonumber(ARGV[4])
  if since == last then
    ok = 1
  elseif since < last then
    local n = last - since
    if redis.call('LLEN', hist) >= n then
      entries = redis.call('LRANGE', hist, -n, -1)
      ok = 1
    end
  end
end
return {epoch, last, ok, entries}
"#;

/// KEYS: room, hist. ARGV: prefix, ttl ms, epoch, seq this node delivered last.
/// After a reconnect: restores a room whose keys Redis lost (its data was wiped)
/// with the epoch and seq its members know, or returns what this node missed.
/// Returns `{status, entries}`: 0 caught up (entries missed), 1 restored, 2 the room
/// is in another epoch now, 3 history no longer reaches back (entries it has).
const RESUME: &str = r#"
local room, hist, ttl = KEYS[1], KEYS[2], ARGV[2]
local epoch = redis.call('HGET', room, 'epoch')
if not epoch then
  redis.call('HSET', room, 'epoch', ARGV[3], 'seq', ARGV[4])
  redis.call('PEXPIRE', room, ttl)
  return {1, {}}
end
if epoch ~= ARGV[3] then return {2, {}} end
local last = tonumber(redis.call('HGET', room, 'seq') or '0')
local known = tonumber(ARGV[4])
if last < known then
  redis.call('HSET', room, 'seq', ARGV[4])
  return {0, {}}
end
local n = last - known
if n == 0 then return {0, {}} end
if redis.call('LLEN', hist) < n then return {3, redis.call('LRANGE', hist, 0, -1)} end
return {0, redis.call('LRANGE', hist, -n, -1)}
"#;

/// ARGV: prefix, node, '1' join / '0' leave, tuple.
/// Records or removes one presence of this node; cluster-wide transitions publish
/// the join or leave event, and are returned as `add`/`drop` say.
const PRESENCE: &str = r#"
local set = pre .. 'node:' .. ARGV[2]
if ARGV[3] == '1' then
  if redis.call('SADD', set, ARGV[4]) == 1 then return add(ARGV[4]) end
else
  if redis.call('SREM', set, ARGV[4]) == 1 then return drop(ARGV[4]) end
end
return 0
"#;

/// ARGV: prefix, node, tuple... Makes the node's presence exactly the given tuples
/// (after Redis lost it, the node was declared dead, or writes failed), publishing
/// only the differences.
const RESYNC: &str = r#"
local set = pre .. 'node:' .. ARGV[2]
local want = {}
for i = 3, #ARGV do want[ARGV[i]] = true end
for _, t in ipairs(redis.call('SMEMBERS', set)) do
  if want[t] then want[t] = nil else redis.call('SREM', set, t); drop(t) end
end
for i = 3, #ARGV do
  local t = ARGV[i]
  if want[t] then want[t] = nil; redis.call('SADD', set, t); add(t) end
end
return 0
"#;

/// ARGV: prefix, node, ttl ms. Extends this node's heartbeat deadline and reaps up
/// to 8 nodes whose deadline passed (their users leave where no other node has
/// them). Returns `{1 when this node was not registered, reaped nodes}`: reaping
/// inside the script makes each dead node's leave events happen exactly once.
const HEARTBEAT: &str = r#"
local nodes = pre .. 'nodes'
local now = now_ms()
local added = redis.call('ZADD', nodes, int(now + tonumber(ARGV[3])), ARGV[2])
local dead = redis.call('ZRANGEBYSCORE', nodes, '-inf', int(now), 'LIMIT', 0, 8)
for _, node in ipairs(dead) do
  redis.call('ZREM', nodes, node)
  reap(node)
end
return {added, dead}
"#;

/// The loaded scripts (loaded again by `EVALSHA` fallback after a Redis restart).
pub(super) struct Scripts {
    pub(super) publish: Script,
    pub(super) recover: Script,
    pub(super) resume: Script,
    pub(super) presence: Script,
    pub(super) resync: Script,
    pub(super) heartbeat: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            publish: script(PUBLISH),
            recover: script(RECOVER),
            resume: script(RESUME),
            presence: script(PRESENCE),
            resync: script(RESYNC),
            heartbeat: script(HEARTBEAT),
        }
    }
}
