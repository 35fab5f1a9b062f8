-- fail: processing -> retrying (budget left) | failed (budget spent); or, for a task whose
-- consumer was lost, processing -> pending without spending budget (up to a limit); or
-- processing -> cancelled (SPEC section 10) for a run interrupted on request, and for a task
-- whose cancel was requested (cancel.lua) that would otherwise run again.
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:leases          ZSET
-- KEYS[5] -> tq:{q}:delayed         ZSET
-- KEYS[6] -> tq:{q}:expiry          ZSET
-- KEYS[7] -> tq:{q}:outbox          ZSET
-- KEYS[8] -> tq:{q}:tp:<minute>     HASH  throughput histogram (the minute of ARGV[3])
-- ARGV[1] -> task id
-- ARGV[2] -> claim token the caller holds (fencing), or '' (recovery: any claim)
-- ARGV[3] -> now (ms)
-- ARGV[4] -> error message
-- ARGV[5] -> mode: 'worker' | 'final' (no retry: the record itself is broken) |
--            'lease' (lease must have expired by the server's clock) |
--            'lost:<instance>' (owner must match) |
--            'cancelled' (the worker interrupted the run on request: no retry)
-- ARGV[6] -> backoff base (ms)
-- ARGV[7] -> backoff cap (ms)
-- ARGV[8] -> jitter in [0, 1) (drawn by the caller, so the script stays deterministic)
-- ARGV[9] -> purge time (ms) if the task ends
-- ARGV[10] -> delivery id of its completion webhook, if it has one and fails for good
-- ARGV[11] -> free recoveries: how many lost attempts are requeued without spending budget
--
-- Returns {'retrying', retry_at_ms} | {'failed'} | {'recovered'} | {'cancelled'} | {'missing'} |
-- {'stale', status} | {'alive'} (lease mode: the lease was renewed meanwhile).
-- Side effects: when the queue has a max_concurrency it was at, a 'slot' message on the
-- queue control channel (announce_slots in _lib.lua).
local Q = queue_keys(KEYS[1])
local id, now, err, mode = ARGV[1], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'processing' then return {'stale', status} end
local held = redis.call('HMGET', KEYS[1], 'attempt', 'token', 'owner', 'cancel_requested',
  'type', 'created', 'run_at', 'due', 'started')
local attempt, owner = held[1], held[3]
if ARGV[2] ~= '' and held[2] ~= ARGV[2] then return {'stale', status} end
if mode == 'lease' then
  local deadline = redis.call('ZSCORE', KEYS[4], id)
  if deadline and tonumber(deadline) > server_ms() then return {'alive'} end
elseif string.sub(mode, 1, 5) == 'lost:' then
  if owner ~= string.sub(mode, 6) then return {'stale', status} end
end

announce_slots(Q)  -- before every branch below takes it out of processing
redis.call('ZREM', KEYS[4], id)
if owner then redis.call('SREM', Q:held(owner), id) end
redis.call('HDEL', KEYS[1], 'owner')
redis.call('HSET', KEYS[1], 'updated', now, 'error', err)
local event = {task_id = id, attempt = tonumber(attempt), error = err, at_ms = now}
-- A run that ended in its worker is timed for /metrics; a lost worker's is not (its end is
-- unknown), it is counted as a recovery.
local ran = mode == 'worker' or mode == 'final' or mode == 'cancelled'
local function count_run(outcome)
  if not ran then return end
  local tally = {}
  tally_run(tally, held[5], outcome, now, held[6], held[7], held[8], held[9])
  flush_tally(Q, tally)
end

-- Cancelled on request (SPEC section 10): no retry, and no recovery for a lost worker's run.
-- A final failure (mode 'final', or no budget left) keeps its outcome: it came first.
local cancel_asked = held[4] == '1'
local function end_cancelled()
  move_status(Q, id, 'processing', 'cancelled')
  release_unique(Q, id, redis.call('HGET', KEYS[1], 'unique_key'))
  if mode ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'error', 'cancelled on request; ' .. err)
    event.error = 'cancelled on request; ' .. err
  end
  redis.call('HSET', KEYS[1], 'completed', now)
  redis.call('ZADD', KEYS[6], ARGV[9], id)
  event.event, event.status = 'task.cancelled', 'cancelled'
  emit(Q, id, event)
  count_run('cancelled')
  if redis.call('HGET', KEYS[1], 'has_dependents') == '1' then cascade(Q, id, now, ARGV[9]) end
  return {'cancelled'}
end
if mode == 'cancelled' then return end_cancelled() end

-- A lost consumer is not the task's fault: requeue it at the front, a bounded number of times.
if mode == 'lease' or string.sub(mode, 1, 5) == 'lost:' then
  if cancel_asked then return end_cancelled() end
  local recoveries = redis.call('HINCRBY', KEYS[1], 'recoveries', 1)
  if recoveries <= tonumber(ARGV[11]) then
    move_status(Q, id, 'processing', 'pending')
    redis.call('HSET', KEYS[1], 'due', now)  -- the next run's wait counts from here
    redis.call('HINCRBY', Q.metrics, 'recoveries|' .. (held[5] or ''), 1)
    redis.call('HDEL', KEYS[1], 'progress', 'progress_message')  -- the next run reports its own
    event.event, event.status = 'task.recovered', 'pending'
    emit(Q, id, event)
    make_ready(Q, id, true, now)
    return {'recovered'}
  end
end

local retries = tonumber(redis.call('HGET', KEYS[1], 'retry_count')) or 0
local budget = tonumber(redis.call('HGET', KEYS[1], 'max_retries')) or 0
if mode ~= 'final' and retries < budget then
  if cancel_asked then return end_cancelled() end
  -- Exponential backoff with equal jitter: half fixed, half random.
  local delay = math.min(tonumber(ARGV[7]), tonumber(ARGV[6]) * (2 ^ retries))
  local retry_at = math.floor(now + delay / 2 + delay / 2 * tonumber(ARGV[8]))
  move_status(Q, id, 'processing', 'retrying')
  redis.call('HSET', KEYS[1], 'retry_count', retries + 1)
  redis.call('HDEL', KEYS[1], 'progress', 'progress_message')  -- the next run reports its own
  add_delayed(Q, retry_at, id)
  redis.call('HSET', KEYS[1], 'due', retry_at)  -- the next run's wait counts from here
  event.event, event.status, event.retry_at_ms = 'task.retrying', 'retrying', retry_at
  emit(Q, id, event)
  count_run('retrying')
  redis.call('HINCRBY', Q.metrics, 'retries|' .. (held[5] or ''), 1)
  return {'retrying', tostring(retry_at)}
end

move_status(Q, id, 'processing', 'failed')
release_unique(Q, id, redis.call('HGET', KEYS[1], 'unique_key'))
redis.call('HSET', KEYS[1], 'completed', now)
redis.call('ZADD', KEYS[6], ARGV[9], id)
count_throughput(KEYS[8], now, 'f', 1)
queue_webhook(Q, id, ARGV[10], 'task.failed', now)
event.event, event.status = 'task.failed', 'failed'
emit(Q, id, event)
count_run('failed')
-- Its waiting dependents end cancelled, and theirs (SPEC section 11; cascade in _lib.lua).
if redis.call('HGET', KEYS[1], 'has_dependents') == '1' then cascade(Q, id, now, ARGV[9]) end
return {'failed'}
