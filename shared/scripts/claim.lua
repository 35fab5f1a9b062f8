-- claim: pending -> processing for up to N tasks of one lane, most urgent priority first.
--
-- KEYS[1] -> tq:{q}:counts          HASH
-- KEYS[2] -> tq:{q}:leases          ZSET  processing ids by lease deadline ms
-- KEYS[3] -> tq:{q}:held:<instance> SET   ids this consumer instance holds
-- KEYS[4..8] -> tq:{q}:ready:<lane>:5 .. :1   LISTs, FIFO within a priority
-- ARGV[1] -> now (ms)
-- ARGV[2] -> lease deadline (ms)
-- ARGV[3] -> how many tasks at most
-- ARGV[4] -> worker name (shown in events and the record)
-- ARGV[5] -> instance id (owner, for heartbeat-based recovery)
-- ARGV[6] -> task prefix
-- ARGV[7] -> index prefix
-- ARGV[8] -> events channel
--
-- Returns a list of HGETALL replies, one per claimed task (with 'corrupt' = <field> when a
-- malformed numeric field had to be repaired).
-- Side effects: LPOP ready, HSET status/started/worker/owner, HINCRBY attempt and counts,
-- ZADD leases, SADD held, PUBLISH task.claimed. The index, lease, held and counter updates
-- are made once for the whole batch (one command each), the rest once per task.
local now, lease_until, wanted = ARGV[1], ARGV[2], tonumber(ARGV[3])
local worker, owner = ARGV[4], ARGV[5]
local task_prefix, index_prefix, channel = ARGV[6], ARGV[7], ARGV[8]
local claimed, ids_taken, by_created, leased = {}, {}, {}, {}
local n = 0

for k = 4, 8 do
  if n >= wanted then break end
  local ids = redis.call('LPOP', KEYS[k], wanted - n)
  if ids then
    for _, id in ipairs(ids) do
      local key = task_prefix .. id
      local f = redis.call('HMGET', key, 'status', 'created', 'attempt')
      -- An id whose record is gone or no longer pending (purged) is dropped, not run.
      if f[1] == 'pending' then
        -- A hand-edited record (a non-numeric 'created' or 'attempt', an events key that is
        -- not a LIST) would make this script fail half-way and strand the ids already popped:
        -- repair what the scripts need and mark the record, so the consumer fails it clearly.
        local created = f[2]
        if created and not string.match(created, '^%d+$') then
          created = now
          redis.call('HSET', key, 'created', now, 'corrupt', 'created')
        end
        if f[3] and not string.match(f[3], '^%d+$') then
          redis.call('HSET', key, 'attempt', 0, 'corrupt', 'attempt')
        end
        local history = redis.call('TYPE', key .. ':events')['ok']
        if history ~= 'list' and history ~= 'none' then
          redis.call('DEL', key .. ':events')
          redis.call('HSET', key, 'corrupt', 'events')
        end
        n = n + 1
        local attempt = redis.call('HINCRBY', key, 'attempt', 1)
        redis.call('HSET', key, 'status', 'processing', 'started', now, 'updated', now,
          'worker', worker, 'owner', owner)
        redis.call('HDEL', key, 'completed')
        emit(key .. ':events', channel, {event = 'task.claimed', task_id = id,
          status = 'processing', attempt = attempt, worker = worker, at_ms = tonumber(now)})
        claimed[n] = redis.call('HGETALL', key)
        ids_taken[n] = id
        by_created[2 * n - 1], by_created[2 * n] = created or now, id
        leased[2 * n - 1], leased[2 * n] = lease_until, id
      end
    end
  end
end

if n > 0 then
  redis.call('ZREM', index_prefix .. 'pending', unpack(ids_taken))
  redis.call('ZADD', index_prefix .. 'processing', unpack(by_created))
  redis.call('ZADD', KEYS[2], unpack(leased))
  redis.call('SADD', KEYS[3], unpack(ids_taken))
  redis.call('HINCRBY', KEYS[1], 'pending', -n)
  redis.call('HINCRBY', KEYS[1], 'processing', n)
end
return claimed
