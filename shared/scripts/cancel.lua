-- cancel: pending | scheduled | retrying -> cancelled.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:delayed         ZSET
-- KEYS[5] -> tq:{q}:expiry          ZSET
-- KEYS[6] -> tq:{q}:ready:skip      HASH  ready list -> cancelled ids still in it
-- ARGV[1] -> task id   ARGV[2] -> now (ms)   ARGV[3] -> purge time (ms)
-- ARGV[4] -> index prefix   ARGV[5] -> ready prefix   ARGV[6] -> events channel
--
-- Returns {'ok'} | {'missing'} | {'invalid', status}.
-- Runs atomically with claim, so a task is either claimed or cancelled, never both.
-- O(1) whatever the queue's length: a pending id stays in its ready list (an LREM would scan
-- it, and mass cancels would block Redis); claim.lua drops it when it comes up, and the
-- skip count keeps the list's ready depth exact meanwhile.
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'pending' then
  local f = redis.call('HMGET', KEYS[1], 'lane', 'priority')
  redis.call('HINCRBY', KEYS[6], ARGV[5] .. f[1] .. ':' .. f[2], 1)
elseif status == 'scheduled' or status == 'retrying' then
  redis.call('ZREM', KEYS[4], id)
else
  return {'invalid', status}
end
move_status(KEYS[1], ARGV[4], KEYS[3], id, status, 'cancelled')
redis.call('HSET', KEYS[1], 'updated', now)
redis.call('ZADD', KEYS[5], ARGV[3], id)
emit(KEYS[2], ARGV[6], {event = 'task.cancelled', task_id = id, status = 'cancelled',
  at_ms = tonumber(now)})
return {'ok'}
