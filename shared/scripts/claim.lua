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
-- ARGV[8] -> '' or the offers the caller believes it holds in this lane (see below)
--
-- (tq:{q}:config, the queue's controls, is named from the layout's task prefix: see _lib.lua.)
--
-- The caller's offers still in the idle list are withdrawn first and their slots claimed
-- with the rest, so a consumer's offers are re-synced on every claim.
-- The queue's controls (SPEC section 9) hold here, for every consumer at once: a paused
-- queue gives nothing and takes no offers; the rate limit and max_concurrency cap what is
-- taken, and when one of them leaves no room for the rest of what was wanted, nothing is
-- offered either (ready tasks may be waiting; and an offer could not be served before then).
-- Returns {withdrawn, offered, waiting, blocked, record, record, ...}: waiting is the inbox's
-- length (handed over, not yet read); blocked is '' (not limited), 'paused', or the server
-- time (ms, digits) to claim again at: when the next rate token is due, or for a queue at its
-- max_concurrency now + lease (a 'slot' message on the control channel comes sooner), the
-- later of the two when both hold; record an HGETALL reply per claimed task (with its fencing
-- 'token', and 'corrupt' = <field> when a malformed field had to be repaired).
local now, lease_ms, wanted = server_ms(), tonumber(ARGV[2]), tonumber(ARGV[3])
local worker, owner = ARGV[4], ARGV[5]
local L = cjson.decode(ARGV[6])
local lease_until = tonumber(now) + lease_ms
local withdrawn = redis.call('LREM', KEYS[4], 0, owner)
-- Without ARGV[8], ARGV[3] leaves out the caller's offers and the withdrawn ones are added.
-- With it (a consumer of several queues offers the same slots in each), ARGV[3] counts every
-- slot not running, and the offers used since the caller last looked (ARGV[8] - withdrawn)
-- come off: their tasks are on the way to its inbox.
if ARGV[8] == '' then
  wanted = wanted + withdrawn
else
  wanted = math.max(wanted - math.max(tonumber(ARGV[8]) - withdrawn, 0), 0)
end
local reply, ids_taken, by_created, leased = {withdrawn, 0, redis.call('LLEN', KEYS[6]), ''},
  {}, {}, {}
local n = 0
local c = controls(L)
if c.paused then
  reply[4] = 'paused'
  return reply
end
local by_rate, by_cap = start_room(c, KEYS[1])
local limit = math.min(wanted, by_rate, by_cap)

for k = 7, 11 do
  -- A list is popped again while cancelled ids took places in the last pop, so a lower
  -- priority never runs ahead of a pending task that sat behind them.
  local ids = n < limit and redis.call('LPOP', KEYS[k], limit - n)
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
        reply[n + 4] = record
        ids_taken[n] = id
        by_created[2 * n - 1], by_created[2 * n] = created, id
        leased[2 * n - 1], leased[2 * n] = lease_until, id
      end
    end
    ids = n < limit and redis.call('LPOP', KEYS[k], limit - n)
  end
end

if n > 0 then
  note_claims(L, owner, ids_taken, by_created, leased)
  book_starts(c, n)
end
if n < wanted and (by_rate <= n or by_cap <= n) then
  -- A limit has no room left for the rest: come back when it may have some. Checked even
  -- when nothing is ready, since no task could start before then anyway.
  local at = 0
  if by_cap <= n then at = now + lease_ms end
  if by_rate <= n then at = math.max(at, next_start_ms(c)) end
  reply[4] = string.format('%.0f', at)
elseif ARGV[7] == '1' and n < wanted then
  local slots = {}
  for i = 1, wanted - n do slots[i] = owner end
  call_chunked('RPUSH', KEYS[4], slots)
  redis.call('HSET', KEYS[5], owner, lease_ms .. '|' .. worker)
  reply[2] = wanted - n
end
return reply
