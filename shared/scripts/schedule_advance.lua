-- schedule_advance: move fired schedules on to their next tick, each only if its next tick
-- is still the one that fired (compare and set: a second scheduler, or one that fired the
-- same tick again after a crash, advances nothing twice).
--
-- KEYS[1] -> tq:{_schedules}:due                ZSET  active names by next tick ms
-- KEYS[2..] -> tq:{_schedules}:schedule:<name>  HASH  one per schedule, in ARGV's order
-- ARGV[1] -> now (ms)
-- ARGV[2..] -> four per schedule: name, the tick that fired (ms), the next tick (ms), and the
--              id of the tick's task ('' when it made none: its unique_key was held)
--
-- Returns one code per schedule: 1 advanced, 0 not (its tick moved on, it was replaced or
-- deleted).
-- Side effects: HSET next, last_tick, last_run (now) and last_task; ZADD due unless paused.
local S = schedule_keys(KEYS[1])
local now = ARGV[1]
local reply = {}
for i = 2, #KEYS do
  local at = 2 + (i - 2) * 4
  local name, tick, next_tick, task_id = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
  local current = redis.call('HMGET', KEYS[i], 'next', 'paused')
  if current[1] ~= tick then
    reply[#reply + 1] = 0
  else
    redis.call('HSET', KEYS[i], 'next', next_tick, 'last_tick', tick, 'last_run', now)
    if task_id ~= '' then redis.call('HSET', KEYS[i], 'last_task', task_id) end
    if current[2] ~= '1' then redis.call('ZADD', S.due, next_tick, name) end
    reply[#reply + 1] = 1
  end
end
return reply
