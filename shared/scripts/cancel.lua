-- cancel: pending | scheduled | retrying -> cancelled.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:delayed         ZSET
-- KEYS[5] -> tq:{q}:expiry          ZSET
-- KEYS[6] -> tq:{q}:ready:skip      HASH  ready or parked list -> cancelled ids still in it
-- ARGV[1] -> task id   ARGV[2] -> now (ms)   ARGV[3] -> purge time (ms)
--
-- Returns {'ok'} | {'missing'} | {'invalid', status}.
-- Runs atomically with claim, so a task is either claimed or cancelled, never both.
-- O(1) whatever the queue's length: a pending id stays in its ready list (an LREM would scan
-- it, and mass cancels would block Redis); claim.lua drops it when it comes up, and the
-- skip count keeps the list's ready depth exact meanwhile.
local Q = queue_keys(KEYS[1])
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'pending' then
  -- In a ready list, or parked (claim.lua) in its type's list, where no consumer looks
  -- but one that runs the type.
  local f = redis.call('HMGET', KEYS[1], 'lane', 'priority', 'parked', 'type')
  local list = Q:ready(f[1], f[2])
  if f[3] == '1' then
    list = Q:parked(f[1], f[2], f[4] or '')
    redis.call('HDEL', KEYS[1], 'parked')
  end
  redis.call('HINCRBY', KEYS[6], list, 1)
elseif status == 'scheduled' or status == 'retrying' then
  redis.call('ZREM', KEYS[4], id)
else
  return {'invalid', status}
end
move_status(Q, id, status, 'cancelled')
release_unique(Q, id, redis.call('HGET', KEYS[1], 'unique_key'))
redis.call('HSET', KEYS[1], 'updated', now)
redis.call('ZADD', KEYS[5], ARGV[3], id)
emit(Q, id, {event = 'task.cancelled', task_id = id, status = 'cancelled',
  at_ms = tonumber(now)})
return {'ok'}
