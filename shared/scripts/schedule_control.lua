-- schedule_control: pause, resume, delete one schedule, or record a manual trigger.
--
-- KEYS[1] -> tq:{_schedules}:schedule:<name>  HASH  the schedule
-- KEYS[2] -> tq:{_schedules}:due              ZSET  active names by next tick ms
-- KEYS[3] -> tq:{_schedules}:all              ZSET  every name, score 0
-- ARGV[1] -> action: 'pause', 'resume', 'delete' or 'triggered'
-- ARGV[2] -> name
-- ARGV[3] -> now (ms)
-- ARGV[4] -> resume: the next tick (ms), counted from now (ticks missed while paused do not
--            fire); triggered: the id of the task the trigger created
--
-- Returns 'missing' (no such schedule: nothing written) or 'ok'.
-- Side effects: pause: paused = '1', ZREM due; resume: paused = '', next, ZADD due, PUBLISH
-- the tick on the wake-up channel; delete: DEL the HASH, ZREM due and all; triggered:
-- last_run (now) and last_task.
local S = schedule_keys(KEYS[1])
local action, name, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
if action == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1', 'updated', now)
  redis.call('ZREM', S.due, name)
elseif action == 'resume' then
  if redis.call('HGET', KEYS[1], 'paused') == '1' then
    redis.call('HSET', KEYS[1], 'paused', '', 'next', ARGV[4], 'updated', now)
    redis.call('ZADD', S.due, ARGV[4], name)
    redis.call('PUBLISH', SCHEDULER_WAKE_CHANNEL, ARGV[4])
  end
elseif action == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', S.due, name)
  redis.call('ZREM', S.all, name)
elseif action == 'triggered' then
  redis.call('HSET', KEYS[1], 'last_run', now, 'last_task', ARGV[4])
else
  return redis.error_reply('unknown action ' .. action)
end
return 'ok'
