-- purge_expired: completed | failed | cancelled -> deleted, once RESULT_TTL_SECONDS passed.
--
-- KEYS[1] -> tq:{q}:expiry          ZSET  final ids by purge time ms
-- KEYS[2] -> tq:{q}:counts          HASH
-- KEYS[3] -> tq:{q}:index:all       ZSET
-- ARGV[1] -> now (ms)   ARGV[2] -> batch limit
--
-- Returns the number purged. Each goes through purge_final (_lib.lua), as a bulk purge does:
-- counters go down with the records, so stats keep adding up. A dependency that a task not
-- final yet still needs (SPEC section 11) is kept and looked at again AWAITED_RECHECK_MS on.
local AWAITED_RECHECK_MS = 60000
local Q = queue_keys(KEYS[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local purged = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  -- A task retried by hand after it was scheduled for purge is no longer final: kept.
  local done, _, why = purge_final(Q, id)
  if done then
    purged = purged + 1
  elseif why == 'awaited' then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + AWAITED_RECHECK_MS, id)
  end
end
return purged
