-- promote_due: scheduled | retrying -> pending for every due id, in a bounded batch.
-- Two schedulers running this at once are harmless: each id is moved by exactly one call.
-- Per task: its record, its ready list and its event; the delayed set, the indexes, the
-- counters and the wake tokens move once for the whole batch.
--
-- KEYS[1] -> tq:{q}:delayed         ZSET  ids by due ms
-- KEYS[2] -> tq:{q}:counts          HASH
-- ARGV[1] -> now (ms)   ARGV[2] -> batch limit
-- ARGV[3] -> task prefix   ARGV[4] -> index prefix   ARGV[5] -> ready prefix
-- ARGV[6] -> wake prefix   ARGV[7] -> events channel
--
-- Returns {moved, next due ms or -1}.
local now = tonumber(ARGV[1])
local task_prefix, index_prefix, ready_prefix = ARGV[3], ARGV[4], ARGV[5]
local wake_prefix, channel = ARGV[6], ARGV[7]
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local moved, left, pending, lanes = 0, {scheduled = {}, retrying = {}}, {}, {}

if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
for _, id in ipairs(due) do
  local key = task_prefix .. id
  local f = redis.call('HMGET', key, 'status', 'created', 'lane', 'priority')
  local status = f[1]
  if status == 'scheduled' or status == 'retrying' then
    moved = moved + 1
    local from = left[status]
    from[#from + 1] = id
    pending[#pending + 1] = f[2]
    pending[#pending + 1] = id
    redis.call('HSET', key, 'status', 'pending', 'updated', now)
    redis.call('RPUSH', ready_prefix .. f[3] .. ':' .. f[4], id)
    lanes[f[3]] = (lanes[f[3]] or 0) + 1
    emit(key .. ':events', channel, {event = 'task.pending', task_id = id, status = 'pending',
      at_ms = now})
  end
end

if moved > 0 then
  for status, ids in pairs(left) do
    if #ids > 0 then
      redis.call('ZREM', index_prefix .. status, unpack(ids))
      redis.call('HINCRBY', KEYS[2], status, -#ids)
    end
  end
  redis.call('ZADD', index_prefix .. 'pending', unpack(pending))
  redis.call('HINCRBY', KEYS[2], 'pending', moved)
  -- One wake token per promoted task (at most 32 kept), as make_ready leaves for each.
  for lane, n in pairs(lanes) do
    local tokens = {}
    for i = 1, math.min(n, 32) do tokens[i] = '1' end
    redis.call('LPUSH', wake_prefix .. lane, unpack(tokens))
    redis.call('LTRIM', wake_prefix .. lane, 0, 31)
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then return {moved, head[2]} end
return {moved, '-1'}
