-- schedule_put: create or replace one recurring schedule (SPEC section 12).
--
-- KEYS[1] -> tq:{_schedules}:schedule:<name>  HASH  the schedule
-- KEYS[2] -> tq:{_schedules}:due              ZSET  active names by next tick ms
-- KEYS[3] -> tq:{_schedules}:all              ZSET  every name, score 0
-- ARGV[1] -> name
-- ARGV[2] -> definition: JSON {cron, interval_seconds, timezone, task} as given
-- ARGV[3] -> task template: JSON spec of the checked task, as enqueue.lua takes it (no id)
-- ARGV[4] -> next tick (ms)
-- ARGV[5] -> paused: '1' or ''
-- ARGV[6] -> now (ms)
-- ARGV[7] -> mode: 'put' (create or replace) or 'declare' (a @periodic declaration at a
--            scheduler's start: an unchanged definition keeps its next tick and pause state)
--
-- Returns 'created', 'replaced', or 'unchanged' (mode 'declare', same definition: nothing
-- written). A replaced schedule keeps last_run/last_task/created, and an active one whose
-- timing (cron, interval, time zone) is unchanged keeps its next tick: a deploy or a
-- reconciler that PUTs the same schedule every hour must not restart a daily interval's
-- countdown, which would then never fire.
-- Side effects: HSET the schedule; ZADD or ZREM due (paused); ZADD all; PUBLISH the next
-- tick on the scheduler wake-up channel, so a sleeping scheduler wakes for an earlier one.
local S = schedule_keys(KEYS[1])
local existed = redis.call('EXISTS', KEYS[1]) == 1
-- The schedule as it is, read once: {def, next, paused}.
local old = existed and redis.call('HMGET', KEYS[1], 'def', 'next', 'paused') or {}
if existed and ARGV[7] == 'declare' and old[1] == ARGV[2] then
  return 'unchanged'
end
local paused = ARGV[5]
if existed and ARGV[7] == 'declare' then
  paused = old[3] or ''  -- a pause made over REST stays
end

-- Whether two definitions (JSON) tick alike: same cron, interval and time zone.
local function same_timing(old_def, new_def)
  local ok, decoded = pcall(cjson.decode, old_def or '')
  if not ok or type(decoded) ~= 'table' then return false end
  local new = cjson.decode(new_def)
  return decoded.cron == new.cron and decoded.interval_seconds == new.interval_seconds
    and decoded.timezone == new.timezone
end

-- An active schedule whose timing is unchanged keeps its next tick.
local next_tick = ARGV[4]
if existed and paused ~= '1' and old[2] and old[3] ~= '1' and same_timing(old[1], ARGV[2]) then
  next_tick = old[2]
end
if not existed then redis.call('HSET', KEYS[1], 'created', ARGV[6]) end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'def', ARGV[2], 'spec', ARGV[3], 'next', next_tick,
  'paused', paused, 'updated', ARGV[6])
if paused == '1' then
  redis.call('ZREM', S.due, ARGV[1])
else
  redis.call('ZADD', S.due, next_tick, ARGV[1])
  redis.call('PUBLISH', SCHEDULER_WAKE_CHANNEL, next_tick)
end
redis.call('ZADD', S.all, 0, ARGV[1])
if existed then return 'replaced' end
return 'created'
