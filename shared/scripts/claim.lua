-- claim: pending -> processing for up to N tasks of one lane, most urgent priority first;
-- the slots it cannot fill are offered for hand-off (see hand_over in _lib.lua).
--
-- KEYS[1] -> tq:{q}:counts          HASH
-- KEYS[2] -> tq:{q}:leases          ZSET  processing ids by lease deadline ms
-- KEYS[3] -> tq:{q}:held:<instance> SET   ids this consumer instance holds
-- KEYS[4] -> tq:{q}:wake:<lane>:idle    LIST  one instance id per offered slot
-- KEYS[5] -> tq:{q}:wake:<lane>:offers  HASH  instance id -> "<lease ms>|<types>|<worker>"
-- KEYS[6] -> tq:{q}:wake:inbox:<instance> LIST  tasks handed to this consumer, not yet read
-- KEYS[7..11] -> tq:{q}:ready:<lane>:5 .. :1   LISTs, FIFO within a priority
-- KEYS[12] -> tq:{q}:ready:skip     HASH  list name -> ids in it that cancel.lua cancelled
-- KEYS[13] -> tq:{q}:config         HASH  the queue's controls (SPEC section 9)
-- KEYS[14] -> tq:{q}:parked         HASH  "<lane>:<priority>:<type>" -> ids in that parked
--                                         list, tq:{q}:parked:<lane>:<priority>:<type>
-- ARGV[1] -> lease (ms)
-- ARGV[2] -> how many tasks at most (the caller's free slots not on offer)
-- ARGV[3] -> worker name (shown in events and the record)
-- ARGV[4] -> instance id (owner, for heartbeat-based recovery)
-- ARGV[5] -> '1' to offer the slots left unfilled, '' to only claim
-- ARGV[6] -> '' or the offers the caller believes it holds in this lane (see below)
-- ARGV[7] -> the lane
-- ARGV[8] -> the task types the caller runs, comma-separated
--
-- The caller's offers still in the idle list are withdrawn first and their slots claimed
-- with the rest, so a consumer's offers are re-synced on every claim.
-- A consumer never takes a type it does not run: such an id, popped from a ready list, is
-- parked in a list of its lane, priority and type, where only consumers that run the type
-- look (before the ready list of the same priority: it was ahead of everything there).
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
local Q = queue_keys(KEYS[1])
local now, lease_ms, wanted = server_ms(), tonumber(ARGV[1]), tonumber(ARGV[2])
local worker, owner, lane, types = ARGV[3], ARGV[4], ARGV[7], ARGV[8]
local runs = type_set(types)
local lease_until = tonumber(now) + lease_ms
local withdrawn = redis.call('LREM', KEYS[4], 0, owner)
-- Without ARGV[6], ARGV[2] leaves out the caller's offers and the withdrawn ones are added.
-- With it (a consumer of several queues offers the same slots in each), ARGV[2] counts every
-- slot not running, and the offers used since the caller last looked (ARGV[6] - withdrawn)
-- come off: their tasks are on the way to its inbox.
if ARGV[6] == '' then
  wanted = wanted + withdrawn
else
  wanted = math.max(wanted - math.max(tonumber(ARGV[6]) - withdrawn, 0), 0)
end
local reply, ids_taken, by_created, leased = {withdrawn, 0, redis.call('LLEN', KEYS[6]), ''},
  {}, {}, {}
local n = 0
local c = controls(Q)
if c.paused then
  reply[4] = 'paused'
  return reply
end
local by_rate, by_cap = start_room(Q, c)
local limit = math.min(wanted, by_rate, by_cap)

-- Take ids from one list (a ready list, or with `parked` the parked list of that name) until
-- `limit` are claimed or it runs dry. A list is popped again while dropped or parked ids took
-- places in the last pop, so a lower priority never runs ahead of a task that sat behind them.
local function take(list, priority, parked)
  local ids = n < limit and redis.call('LPOP', list, limit - n)
  while ids do
    for _, id in ipairs(ids) do
      local f = redis.call('HMGET', Q:task(id), 'status', 'created', 'attempt', 'run_at', 'type')
      if f[1] ~= 'pending' then
        -- Cancelled where it waited (and maybe purged since): dropped, not run, and no longer
        -- counted as skipped.
        if tonumber(redis.call('HGET', KEYS[12], list) or 0) > 0 then
          redis.call('HINCRBY', KEYS[12], list, -1)
        end
      elseif f[5] and f[5] ~= '' and not runs_type(runs, f[5]) then
        -- (A record without a type is corrupt: claimed, so its consumer fails it clearly.)
        redis.call('RPUSH', Q:parked(lane, priority, f[5]), id)
        redis.call('HINCRBY', KEYS[14], lane .. ':' .. priority .. ':' .. f[5], 1)
        redis.call('HSET', Q:task(id), 'parked', '1')
      else
        n = n + 1
        if parked then redis.call('HDEL', Q:task(id), 'parked') end
        local record, created = claim_record(Q, id, now, worker, owner, f[2], f[3], f[4])
        reply[n + 4] = record
        ids_taken[n] = id
        by_created[2 * n - 1], by_created[2 * n] = created, id
        leased[2 * n - 1], leased[2 * n] = lease_until, id
      end
    end
    if parked and redis.call('HINCRBY', KEYS[14], parked, -#ids) <= 0 then
      redis.call('HDEL', KEYS[14], parked)
    end
    ids = n < limit and redis.call('LPOP', list, limit - n)
  end
end

-- Parked lists of this lane holding types this consumer runs, by priority (usually none).
local parked_at = {}
local directory = redis.call('HGETALL', KEYS[14])
for i = 1, #directory, 2 do
  local member = directory[i]
  local l, p, t = string.match(member, '^([^:]+):(%d):(.*)$')
  if l == lane and runs_type(runs, t) then
    parked_at[p] = parked_at[p] or {}
    table.insert(parked_at[p], {Q:parked(l, p, t), member})
  end
end

for k = 7, 11 do
  local priority = tostring(12 - k)
  for _, entry in ipairs(parked_at[priority] or {}) do take(entry[1], priority, entry[2]) end
  take(KEYS[k], priority, nil)
end

if n > 0 then
  note_claims(Q, owner, ids_taken, by_created, leased)
  book_starts(Q, c, n)
end
if n < wanted and (by_rate <= n or by_cap <= n) then
  -- A limit has no room left for the rest: come back when it may have some. Checked even
  -- when nothing is ready, since no task could start before then anyway.
  local at = 0
  if by_cap <= n then at = now + lease_ms end
  if by_rate <= n then at = math.max(at, next_start_ms(c)) end
  reply[4] = string.format('%.0f', at)
elseif ARGV[5] == '1' and n < wanted then
  local slots = {}
  for i = 1, wanted - n do slots[i] = owner end
  call_chunked('RPUSH', KEYS[4], slots)
  redis.call('HSET', KEYS[5], owner, lease_ms .. '|' .. types .. '|' .. worker)
  reply[2] = wanted - n
end
return reply
