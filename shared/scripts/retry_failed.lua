-- retry_failed: failed | cancelled -> pending, with a fresh retry budget; history is kept.
-- A task with dependencies (SPEC section 11) goes back to 'waiting' while one of them is not
-- completed yet (one retried by hand meanwhile); it is refused while one is failed or
-- cancelled (retry that one first) or purged (its result is gone).
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:expiry          ZSET
-- ARGV[1] -> task id   ARGV[2] -> now (ms)
--
-- Returns {'ok'} | {'missing'} | {'invalid', status} | {'unique', holder id} when another
-- live task took its unique_key meanwhile, or {'dependency', id, status or 'purged'} for a
-- dependency that cannot complete as things stand (nothing written).
local Q = queue_keys(KEYS[1])
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'failed' and status ~= 'cancelled' then return {'invalid', status} end
local left = 0
for dep in string.gmatch(redis.call('HGET', KEYS[1], 'depends_on') or '', '[^,]+') do
  local dep_status = redis.call('HGET', Q:task(dep), 'status')
  if not dep_status then return {'dependency', dep, 'purged'} end
  if dep_status == 'failed' or dep_status == 'cancelled' then
    return {'dependency', dep, dep_status}
  end
  if dep_status ~= 'completed' then left = left + 1 end
end
local to = 'pending'
if left > 0 then to = 'waiting' end
-- Live again, so it holds its unique_key again, unless another live task took it meanwhile.
local unique_key = redis.call('HGET', KEYS[1], 'unique_key')
if unique_key then
  local holder = unique_holder(Q, unique_key, id)
  if holder then return {'unique', holder} end
  redis.call('SET', Q:unique(unique_key), id)
end
redis.call('ZREM', KEYS[4], id)
move_status(Q, id, status, to)
redis.call('HSET', KEYS[1], 'retry_count', 0, 'recoveries', 0, 'updated', now, 'due', now)
if left > 0 then redis.call('HSET', KEYS[1], 'deps_left', left) end
-- A fresh run: no result, progress or cancel request of the last one (SPEC section 10).
redis.call('HDEL', KEYS[1], 'completed', 'result', 'progress', 'progress_message',
  'cancel_requested')
emit(Q, id, {event = 'task.retried', task_id = id, status = to,
  at_ms = tonumber(now)})
if to == 'pending' then make_ready(Q, id, false, now) end
return {'ok'}
