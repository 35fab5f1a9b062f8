-- progress: processing -> processing, a running handler's progress (SPEC section 10).
--
-- KEYS[1] -> tq:{q}:task:<id>       HASH
-- ARGV[1] -> task id
-- ARGV[2] -> claim token the caller holds (fencing: a stale run must not write progress)
-- ARGV[3] -> percent, 0..100 (the caller checked it)
-- ARGV[4] -> message, or '' for none
-- ARGV[5] -> now (ms)
--
-- Returns {'ok'} | {'missing'} | {'stale', status}.
-- Side effects: a 'task.progress' event, published but not appended to the task's history
-- (a long task reporting ten times a second would push its transitions out of the history).
-- The caller coalesces the calls (at most 10 per second per task, the last value always
-- written); the task's `updated` time is left alone: progress is not a transition.
local Q = queue_keys(KEYS[1])
local id, token, percent, message = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local f = redis.call('HMGET', KEYS[1], 'status', 'token')
if not f[1] then return {'missing'} end
if f[1] ~= 'processing' or f[2] ~= token then return {'stale', f[1]} end
redis.call('HSET', KEYS[1], 'progress', percent, 'progress_message', message)
local event = {event = 'task.progress', task_id = id, status = 'processing',
  progress = tonumber(percent), at_ms = tonumber(ARGV[5])}
if message ~= '' then event.message = message end
publish_event(Q, cjson.encode(event))
return {'ok'}
