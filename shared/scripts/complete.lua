-- complete: processing -> completed, for one or many tasks (the claims their caller holds).
-- A consumer reports a whole batch of outcomes in one call: per task only what is its own
-- is done per task; counters and the throughput histogram move once per call.
--
-- KEYS[1] -> tq:{q}:counts          HASH
-- KEYS[2] -> tq:{q}:leases          ZSET
-- KEYS[3] -> tq:{q}:expiry          ZSET  final ids by purge time ms
-- KEYS[4] -> tq:{q}:outbox          ZSET  completion webhooks by due ms
-- KEYS[5] -> tq:{q}:tp:<minute>     HASH  throughput histogram (the minute of ARGV[1])
-- ARGV[1] -> now (ms)
-- ARGV[2] -> purge time (ms)
-- ARGV[3i .. 3i + 2] -> task i (i >= 1): id, claim token (fencing), result as JSON text
--
-- A completion webhook's delivery id is msg_<task id>_<attempt>: a task completes once.
-- Returns one code per task: 'ok', 'missing', or 'stale' when the caller no longer holds the
-- claim (its lease was recovered and the task moved on, or claimed again): that result is
-- then dropped;
-- 'error: ...' for a record this script cannot move (nothing of it is written).
-- Side effects: a task with dependents (SPEC section 11) releases those it was the last
-- dependency of (release_dependents in _lib.lua); when the queue has a max_concurrency it
-- was at, a 'slot' message on the queue control channel (announce_slots in _lib.lua).
local Q = queue_keys(KEYS[1])
local now, purge_at = ARGV[1], ARGV[2]
-- The sorted-set and held-set updates of the whole batch go in one variadic call each.
local codes, done, by_created, purge, held = {}, {}, {}, {}, {}
local awaited = {}  -- completed ids with dependents (has_dependents), released at the end
local tally = {}  -- /metrics histograms of the batch (tally_run in _lib.lua)

for i = 1, (#ARGV - 2) / 3 do
  local a = 3 * i - 1
  local id, token, result = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local task_key = Q:task(id)
  local f = redis.call('HMGET', task_key, 'status', 'token', 'owner', 'created', 'webhook',
    'attempt', 'unique_key', 'has_dependents', 'type', 'started', 'run_at', 'due')
  local attempt = f[6]
  if not f[1] then
    codes[i] = 'missing'
  elseif f[1] ~= 'processing' or f[2] ~= token then
    codes[i] = 'stale'
  elseif not tonumber(f[4]) then
    -- Checked before any write: an error half-way would leave the batch's counters behind.
    codes[i] = 'error: corrupt record (created)'
  else
    done[#done + 1] = id
    by_created[#by_created + 1] = f[4]
    by_created[#by_created + 1] = id
    purge[#purge + 1] = purge_at
    purge[#purge + 1] = id
    if f[3] then
      held[f[3]] = held[f[3]] or {}
      table.insert(held[f[3]], id)
    end
    -- An empty error and owner read as none (codec.py); cheaper than a second call to HDEL.
    redis.call('HSET', task_key, 'status', 'completed', 'completed', now, 'updated', now,
      'result', result, 'error', '', 'owner', '')
    release_unique(Q, id, f[7])
    if f[8] == '1' then awaited[#awaited + 1] = id end
    tally_run(tally, f[9], 'completed', now, f[4], f[11], f[12], f[10])
    if f[5] and f[5] ~= '' then
      queue_webhook(Q, id, 'msg_' .. id .. '_' .. attempt, 'task.completed', now)
    end
    emit(Q, id, {event = 'task.completed', task_id = id, status = 'completed',
      attempt = tonumber(attempt), at_ms = tonumber(now)})
    codes[i] = 'ok'
  end
end

if #done > 0 then
  call_chunked('ZREM', Q:index('processing'), done)
  call_chunked('ZADD', Q:index('completed'), by_created)
  call_chunked('ZREM', KEYS[2], done)
  call_chunked('ZADD', KEYS[3], purge)
  for owner, ids in pairs(held) do call_chunked('SREM', Q:held(owner), ids) end
  local left = redis.call('HINCRBY', KEYS[1], 'processing', -#done)
  redis.call('HINCRBY', KEYS[1], 'completed', #done)
  announce_slots(Q, left + #done)
  count_throughput(KEYS[5], tonumber(now), 'c', #done)
  flush_tally(Q, tally)
end
-- After the batch's own bookkeeping, so hand-overs see the queue's processing count exact.
for _, id in ipairs(awaited) do release_dependents(Q, id, now) end
return codes
