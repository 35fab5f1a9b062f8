-- cancel: pending | scheduled | retrying | waiting -> cancelled; for a processing task, the request
-- to cancel it (SPEC section 10).
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- KEYS[2] -> tq:{q}:task:<id>:events LIST
-- KEYS[3] -> tq:{q}:counts          HASH
-- KEYS[4] -> tq:{q}:delayed         ZSET
-- KEYS[5] -> tq:{q}:expiry          ZSET
-- KEYS[6] -> tq:{q}:ready:skip      HASH  ready or parked list -> cancelled ids still in it
-- ARGV[1] -> task id   ARGV[2] -> now (ms)   ARGV[3] -> purge time (ms)
--
-- Returns {'ok'} | {'requested'} (processing: the worker is told) | {'missing'} |
-- {'invalid', status}.
-- A processing task is not moved here: its record gets cancel_requested = '1', its history a
-- 'task.cancel_requested' event (once), and its worker a 'cancel' message on the queue control
-- channel (JSON {"queue", "event": "cancel", "task_id", "token", "owner"}), which the owning
-- consumer alone acts on. The worker interrupts the handler and ends the task through
-- fail.lua (mode 'cancelled', fenced by the claim token); a handler that finishes first keeps
-- its outcome; recovery of a lost worker ends it cancelled (fail.lua).
-- Runs atomically with claim, so a task is either claimed or cancelled, never both.
-- O(1) whatever the queue's length: a pending id stays in its ready list (an LREM would scan
-- it, and mass cancels would block Redis); claim.lua drops it when it comes up, and the
-- skip count keeps the list's ready depth exact meanwhile.
local Q = queue_keys(KEYS[1])
local id, now = ARGV[1], ARGV[2]
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'pending' then
  -- In a ready list, or parked (claim.lua) in its type's list, where no consumer looks
  -- but one that runs the type.
  local f = redis.call('HMGET', KEYS[1], 'lane', 'priority', 'parked', 'type')
  local list = Q:ready(f[1], f[2])
  if f[3] == '1' then
    list = Q:parked(f[1], f[2], f[4] or '')
    redis.call('HDEL', KEYS[1], 'parked')
  end
  redis.call('HINCRBY', KEYS[6], list, 1)
  redis.call('HSET', KEYS[1], 'stale_in', list)  -- revived if the task is retried (_lib.lua)
elseif status == 'scheduled' or status == 'retrying' then
  redis.call('ZREM', KEYS[4], id)
elseif status == 'waiting' then
  -- In no list: it waits for its dependencies (SPEC section 11).
elseif status == 'processing' then
  local f = redis.call('HMGET', KEYS[1], 'token', 'owner', 'cancel_requested')
  if f[3] ~= '1' then
    redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated', now)
    emit(Q, id, {event = 'task.cancel_requested', task_id = id, status = 'processing',
      at_ms = tonumber(now)})
  end
  -- Sent again on a repeated request: a consumer whose subscription dropped may have missed it.
  redis.call('PUBLISH', QUEUE_CONTROL_CHANNEL, cjson.encode({queue = Q.queue, event = 'cancel',
    task_id = id, token = f[1] or '', owner = f[2] or ''}))
  return {'requested'}
else
  return {'invalid', status}
end
move_status(Q, id, status, 'cancelled')
release_unique(Q, id, redis.call('HGET', KEYS[1], 'unique_key'))
redis.call('HSET', KEYS[1], 'updated', now)
redis.call('ZADD', KEYS[5], ARGV[3], id)
emit(Q, id, {event = 'task.cancelled', task_id = id, status = 'cancelled',
  at_ms = tonumber(now)})
-- Its waiting dependents end cancelled, and theirs (SPEC section 11; cascade in _lib.lua).
if redis.call('HGET', KEYS[1], 'has_dependents') == '1' then cascade(Q, id, now, ARGV[3]) end
return {'ok'}
