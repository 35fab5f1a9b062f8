-- claim_deliveries: due completion webhooks -> in flight, leased like tasks.
--
-- KEYS[1] -> tq:{q}:outbox          ZSET  delivery ids by due ms (in flight: by lease deadline)
-- ARGV[1] -> now (ms)
-- ARGV[2] -> lease deadline (ms)
-- ARGV[3] -> how many deliveries at most
--
-- Returns {next_due_ms or '-1', {{id, previous claimed_at or '', HGETALL...}, ...}}.
-- Side effects: ZADD outbox (lease deadline), HINCRBY claims, HSET claimed_at; ids whose
-- record is gone are dropped from the outbox.
--
-- The id stays in the outbox while it is in flight, re-scored to the lease deadline: a
-- notifier killed mid-send never records its attempt, so the id falls due again when the
-- lease runs out and the next claimer sees `claims` ahead of `settled` (an attempt was lost).
local Q = queue_keys(KEYS[1])
local now, lease_until, wanted = ARGV[1], ARGV[2], tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, wanted)
local claimed = {}

for _, id in ipairs(due) do
  local key = Q:delivery(id)
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    local previous = redis.call('HGET', key, 'claimed_at') or ''
    redis.call('HINCRBY', key, 'claims', 1)
    redis.call('HSET', key, 'claimed_at', now)
    redis.call('ZADD', KEYS[1], lease_until, id)
    local entry = {id, previous}
    for _, part in ipairs(redis.call('HGETALL', key)) do entry[#entry + 1] = part end
    claimed[#claimed + 1] = entry
  end
end

local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {head[2] or '-1', claimed}
