-- schedule_due: the schedules whose next tick has come (read only).
--
-- KEYS[1] -> tq:{_schedules}:due  ZSET  active names by next tick ms
-- ARGV[1] -> now (ms)
-- ARGV[2] -> at most this many schedules
--
-- Returns {next, record, record, ...}: each record a due schedule's HGETALL (flat), at most
-- ARGV[2], earliest first; next is the tick ms of the first schedule not returned (a due one
-- when the limit cut the list), or -1 when there is none.
-- Side effects: none, but a name whose HASH is gone (deleted by hand) leaves the due ZSET.
local S = schedule_keys(KEYS[1])
local limit = tonumber(ARGV[2])
local names = redis.call('ZRANGEBYSCORE', S.due, '-inf', ARGV[1], 'LIMIT', 0, limit)
local reply = {-1}
for _, name in ipairs(names) do
  local record = redis.call('HGETALL', S.schedule(name))
  if #record == 0 then
    redis.call('ZREM', S.due, name)
  else
    reply[#reply + 1] = record
  end
end
local after = redis.call('ZRANGE', S.due, #names, #names, 'WITHSCORES')
if #after > 0 then reply[1] = after[2] end
return reply
