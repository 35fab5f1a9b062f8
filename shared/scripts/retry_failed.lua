-- retry_failed: failed | cancelled -> pending, with a fresh retry budget; history is kept.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:expiry          ZSET
-- ARGV[1] -> task id   ARGV[2] -> now (ms)
--
-- Returns {'ok'} | {'missing'} | {'invalid', status}.
local Q = queue_keys(KEYS[1])
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'failed' and status ~= 'cancelled' then return {'invalid', status} end
redis.call('ZREM', KEYS[4], id)
move_status(Q, id, status, 'pending')
redis.call('HSET', KEYS[1], 'retry_count', 0, 'recoveries', 0, 'updated', now)
redis.call('HDEL', KEYS[1], 'completed', 'result')
emit(Q, id, {event = 'task.retried', task_id = id, status = 'pending',
  at_ms = tonumber(now)})
make_ready(Q, id, false, now)
return {'ok'}
