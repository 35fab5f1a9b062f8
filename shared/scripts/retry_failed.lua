-- retry_failed: failed | cancelled -> pending, with a fresh retry budget; history is kept.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:expiry          ZSET
-- ARGV[1] -> task id   ARGV[2] -> now (ms)   ARGV[3] -> index prefix
-- ARGV[4] -> layout (Keys.layout JSON)   ARGV[5] -> events channel
--
-- Returns {'ok'} | {'missing'} | {'invalid', status}.
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'failed' and status ~= 'cancelled' then return {'invalid', status} end
redis.call('ZREM', KEYS[4], id)
move_status(KEYS[1], ARGV[3], KEYS[3], id, status, 'pending')
redis.call('HSET', KEYS[1], 'retry_count', 0, 'recoveries', 0, 'updated', now)
redis.call('HDEL', KEYS[1], 'completed', 'result')
emit(KEYS[2], ARGV[5], {event = 'task.retried', task_id = id, status = 'pending',
  at_ms = tonumber(now)})
make_ready(cjson.decode(ARGV[4]), KEYS[1], id, false, now)
return {'ok'}
