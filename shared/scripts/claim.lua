-- claim: pending -> processing for up to N tasks of one lane, most urgent priority first;
-- the slots it cannot fill are offered for hand-off (see hand_over in _lib.lua).
--
-- KEYS[1] -> tq:{q}:counts          HASH
-- KEYS[2] -> tq:{q}:leases          ZSET  processing ids by lease deadline ms
-- KEYS[3] -> tq:{q}:held:<instance> SET   ids this consumer instance holds
-- KEYS[4] -> tq:{q}:wake:<lane>:idle    LIST  one instance id per offered slot
-- KEYS[5] -> tq:{q}:wake:<lane>:offers  HASH  instance id -> "<lease ms>|<worker name>"
-- KEYS[6] -> tq:{q}:wake:inbox:<instance> LIST  tasks handed to this consumer, not yet read
-- KEYS[7..11] -> tq:{q}:ready:<lane>:5 .. :1   LISTs, FIFO within a priority
-- KEYS[12] -> tq:{q}:ready:skip     HASH  ready list -> ids in it that cancel.lua cancelled
-- ARGV[1] -> unused (the server's clock stamps the claim and its lease deadline)
-- ARGV[2] -> lease (ms)
-- ARGV[3] -> how many tasks at most (the caller's free slots not on offer)
-- ARGV[4] -> worker name (shown in events and the record)
-- ARGV[5] -> instance id (owner, for heartbeat-based recovery)
-- ARGV[6] -> layout (Keys.layout JSON)
-- ARGV[7] -> '1' to offer the slots left unfilled, '' to only claim
--
-- The caller's offers still in the idle list are withdrawn first and their slots claimed
-- with the rest, so a consumer's offers are re-synced on every claim.
-- Returns {withdrawn, offered, waiting, record, record, ...}: waiting is the inbox's length
-- (handed over, not yet read), record an HGETALL reply per claimed task (with its fencing
-- 'token', and 'corrupt' = <field> when a malformed field had to be repaired).
local now, lease_ms, wanted = server_ms(), tonumber(ARGV[2]), tonumber(ARGV[3])
local worker, owner = ARGV[4], ARGV[5]
local L = cjson.decode(ARGV[6])
local lease_until = tonumber(now) + lease_ms
local withdrawn = redis.call('LREM', KEYS[4], 0, owner)
wanted = wanted + withdrawn
local reply, ids_taken, by_created, leased = {withdrawn, 0, redis.call('LLEN', KEYS[6])}, {}, {}, {}
local n = 0

for k = 7, 11 do
  -- A list is popped again while cancelled ids took places in the last pop, so a lower
  -- priority never runs ahead of a pending task that sat behind them.
  local ids = n < wanted and redis.call('LPOP', KEYS[k], wanted - n)
  while ids do
    for _, id in ipairs(ids) do
      local key = L.task .. id
      local f = redis.call('HMGET', key, 'status', 'created', 'attempt', 'run_at')
      -- An id whose record is gone or no longer pending was cancelled where it waited (and
      -- maybe purged since): dropped, not run, and no longer counted as skipped.
      if f[1] ~= 'pending' then
        if tonumber(redis.call('HGET', KEYS[12], KEYS[k]) or 0) > 0 then
          redis.call('HINCRBY', KEYS[12], KEYS[k], -1)
        end
      else
        n = n + 1
        local record, created = claim_record(key, id, now, worker, owner, L.channel, f[2], f[3],
          f[4])
        reply[n + 3] = record
        ids_taken[n] = id
        by_created[2 * n - 1], by_created[2 * n] = created, id
        leased[2 * n - 1], leased[2 * n] = lease_until, id
      end
    end
    ids = n < wanted and redis.call('LPOP', KEYS[k], wanted - n)
  end
end

if n > 0 then note_claims(L, owner, ids_taken, by_created, leased) end
if ARGV[7] == '1' and n < wanted then
  local slots = {}
  for i = 1, wanted - n do slots[i] = owner end
  call_chunked('RPUSH', KEYS[4], slots)
  redis.call('HSET', KEYS[5], owner, lease_ms .. '|' .. worker)
  reply[2] = wanted - n
end
return reply
