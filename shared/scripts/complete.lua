-- complete: processing -> completed, for the attempt the caller holds.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:leases          ZSET
-- KEYS[5] -> tq:{q}:expiry          ZSET  final ids by purge time ms
-- KEYS[6] -> tq:{q}:outbox          ZSET  completion webhooks by due ms
-- KEYS[7] -> tq:{q}:tp:<minute>     HASH  throughput histogram
-- ARGV[1] -> task id
-- ARGV[2] -> attempt number the caller claimed
-- ARGV[3] -> now (ms)
-- ARGV[4] -> result as JSON text
-- ARGV[5] -> purge time (ms)
-- ARGV[6] -> index prefix
-- ARGV[7] -> held prefix            tq:{q}:held:
-- ARGV[8] -> events channel
-- ARGV[9] -> delivery id for a completion webhook
-- ARGV[10] -> delivery prefix       tq:{q}:delivery:
-- ARGV[11] -> wake prefix
-- ARGV[12] -> throughput field      <epoch second>:c
--
-- Returns {'ok'}, {'missing'} or {'stale', status} when the caller no longer owns the attempt
-- (its lease was recovered and the task moved on): the result is then dropped.
local id, now = ARGV[1], ARGV[3]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'processing' or redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] then
  return {'stale', status}
end

local owner = redis.call('HGET', KEYS[1], 'owner')
move_status(KEYS[1], ARGV[6], KEYS[3], id, 'processing', 'completed')
redis.call('HSET', KEYS[1], 'completed', now, 'updated', now, 'result', ARGV[4])
redis.call('HDEL', KEYS[1], 'error', 'owner')
redis.call('ZREM', KEYS[4], id)
if owner then redis.call('SREM', ARGV[7] .. owner, id) end
redis.call('ZADD', KEYS[5], ARGV[5], id)
count_throughput(KEYS[7], ARGV[12])
queue_webhook(KEYS[1], KEYS[6], ARGV[10], ARGV[11], ARGV[9], id, 'task.completed', now)
emit(KEYS[2], ARGV[8], {event = 'task.completed', task_id = id, status = 'completed',
  attempt = tonumber(ARGV[2]), at_ms = tonumber(now)})
return {'ok'}
