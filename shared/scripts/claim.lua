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
-- ZADD leases, SADD held, PUBLISH task.claimed.
local now, lease_until, wanted = ARGV[1], ARGV[2], tonumber(ARGV[3])
local worker, owner = ARGV[4], ARGV[5]
local task_prefix, index_prefix, channel = ARGV[6], ARGV[7], ARGV[8]
local claimed = {}

for k = 4, 8 do
  if #claimed >= wanted then break end
  local ids = redis.call('LPOP', KEYS[k], wanted - #claimed)
  if ids then
    for _, id in ipairs(ids) do
      local key = task_prefix .. id
      -- An id whose record is gone or no longer pending (purged) is dropped, not run.
      if redis.call('HGET', key, 'status') == 'pending' then
        -- A hand-edited record (a non-numeric 'created' or 'attempt', an events key that is
        -- not a LIST) would make this script fail half-way and strand the ids already popped:
        -- repair what the scripts need and mark the record, so the consumer fails it clearly.
        for _, field in ipairs({'created', 'attempt'}) do
          local raw = redis.call('HGET', key, field)
          if raw and not string.match(raw, '^%d+$') then
            redis.call('HSET', key, field, field == 'created' and now or 0, 'corrupt', field)
          end
        end
        local history = redis.call('TYPE', key .. ':events')['ok']
        if history ~= 'list' and history ~= 'none' then
          redis.call('DEL', key .. ':events')
          redis.call('HSET', key, 'corrupt', 'events')
        end
        move_status(key, index_prefix, KEYS[1], id, 'pending', 'processing')
        local attempt = redis.call('HINCRBY', key, 'attempt', 1)
        redis.call('HSET', key, 'started', now, 'updated', now, 'worker', worker, 'owner', owner)
        redis.call('HDEL', key, 'completed')
        redis.call('ZADD', KEYS[2], lease_until, id)
        redis.call('SADD', KEYS[3], id)
        emit(key .. ':events', channel, {event = 'task.claimed', task_id = id,
          status = 'processing', attempt = attempt, worker = worker, at_ms = tonumber(now)})
        claimed[#claimed + 1] = redis.call('HGETALL', key)
      end
    end
  end
end
return claimed
