-- purge_expired: completed | failed | cancelled -> deleted, once RESULT_TTL_SECONDS passed.
--
-- KEYS[1] -> tq:{q}:expiry          ZSET  final ids by purge time ms
-- KEYS[2] -> tq:{q}:counts          HASH
-- KEYS[3] -> tq:{q}:index:all       ZSET
-- ARGV[1] -> now (ms)   ARGV[2] -> batch limit
--
-- Returns the number purged. Counters go down with the records, so stats keep adding up.
local Q = queue_keys(KEYS[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local purged = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = Q:task(id)
  local f = redis.call('HMGET', key, 'status', 'unique_key')
  local status = f[1]
  -- A task retried by hand after it was scheduled for purge is no longer final: keep it.
  if status == 'completed' or status == 'failed' or status == 'cancelled' then
    release_unique(Q, id, f[2])  -- released when it ended; kept from ever dangling
    redis.call('DEL', key, key .. ':events', key .. ':deliveries')
    redis.call('ZREM', KEYS[3], id)
    redis.call('ZREM', Q:index(status), id)
    redis.call('HINCRBY', KEYS[2], status, -1)
    redis.call('HINCRBY', KEYS[2], 'total', -1)
    purged = purged + 1
  end
end
return purged
