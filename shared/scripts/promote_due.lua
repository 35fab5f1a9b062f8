-- promote_due: scheduled | retrying -> pending for every due id, in a bounded batch.
-- Two schedulers running this at once are harmless: each id is moved by exactly one call.
-- Per task: its record, its event and its hand-over or ready list; the delayed set, the
-- indexes and the counters move once for the whole batch.
--
-- KEYS[1] -> tq:{q}:delayed         ZSET  ids by due ms
-- KEYS[2] -> tq:{q}:counts          HASH
-- ARGV[1] -> now (ms)   ARGV[2] -> batch limit
-- ARGV[3] -> horizon (ms): ids due up to then are promoted (now + SCHEDULE_LEAD_SECONDS;
--            the consumer waits for a promoted task's due time before it runs it)
--
-- Returns {moved, next due ms or -1}.
local Q = queue_keys(KEYS[1])
local now = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[3], 'LIMIT', 0, tonumber(ARGV[2]))
local left, pending, promoted = {scheduled = {}, retrying = {}}, {}, {}

if #due > 0 then call_chunked('ZREM', KEYS[1], due) end
for _, id in ipairs(due) do
  local key = Q:task(id)
  local f = redis.call('HMGET', key, 'status', 'created', 'lane', 'priority', 'type', 'stale_in')
  local status = f[1]
  if status == 'scheduled' or status == 'retrying' then
    local from = left[status]
    from[#from + 1] = id
    pending[#pending + 1] = f[2]
    pending[#pending + 1] = id
    promoted[#promoted + 1] = {id, f[3], f[4], f[5] or '', f[6]}
    redis.call('HSET', key, 'status', 'pending', 'updated', now)
    emit(Q, id, {event = 'task.pending', task_id = id,
      status = 'pending', at_ms = now})
  end
end

if #promoted > 0 then
  -- Indexes and counters say pending before any task is handed over (which moves it on).
  for status, ids in pairs(left) do
    if #ids > 0 then
      call_chunked('ZREM', Q:index(status), ids)
      redis.call('HINCRBY', KEYS[2], status, -#ids)
    end
  end
  call_chunked('ZADD', Q:index('pending'), pending)
  redis.call('HINCRBY', KEYS[2], 'pending', #promoted)
  make_ready_many(Q, promoted, now)
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then return {#promoted, head[2]} end
return {#promoted, '-1'}
