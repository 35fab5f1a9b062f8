-- retry_failed: failed | cancelled -> pending, with a fresh retry budget; history is kept.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:expiry          ZSET
-- ARGV[1] -> task id   ARGV[2] -> now (ms)
--
-- Returns {'ok'} | {'missing'} | {'invalid', status} | {'unique', holder id} when another
-- live task took its unique_key meanwhile (nothing written).
local Q = queue_keys(KEYS[1])
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'failed' and status ~= 'cancelled' then return {'invalid', status} end
-- Live again, so it holds its unique_key again, unless another live task took it meanwhile.
local unique_key = redis.call('HGET', KEYS[1], 'unique_key')
if unique_key then
  local holder = unique_holder(Q, unique_key, id)
  if holder then return {'unique', holder} end
  redis.call('SET', Q:unique(unique_key), id)
end
redis.call('ZREM', KEYS[4], id)
move_status(Q, id, status, 'pending')
redis.call('HSET', KEYS[1], 'retry_count', 0, 'recoveries', 0, 'updated', now)
redis.call('HDEL', KEYS[1], 'completed', 'result')
emit(Q, id, {event = 'task.retried', task_id = id, status = 'pending',
  at_ms = tonumber(now)})
make_ready(Q, id, false, now)
return {'ok'}
