-- promote_due: scheduled | retrying -> pending for every due id, in a bounded batch.
-- Two schedulers running this at once are harmless: each id is moved by exactly one call.
--
-- KEYS[1] -> tq:{q}:delayed         ZSET  ids by due ms
-- KEYS[2] -> tq:{q}:counts          HASH
-- ARGV[1] -> now (ms)   ARGV[2] -> batch limit
-- ARGV[3] -> task prefix   ARGV[4] -> index prefix   ARGV[5] -> ready prefix
-- ARGV[6] -> wake prefix   ARGV[7] -> events channel
--
-- Returns {moved, next due ms or -1}.
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local status = redis.call('HGET', key, 'status')
  if status == 'scheduled' or status == 'retrying' then
    move_status(key, ARGV[4], KEYS[2], id, status, 'pending')
    redis.call('HSET', key, 'updated', now)
    make_ready(key, ARGV[5], ARGV[6], id, false)
    emit(key .. ':events', ARGV[7], {event = 'task.pending', task_id = id, status = 'pending',
      at_ms = now})
    moved = moved + 1
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then return {moved, head[2]} end
return {moved, '-1'}
